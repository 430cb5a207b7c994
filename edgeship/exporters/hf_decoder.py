"""Causal language models from a ``save_pretrained`` folder: one ONNX graph with a KV cache, in a bundle.

The graph does prefill and decode (as Optimum's merged decoder and onnxruntime-genai's do) and uses
their names: inputs ``input_ids`` [batch, sequence], ``attention_mask`` [batch, total_sequence],
``position_ids`` [batch, sequence], ``past_key_values.{i}.key|value`` [batch, kv_heads, past_sequence,
head_dim]; outputs ``logits`` [batch, sequence, vocab] and ``present.{i}.key|value`` [batch, kv_heads,
total_sequence, head_dim]. A wrapper module takes the flat tensors, builds transformers' ``DynamicCache``
from them and returns the flat outputs; ``torch.onnx.export(dynamo=True)`` exports it with past ≥ 2 and
sequence ≥ 2 (a size of 0 or 1 at export would be specialised), and the graph is then checked with
onnxruntime at past 0 (prefill) and sequence 1 (decode).

Parity is judged on generation: the eager model's greedy tokens (``generate(do_sample=False)``) and
per-step logits for a few golden prompts. fp32 must give the same tokens and logits within the fp32
tolerance; a quantized variant (dynamic int8, weight-only int4) is kept when it passes the
teacher-forced generation gate (:mod:`edgeship.parity.generation`). The golden prompts, tokens and
logits travel in the bundle (``golden/generation.npz``), so ``edgeship check`` re-runs generation on
any machine.

torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeship.errors import ExportError, brief
from edgeship.spec import IOSpec, TensorSpec

if TYPE_CHECKING:
    from edgeship.hf.folder import HFFolder

log = logging.getLogger(__name__)

GOLDEN_TEXTS = ("hello world", "the quick brown fox", "once upon a time there was")
GOLDEN_FILE = "golden/generation.npz"
DEFAULT_NEW_TOKENS = 16
VARIANTS = ("fp32", "int8_dynamic", "int4")
PRECISION = {"fp32": "fp32", "int8_dynamic": "int8", "int4": "int4"}
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32",
             "tensor(bool)": "bool"}


def load_causal_lm(folder: HFFolder) -> Any:
    """The folder's model with transformers' ``AutoModelForCausalLM`` (:func:`edgeship.exporters.hf_model.build_model`:
    config.json's sizes checked first, local files only, eager attention, eval mode).

    Raises:
        ModelLoadError: transformers cannot build it (unknown architecture, missing weights, a config.json
            whose sizes are not positive whole numbers or describe far more weights than the folder holds).
    """
    from edgeship.exporters.hf_model import build_model

    return build_model(folder)


def _wrapper(model: Any, position_ids: bool = True) -> Any:
    import torch
    from transformers.cache_utils import DynamicCache

    layers = model.config.get_text_config(decoder=True).num_hidden_layers

    class FlatCacheLM(torch.nn.Module):
        """Flat tensors in and out; transformers' DynamicCache in between."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, past):
            # full layers, not the config's: a sliding-window layer (Mistral, Gemma2) trims the cache
            # when it outgrows the window, a branch on the past's length that torch.export refuses. The
            # model's sliding-window mask still limits what each layer attends to, as in transformers.
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layers)])
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=True, **{cache_arg: cache})
            flat = []
            for layer in out.past_key_values.layers:
                flat += [layer.keys, layer.values]
            return (out.logits, *flat)

    class WithoutPositions(FlatCacheLM):
        """The same without position_ids: the model counts positions from the cache's length."""

        def forward(self, input_ids, attention_mask, past):  # type: ignore[override]
            return super().forward(input_ids, attention_mask, None, past)

    # transformers 5 names the cache argument `cache` (past_key_values still works, with a warning)
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return (FlatCacheLM() if position_ids else WithoutPositions()).eval(), layers


def cache_shape(model: Any) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of a decoder, read off its own cache after one eager step: configs
    name them in many ways (``num_key_value_heads``; Falcon's ``multi_query`` with one shared head;
    ``head_dim`` given or hidden_size / heads), and the cache is what the graph's inputs must match.

    Raises:
        ExportError: the model returns no cache, or one whose layers differ in shape (edgeship's graph
            has one cache shape for every layer).
    """
    import torch

    try:
        with torch.no_grad():
            out = model(input_ids=torch.ones((1, 2), dtype=torch.long), use_cache=True)
        shapes = [tuple(layer.keys.shape) for layer in out.past_key_values.layers]
    except Exception as e:
        raise ExportError(f"the model gave no key/value cache on a two-token prompt ({brief(e)}); edgeship exports "
                          "decoders whose transformers class caches keys and values (use_cache=True).") from e
    if not shapes or any(len(sh) != 4 or sh[1:] != shapes[0][1:] for sh in shapes):
        raise ExportError(f"the model's key/value cache has layers of shapes {sorted(set(shapes))[:4]}; edgeship's "
                          "decoder graph holds one [batch, kv_heads, past, head_dim] shape for every layer.")
    return len(shapes), shapes[0][1], shapes[0][3]


def export_decoder_onnx(model: Any, path: Path, opset: int = 18, position_ids: bool = True) -> IOSpec:
    """Export ``model`` to one ONNX file at ``path`` (single file, no external data) and return its IOSpec.
    ``position_ids=False`` leaves that input out (the model counts positions from the cache; a batch
    padded on the left then needs it, so the export keeps it by default).

    Raises:
        ExportError: the exporter failed, or the graph does not run at past 0 and sequence 1.
    """
    import torch

    wrapper, layers = _wrapper(model, position_ids)
    _, kv, head_dim = cache_shape(model)
    vocab = model.config.get_text_config(decoder=True).vocab_size
    batch, seq, past = 2, 3, 4  # sizes of 0 and 1 would be specialised by torch.export
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    pos = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    cache = tuple(torch.randn(batch, kv, past, head_dim, generator=g) for _ in range(2 * layers))
    B, S, P = torch.export.Dim("batch"), torch.export.Dim("sequence"), torch.export.Dim("past_sequence")
    shapes: tuple = ({0: B, 1: S}, {0: B, 1: torch.export.Dim.AUTO}, {0: B, 1: S}, tuple({0: B, 2: P} for _ in cache))
    in_names = ["input_ids", "attention_mask", "position_ids"] + \
        [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    args: tuple = (ids, mask, pos, cache)
    if not position_ids:
        shapes, args = shapes[:2] + shapes[3:], (ids, mask, cache)
        in_names.remove("position_ids")
    out_names = ["logits"] + [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*The axis name: .* will not be used")  # our own names, kept
            program = torch.onnx.export(wrapper, args, dynamo=True, dynamic_shapes=shapes,
                                        input_names=in_names, output_names=out_names, opset_version=opset,
                                        optimize=True, verbose=False)
        program.save(str(path), external_data=False)
    except Exception as e:
        raise ExportError(f"exporting the decoder to ONNX failed: {brief(e)}. The architecture may not support "
                          "torch.export with a DynamicCache in this transformers version.") from e
    _name_total_axis(path)
    spec = spec_of(path)
    _check_small_sizes(path, spec, kv, head_dim, layers)
    return spec


def _name_total_axis(path: Path) -> None:
    """Name the past+sequence axis ``total_sequence`` on attention_mask and the presents (the exporter
    leaves a generated symbol and an expression)."""
    import onnx

    m = onnx.load(str(path))
    for v in list(m.graph.input) + list(m.graph.output):
        if v.name == "attention_mask" or v.name.startswith("present."):
            dims = v.type.tensor_type.shape.dim
            axis = 1 if v.name == "attention_mask" else 2
            dims[axis].ClearField("dim_value")
            dims[axis].dim_param = "total_sequence"
    onnx.save(m, str(path))


def spec_of(path: Path | bytes) -> IOSpec:
    """The IOSpec of an ONNX decoder as onnxruntime reads it."""
    import onnxruntime as ort

    s = ort.InferenceSession(path if isinstance(path, bytes) else str(path), providers=["CPUExecutionProvider"])

    def tensor(a: Any) -> TensorSpec:
        return TensorSpec(a.name, ORT_TYPES.get(a.type, "float32"),
                          tuple(d if isinstance(d, int) else str(d) for d in a.shape))

    return IOSpec(tuple(tensor(a) for a in s.get_inputs()), tuple(tensor(a) for a in s.get_outputs()))


def _check_small_sizes(path: Path, spec: IOSpec, kv: int, head_dim: int, layers: int) -> None:
    """The graph must run at batch 1, past 0 with sequence 1 and 3, and past 3 with sequence 1."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for past, seq in ((0, 1), (0, 3), (3, 1)):
        feeds = {"input_ids": np.ones((1, seq), np.int64), "attention_mask": np.ones((1, past + seq), np.int64)}
        if any(t.name == "position_ids" for t in spec.inputs):
            feeds["position_ids"] = np.arange(past, past + seq, dtype=np.int64)[None]
        for t in spec.inputs:
            if t.name.startswith("past_key_values."):
                feeds[t.name] = np.zeros((1, kv, past, head_dim), np.float32)
        try:
            out = s.run(None, feeds)
        except Exception as e:
            raise ExportError(f"the exported decoder fails at past={past}, sequence={seq}: {brief(e)}; "
                              "an axis was specialised at export.") from e
        if out[0].shape[:2] != (1, seq) or out[1].shape[2] != past + seq:
            raise ExportError(f"the exported decoder gives logits {list(out[0].shape)} and present "
                              f"{list(out[1].shape)} at past={past}, sequence={seq}: an axis was specialised.")


def golden_prompts(tok: Path | None, vocab: int, seed: int = 0) -> list[list[int]]:
    """Token ids of the golden prompts: :data:`GOLDEN_TEXTS` through the folder's tokenizer.json, or
    seeded random ids (lengths 3, 5, 8) without one.

    Raises:
        ModelLoadError: the tokenizers library fails to read tokenizer.json or to encode the texts
            (its errors, and its Rust panics, which are BaseExceptions).
    """
    if tok is not None and tok.is_file():
        from tokenizers import Tokenizer

        from edgeship.errors import ModelLoadError
        from edgeship.hf.preprocess import guarded

        what = (f"{tok} could not turn the golden prompts into ids; fix or re-save the tokenizer "
                "(tokenizer.save_pretrained(dir)), or remove tokenizer.json to export with random prompt ids")
        t = guarded(lambda: Tokenizer.from_file(str(tok)), ModelLoadError, what)
        out = [list(e.ids) for e in guarded(lambda: t.encode_batch(list(GOLDEN_TEXTS)), ModelLoadError, what)]
        if all(out) and all(0 <= x < vocab for ids in out for x in ids):
            return out
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, n).tolist() for n in (3, 5, 8)]


def eager_generation(model: Any, prompts: list[list[int]], max_new_tokens: int,
                     eos: list[int] | None = None, pad: int = 0) -> tuple[list[list[int]], list[np.ndarray]]:
    """transformers' greedy ``generate`` (batch 1 per prompt): new tokens and per-step logits [steps, vocab]."""
    import torch

    tokens, logits = [], []
    for ids in prompts:
        x = torch.tensor([ids], dtype=torch.int64)
        with torch.no_grad():
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=eos or None, pad_token_id=pad, output_logits=True,
                                 return_dict_in_generate=True, num_beams=1)
        tokens.append(out.sequences[0, len(ids):].tolist())
        logits.append(torch.stack(out.logits, 1)[0].float().numpy())
    return tokens, logits


def single_step_golden(model: Any, ids: list[int], spec: IOSpec) -> list[tuple[dict, dict]]:
    """A prefill sample (past 0) and a decode sample (past = the prompt, one new token) with the eager
    model's outputs, so ``edgeship check`` can compare single steps like any bundle's golden samples."""
    import torch

    wrapper, layers = _wrapper(model)
    _, kv, head_dim = cache_shape(model)
    from edgeship.generate import decoder_layout

    layout = decoder_layout(spec)  # the wrapper's order: layer 0 key, value, layer 1 ...
    n = len(ids)
    prefill = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, n), np.int64),
               "position_ids": np.arange(n, dtype=np.int64)[None]}
    names = list(layout.past_names)
    for p in names:
        prefill[p] = np.zeros((1, kv, 0, head_dim), np.float32)
    out_names = ["logits", *layout.present_names]

    def run(feeds: dict) -> dict:
        with torch.no_grad():
            outs = wrapper(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]),
                           torch.from_numpy(feeds["position_ids"]), tuple(torch.from_numpy(feeds[p]) for p in names))
        return {k: v.numpy() for k, v in zip(out_names, outs)}

    first = run(prefill)
    nxt = int(first["logits"][0, -1].argmax())
    decode = {"input_ids": np.array([[nxt]], np.int64), "attention_mask": np.ones((1, n + 1), np.int64),
              "position_ids": np.array([[n]], np.int64)}
    for p in names:
        decode[p] = first[p.replace("past_key_values.", "present.")]
    second = run(decode)
    if not layout.position_ids:  # a graph that counts positions itself (the builder's) is fed without them
        prefill.pop("position_ids")
        decode.pop("position_ids")
    return [(prefill, first), (decode, second)]


def fuse_norms(path: Path) -> dict[str, int] | None:
    """onnxruntime's transformer optimizer on the decoder graph, in place: each RMSNorm (Pow, ReduceMean,
    Add, Sqrt, Reciprocal, Mul) into ``SimplifiedLayerNormalization``, with the residual Add before it
    into ``com.microsoft.SkipSimplifiedLayerNormalization`` (onnxruntime's kernels). Measured on a
    4-layer, hidden-256 Llama-style graph: 302 nodes to 240 and 1.06x the decode tokens/s at batch 1
    (40 alternating rounds of a bare session.run loop, median 3,997 vs 3,780), logits within 1e-5.
    GPT-2's LayerNorm and Gelu fuse the same way (SkipLayerNormalization, FastGelu). The I/O names
    stay; parity is judged on the fused graph.

    Returns:
        The fused op types and how many of each, or None when the optimizer failed (the file is kept as
        it was).
    """
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    before = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        m = optimize_model(str(path), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
        tmp = path.with_suffix(".fused.onnx")
        m.save_model_to_file(str(tmp))
        tmp.replace(path)
    except Exception as e:  # the optimizer's own failures: ship the graph as exported
        log.warning("onnxruntime's transformer optimizer failed on %s: %s", path, brief(e))
        return None
    finally:
        quiet.setLevel(level)
    after = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    return {op: after.count(op) for op in sorted(set(after) - before)}
