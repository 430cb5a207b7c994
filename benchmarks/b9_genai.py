"""B9's experiment engine (not part of edgeship): onnxruntime-genai's generation loop (``og.Generator``,
C++) over a decoder bundle's own graph. Measured slower than edgeship's own loop on the same graph
(benchmarks/README.md, B9x), so edgeship does not use it; it stays here as the benchmark's row.
Needs ``onnxruntime_genai``; torch-free. The bundle's graph is run as it is (the names Optimum and onnxruntime-genai share:
``input_ids``, ``attention_mask``, ``position_ids``, ``past_key_values.{i}.key|value`` in, ``logits``,
``present.{i}.key|value`` out); onnxruntime-genai needs a ``genai_config.json`` describing it, which
this module writes itself from the verified IO spec and the manifest's generation ids, never from a
file in the bundle (a config can name execution providers and libraries to load). The model bytes
are the verified ones (``Bundle.read`` checks their sha256), handed over in memory
(``Config.add_model_data``); the config's temporary folder is removed once the model is open.

Parity-gated like any candidate: :func:`open_genai` runs the bundle's golden generation prompts
through both onnxruntime-genai and edgeship's own loop (:mod:`edgeship.generate`) on the same
variant and refuses (``ParityError``) unless the greedy tokens are identical.

    from b9_genai import open_genai
    m = edgeship.load("tiny-llama.edgeship")
    g = open_genai(m)                          # GenaiDecoder, or ParityError / TargetUnavailableError
    g.generate([1, 5, 9], max_new_tokens=16)   # greedy new token ids, as generate(m, ...) gives them
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.errors import ParityError, SpecError, TargetUnavailableError

GENAI = "onnxruntime-genai"
MODEL_FILE = "model.onnx"
CONTEXT_LENGTH = 1 << 20  # genai's bound on prompt + new tokens; the graph's own positions bound it first


def available() -> bool:
    """Whether the ``onnxruntime_genai`` package can be imported here (without importing it)."""
    return importlib.util.find_spec("onnxruntime_genai") is not None


def genai_config(layout: Any, vocab: int, generation: dict, threads: int | None = None,
                 share_buffer: bool = False) -> dict:
    """onnxruntime-genai's ``genai_config.json`` for an edgeship decoder graph of ``layout``
    (:class:`edgeship.generate.DecoderLayout`): a generic ``decoder``, greedy by default. Without
    ``share_buffer`` the presents are the pasts concatenated with the new step (torch.onnx's graphs);
    with it, the cache is one buffer of the request's length that the graph writes in place
    (``GroupQueryAttention`` graphs, as onnxruntime-genai's model builder writes them)."""
    layers = len(layout.past_names) // 2
    inputs = {"input_ids": "input_ids", "attention_mask": "attention_mask",
              "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"}
    if layout.position_ids:
        inputs["position_ids"] = "position_ids"
    session: dict[str, Any] = {"log_id": "edgeship-genai", "provider_options": []}
    if threads:
        session["intra_op_num_threads"] = int(threads)
    eos = generation.get("eos_token_id")
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    model: dict[str, Any] = {
        "type": "decoder", "context_length": CONTEXT_LENGTH, "vocab_size": int(vocab),
        "eos_token_id": eos_ids or [-1], "pad_token_id": int(generation.get("pad_token_id") or 0),
        "decoder": {
            "session_options": session, "filename": MODEL_FILE, "head_size": int(layout.head_dim),
            "num_key_value_heads": int(layout.kv_heads), "num_hidden_layers": layers,
            "inputs": inputs,
            "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                        "present_value_names": "present.%d.value"},
        },
    }
    if isinstance(generation.get("bos_token_id"), int):
        model["bos_token_id"] = generation["bos_token_id"]
    return {"model": model, "search": {"do_sample": False, "num_beams": 1, "past_present_share_buffer": share_buffer,
                                       "max_length": CONTEXT_LENGTH, "min_length": 0}}


class GenaiDecoder:
    """Greedy generation of one prompt at a time with ``og.Generator`` on a loaded decoder Model's
    variant. Built by :func:`open_genai` (which checks parity); ``generate`` mirrors
    :func:`edgeship.generate.generate` for a single prompt of token ids."""

    runtime = GENAI

    def __init__(self, model: Any, threads: int | None = None):
        from edgeship.generate import decoder_layout, generation_meta

        if not available():
            raise TargetUnavailableError(
                "onnxruntime-genai is not installed here: pip install 'edgeship[genai]' (onnxruntime-genai), "
                "or generate with edgeship's own loop (Model.generate / edgeship.generate.generate).")
        import onnxruntime_genai as og

        self.layout = decoder_layout(model.spec)
        logits = next(t for t in model.spec.outputs if t.name == "logits")
        if len(logits.shape) != 3 or not isinstance(logits.shape[2], int):
            raise SpecError(f"decoder graph: logits has shape {list(logits.shape)}; onnxruntime-genai needs "
                            "[batch, sequence, vocab] with a fixed vocab. Re-export the model.")
        self.vocab = int(logits.shape[2])
        self.meta = generation_meta(model.manifest)
        self.variant = model.variant
        rel = model.manifest["variants"][model.variant]["file"]
        data = model.bundle.read(rel)  # verified: sha256 checked against the manifest
        # a GroupQueryAttention graph keeps its cache in one buffer (the op's name is in the bytes; a
        # wrong guess fails the parity gate of open_genai, never silently)
        self.share_buffer = b"GroupQueryAttention" in data
        config = genai_config(self.layout, self.vocab, self.meta, threads, self.share_buffer)
        folder = Path(tempfile.mkdtemp(prefix="edgeship-genai-"))
        try:
            (folder / "genai_config.json").write_text(json.dumps(config))
            og_config = og.Config(str(folder))
            # genai keeps a pointer to these bytes until the model is built: keep them referenced
            og_config.add_model_data(MODEL_FILE, data)
            self._model = og.Model(og_config)
            og_config.remove_model_data(MODEL_FILE)
            del data
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self._og = og

    def generate(self, prompt: Sequence[int], max_new_tokens: int = 32,
                 eos_token_id: int | Sequence[int] | None = None) -> list[int]:
        """The new token ids after ``prompt`` (greedy), stopping after an end-of-sequence token as
        :func:`edgeship.generate.generate` does (None: the bundle's own; ``[]``: never early)."""
        from edgeship.generate import _eos_set, check_max_new_tokens

        n = check_max_new_tokens(max_new_tokens)
        eos = _eos_set(self.meta.get("eos_token_id") if eos_token_id is None else eos_token_id)
        ids = [int(x) for x in prompt]
        if not ids or not all(0 <= x < self.vocab for x in ids):
            raise SpecError(f"prompt: give at least one token id, each in the model's vocabulary [0, {self.vocab}).")
        og = self._og
        params = og.GeneratorParams(self._model)
        # genai would stop at the config's eos on its own: let it run, stop here on the caller's set
        params.set_search_options(do_sample=False, max_length=len(ids) + n, min_length=len(ids) + n)
        gen = og.Generator(self._model, params)
        gen.append_tokens(np.asarray([ids], dtype=np.int32))
        out: list[int] = []
        while len(out) < n and not gen.is_done():
            gen.generate_next_token()
            tok = int(gen.get_next_tokens()[0])
            out.append(tok)
            if tok in eos:
                break
        return out


def golden_prompts(model: Any) -> tuple[list[list[int]], int]:
    """The golden generation prompts of a decoder bundle (``generation.golden`` in the manifest, a
    verified .npz of ``<i>/prompt`` arrays) and its golden length (``generation.max_new_tokens``).

    Raises:
        SpecError: the bundle has no golden generation; BundleError: it is malformed.
    """
    from edgeship.bundle.golden import read_bundle_npz
    from edgeship.errors import BundleError

    meta = model.manifest.get("generation")
    rel = meta.get("golden") if isinstance(meta, dict) else None
    if not isinstance(rel, str) or rel not in model.bundle.files:
        raise SpecError("this bundle carries no golden generation (manifest generation.golden), so "
                        "onnxruntime-genai cannot be checked against edgeship's loop on it; re-export the model.")
    steps = meta.get("max_new_tokens", 16)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 4096:
        raise BundleError(f"manifest.json: generation.max_new_tokens is {str(steps)[:40]!r}, not a count from 1 "
                          "to 4096; the bundle is corrupt or was edited.")
    prompts = []
    for sample in read_bundle_npz(model.bundle, rel):
        p = sample.get("prompt")
        if not isinstance(p, np.ndarray) or p.ndim != 1 or p.dtype.kind not in "iu" or not 0 < p.size <= 1 << 16:
            raise BundleError(f"bundle {model.bundle.path}: {rel} holds a prompt that is not a 1-D array of "
                              "token ids; the bundle is corrupt or was edited.")
        prompts.append([int(x) for x in p])
    if not prompts:
        raise BundleError(f"bundle {model.bundle.path}: {rel} holds no prompt; the bundle is corrupt or was edited.")
    return prompts, steps


def open_genai(model: Any, threads: int | None = None, max_new_tokens: int | None = None) -> GenaiDecoder:
    """A :class:`GenaiDecoder` for ``model`` once it gives, on the bundle's golden generation prompts,
    exactly the greedy tokens edgeship's own loop gives on the same variant.

    Raises:
        TargetUnavailableError: onnxruntime-genai is not installed.
        SpecError: the bundle is not a decoder (or has no golden generation to check against).
        ParityError: onnxruntime-genai's tokens differ from edgeship's loop.
    """
    from edgeship.generate import generate

    prompts, steps = golden_prompts(model)
    dec = GenaiDecoder(model, threads)
    n = max_new_tokens or steps
    for i, ids in enumerate(prompts):
        want = generate(model, ids, max_new_tokens=n, eos_token_id=[]).tokens[0]
        got = dec.generate(ids, max_new_tokens=n, eos_token_id=[])
        if got != want:
            first = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise ParityError(f"onnxruntime-genai on variant {model.variant}: golden prompt {i} gives tokens that "
                              f"differ from edgeship's own loop from step {first} ({got[first:first + 3]} vs "
                              f"{want[first:first + 3]}); generate with edgeship's loop instead.")
    return dec
