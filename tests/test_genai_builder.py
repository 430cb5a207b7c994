"""The decoder export's graph choice: onnxruntime-genai's model builder graph where it is installed and
passes generation parity (the faster passing graph is kept), else the torch.onnx graph with a note
saying why (not installed, an architecture the builder does not build, a builder graph that misses
parity, an explicit --opset)."""

from __future__ import annotations

import json
import math

import pytest

import edgeship
from edgeship.errors import BundleError
from tests.hf_lm_fixtures import greedy_reference, save_causal_lm
from tests.test_hf_decoder import without_builder

pytest.importorskip("onnxruntime_genai.models.builder")
pytestmark = pytest.mark.slow  # a few decoder exports (~7 s each)

PROMPTS = [[1, 5, 9, 20, 33], [1, 7, 42]]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_causal_lm(tmp_path_factory.mktemp("lm") / "model", "llama")


def export(folder, out, **kw):
    from edgeship.config import ExportConfig
    from edgeship.hf.folder import read_folder
    from edgeship.pipeline.decoder import export_causal_lm

    return export_causal_lm(read_folder(folder), ExportConfig(model=folder, output=out, **kw))


def ops(path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_the_builder_graph_is_built_judged_and_kept_with_int4_at_accuracy_level_4(folder, tmp_path):
    import onnx

    r = export(folder, tmp_path / "b.edgeship", quantize=("int4",), tolerances={"int4": {"min_agreement": 0.0}})
    m = json.loads((r.bundle / "manifest.json").read_text())
    graph = m["generation"]["graph"]
    assert graph["exporter"] == "onnxruntime-genai" and m["source"]["exporter"] == "onnxruntime-genai model builder"
    assert graph["candidates"]["onnxruntime-genai"]["passed"] and graph["candidates"]["torch.onnx"]["passed"]
    assert m["generation"]["parity"]["fp32"]["tokens_identical"] is True
    assert "GroupQueryAttention" in ops(r.bundle / "models/fp32.onnx")
    assert m["generation"]["padded_batches"] is False
    assert any("model builder built a candidate graph" in n for n in r.notes)
    assert next(s for s in r.stages if s.name == "graph").detail.startswith("onnxruntime-genai graph")
    nbits = [n for n in onnx.load(str(r.bundle / "models/int4.onnx")).graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all(onnx.helper.get_attribute_value(a) == 4 for n in nbits for a in n.attribute
                         if a.name == "accuracy_level")
    assert all(any(a.name == "accuracy_level" for a in n.attribute) for n in nbits)
    ref, _ = greedy_reference(folder, PROMPTS, 8)
    with edgeship.load(r.bundle) as model:  # prompts of two lengths: one at a time on this graph
        assert model.generate(PROMPTS, max_new_tokens=8) == ref
        assert model.generate([PROMPTS[0], PROMPTS[0]], max_new_tokens=8) == [ref[0], ref[0]]  # one length: a batch
    assert edgeship.check(r.bundle).passed


def test_without_onnxruntime_genai_the_torch_graph_is_shipped_with_a_note(folder, tmp_path, monkeypatch):
    without_builder(monkeypatch)
    r = export(folder, tmp_path / "t.edgeship", quantize=("fp32",))
    m = json.loads((r.bundle / "manifest.json").read_text())
    assert m["generation"]["graph"]["exporter"] == "torch.onnx" and m["source"]["exporter"] == "dynamo"
    assert list(m["generation"]["graph"]["candidates"]) == ["torch.onnx"]
    assert m["generation"]["padded_batches"] is True and "GroupQueryAttention" not in ops(r.bundle / "models/fp32.onnx")
    note = next(n for n in r.notes if "model builder not used" in n)
    assert "not importable" in note and "edgeship[genai]" in note
    assert next(s for s in r.stages if s.name == "builder").detail == "not used (see the notes)"


def test_a_builder_graph_that_misses_parity_falls_back_to_torch_onnx(folder, tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    from edgeship.exporters import genai_builder

    real = genai_builder.build_decoder_onnx

    def off(folder, path, head_dim):  # the builder's graph with its lm_head weights disturbed
        spec = real(folder, path, head_dim)
        g = onnx.load(str(path))
        w = next(t for t in g.graph.initializer if "lm_head" in t.name)
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w)[::-1].copy(), w.name))
        onnx.save(g, str(path))
        return spec

    monkeypatch.setattr(genai_builder, "build_decoder_onnx", off)
    r = export(folder, tmp_path / "p.edgeship", quantize=("fp32",))
    m = json.loads((r.bundle / "manifest.json").read_text())
    c = m["generation"]["graph"]["candidates"]
    assert m["generation"]["graph"]["exporter"] == "torch.onnx"
    assert c["onnxruntime-genai"]["passed"] is False and c["onnxruntime-genai"]["tokens_per_s"] is None
    assert "prompt-" in c["onnxruntime-genai"]["reason"]
    assert any("the onnxruntime-genai graph misses generation parity ([prompt-" in n
               and "the torch.onnx graph is shipped" in n for n in r.notes)
    assert next(s for s in r.stages if s.name == "graph").detail == "torch.onnx graph (onnxruntime-genai misses parity)"
    assert m["generation"]["parity"]["fp32"]["tokens_identical"] is True


def test_an_explicit_opset_keeps_the_torch_graph(folder, tmp_path):
    r = export(folder, tmp_path / "o.edgeship", quantize=("fp32",), opset=18)
    m = json.loads((r.bundle / "manifest.json").read_text())
    assert m["generation"]["graph"]["exporter"] == "torch.onnx" and m["source"]["opset"] == 18
    assert any("--opset 18 was asked" in n for n in r.notes)


def test_an_architecture_the_builder_does_not_build_is_a_note(tmp_path):
    from edgeship.exporters.genai_builder import BuilderUnavailable, build_decoder_onnx
    from tests.hf_lm_fixtures import save_gpt2

    with pytest.raises(BuilderUnavailable, match="model builder failed on gpt2"):
        build_decoder_onnx(save_gpt2(tmp_path / "gpt2"), tmp_path / "g.onnx", 16)


def test_the_graph_timing_gives_tokens_per_second_of_each_graph(folder, tmp_path, decoder_graph_speed):
    import onnxruntime as ort

    from edgeship.exporters.genai_builder import build_decoder_onnx
    from edgeship.generate import decoder_layout

    spec = build_decoder_onnx(folder, tmp_path / "b.onnx", 16)
    s = ort.InferenceSession(str(tmp_path / "b.onnx"), providers=["CPUExecutionProvider"])
    got = decoder_graph_speed({"a": (s, decoder_layout(spec)), "b": (s, decoder_layout(spec))}, PROMPTS[0], 0)
    assert set(got) == {"a", "b"} and all(math.isfinite(v) and v > 0 for v in got.values())


def test_a_crafted_padded_batches_flag_is_refused():
    from edgeship.generate import generation_meta

    assert generation_meta({"generation": {"padded_batches": False}}) == {"padded_batches": False}
    with pytest.raises(BundleError, match="padded_batches"):
        generation_meta({"generation": {"padded_batches": "no"}})


def test_the_torch_graph_is_kept_only_when_over_5_percent_faster(folder, tmp_path, monkeypatch):
    from edgeship.bundle.read import open_bundle
    from edgeship.exporters.genai_builder import build_decoder_onnx
    from edgeship.exporters.hf_decoder import spec_of
    from edgeship.parity.decoder import read_golden
    from edgeship.pipeline import decoder

    figures = {decoder.TORCH: 1100.0, decoder.BUILDER: 1000.0}
    monkeypatch.setattr(decoder, "_tokens_per_s", lambda sessions, prompt, pad, tokens=None: {n: figures[n] for n in sessions})
    r = export(folder, tmp_path / "t.edgeship", quantize=("fp32",))
    m = json.loads((r.bundle / "manifest.json").read_text())
    assert m["generation"]["graph"]["exporter"] == "torch.onnx" and m["generation"]["padded_batches"] is True
    assert any(n.startswith("graph: torch.onnx (1,100 greedy tokens/s) over onnxruntime-genai (1,000)") for n in r.notes)
    # within 5%: the builder's graph
    figures[decoder.TORCH] = 1040.0
    torch_file = r.bundle / "models/fp32.onnx"
    graphs = {decoder.TORCH: (torch_file, spec_of(torch_file)),
              decoder.BUILDER: (tmp_path / "b.onnx", build_decoder_onnx(folder, tmp_path / "b.onnx", 16))}
    golden = read_golden(open_bundle(r.bundle))
    notes: list[str] = []
    choice = decoder._choose_graph(graphs, golden, [2], 0, notes)
    assert choice["exporter"] == "onnxruntime-genai" and "over torch.onnx (1,040)" in notes[0]


def test_a_torch_graph_that_misses_parity_leaves_the_builder_graph(folder, tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    from edgeship.pipeline import decoder

    real = decoder.export_decoder_onnx

    def off(model, path, opset=18):  # the torch.onnx graph with its output projection disturbed
        spec = real(model, path, opset)
        g = onnx.load(str(path))
        w = next(t for t in g.graph.initializer if 300 in t.dims and len(t.dims) == 2)
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w)[::-1].copy(), w.name))
        onnx.save(g, str(path))
        return spec

    monkeypatch.setattr(decoder, "export_decoder_onnx", off)
    r = export(folder, tmp_path / "p.edgeship", quantize=("fp32",))
    m = json.loads((r.bundle / "manifest.json").read_text())
    assert m["generation"]["graph"]["exporter"] == "onnxruntime-genai"
    assert m["generation"]["graph"]["candidates"]["torch.onnx"]["passed"] is False
    assert any("the torch.onnx graph misses generation parity" in n and "onnxruntime-genai graph is shipped" in n
               for n in r.notes)
    assert m["generation"]["parity"]["fp32"]["tokens_identical"] is True


def test_the_builder_runs_offline_on_the_local_folder_only(folder, tmp_path, monkeypatch):
    import os

    import huggingface_hub.constants as hc
    from onnxruntime_genai.models import builder

    from edgeship.exporters.genai_builder import BuilderUnavailable, build_decoder_onnx

    seen = {}

    def create_model(name, path, *args, **kwargs):
        seen.update(env=os.environ.get("HF_HUB_OFFLINE"), const=hc.HF_HUB_OFFLINE, name=name, path=path)
        raise RuntimeError("stop here")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(builder, "create_model", create_model)
    with pytest.raises(BuilderUnavailable, match="stop here"):
        build_decoder_onnx(folder, tmp_path / "b.onnx", 16)
    assert seen == {"env": "1", "const": True, "name": str(folder), "path": str(folder)}
    assert "HF_HUB_OFFLINE" not in os.environ  # put back as it was


def test_decoder_graph_torch_builds_only_the_torch_graph(folder, tmp_path, monkeypatch):
    from edgeship.exporters import genai_builder

    def never(*a, **k):
        raise AssertionError("the builder ran under --decoder-graph torch.onnx")

    monkeypatch.setattr(genai_builder, "build_decoder_onnx", never)
    r = export(folder, tmp_path / "t.edgeship", quantize=("fp32",), decoder_graph="torch.onnx")
    m = json.loads((r.bundle / "manifest.json").read_text())
    assert m["generation"]["graph"]["exporter"] == "torch.onnx" and list(m["generation"]["graph"]["candidates"]) == ["torch.onnx"]
    assert "builder" not in {s.name for s in r.stages}
    assert any("--decoder-graph torch.onnx" in n for n in r.notes)
    assert edgeship.check(r.bundle).passed


def test_decoder_graph_genai_builds_only_the_builder_graph(folder, tmp_path, monkeypatch):
    from edgeship.pipeline import decoder

    def never(*a, **k):
        raise AssertionError("torch.onnx ran under --decoder-graph onnxruntime-genai")

    monkeypatch.setattr(decoder, "export_decoder_onnx", never)
    r = export(folder, tmp_path / "g.edgeship", quantize=("fp32",), decoder_graph="onnxruntime-genai")
    m = json.loads((r.bundle / "manifest.json").read_text())
    assert m["generation"]["graph"]["exporter"] == "onnxruntime-genai"
    assert list(m["generation"]["graph"]["candidates"]) == ["onnxruntime-genai"]
    assert {"onnx", "optimize"}.isdisjoint(s.name for s in r.stages)
    ref, _ = greedy_reference(folder, PROMPTS, 8)
    with edgeship.load(r.bundle) as model:
        assert model.generate(PROMPTS, max_new_tokens=8) == ref


def test_decoder_graph_errors(folder, tmp_path, monkeypatch, cli, files):
    from edgeship.errors import ExportError, SpecError

    code, out = cli("export", folder, "-o", tmp_path / "x.edgeship", "--decoder-graph", "tensorrt")
    assert code == 2 and "--decoder-graph 'tensorrt': use one of auto, torch.onnx, onnxruntime-genai" in out
    with pytest.raises(SpecError, match="the builder picks its own opset"):
        export(folder, tmp_path / "x.edgeship", decoder_graph="onnxruntime-genai", opset=18)
    code, out = cli("export", files["dir"] / "mlp_ts.pt", "-o", tmp_path / "x.edgeship", "--decoder-graph", "torch.onnx")
    assert code == 2 and "applies to a causal LM" in out, out
    without_builder(monkeypatch)  # the builder cannot build: no fallback when it was asked for
    with pytest.raises(ExportError, match="--decoder-graph onnxruntime-genai: onnxruntime-genai's model builder not "
                                          "used: .*not importable.*Use --decoder-graph auto"):
        export(folder, tmp_path / "x.edgeship", quantize=("fp32",), decoder_graph="onnxruntime-genai")
    assert not (tmp_path / "x.edgeship").exists()
