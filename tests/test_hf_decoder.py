"""Decoder LMs: a save_pretrained folder -> one ONNX graph with a KV cache -> a bundle whose
torch-free ``Model.generate`` gives transformers' greedy tokens (tests/hf_lm_fixtures.py builds
the tiny Llama-style and Qwen2-style models)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import edgeship
from edgeship.errors import BundleError, InferenceError, SpecError
from edgeship.generate import generate
from edgeship.parity.metrics import judge, metrics
from edgeship.parity.tolerances import tolerance_for
from tests.hf_lm_fixtures import ARCHS, FAMILIES, build_tokenizer, greedy_reference, save_causal_lm, save_family, save_gpt2

pytestmark = pytest.mark.slow  # each architecture exports once (~10 s) for the module

PROMPTS = [[1, 5, 9, 20, 33], [1, 7, 42]]
TEXT = "hello world, the quick brown fox"
NEW = 16


def _has_builder() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime_genai") is not None


# onnxruntime-genai's builder graph where it is installed (Python 3.11+), and the torch.onnx graph
GRAPHS = [(a, "onnxruntime-genai") for a in ARCHS if _has_builder()] + [(a, "torch.onnx") for a in ARCHS
                                                                      if not _has_builder() or a == "llama"]


def without_builder(mp: pytest.MonkeyPatch) -> None:
    """As if onnxruntime-genai were not installed: its import fails."""
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.split(".")[0] == "onnxruntime_genai":
            raise ImportError(f"No module named {name!r} (test)")
        return real(name, *args, **kwargs)

    mp.setattr(builtins, "__import__", fake)


@pytest.fixture(scope="module", params=GRAPHS, ids=lambda p: "-".join(p))
def lm(request, tmp_path_factory):
    """(folder, bundle, reference tokens and logits per prompt, reference tokens of TEXT) per architecture,
    exported with ``edgeship export DIR -o OUT`` and no other flag: onnxruntime-genai's builder graph (the
    faster, by conftest's fixed timing), and once the torch.onnx graph (the builder's import made to fail)."""
    from typer.testing import CliRunner

    from edgeship.cli import app

    arch, graph = request.param
    d = tmp_path_factory.mktemp(f"lm-{arch}-{graph}")
    folder = save_causal_lm(d / "model", arch)
    with pytest.MonkeyPatch.context() as mp:
        if graph == "torch.onnx":
            without_builder(mp)
        result = CliRunner().invoke(app, ["export", str(folder), "-o", str(d / "lm.edgeship")])
    assert result.exit_code == 0, result.output
    text_ids = build_tokenizer()(TEXT)["input_ids"]
    tokens, logits = greedy_reference(folder, PROMPTS + [text_ids], NEW, eos_token_id=None)
    return {"arch": arch, "graph": graph, "folder": folder, "bundle": d / "lm.edgeship", "output": result.output,
            "tokens": tokens, "logits": logits, "text_ids": text_ids}


def test_export_with_no_flags_writes_a_decoder_bundle_with_the_standard_names(lm):
    m = json.loads((lm["bundle"] / "manifest.json").read_text())
    ins = [t["name"] for t in m["io"]["inputs"]]
    outs = [t["name"] for t in m["io"]["outputs"]]
    builder = lm["graph"] == "onnxruntime-genai"  # positions from the mask: no position_ids input
    assert ins == ["input_ids", "attention_mask"] + ([] if builder else ["position_ids"]) + [
        "past_key_values.0.key", "past_key_values.0.value", "past_key_values.1.key", "past_key_values.1.value"]
    assert outs == ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    assert m["io"]["inputs"][ins.index("past_key_values.0.key")]["shape"] == ["batch", 2, "past_sequence", 16]
    assert m["generation"]["graph"]["exporter"] == lm["graph"]
    assert m["generation"]["padded_batches"] is (not builder)
    assert m["source"]["exporter"] == ("onnxruntime-genai model builder" if builder else "dynamo")
    assert f"{lm['graph']} graph" in lm["output"]  # the export's graph stage line says which
    assert m["generation"]["parity"]["fp32"]["tokens_identical"] is True
    assert {"models/fp32.onnx", "golden/generation.npz", "preprocess/tokenizer.json", "report.json"} <= set(m["files"])
    assert m["source"]["format"] == "hf_folder" and m["task"]["name"] == "causal-lm"
    assert "generation" in lm["output"]  # the export's parity table shows the generation rows
    import onnx  # onnxruntime's optimizer fused the RMSNorms (parity above was judged on the fused graph)

    ops = {n.op_type for n in onnx.load(str(lm["bundle"] / "models/fp32.onnx")).graph.node}
    assert "SkipSimplifiedLayerNormalization" in ops and "Pow" not in ops
    # int8 was built and judged: shipped if its logits pass the int8 tolerance, else recorded why not
    assert "int8_dynamic" in m["generation"]["parity"]
    assert ("int8_dynamic" in m["variants"]) == m["generation"]["parity"]["int8_dynamic"]["passed"]


def test_manifest_and_report_validate_against_their_schemas(lm, tmp_path):
    from tests.test_schemas import valid

    valid(lm["bundle"] / "manifest.json", "manifest")
    valid(lm["bundle"] / "report.json", "report")
    from edgeship.parity.report import write_json

    write_json(edgeship.check(lm["bundle"]), tmp_path / "check.json")  # with its generation rows
    doc = valid(tmp_path / "check.json", "parity")
    assert any(r["output"] == "generation" for r in doc["summary"])


BLOCKED = """
import sys, json
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'onnx', 'onnxscript'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import edgeship
m = edgeship.load(sys.argv[1])
prompts = json.loads(sys.argv[2])
out = {"single": [m.generate(p, max_new_tokens=%d) for p in prompts],
       "text": m.generate(sys.argv[3], max_new_tokens=%d),
       "batch": m.generate(prompts, max_new_tokens=%d)}
assert not {'torch', 'transformers', 'onnx'} & set(sys.modules)
print(json.dumps(out))
""" % (NEW, NEW, NEW)


def test_torch_free_generate_gives_transformers_greedy_tokens(lm):
    r = subprocess.run([sys.executable, "-c", BLOCKED, str(lm["bundle"]), json.dumps(PROMPTS), TEXT],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["single"] == lm["tokens"][:2]
    assert out["text"] == lm["tokens"][2]
    assert out["batch"] == lm["tokens"][:2]  # two lengths, padded on the left
    assert all(len(t) == NEW for t in out["single"])


def test_per_step_logits_are_within_the_fp32_tolerance(lm):
    with edgeship.load(lm["bundle"]) as m:
        for io_binding in (True, False, None):
            got = generate(m, PROMPTS, NEW, output_logits=True, io_binding=io_binding)
            assert got.tokens == lm["tokens"][:2]
            for ref, logits in zip(lm["logits"], got.logits or []):
                assert logits.shape == ref.shape == (NEW, 300)
                assert judge(metrics(ref, logits, tolerance_for("fp32")), tolerance_for("fp32")) is None


def test_eos_stops_early_as_transformers_does(lm):
    eos = lm["tokens"][0][3]  # the 4th greedy token (it may appear earlier too)
    ref, _ = greedy_reference(lm["folder"], PROMPTS[:1], NEW, eos_token_id=eos)
    with edgeship.load(lm["bundle"]) as m:
        got = m.generate(PROMPTS[0], max_new_tokens=NEW, eos_token_id=eos)
        assert got == ref[0] and got[-1] == eos and len(got) <= 4
        assert m.generate(PROMPTS[0], max_new_tokens=NEW, eos_token_id=[]) == lm["tokens"][0]


def test_sampling_is_seeded_and_stays_in_top_k(lm):
    with edgeship.load(lm["bundle"]) as m:
        a = generate(m, PROMPTS[0], 8, [], do_sample=True, top_k=3, temperature=0.8, seed=7, output_logits=True)
        b = m.generate(PROMPTS[0], 8, [], do_sample=True, top_k=3, temperature=0.8, seed=7)
        assert a.tokens[0] == b
        for tok, step in zip(a.tokens[0], a.logits[0] if a.logits else []):
            assert tok in np.argsort(step)[-3:]
        assert m.generate(PROMPTS[0], 8, [], do_sample=True, top_p=1e-9, seed=1) == lm["tokens"][0][:8]  # top_p -> greedy


def test_check_reruns_the_golden_generation(lm, cli):
    code, out = cli("check", str(lm["bundle"]), "--table")  # the table (quiet is the default where CI=true)
    assert code == 0, out
    assert "generation" in out
    report = edgeship.check(lm["bundle"], candidates="all")
    rows = {(c.variant, c.sample): c for c in report.checks if c.output == "generation"}
    shipped = json.loads((lm["bundle"] / "manifest.json").read_text())["variants"]
    assert {s for v, s in rows if v == "fp32"} == {"prompt-0", "prompt-1", "prompt-2"}
    for v in set(shipped) - {"fp32"}:  # a quantized variant is judged by the teacher-forced gate
        gated = [rows[(v, f"prompt-{i}")] for i in range(3)]
        assert all(c.passed and "agreement" in c.metrics for c in gated)
    assert report.passed


def test_check_fails_when_the_golden_tokens_were_changed(lm, tmp_path):
    from edgeship.bundle.layout import sha256_file

    b = tmp_path / "b.edgeship"
    shutil.copytree(lm["bundle"], b)
    gold = b / "golden" / "generation.npz"
    data = dict(np.load(gold))
    data["0/tokens"] = data["0/tokens"].copy()
    data["0/tokens"][1] = (data["0/tokens"][1] + 1) % 300
    with open(gold, "wb") as f:
        np.savez(f, **data)
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["golden/generation.npz"] = {"sha256": sha256_file(gold), "size": gold.stat().st_size}
    (b / "manifest.json").write_text(json.dumps(m))
    report = edgeship.check(b)
    bad = [c for c in report.checks if not c.passed]
    assert [(c.output, c.sample) for c in bad] == [("generation", "prompt-0")]
    assert "greedy tokens differ" in (bad[0].reason or "")


# ---- errors


def test_generate_from_many_threads_on_one_model_gives_each_prompt_its_own_tokens(lm):
    """An app shares one Model between threads: each generate call keeps its own cache (the shared
    buffer of the builder graph included), so the tokens are those of the same prompts run one by one."""
    from concurrent.futures import ThreadPoolExecutor

    prompts = [[1, *range(10 + i, 13 + i + i % 5)] for i in range(16)]
    with edgeship.load(lm["bundle"]) as m:
        alone = [m.generate(p, max_new_tokens=12) for p in prompts]
        with ThreadPoolExecutor(8) as pool:
            for _ in range(2):
                assert list(pool.map(lambda p: m.generate(p, max_new_tokens=12), prompts)) == alone
    assert len({tuple(t) for t in alone}) > 1  # the prompts really differ in what they generate


def test_inspect_names_the_graph_and_the_context(lm, cli, tmp_path):
    from test_schemas import valid

    code, out = cli("inspect", lm["bundle"], "--json", tmp_path / "i.json")
    assert code == 0 and f"task: causal-lm; text through preprocess/tokenizer.json, max_length 256; generate on the " \
                         f"{lm['graph']} graph, context 256" in out, out
    task = valid(tmp_path / "i.json", "inspect")["task"]
    assert task["graph"] == lm["graph"] and task["context_length"] == 256 and task["labels"] is None


def test_generate_refuses_bad_arguments(lm):
    with edgeship.load(lm["bundle"]) as m:
        for bad in (0, -1, 1.5, True, "8"):
            with pytest.raises(SpecError, match="max_new_tokens"):
                m.generate(PROMPTS[0], max_new_tokens=bad)
        with pytest.raises(SpecError, match="empty"):
            m.generate([[1, 2], []], max_new_tokens=2)
        with pytest.raises(SpecError, match="vocabulary"):
            m.generate([1, 10_000], max_new_tokens=2)
        with pytest.raises(SpecError, match="temperature"):
            m.generate([1, 2], max_new_tokens=2, do_sample=True, temperature=0)
        with pytest.raises(SpecError, match="top_p"):
            m.generate([1, 2], max_new_tokens=2, do_sample=True, top_p=0)
        with pytest.raises(SpecError, match="prompt of type"):
            m.generate(3.5, max_new_tokens=2)
    with pytest.raises(InferenceError, match="closed"):
        m.generate(PROMPTS[0], max_new_tokens=2)


def test_generate_on_a_bundle_that_is_not_a_decoder(mlp_bundle):
    with edgeship.load(mlp_bundle) as m:
        with pytest.raises(SpecError, match="not a decoder language model"):
            m.generate([1, 2, 3], max_new_tokens=4)


def test_a_crafted_generation_section_is_refused(lm, tmp_path):
    b = tmp_path / "b.edgeship"
    shutil.copytree(lm["bundle"], b)
    m = json.loads((b / "manifest.json").read_text())
    m["generation"]["eos_token_id"] = ["x"]
    (b / "manifest.json").write_text(json.dumps(m))
    with edgeship.load(b) as model:
        with pytest.raises(BundleError, match="eos_token_id"):
            model.generate([1, 2], max_new_tokens=2)
    m["generation"]["golden"] = "../elsewhere.npz"
    m["generation"]["eos_token_id"] = [2]
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="golden"):
        edgeship.check(b)


def test_text_prompt_without_a_tokenizer_says_what_to_do(lm, tmp_path):
    b = tmp_path / "b.edgeship"
    shutil.copytree(lm["bundle"], b)
    m = json.loads((b / "manifest.json").read_text())
    del m["preprocess"], m["files"]["preprocess/tokenizer.json"]
    (b / "preprocess" / "tokenizer.json").unlink()
    (b / "manifest.json").write_text(json.dumps(m))
    with edgeship.load(b) as model:
        with pytest.raises(SpecError, match="tokenizer"):
            model.generate("hello", max_new_tokens=2)
        assert model.generate(PROMPTS[0], max_new_tokens=4) == lm["tokens"][0][:4]


def test_a_graph_without_position_ids_generates_the_same_tokens(lm, tmp_path):
    import onnxruntime as ort

    from edgeship.exporters.hf_decoder import export_decoder_onnx, load_causal_lm
    from edgeship.generate import decoder_layout, run_loop
    from edgeship.hf.folder import read_folder

    if lm["arch"] != "llama":
        pytest.skip("one architecture shows it")
    spec = export_decoder_onnx(load_causal_lm(read_folder(lm["folder"])), tmp_path / "nopos.onnx", position_ids=False)
    layout = decoder_layout(spec)
    assert "position_ids" not in spec.input_names and not layout.position_ids
    session = ort.InferenceSession(str(tmp_path / "nopos.onnx"), providers=["CPUExecutionProvider"])
    for prompt, ref in zip(PROMPTS, lm["tokens"]):
        assert run_loop(session, layout, [prompt], NEW).tokens[0] == ref


def test_a_gpt2_folder_exports_and_generates_as_transformers(tmp_path):
    """Another family: learned position embeddings, LayerNorm (fused by onnxruntime's optimizer), Conv1D."""
    from edgeship.config import ExportConfig
    from edgeship.hf.folder import read_folder
    from edgeship.pipeline.decoder import export_causal_lm

    folder = save_gpt2(tmp_path / "gpt2")
    result = export_causal_lm(read_folder(folder), ExportConfig(model=folder, output=tmp_path / "g.edgeship",
                                                                quantize=("fp32",)))
    ref, _ = greedy_reference(folder, PROMPTS, NEW)
    with edgeship.load(result.bundle) as m:
        assert m.generate(PROMPTS, max_new_tokens=NEW) == ref


@pytest.mark.parametrize("family", list(FAMILIES))
def test_other_families_export_with_no_flag_and_generate_as_transformers(tmp_path, cli, family):
    """What a Llama-style model lets an export assume, and these do not: every graph input present after
    onnxruntime's optimizer (Bloom), a key/value head count the config names otherwise (Falcon), a cache
    that trims itself to a sliding window shorter than the prompt (Mistral, Gemma2), a builder graph that
    onnxruntime cannot run (Gemma2, Phi: the torch.onnx graph ships, with a note)."""
    folder = save_family(tmp_path / family, family)
    code, out = cli("export", folder, "-o", tmp_path / "b.edgeship", "--quantize", "fp32")
    assert code == 0, out
    prompts = PROMPTS + [[1, *range(40, 52)]]  # 13 tokens: past any window above
    ref, _ = greedy_reference(folder, prompts, NEW)
    with edgeship.load(tmp_path / "b.edgeship") as m:
        assert [m.generate(p, max_new_tokens=NEW) for p in prompts] == ref
        assert m.generate(prompts[:2], max_new_tokens=NEW) == ref[:2]  # a padded batch where the graph takes one
    assert edgeship.check(tmp_path / "b.edgeship").passed


def test_a_bfloat16_llama_folder_exports_and_passes_parity(tmp_path, cli):
    """Most real small LMs are saved in bf16 (transformers 5 loads them so by default): the export loads
    float32, and the bundle's golden generation passes against it."""
    folder = save_causal_lm(tmp_path / "bf16", "llama", dtype="bfloat16")
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    code, out = cli("export", folder, "-o", tmp_path / "bf16.edgeship", "--quantize", "fp32")
    assert code == 0, out
    report = edgeship.check(tmp_path / "bf16.edgeship")
    assert report.passed and any(c.output == "generation" for c in report.checks)


def _regolden(lm, tmp_path, edit):
    """A copy of the bundle with golden/generation.npz edited by ``edit(data)`` and the manifest re-signed."""
    from edgeship.bundle.layout import sha256_file

    b = tmp_path / "b.edgeship"
    shutil.copytree(lm["bundle"], b)
    gold = b / "golden" / "generation.npz"
    data = dict(np.load(gold))
    edit(data)
    with open(gold, "wb") as f:
        np.savez(f, **data)
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["golden/generation.npz"] = {"sha256": sha256_file(gold), "size": gold.stat().st_size}
    (b / "manifest.json").write_text(json.dumps(m))
    return b


def _set(key, value):
    def edit(data):
        data[key] = value(data[key])
    return edit


@pytest.mark.parametrize("edit, match", [
    (_set("0/prompt", lambda p: np.concatenate([p[:-1], [10 ** 9]]).astype(p.dtype)), "token id 1000000000 outside"),
    (_set("0/prompt", lambda p: np.concatenate([p[:-1], [-1]]).astype(np.int64)), "token id -1 outside"),
    (_set("0/logits", lambda lg: lg[:, :-7]), "logits 293 wide"),
    (_set("0/prompt", lambda p: np.ones(100_000, p.dtype)), "100000 tokens"),
], ids=["huge-id", "negative-id", "vocab-width", "long-prompt"])
def test_a_crafted_resigned_golden_generation_is_refused(lm, tmp_path, cli, edit, match):
    b = _regolden(lm, tmp_path, edit)
    with pytest.raises(BundleError, match=match):
        edgeship.check(b)
    code, out = cli("check", str(b))
    assert code == 2, out


def test_a_session_failure_during_the_golden_generation_is_an_inference_error(lm):
    from edgeship.generate import decoder_layout
    from edgeship.parity.decoder import prompt_checks

    class Broken:
        def get_outputs(self):
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : index out of range")

    with edgeship.load(lm["bundle"]) as m:
        layout = decoder_layout(m.spec)
    golden = ([[1, 2]], [[3]], [np.zeros((1, 300), np.float32)])
    with pytest.raises(InferenceError, match="golden prompt 0.*INVALID_ARGUMENT"):
        prompt_checks(Broken(), layout, golden, [2], 0, "fp32", "fp32")


def test_generate_refuses_more_user_mistakes_as_spec_errors(lm):
    with edgeship.load(lm["bundle"]) as m:
        for bad in ("x", True, -1, 300, 1.0):
            with pytest.raises(SpecError, match="pad_token_id"):
                generate(m, [[1, 2], [3]], 2, pad_token_id=bad)
        for bad in (-1, "x", 1.5, True):
            with pytest.raises(SpecError, match="seed"):
                m.generate([1, 2], max_new_tokens=2, do_sample=True, seed=bad)
        for bad in ([["a"]], [[1.7, 2]], [[1, True]], [np.array([1.5, 2.0])], [np.array([[1, 2]])]):
            with pytest.raises(SpecError, match="not a list of token ids"):
                m.generate(bad, max_new_tokens=2)
        for bad in (True, np.bool_(True)):
            with pytest.raises(SpecError, match="temperature"):
                m.generate([1, 2], max_new_tokens=2, do_sample=True, temperature=bad)
        a = generate(m, [1, 2], 4, [], do_sample=True, temperature=np.float32(0.7), top_p=np.float64(0.9), seed=3)
        b = generate(m, [1, 2], 4, [], do_sample=True, temperature=0.7, top_p=0.9, seed=3)
        assert a.tokens == b.tokens and len(a.tokens[0]) == 4
        assert generate(m, [[1, 2], [3]], 2, pad_token_id=np.int64(0)).tokens


def test_nan_logits_while_sampling_are_an_inference_error():
    from edgeship.generate import _pick

    logits = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]], np.float32)
    with pytest.raises(InferenceError, match="NaN"):
        _pick(logits, True, 1.0, 0, 1.0, np.random.default_rng(0))
    with pytest.raises(InferenceError, match="NaN"):
        _pick(np.full((1, 3), -np.inf, np.float32), True, 1.0, 0, 1.0, np.random.default_rng(0))


def test_a_manifest_pad_id_outside_the_vocabulary_is_refused(lm, tmp_path):
    b = tmp_path / "b.edgeship"
    shutil.copytree(lm["bundle"], b)
    m = json.loads((b / "manifest.json").read_text())
    m["generation"]["pad_token_id"] = 300
    (b / "manifest.json").write_text(json.dumps(m))
    with edgeship.load(b) as model:
        with pytest.raises(BundleError, match="pad_token_id is 300, outside"):
            model.generate([[1, 2], [3]], max_new_tokens=2)


def test_a_text_prompt_is_not_truncated_and_the_context_is_enforced(lm):
    """generate(text) never cuts the prompt: prompt + max_new_tokens over the model's context (256 here:
    max_position_embeddings, recorded as preprocess.tokenizer.max_length) is a SpecError."""
    words = "the quick brown fox jumps over the lazy dog "
    tok = build_tokenizer()
    with edgeship.load(lm["bundle"]) as m:
        assert m.preprocess["tokenizer"]["max_length"] == 256
        long = words * 10
        n = len(tok(long)["input_ids"])
        assert n > 256
        with pytest.raises(SpecError, match=f"a prompt of {n} tokens plus max_new_tokens=2 is {n + 2} positions, "
                                            "over the model's context of 256"):
            m.generate(long, max_new_tokens=2)
        with pytest.raises(SpecError, match="over the model's context of 256"):
            m.generate([1] * 250, max_new_tokens=7)
        fits = words * 7
        ids = tok(fits)["input_ids"]
        assert len(ids) + 4 <= 256
        assert m.generate(fits, max_new_tokens=4) == m.generate(ids, max_new_tokens=4)
        assert len(m.generate([1] * 250, max_new_tokens=6)) == 6
        assert m.tokenizer.truncation["max_length"] == 256  # the shared tokenizer was not switched


def test_the_builder_graph_runs_with_one_shared_cache_buffer_on_cpu(lm, monkeypatch):
    """onnxruntime-genai's GroupQueryAttention graph: by default the loop binds one cache buffer per
    past as both past and present (no step copies the cache); tokens, logits, sampling, equal-length
    batches, eos and a buffer that must grow give what the numpy loop (io_binding=False) gives."""
    import edgeship.generate as gen

    if lm["graph"] != "onnxruntime-genai":
        pytest.skip("the shared cache is for the builder's GroupQueryAttention graph")
    steps = []
    real_step = gen._SharedCache.step
    monkeypatch.setattr(gen._SharedCache, "step", lambda self, f, p: steps.append(1) or real_step(self, f, p))
    with edgeship.load(lm["bundle"]) as m:
        got = generate(m, PROMPTS, NEW, output_logits=True)
        assert len(steps) == 2 * NEW  # two lengths: one prompt at a time, every step on the shared buffer
        plain = generate(m, PROMPTS, NEW, output_logits=True, io_binding=False)
        assert len(steps) == 2 * NEW
        assert got.tokens == plain.tokens == lm["tokens"][:2]
        for a, b in zip(got.logits or [], plain.logits or []):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        same = [PROMPTS[0], [1, 7, 42, 8, 3]]  # one length: one batch
        assert generate(m, same, NEW).tokens == generate(m, same, NEW, io_binding=False).tokens
        kw = dict(do_sample=True, top_k=5, temperature=0.9, seed=3)
        assert generate(m, same, NEW, [], **kw).tokens == generate(m, same, NEW, [], io_binding=False, **kw).tokens
        eos = lm["tokens"][0][3]
        assert m.generate(PROMPTS[0], NEW, eos) == generate(m, PROMPTS[0], NEW, eos, io_binding=False).tokens[0]
        monkeypatch.setattr(gen, "SHARED_CACHE_START", 2)  # the buffer grows (doubles) during the prefill and decode
        assert m.generate(PROMPTS[0], NEW) == lm["tokens"][0]


def test_a_wrong_shared_cache_claim_is_an_inference_error_saying_what_to_do(lm, tmp_path):
    if lm["graph"] != "torch.onnx":
        pytest.skip("a torch.onnx graph concatenates its cache: it cannot share one buffer")
    b = tmp_path / "b.edgeship"
    shutil.copytree(lm["bundle"], b)
    m = json.loads((b / "manifest.json").read_text())
    m["generation"]["padded_batches"] = False  # claims onnxruntime-genai's GroupQueryAttention graph
    (b / "manifest.json").write_text(json.dumps(m))
    with edgeship.load(b) as model:
        with pytest.raises(InferenceError, match="io_binding=False"):
            model.generate(PROMPTS[0], max_new_tokens=4)
        assert generate(model, PROMPTS[0], 4, io_binding=False).tokens[0] == lm["tokens"][0][:4]
