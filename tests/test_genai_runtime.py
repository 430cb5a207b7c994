"""edgeship/runtimes/genai.py: onnxruntime-genai's loop over a decoder bundle's own graph.

The generation tests need the optional ``onnxruntime_genai`` package and skip cleanly without it;
the config and error-path tests run everywhere.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from edgeship.errors import ParityError, SpecError, TargetUnavailableError
from edgeship.generate import DecoderLayout
from edgeship.runtimes import genai

needs_genai = pytest.mark.skipif(not genai.available(), reason="onnxruntime-genai is not installed")


def layout(layers: int = 2, position_ids: bool = True) -> DecoderLayout:
    past = tuple(f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value"))
    present = tuple(f"present.{i}.{k}" for i in range(layers) for k in ("key", "value"))
    return DecoderLayout(past, present, kv_heads=2, head_dim=16, past_dtype="float32", position_ids=position_ids)


def test_config_describes_the_graph_from_its_layout():
    c = genai.genai_config(layout(3), 300, {"eos_token_id": [2], "pad_token_id": 0, "bos_token_id": 1}, threads=2)
    d = c["model"]["decoder"]
    assert (d["num_hidden_layers"], d["num_key_value_heads"], d["head_size"]) == (3, 2, 16)
    assert d["inputs"]["position_ids"] == "position_ids"
    assert d["inputs"]["past_key_names"] % 1 == "past_key_values.1.key"
    assert d["outputs"]["present_value_names"] % 2 == "present.2.value"
    assert d["session_options"]["intra_op_num_threads"] == 2
    assert (c["model"]["vocab_size"], c["model"]["eos_token_id"], c["model"]["bos_token_id"]) == (300, [2], 1)
    assert c["search"]["past_present_share_buffer"] is False and c["search"]["do_sample"] is False
    # no position_ids input, no eos: the keys are left out / a never-matching id
    c2 = genai.genai_config(layout(1, position_ids=False), 50, {}, share_buffer=True)
    assert "position_ids" not in c2["model"]["decoder"]["inputs"]
    assert c2["model"]["eos_token_id"] == [-1] and c2["search"]["past_present_share_buffer"] is True
    assert "intra_op_num_threads" not in c2["model"]["decoder"]["session_options"]


def test_without_onnxruntime_genai_it_says_what_to_install(monkeypatch):
    monkeypatch.setattr(genai, "available", lambda: False)
    fake = SimpleNamespace(spec=None, manifest={})
    with pytest.raises(TargetUnavailableError, match=r"edgeship\[genai\]"):
        genai.GenaiDecoder(fake)


def test_a_bundle_without_golden_generation_is_refused():
    fake = SimpleNamespace(manifest={"generation": {"eos_token_id": [2]}}, bundle=SimpleNamespace(files={}))
    with pytest.raises(SpecError, match="no golden generation"):
        genai.golden_prompts(fake)


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory):
    pytest.importorskip("transformers")
    from hf_lm_fixtures import save_causal_lm
    from typer.testing import CliRunner

    from edgeship.cli import app

    tmp = tmp_path_factory.mktemp("genai")
    folder = save_causal_lm(tmp / "tiny-llama", "llama", layers=2, hidden=64)
    result = CliRunner().invoke(app, ["export", str(folder), "-o", str(tmp / "tiny.edgeship"), "--quantize", "fp32"])
    assert result.exit_code == 0, result.output
    return tmp / "tiny.edgeship"


@pytest.mark.slow
@needs_genai
def test_genai_gives_edgeship_loop_tokens_and_stops_at_eos(lm_bundle):
    import edgeship
    from edgeship.generate import generate

    m = edgeship.load(lm_bundle)
    g = genai.open_genai(m)
    assert g.share_buffer is False  # torch.onnx's graph: presents are concatenated, not written in place
    prompt = [1, 17, 42, 99, 7]
    want = generate(m, prompt, max_new_tokens=12, eos_token_id=[]).tokens[0]
    got = g.generate(prompt, max_new_tokens=12, eos_token_id=[])
    assert got == want and len(got) == 12
    stop = want[4]  # the fifth token as the end of sequence: both stop right after its first use
    assert g.generate(prompt, max_new_tokens=12, eos_token_id=stop) == \
        generate(m, prompt, max_new_tokens=12, eos_token_id=stop).tokens[0] == want[:want.index(stop) + 1]
    with pytest.raises(SpecError, match="vocabulary"):
        g.generate([10 ** 6], max_new_tokens=2)


@pytest.mark.slow
@needs_genai
def test_tokens_that_differ_fail_the_parity_gate(lm_bundle, monkeypatch):
    import edgeship

    real = genai.GenaiDecoder.generate

    def off_by_one(self, prompt, max_new_tokens=32, eos_token_id=None):
        out = real(self, prompt, max_new_tokens, eos_token_id)
        return out[:3] + [(out[3] + 1) % self.vocab] + out[4:]

    monkeypatch.setattr(genai.GenaiDecoder, "generate", off_by_one)
    with pytest.raises(ParityError, match="from step 3"):
        genai.open_genai(edgeship.load(lm_bundle))


TORCH_FREE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'onnx', 'onnxscript'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import edgeship
from edgeship.generate import generate
from edgeship.runtimes.genai import open_genai
m = edgeship.load(sys.argv[1])
toks = open_genai(m).generate([1, 5, 9], max_new_tokens=6, eos_token_id=[])
assert toks == generate(m, [1, 5, 9], max_new_tokens=6, eos_token_id=[]).tokens[0]
assert not any(k.split('.')[0] in ('torch', 'transformers', 'onnx') for k in sys.modules)
print('ok', len(toks))
"""


@pytest.mark.slow
@needs_genai
def test_genai_runs_where_torch_cannot_be_imported(lm_bundle):
    r = subprocess.run([sys.executable, "-c", TORCH_FREE, str(lm_bundle)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ok 6" in r.stdout
