"""The decoder export (edgeship/pipeline/decoder.py) on folders users get wrong or attackers craft:
tokenizers failures and panics, config.json sizes of the wrong type or far past the weights, and
special token ids outside the vocabulary; each is a clear exit 2 (ModelLoadError), or an export whose
manifest records only ids of the vocabulary (and the model's context length)."""

from __future__ import annotations

import json
import shutil

import pytest

from edgeship.errors import ModelLoadError
from tests.hf_lm_fixtures import save_causal_lm

TINY = dict(layers=1, hidden=32, heads=2, kv_heads=1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_causal_lm(tmp_path_factory.mktemp("lm") / "model", "llama", **TINY)


def _copy(base, tmp_path, edit=None, name="config.json"):
    d = tmp_path / "model"
    shutil.copytree(base, d)
    if edit is not None:
        c = json.loads((d / name).read_text())
        edit(c)
        (d / name).write_text(json.dumps(c))
    return d


def _panic():
    """A real pyo3 PanicException of the tokenizers library (a BaseException, not an Exception)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    t = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Split(Regex("(a+)+c"), "isolated")  # Oniguruma's retry limit
    try:
        t.encode("a" * 24 + "b")
    except BaseException as e:  # noqa: BLE001 - the panic type is not importable
        return e
    pytest.skip("this tokenizers version does not panic on the backtracking limit")


def test_a_tokenizers_panic_in_the_golden_prompts_is_a_model_load_error(base, monkeypatch):
    import tokenizers

    from edgeship.exporters.hf_decoder import golden_prompts

    panic = _panic()
    assert not isinstance(panic, Exception)

    class Panicking:
        @staticmethod
        def from_file(path):
            return Panicking()

        def encode_batch(self, texts):
            raise panic

    monkeypatch.setattr(tokenizers, "Tokenizer", Panicking)
    with pytest.raises(ModelLoadError, match="golden prompts.*PanicException"):
        golden_prompts(base / "tokenizer.json", 300)


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(num_hidden_layers="2"), "num_hidden_layers is '2'; it must be a positive whole number"),
    (lambda c: c.update(hidden_size=-32), "hidden_size is -32"),
    (lambda c: c.update(num_attention_heads=2.5), "num_attention_heads is 2.5"),
    (lambda c: c.update(vocab_size=10 ** 12), "GiB of fp32 weights, but the folder's weight files hold"),
    (lambda c: c.update(vocab_size=400), "the weights' shapes do not match the sizes config.json gives"),
], ids=["layers-str", "negative-hidden", "float-heads", "huge-vocab", "vocab-mismatch"])
def test_a_crafted_config_is_a_clear_exit_2(base, tmp_path, cli, edit, match):
    folder = _copy(base, tmp_path, edit)
    code, out = cli("export", folder, "-o", tmp_path / "b.edgeship")
    assert code == 2, out
    assert match in " ".join(out.split())
    assert not (tmp_path / "b.edgeship").exists()


def test_a_tokenizer_json_the_library_cannot_read_is_a_clear_exit_2(base, tmp_path, cli):
    folder = _copy(base, tmp_path)
    (folder / "tokenizer.json").write_text('{"model": 5}')
    code, out = cli("export", folder, "-o", tmp_path / "b.edgeship")
    assert code == 2, out
    assert "re-save the tokenizer" in " ".join(out.split())


def test_special_ids_outside_the_vocabulary_are_left_out_and_the_bundle_generates(base, tmp_path, cli):
    """pad_token_id=-1 (old LLaMA configs) and an eos list with an id past the vocabulary (300 here):
    the manifest keeps the ids in [0, 300), so generate (which refuses a pad outside it) works; the
    context length (max_position_embeddings) is recorded too."""
    import edgeship
    from tests.test_schemas import valid

    def edit(c):
        c.update(pad_token_id=-1, eos_token_id=[2, 100000])

    folder = _copy(base, tmp_path, edit)
    _copy_edit = json.loads((folder / "generation_config.json").read_text())
    edit(_copy_edit)
    (folder / "generation_config.json").write_text(json.dumps(_copy_edit))
    out_path = tmp_path / "b.edgeship"
    code, out = cli("export", folder, "-o", out_path, "--quantize", "fp32", "--opset", "18")
    assert code == 0, out
    gen = json.loads((out_path / "manifest.json").read_text())["generation"]
    assert gen["eos_token_id"] == [2] and "pad_token_id" not in gen and gen["bos_token_id"] == 1
    assert gen["context_length"] == 256
    valid(out_path / "manifest.json", "manifest")
    from edgeship.pipeline.decoder import _special_ids

    class Gen:  # a generation config whose ids are all out of range: the text config's are kept
        eos_token_id, pad_token_id, bos_token_id = -5, 300, None

    class Model:
        generation_config = Gen()

    class Text:
        eos_token_id, pad_token_id, bos_token_id = 2, 0, 1

    assert _special_ids(Model(), Text(), 300) == ([2], 0, 1)
    with edgeship.load(out_path) as m:
        tokens = m.generate([[1, 5, 9], [1, 7]], max_new_tokens=4)
    assert len(tokens) == 2 and all(0 < len(t) <= 4 for t in tokens)


def _short_gpt2(folder, positions):
    """A GPT-2-style LM (learned positions: it cannot index past n_positions) with a short context."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.hf_lm_fixtures import build_tokenizer

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300, n_positions=positions, bos_token_id=1,
                        eos_token_id=2, pad_token_id=0)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


def test_a_context_shorter_than_the_golden_generation_is_fitted(tmp_path, cli):
    """n_positions=8: the golden prompts (up to 8 tokens) and 16 new tokens would index past the learned
    positions in transformers' own generate; the export cuts the prompts and new tokens to fit."""
    import numpy as np

    import edgeship

    folder = _short_gpt2(tmp_path / "gpt2", 8)
    out_path = tmp_path / "b.edgeship"
    code, out = cli("export", folder, "-o", out_path, "--quantize", "fp32", "--opset", "18")
    assert code == 0, out
    gen = json.loads((out_path / "manifest.json").read_text())["generation"]
    assert gen["context_length"] == 8 and gen["max_new_tokens"] == 4
    data = np.load(out_path / gen["golden"])
    assert all(data[f"{i}/prompt"].size + data[f"{i}/tokens"].size <= 8 for i in range(3))
    assert edgeship.check(out_path).passed


def test_a_context_too_short_to_trace_is_a_clear_exit_2(tmp_path, cli):
    folder = _short_gpt2(tmp_path / "gpt2", 4)
    code, out = cli("export", folder, "-o", tmp_path / "b.edgeship", "--opset", "18")
    assert code == 2, out
    assert "max_position_embeddings is 4; the decoder export needs a context of at least 8" in " ".join(out.split())


def test_the_context_falls_back_to_the_generation_section_and_is_validated():
    """Without a tokenizer, generate's context check reads generation.context_length (the config's
    max_position_embeddings); a crafted value is refused, not ignored."""
    import types

    from edgeship.errors import BundleError
    from edgeship.generate import context_length

    def model(pre, gen):
        return types.SimpleNamespace(preprocess=pre, manifest={"generation": gen})

    assert context_length(model({}, {"context_length": 8})) == 8
    assert context_length(model({"tokenizer": {"max_length": 6}}, {"context_length": 8})) == 6
    assert context_length(model({}, {})) is None
    for bad in ("x", 0, True, 1 << 30):
        with pytest.raises(BundleError, match="generation.context_length"):
            context_length(model({}, {"context_length": bad}))
