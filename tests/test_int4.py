"""Weight-only int4 (onnxruntime's MatMulNBits quantizer): the builder, its settings and errors, and
the int4 variant in the export pipeline. Test graphs are built with onnx.helper (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_schemas import valid

from edgeship.errors import QuantizationError, SpecError
from edgeship.exporters import quantize as q
from edgeship.pipeline.quantize import requested_kinds


def mlp(path: Path, hidden: int, classes: int | None = None, seed: int = 0) -> Path:
    """x[b, hidden] -> MatMul -> Relu -> MatMul (-> + bias) -> y; with ``classes``, class 0 wins
    every row by a wide margin (a classifier whose top-1 int4 must keep)."""
    rng = np.random.default_rng(seed)
    out = classes or hidden
    w1 = (rng.standard_normal((hidden, 4 * hidden)) / np.sqrt(hidden)).astype(np.float32)
    w2 = (rng.standard_normal((4 * hidden, out)) / np.sqrt(4 * hidden)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["z"], name="mm2")]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    if classes:
        bias = np.zeros(classes, np.float32)
        bias[0] = 50.0
        nodes.append(helper.make_node("Add", ["z", "bias"], ["y"], name="add"))
        inits.append(numpy_helper.from_array(bias, "bias"))
    else:
        nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", out])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def conv_only(path: Path) -> Path:
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("scheme", ["sym", "asym"])
def test_int4_is_over_3x_smaller_than_fp32_at_hidden_256(tmp_path, scheme):
    src = mlp(tmp_path / "m.onnx", 256)
    out = q.build_int4(src, tmp_path / "int4.onnx", 32, scheme)
    model = onnx.load(str(out))
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert [n.op_type for n in model.graph.node] == ["MatMulNBits", "Relu", "MatMulNBits"]
    attrs = {a.name: helper.get_attribute_value(a) for a in nbits[0].attribute}
    assert attrs["block_size"] == 32 and attrs["bits"] == 4 and (attrs["K"], attrs["N"]) == (256, 1024)
    # asymmetric carries a zero point per block, symmetric none
    assert (len(nbits[0].input) == 4) == (scheme == "asym")
    fp32, int4 = q.weight_bytes(src), q.weight_bytes(out)
    assert fp32 == 2 * 256 * 1024 * 4  # independent of weight_bytes's own arithmetic
    assert fp32 / int4 >= 3.0, (fp32, int4)
    x = np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)
    assert cosine(run(src, x), run(out, x)) > 0.98
    assert q.count_quantized(out) == 2


def test_block_size_changes_the_scales(tmp_path):
    src = mlp(tmp_path / "m.onnx", 64)
    small = q.weight_bytes(q.build_int4(src, tmp_path / "b16.onnx", 16, "sym"))
    large = q.weight_bytes(q.build_int4(src, tmp_path / "b64.onnx", 64, "sym"))
    assert small > large  # four times the scales


def test_excluded_nodes_stay_matmul(tmp_path):
    src = mlp(tmp_path / "m.onnx", 64)
    out = q.build_int4(src, tmp_path / "int4.onnx", 32, "sym", exclude=["mm2"])
    assert [n.op_type for n in onnx.load(str(out)).graph.node] == ["MatMulNBits", "Relu", "MatMul"]
    assert q.quantizable_nodes(src, "int4") == {"mm1", "mm2"}


@pytest.mark.parametrize("block", [0, 8, 24, 33, True, "32"])
def test_bad_block_size(tmp_path, block):
    with pytest.raises(SpecError, match="power of two of at least 16"):
        q.build_int4(mlp(tmp_path / "m.onnx", 64), tmp_path / "o.onnx", block, "sym")


def test_bad_scheme():
    with pytest.raises(SpecError, match="unknown --int4-scheme 'asymmetric'; use sym"):
        q.check_int4_settings(32, "asymmetric")


def test_no_eligible_matmul(tmp_path):
    with pytest.raises(QuantizationError, match="no"):
        q.build_int4(conv_only(tmp_path / "c.onnx"), tmp_path / "o.onnx")


def test_auto_adds_int4_for_decoders_only():
    assert requested_kinds(("auto",), ["cpu"], False) == ["dynamic"]
    assert requested_kinds(("auto",), ["cpu"], False, decoder=True) == ["dynamic", "int4"]
    assert requested_kinds(("int4",), ["cpu"], False) == ["int4"]
    with pytest.raises(SpecError, match="int4"):
        requested_kinds(("int3",), ["cpu"], False)


def test_decoder_variants_follow_quantize():
    from edgeship.pipeline.decoder import _variants

    assert _variants(("auto",)) == ["fp32", "int8_dynamic", "int4"]
    assert _variants(("fp32",)) == ["fp32"]
    assert _variants(("int4",)) == ["fp32", "int4"]
    with pytest.raises(SpecError, match="--quantize static: a causal LM is exported as"):
        _variants(("static", "int4"))


def test_export_ships_a_parity_checked_int4_variant(tmp_path, cli):
    src = mlp(tmp_path / "clf.onnx", 64, classes=10)
    out = tmp_path / "clf.edgeship"
    code, text = cli("export", src, "-i", "x:4x64", "--quantize", "int4", "--int4-scheme", "asym",
                     "--int4-block-size", "16", "-o", out, "--no-tune", "--json", tmp_path / "p.json")
    assert code == 0, text
    report = valid(out / "report.json", "report")
    manifest = valid(out / "manifest.json", "manifest")
    v = report["variants"]["int4"]
    assert v["precision"] == "int4" and v["kind"] == "int4" and v["passed"] == {"cpu": True}
    assert v["settings"] == {"block_size": 16, "scheme": "asym"}
    assert report["variants"]["fp32"]["weight_bytes"] > 3 * v["weight_bytes"]
    assert manifest["variants"]["int4"]["precision"] == "int4"
    # the parity the export reports is what onnxruntime gives on the shipped file
    rows = [r for r in json.loads((tmp_path / "p.json").read_text())["summary"] if r["variant"] == "int4"]
    assert rows and all(r["passed"] for r in rows)
    shipped = out / manifest["variants"]["int4"]["file"]
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    assert cosine(run(src, x), run(shipped, x)) >= 0.98
    assert {n.op_type for n in onnx.load(str(shipped)).graph.node} >= {"MatMulNBits"}
    code, text = cli("inspect", shipped)
    assert code == 0 and "int4" in text


def test_quantize_command_writes_int4(tmp_path, cli):
    src = mlp(tmp_path / "clf.onnx", 64, classes=10)
    out = tmp_path / "clf.int4.onnx"
    code, text = cli("quantize", src, "--method", "int4", "-i", "x:4x64", "-o", out)
    assert code == 0, text
    assert "MatMulNBits" in {n.op_type for n in onnx.load(str(out)).graph.node}
    assert q.weight_bytes(src) > 3 * q.weight_bytes(out)


def test_int4_failing_parity_is_not_shipped(tmp_path, cli):
    # a random MLP's outputs have no clear top-1: int4 flips some, and the gate refuses it
    src = mlp(tmp_path / "flat.onnx", 64)
    out = tmp_path / "flat.edgeship"
    code, text = cli("export", src, "-i", "x:4x64", "--quantize", "int4", "--no-fallback", "--tolerance",
                     "int4:min_cosine=0.99999", "-o", out, "--no-tune")
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    assert "int4" not in report["variants"] and "int4" in report["rejected"]
    assert "int4 NOT shipped" in text


def test_int4_on_a_graph_without_matmul_is_skipped_with_a_reason(tmp_path, cli):
    out = tmp_path / "conv.edgeship"
    code, text = cli("export", conv_only(tmp_path / "conv.onnx"), "--quantize", "int4", "-o", out, "--no-tune")
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    assert list(report["variants"]) == ["fp32"]
    assert any(n.startswith("int4: int4 quantizes MatMul nodes with a constant 2-D weight") for n in report["notes"])


@pytest.mark.parametrize("args, message", [(["--int4-block-size", "48"], "power of two"),
                                           (["--int4-scheme", "nf4"], "unknown --int4-scheme")])
def test_bad_int4_options_exit_2(tmp_path, cli, args, message):
    code, text = cli("export", mlp(tmp_path / "m.onnx", 64), "-i", "x:4x64", "--quantize", "int4", *args,
                     "-o", tmp_path / "b.edgeship", "--no-tune")
    assert code == 2 and message in text, text
    assert not (tmp_path / "b.edgeship").exists()


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory):
    """A Llama-style decoder (hidden 256, 2 layers, random weights) exported with ``edgeship export DIR``
    (auto: fp32, int8_dynamic, int4); int4's agreement threshold lowered to 0.5 so it ships (random
    weights leave greedy margins thin), int8's raised to 1.0 so the gate's refusal shows too."""
    from hf_lm_fixtures import save_causal_lm
    from typer.testing import CliRunner

    from edgeship.cli import app

    d = tmp_path_factory.mktemp("lm")
    folder = save_causal_lm(d / "tiny-llama", "llama", hidden=256, layers=2, heads=4, kv_heads=2)
    out = d / "lm.edgeship"
    result = CliRunner().invoke(app, ["export", str(folder), "-o", str(out), "--tolerance", "int4:min_agreement=0.5",
                                      "--tolerance", "int8:min_agreement=1.0"])
    assert result.exit_code == 0, result.output
    return {"bundle": out, "output": result.output}


def _independent_teacher_forced(model_file: Path, golden: Path) -> tuple[int, int, float]:
    """Agreement of ``model_file`` with the golden greedy tokens, measured here with onnxruntime alone:
    each prompt + its tokens in one call with an empty cache; returns (agreed, positions, mean |Δ log p|)."""
    sess = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    data = np.load(golden)
    agreed = positions = 0
    deltas = []
    i = 0
    while f"{i}/prompt" in data:
        prompt, tokens, ref = data[f"{i}/prompt"], data[f"{i}/tokens"], data[f"{i}/logits"].astype(np.float64)
        ids = np.concatenate([prompt, tokens])[None].astype(np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        for inp in sess.get_inputs():
            if inp.name == "position_ids":
                feeds[inp.name] = np.arange(ids.shape[1], dtype=np.int64)[None]
            elif inp.name.startswith("past_key_values."):
                feeds[inp.name] = np.zeros((1, inp.shape[1], 0, inp.shape[3]), np.float32)
        logits = sess.run(["logits"], feeds)[0][0, len(prompt) - 1:-1].astype(np.float64)
        agreed += int((logits.argmax(-1) == tokens).sum())
        positions += len(tokens)

        def logp(x):
            return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)

        deltas += list(np.abs(logp(logits)[np.arange(len(tokens)), tokens] - logp(ref)[np.arange(len(tokens)), tokens]))
        i += 1
    return agreed, positions, float(np.mean(deltas))


@pytest.mark.slow
def test_decoder_int4_is_gated_by_teacher_forced_agreement(lm_bundle, tmp_path):
    bundle = lm_bundle["bundle"]
    manifest = valid(bundle / "manifest.json", "manifest")
    report = valid(bundle / "report.json", "report")
    assert "int4" in manifest["variants"] and manifest["variants"]["int4"]["precision"] == "int4"
    assert report["variants"]["int4"]["settings"] == {"block_size": 32, "scheme": "sym"}
    parity = manifest["generation"]["parity"]
    assert report["generation"] == parity
    golden = bundle / manifest["generation"]["golden"]
    reported = parity["int4"]["teacher_forced"]
    # the same figures, measured here on the shipped file with onnxruntime alone
    agreed, positions, mean_delta = _independent_teacher_forced(bundle / "models/int4.onnx", golden)
    assert reported["positions"] == positions
    assert reported["agreement"] == agreed / positions
    assert reported["mean_logprob_delta"] == pytest.approx(mean_delta, rel=1e-6, abs=1e-9)
    assert reported["tolerance"] == {"min_agreement": 0.5} and parity["int4"]["passed"] == (agreed / positions >= 0.5)
    assert manifest["variants"]["int4"]["tolerance"]["logits"]["min_agreement"] == 0.5
    # fp32 agrees everywhere, measured the same way
    agreed, positions, _ = _independent_teacher_forced(bundle / "models/fp32.onnx", golden)
    assert agreed == positions
    # int8 with its threshold at 1.0: refused by the gate unless it agrees everywhere, and the notes say why
    int8 = parity["int8_dynamic"]["teacher_forced"]
    assert ("int8_dynamic" in manifest["variants"]) == (int8["agreement"] == 1.0)
    if int8["agreement"] < 1.0:
        assert any("int8_dynamic not shipped" in n and "teacher-forced next-token agreement" in n for n in manifest["notes"])


@pytest.mark.slow
def test_decoder_int4_weights_over_3x_smaller(lm_bundle):
    bundle = lm_bundle["bundle"]
    fp32 = q.weight_bytes(bundle / "models/fp32.onnx")
    int4 = q.weight_bytes(bundle / "models/int4.onnx")
    assert fp32 / int4 >= 3.0, (fp32, int4)
    report = json.loads((bundle / "report.json").read_text())
    assert (report["variants"]["fp32"]["weight_bytes"], report["variants"]["int4"]["weight_bytes"]) == (fp32, int4)
    nodes = onnx.load(str(bundle / "models/int4.onnx"), load_external_data=False).graph.node
    manifest = json.loads((bundle / "manifest.json").read_text())
    # per layer q, k, v, o, gate, up, down (the builder's graph fuses q, k, v into one), and lm_head
    per_layer = 5 if manifest["generation"]["graph"]["exporter"] == "onnxruntime-genai" else 7
    assert sum(n.op_type == "MatMulNBits" for n in nodes) >= 2 * per_layer + 1


@pytest.mark.slow
def test_decoder_check_json_gives_the_export_agreement(lm_bundle, cli, tmp_path):
    manifest = json.loads((lm_bundle["bundle"] / "manifest.json").read_text())
    code, text = cli("check", lm_bundle["bundle"], "--variant", "int4", "--variant", "fp32", "--json", tmp_path / "c.json", "--table")
    doc = valid(tmp_path / "c.json", "parity")
    rows = {c["sample"]: c for c in doc["checks"] if c["variant"] == "int4" and c["output"] == "generation"}
    exported = manifest["generation"]["parity"]["int4"]["teacher_forced"]
    assert [rows[s["label"]]["metrics"]["agreement"] for s in exported["sequences"]] == \
        [s["agreement"] for s in exported["sequences"]]
    # judged by the recorded threshold (0.5), and on generation only: no single-step rows for int4
    assert all(r["passed"] == exported["passed"] for r in rows.values())
    assert {c["output"] for c in doc["checks"] if c["variant"] == "int4"} == {"generation"}
    assert code == (0 if exported["passed"] else 1), text
    assert "Generation (golden prompts)" in text and "teacher-forced agreement" in text
