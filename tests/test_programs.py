"""ExportedPrograms (.pt2) as Hugging Face users save them (issue 20): keyword example inputs, output
classes registered by a submodule, a submodule named like an attribute of torch's own."""

import models
import numpy as np
import pytest
import torch

import edgeship
from edgeship.config import ExportConfig
from edgeship.pipeline import export


def _kwargs_program(tmp_path, dynamic=True):
    """forward(input_ids, past=None, attention_mask=None) exported with keyword arguments only."""
    m = models.trained(models.PastKV())
    ids, mask = torch.randint(0, 50, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    batch = torch.export.Dim("batch", min=1, max=64)
    shapes = {"input_ids": {0: batch}, "attention_mask": {0: batch}} if dynamic else None
    ep = torch.export.export(m, (), kwargs={"input_ids": ids, "attention_mask": mask}, dynamic_shapes=shapes)
    path = tmp_path / "kw.pt2"
    torch.export.save(ep, path)
    return path, m


def _check_bundle(bundle, m, batch=3):
    ids = np.random.default_rng(1).integers(0, 50, (batch, 7))
    mask = np.ones_like(ids)
    mask[0, 4:] = 0
    with torch.no_grad():
        want = m(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).numpy()
    got = edgeship.load(bundle)({"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(next(iter(got.values())), want, atol=1e-5)


@pytest.mark.parametrize("exporter", ["auto", "torchscript"])
def test_a_program_saved_with_keyword_arguments_takes_its_spec_from_them(tmp_path, exporter):
    path, m = _kwargs_program(tmp_path)
    r = export(ExportConfig(model=path, output=tmp_path / "k.edgeship", quantize=("fp32",), exporter=exporter))
    assert [(t.name, t.shape) for t in r.spec.inputs] == [("input_ids", ("batch", 7)), ("attention_mask", ("batch", 7))]
    assert r.parity.passed
    _check_bundle(r.bundle, m)


def test_a_keyword_program_takes_inputs_by_name_in_any_order(tmp_path):
    """--input and --example-inputs name the keyword inputs in another order than the program's."""
    path, m = _kwargs_program(tmp_path, dynamic=False)
    r = export(ExportConfig(model=path, output=tmp_path / "a.edgeship", quantize=("fp32",),
                            inputs=("attention_mask:2x7:int64", "input_ids:2x7:int64")))
    assert r.spec.input_names == ["input_ids", "attention_mask"] and r.parity.passed
    example = tmp_path / "ex.npz"
    np.savez(example, attention_mask=np.ones((2, 7), np.int64), input_ids=np.arange(14).reshape(2, 7) % 50)
    r = export(ExportConfig(model=path, output=tmp_path / "b.edgeship", quantize=("fp32",), example_inputs=example))
    assert r.spec.input_names == ["input_ids", "attention_mask"] and r.parity.passed
    _check_bundle(r.bundle, m, batch=2)
