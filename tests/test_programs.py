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


OUTPUTS = """
from dataclasses import dataclass
import torch

@dataclass
class Scores:
    logits: torch.Tensor
    probs: torch.Tensor

torch.export.register_dataclass(Scores, serialized_type_name="outpkg.outputs.Scores")
"""
HEAD = """
import torch
from outpkg.outputs import Scores

class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc(x)
        return Scores(y, torch.softmax(y, -1))
"""


def _cli(tmp_path, *args):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "edgeship", "export", *args]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])})


@pytest.mark.slow
def test_an_output_class_registered_by_a_submodule_is_imported_inside_the_named_package(tmp_path):
    """As transformers 5 does: the package's __init__ does not import the submodule that registers
    the output class. --import of the package lets edgeship import the module the program names."""
    import subprocess
    import sys

    pkg = tmp_path / "outpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "outputs.py").write_text(OUTPUTS)
    (pkg / "head.py").write_text(HEAD)
    save = ("import torch; from outpkg.head import Head; "
            "torch.export.save(torch.export.export(Head().eval(), (torch.randn(2, 4),)), 'head.pt2')")
    subprocess.run([sys.executable, "-c", save], cwd=tmp_path, check=True, capture_output=True)
    r = _cli(tmp_path, "head.pt2", "-o", "a.edgeship", "--quantize", "fp32")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "returns outpkg.outputs.Scores" in r.stderr and "--import outpkg.outputs" in r.stderr
    r = _cli(tmp_path, "head.pt2", "-o", "b.edgeship", "--quantize", "fp32", "--import", "outpkg")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [t.name for t in edgeship.load(tmp_path / "b.edgeship").outputs] == ["logits", "probs"]
    r = _cli(tmp_path, "head.pt2", "-o", "c.edgeship", "--quantize", "fp32", "--import", "outpkg.outputs")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_module_outside_the_imported_packages_is_never_imported(tmp_path, monkeypatch):
    """The file names the module; only a package the user gave with --import lets it be imported."""
    from edgeship.config import LoadOptions
    from edgeship.errors import ModelLoadError
    from edgeship.exporters import program

    imported = []
    monkeypatch.setattr(program.importlib, "import_module", lambda name: imported.append(name))

    def refuse(path):
        raise RuntimeError("Deserializing evilmod.payload.Out in pytree is not registered.")

    monkeypatch.setattr(torch.export, "load", refuse)
    with pytest.raises(ModelLoadError, match=r"returns evilmod\.payload\.Out.*pass --import evilmod\.payload"):
        program.read_program(tmp_path / "x.pt2", LoadOptions(imports=("json",)))
    assert imported == ["json"]  # the user's own --import only
    with pytest.raises(ModelLoadError, match=r"evilmod\.payload was imported, but it does not register Out"):
        program.read_program(tmp_path / "x.pt2", LoadOptions(imports=("evilmod",)))


@pytest.mark.slow
def test_a_hugging_face_causal_lm_program_exports_with_import_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    import subprocess
    import sys

    save = """
import torch, transformers
cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
torch.manual_seed(0)
m = transformers.LlamaForCausalLM(cfg).eval()
ids, mask = torch.randint(0, 64, (1, 8)), torch.ones(1, 8, dtype=torch.long)
ep = torch.export.export(m, (), kwargs={"input_ids": ids, "attention_mask": mask, "use_cache": False})
torch.export.save(ep, "llm.pt2")
"""
    subprocess.run([sys.executable, "-c", save], cwd=tmp_path, check=True, capture_output=True,
                   env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert transformers.__version__
    r = _cli(tmp_path, "llm.pt2", "-o", "llm.edgeship", "--quantize", "fp32", "--import", "transformers")
    assert r.returncode == 0, r.stdout + r.stderr
    m = edgeship.load(tmp_path / "llm.edgeship")
    assert [t.name for t in m.inputs] == ["input_ids", "attention_mask"] and [t.name for t in m.outputs] == ["logits"]


@pytest.mark.parametrize("attr", ["meta", "graph"])
def test_a_program_with_a_submodule_named_like_a_graph_module_attribute_exports(tmp_path, attr):
    """torch 2.13 cannot unlift a program whose submodule is called ``meta`` (GraphModule's own
    metadata dict) or ``graph``: ep.module() and the dynamo exporter fail. It is renamed inside the
    program, with a note, and exports with both exporters."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            setattr(self, attr, torch.nn.Linear(4, 4))
            self.register_buffer("shift", torch.full((4,), 0.5))
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.relu(getattr(self, attr)(x) + self.shift))

    m = models.trained(Net())
    path = tmp_path / "n.pt2"
    torch.export.save(torch.export.export(m, (torch.randn(2, 4),)), path)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    for exporter in ("dynamo", "torchscript"):
        r = export(ExportConfig(model=path, output=tmp_path / f"{exporter}.edgeship", quantize=("fp32",), exporter=exporter))
        assert any(f"{attr!r} renamed '{attr}_' inside the program" in n for n in r.notes), r.notes
        np.testing.assert_allclose(edgeship.load(r.bundle)(x), want, atol=1e-5)
