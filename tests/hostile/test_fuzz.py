"""A short, seeded fuzz run: mutated bundles through load, check and inspect; only EdgeshipError.

Each round copies the MLP bundle and applies one to three mutations: flip, truncate or insert
bytes in a random file (sometimes re-signing it in the manifest, so the damage reaches
onnxruntime and numpy), replace or delete a random manifest field, or damage the zip archive.
"""

import json
import os
import random
import shutil

import numpy as np
import pytest
from hostile_helpers import resign, zip_tree

import edgeship
from edgeship.bundle import MANIFEST
from edgeship.bundle.inspect import inspect_path
from edgeship.errors import EdgeshipError

ROUNDS = 200
POOL = [None, True, 0, -1, 2**63, 1e308, float("nan"), "", "x" * 300, "../../etc/passwd", "/abs", "models/fp32.onnx",
        "golden/inputs.npz", [], [1, "a"], {}, {"name": "x"}, {"name": "x", "dtype": "float32", "shape": ["b", 10]}]


def _fields(value, prefix=()):
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _fields(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _fields(v, prefix + (i,))


def _mutate_bytes(rng, data: bytes) -> bytes:
    data = bytearray(data)
    op = rng.choice(["flip", "truncate", "insert", "zero"])
    at = rng.randrange(max(len(data), 1))
    if op == "flip" and data:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        del data[at:]
    elif op == "insert":
        data[at:at] = rng.randbytes(rng.randint(1, 32))
    else:
        data[at:at + 16] = bytes(len(data[at:at + 16]))
    return bytes(data)


def _mutate_manifest(rng, bundle):
    m = json.loads((bundle / MANIFEST).read_text())
    path = rng.choice(list(_fields(m)))
    parent = m
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[path[-1]]
    else:
        parent[path[-1]] = rng.choice(POOL)
    (bundle / MANIFEST).write_text(json.dumps(m))


def _mutate(rng, bundle):
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        try:
            if kind < 0.35:
                _mutate_manifest(rng, bundle)
            else:
                victim = rng.choice(files)
                victim.write_bytes(_mutate_bytes(rng, victim.read_bytes()))
                if victim.name != MANIFEST and kind < 0.8:
                    resign(bundle, victim.relative_to(bundle).as_posix())
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # an earlier mutation left no manifest to edit: the damage stands as it is


def _exercise(path):
    """Everything a user does with a bundle; returns how it ended, for the tally."""
    outcome = "ok"
    for step in (lambda: edgeship.load(path)(np.ones((2, 10), np.float32)), lambda: edgeship.check(path),
                 lambda: inspect_path(path)):
        try:
            step()
        except EdgeshipError as e:
            outcome = type(e).__name__
    return outcome


@pytest.mark.parametrize("seed", [int(s) for s in os.environ.get("EDGESHIP_FUZZ_SEEDS", "6").split(",")])
def test_fuzzed_bundles_raise_only_edgeship_errors(mlp_bundle, tmp_path, seed):
    rng = random.Random(seed)
    tally = {}
    for i in range(ROUNDS):
        work = tmp_path / f"r{i}"
        bundle = shutil.copytree(mlp_bundle, work / "b.edgeship")
        _mutate(rng, bundle)
        if rng.random() < 0.3:  # the same damage in a zipped bundle, sometimes with the archive damaged too
            z = zip_tree(bundle, work / "b.edgeship.zip")
            if rng.random() < 0.5:
                z.write_bytes(_mutate_bytes(rng, z.read_bytes()))
            bundle = z
        try:
            outcome = _exercise(bundle)
        except Exception as e:  # anything but an EdgeshipError is a bug: show the round to replay it
            raise AssertionError(f"round {i} (seed {seed}): {type(e).__name__}: {e}") from e
        tally[outcome] = tally.get(outcome, 0) + 1
        shutil.rmtree(work)
    assert sum(tally.values()) == ROUNDS and len(tally) > 1, tally
