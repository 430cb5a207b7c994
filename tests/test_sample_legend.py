"""Sample labels (``example``, ``seed0-1``, ``dynamic-batch2``...) come with their meaning wherever a
reader meets them: a failing check's output, the parity JSON and the bundle's manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeship.bundle.golden import describe_sample, legend, make_samples
from edgeship.spec import TensorSpec


@pytest.mark.parametrize("label, words", [
    ("example", "--example-inputs"),
    ("seed0-1", "seeded random data (seed 0, sample 1)"),
    ("seed7-2", "seed 7"),
    ("resampled-1", "resampled from the example"),
    ("dynamic-batch2-seq16", "second size (batch=2, seq=16)"),
    ("inputs-3", "--inputs file, sample 3"),
    ("golden-0", "golden input 0"),
    ("row-3", "row 3 of the first golden sample"),
    ("eval-2", "held-out sample 2"),
])
def test_every_label_kind_is_described(label, words):
    assert words in describe_sample(label)


def test_labels_the_code_makes_are_all_known():
    spec = (TensorSpec("x", "float32", ("batch", 4)),)
    random = make_samples(spec, sizes={"batch": 1})
    example = make_samples(spec, example={"x": np.zeros((2, 4), np.float32)})
    for s in (*random, *example):
        assert describe_sample(s.label) != describe_sample("?"), s.label
    assert legend(["seed0-1", "seed0-1", "example"]).count("seed0-1 =") == 1


def test_a_failing_check_prints_the_legend_and_its_json_carries_it(cli, mlp_bundle, tmp_path):
    code, out = cli("check", mlp_bundle, "--tolerance", "fp32:atol=0", "--tolerance", "fp32:rtol=0",
                    "--tolerance", "fp32:atol_scale=0",
                    "--json", tmp_path / "c.json")
    assert code == 1, out
    doc = json.loads((tmp_path / "c.json").read_text())
    failing = {c["sample"] for c in doc["checks"] if not c["passed"]}
    assert failing and set(doc["samples"]) >= failing
    legend_line = out[out.index("samples: "):]
    for label in failing:
        assert f"{label} = {describe_sample(label)}" in legend_line, out


def test_the_manifest_says_what_each_golden_sample_is(mlp_bundle):
    samples = json.loads((mlp_bundle / "manifest.json").read_text())["golden"]["samples"]
    assert samples and all(s["about"] == describe_sample(s["label"]) for s in samples)
