"""How a model's outputs are named and judged (issue 20, item 4): list fields flattened as
name.0, name.1, ...; the nondeterminism hint only from a real second run."""

import dataclasses

import models
import numpy as np
import pytest
import torch
from conftest import arch

import edgeship
from edgeship.config import ExportConfig, LoadOptions
from edgeship.pipeline import export
from edgeship.runtimes.torch_eager import flatten_outputs


def test_list_fields_are_flattened_with_their_index():
    @dataclasses.dataclass
    class Out:
        logits: torch.Tensor
        hidden_states: list
        past: tuple | None = None

    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    names = [k for k, _ in flatten_outputs(Out(a, [b, c], (None, (a, b))))]
    assert names == ["logits", "hidden_states.0", "hidden_states.1", "past.1.0", "past.1.1"]
    assert [k for k, _ in flatten_outputs({"h": [a, {"x": b}]})] == ["h.0", "h.1.x"]
    assert [k for k, _ in flatten_outputs((a, [b, c]))] == [None, None, None]  # unnamed: output_0, output_1, ...


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_model_returning_a_list_field_exports_with_indexed_names(tmp_path, exporter):
    path = tmp_path / "l.pt"
    torch.save(models.trained(models.ListOutputs()).state_dict(), path)
    r = export(ExportConfig(model=path, output=tmp_path / "l.edgeship", inputs=("x:2x6",), dynamic_batch=True,
                            load=LoadOptions(arch=arch("ListOutputs")), quantize=("fp32",), exporter=exporter))
    assert r.spec.output_names == ["logits", "hidden.0", "hidden.1"]
    assert not any("nondeterministic" in n for n in r.notes) and r.parity.passed
    out = edgeship.load(r.bundle)({"x": np.ones((3, 6), np.float32)})
    assert out["hidden.0"].shape == (3, 6) and out["hidden.1"].shape == (3, 8) and out["logits"].shape == (3, 3)


def test_the_nondeterminism_note_needs_a_real_difference(tmp_path):
    """Two outputs whose flattened names collide (they collapsed into one entry of a dict): a
    deterministic model is never called nondeterministic; a really noisy one is."""
    from edgeship.pipeline.context import NONDETERMINISTIC

    for name, inputs in (("ListOutputs", ("x:2x6",)), ("CollidingNames", ("x:2x4",))):
        path = tmp_path / f"{name}.pt"
        torch.save(getattr(models, name)().state_dict(), path)
        r = export(ExportConfig(model=path, output=tmp_path / f"{name}.edgeship", inputs=inputs,
                                output_names=("p", "q", "r")[:3 if name == "ListOutputs" else 2],
                                load=LoadOptions(arch=arch(name)), quantize=("fp32",), torchscript=False))
        assert not any(n.startswith(NONDETERMINISTIC) for n in r.notes), r.notes
    path = tmp_path / "n.pt"
    torch.save(models.Noisy().state_dict(), path)
    r = export(ExportConfig(model=path, output=tmp_path / "n.edgeship", inputs=("x:2x4",), load=LoadOptions(arch=arch("Noisy")),
                            quantize=("fp32",), torchscript=False, atol=1.0, rtol=1.0))
    assert any(n.startswith(NONDETERMINISTIC) for n in r.notes)
