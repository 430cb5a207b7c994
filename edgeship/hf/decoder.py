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
tolerance; a quantized variant is kept when its logits pass its precision's tolerance over the steps
where its tokens still agree with the reference. The golden prompts, tokens and logits travel in the
bundle (``golden/generation.npz``), so ``edgeship check`` re-runs generation on any machine.

torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.errors import ExportError, ModelLoadError, ParityError, SpecError, brief
from edgeship.spec import IOSpec, TensorSpec

log = logging.getLogger(__name__)

GOLDEN_TEXTS = ("hello world", "the quick brown fox", "once upon a time there was")
GOLDEN_FILE = "golden/generation.npz"
DEFAULT_NEW_TOKENS = 16
VARIANTS = ("fp32", "int8_dynamic")
PRECISION = {"fp32": "fp32", "int8_dynamic": "int8"}
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32",
             "tensor(bool)": "bool"}


@dataclass(frozen=True)
class DecoderResult:
    """What :func:`export_causal_lm` built: the bundle, and per variant its generation parity."""

    bundle: Path
    default: str
    parity: dict[str, dict]
    rejected: dict[str, str]


def load_causal_lm(folder: Path, trust_pickle: bool = False) -> Any:
    """The model of ``folder`` with transformers' ``AutoModelForCausalLM``, from local files only, in eval mode.

    Raises:
        ModelLoadError: transformers cannot build it (unknown architecture, missing weights).
    """
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    has_safetensors = any(folder.glob("*.safetensors"))
    if not has_safetensors and not trust_pickle and any(folder.glob("*.bin")):
        from edgeship.errors import UnsafeModelError

        raise UnsafeModelError(f"{folder} holds only pickled weights (pytorch_model.bin), which run code when read; "
                               "pass --trust-pickle if you trust their source, or save the model with safetensors.")
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=has_safetensors or None,
                                                     dtype="float32")
    except Exception as e:
        raise ModelLoadError(f"transformers could not build a causal LM from {folder}: {brief(e)}. "
                             "Check config.json's architectures, or pass --task for another task.") from e
    return model.eval()


def _wrapper(model: Any) -> Any:
    import torch
    from transformers.cache_utils import DynamicCache

    layers = model.config.get_text_config(decoder=True).num_hidden_layers

    class FlatCacheLM(torch.nn.Module):
        """Flat tensors in and out; transformers' DynamicCache in between."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, past):
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layers)],
                                 config=self.model.config)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            flat = []
            for layer in out.past_key_values.layers:
                flat += [layer.keys, layer.values]
            return (out.logits, *flat)

    return FlatCacheLM().eval(), layers


def cache_shape(config: Any) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of a decoder config."""
    c = config.get_text_config(decoder=True)
    heads = c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return c.num_hidden_layers, kv, head_dim


def export_decoder_onnx(model: Any, path: Path, opset: int = 18) -> IOSpec:
    """Export ``model`` to one ONNX file at ``path`` (single file, no external data) and return its IOSpec.

    Raises:
        ExportError: the exporter failed, or the graph does not run at past 0 and sequence 1.
    """
    import torch

    wrapper, layers = _wrapper(model)
    _, kv, head_dim = cache_shape(model.config)
    vocab = model.config.get_text_config(decoder=True).vocab_size
    batch, seq, past = 2, 3, 4  # sizes of 0 and 1 would be specialised by torch.export
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    pos = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    cache = tuple(torch.randn(batch, kv, past, head_dim, generator=g) for _ in range(2 * layers))
    B, S, P = torch.export.Dim("batch"), torch.export.Dim("sequence"), torch.export.Dim("past_sequence")
    shapes = ({0: B, 1: S}, {0: B, 1: torch.export.Dim.AUTO}, {0: B, 1: S}, tuple({0: B, 2: P} for _ in cache))
    in_names = ["input_ids", "attention_mask", "position_ids"] + \
        [f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    out_names = ["logits"] + [f"present.{i}.{k}" for i in range(layers) for k in ("key", "value")]
    try:
        with torch.no_grad():
            program = torch.onnx.export(wrapper, (ids, mask, pos, cache), dynamo=True, dynamic_shapes=shapes,
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
        feeds = {"input_ids": np.ones((1, seq), np.int64), "attention_mask": np.ones((1, past + seq), np.int64),
                 "position_ids": np.arange(past, past + seq, dtype=np.int64)[None]}
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


def golden_prompts(folder: Path, vocab: int, seed: int = 0) -> list[list[int]]:
    """Token ids of the golden prompts: :data:`GOLDEN_TEXTS` through the folder's tokenizer.json, or
    seeded random ids (lengths 3, 5, 8) without one."""
    tok = Path(folder) / "tokenizer.json"
    if tok.is_file():
        from tokenizers import Tokenizer

        t = Tokenizer.from_file(str(tok))
        out = [e.ids for e in t.encode_batch(list(GOLDEN_TEXTS))]
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


def judge_generation(ref_tokens: list[list[int]], ref_logits: list[np.ndarray], got: Any, precision: str) -> dict:
    """Compare a generation with the reference: token agreement, and the logits over the steps where
    the tokens still agree (the first differing step included) against ``precision``'s tolerance.

    Returns:
        ``{"passed", "tokens_identical", "token_agreement", "max_abs", "min_cosine", "why"}``.
    """
    from edgeship.parity.metrics import judge, metrics
    from edgeship.parity.tolerances import tolerance_for

    tol = tolerance_for(precision)
    same, total, why, max_abs, min_cos = 0, 0, None, 0.0, 1.0
    identical = True
    for r_tok, r_log, g_tok, g_log in zip(ref_tokens, ref_logits, got.tokens, got.logits):
        n = min(len(r_tok), len(g_tok))
        agree = next((i for i in range(n) if r_tok[i] != g_tok[i]), n)
        identical &= r_tok == g_tok
        same += agree
        total += len(r_tok)
        steps = min(agree + 1, n)
        m = metrics(r_log[:steps], g_log[:steps], tol)
        max_abs, min_cos = max(max_abs, m["max_abs"]), min(min_cos, m["cosine"])
        why = why or judge(m, tol)
    if precision == "fp32" and not identical and why is None:
        why = "greedy tokens differ from the eager model's"
    return {"passed": why is None, "tokens_identical": bool(identical), "token_agreement": same / max(total, 1),
            "max_abs": max_abs, "min_cosine": min_cos, "why": why}


def export_causal_lm(folder: str | Path, output: str | Path, *, name: str | None = None,
                     variants: Sequence[str] = VARIANTS, max_new_tokens: int = DEFAULT_NEW_TOKENS,
                     prompts: list[list[int]] | None = None, opset: int = 18, trust_pickle: bool = False,
                     source: dict | None = None) -> DecoderResult:
    """Export the causal LM of a ``save_pretrained`` folder to a decoder bundle at ``output``.

    Args:
        folder: the model folder (config.json, safetensors weights, optionally tokenizer.json).
        output: the bundle path (``NAME.edgeship`` or ``NAME.edgeship.zip``).
        name: the bundle's name (default: the folder's).
        variants: which to build: ``fp32`` (always) and ``int8_dynamic``.
        max_new_tokens: golden generation length per prompt.
        prompts: golden prompts as token ids (default: :func:`golden_prompts`).
        opset: the ONNX opset.
        trust_pickle: allow a folder with only pickled weights.
        source: extra facts for the manifest's ``source`` (the caller's detection of the task).

    Raises:
        SpecError: an unknown variant; ModelLoadError, ExportError; ParityError: fp32 misses parity.
    """
    folder, output = Path(folder), Path(output)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SpecError(f"decoder variants {', '.join(unknown)}: use any of {', '.join(VARIANTS)}.")
    from edgeship.generate import check_max_new_tokens

    max_new_tokens = check_max_new_tokens(max_new_tokens)
    model = load_causal_lm(folder, trust_pickle)
    text = model.config.get_text_config(decoder=True)
    gen = model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else text.eos_token_id
    eos_list = [eos] if isinstance(eos, int) else list(eos or [])
    pad = gen.pad_token_id if gen.pad_token_id is not None else getattr(text, "pad_token_id", None)
    prompts = prompts or golden_prompts(folder, text.vocab_size)
    ref_tokens, ref_logits = eager_generation(model, prompts, max_new_tokens, eos_list, pad if pad is not None else 0)
    with tempfile.TemporaryDirectory(prefix="edgeship-lm-") as tmp:
        work = Path(tmp)
        spec = export_decoder_onnx(model, work / "fp32.onnx", opset)
        single = _single_step_golden(model, prompts[0], spec)
        del model
        built = {"fp32": work / "fp32.onnx"}
        rejected: dict[str, str] = {}
        if "int8_dynamic" in variants:
            from edgeship.errors import QuantizationError
            from edgeship.exporters.quantize import build_dynamic

            try:
                built["int8_dynamic"] = build_dynamic(work / "fp32.onnx", work / "int8_dynamic.onnx")
            except QuantizationError as e:
                rejected["int8_dynamic"] = str(e)
        parity = {}
        for v, file in list(built.items()):
            got = _onnx_generation(file, spec, prompts, max_new_tokens, eos_list, pad)
            parity[v] = judge_generation(ref_tokens, ref_logits, got, PRECISION[v])
            if not parity[v]["passed"]:
                if v == "fp32":
                    raise ParityError(f"the fp32 decoder misses parity with transformers: {parity[v]['why']}.")
                rejected[v] = parity[v]["why"]
                del built[v]
        golden = work / "generation.npz"
        _save_golden(golden, prompts, ref_tokens, ref_logits)
        files = {f"models/{v}.onnx": f for v, f in built.items()}
        files[GOLDEN_FILE] = golden
        files["golden/inputs.npz"], files["golden/outputs.npz"] = _save_single(work, single)
        if (folder / "tokenizer.json").is_file():
            files["tokenizer.json"] = folder / "tokenizer.json"
        manifest = _manifest(name or folder.name, folder, spec, built, parity, rejected, single, source,
                             generation={"eos_token_id": eos_list, "pad_token_id": pad,
                                         "bos_token_id": getattr(text, "bos_token_id", None)},
                             max_new_tokens=max_new_tokens, tokenizer="tokenizer.json" in files)
        from edgeship.bundle.write import write_bundle

        bundle = write_bundle(output, files, manifest)
    return DecoderResult(bundle, "fp32", parity, rejected)


def _onnx_generation(path: Path, spec: IOSpec, prompts: list[list[int]], max_new_tokens: int,
                     eos: list[int], pad: int | None) -> Any:
    """Greedy generation of each prompt (batch 1) with edgeship's loop over an onnxruntime session."""
    import onnxruntime as ort

    from edgeship.generate import Generation, decoder_layout, run_loop

    layout = decoder_layout(spec)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokens, logits = [], []
    for ids in prompts:
        g = run_loop(session, layout, [ids], max_new_tokens, eos, pad if pad is not None else 0, output_logits=True)
        tokens += g.tokens
        logits += g.logits or []
    return Generation(tokens, logits)


def _single_step_golden(model: Any, ids: list[int], spec: IOSpec) -> list[tuple[dict, dict]]:
    """A prefill sample (past 0) and a decode sample (past = the prompt, one new token) with the eager
    model's outputs, so ``edgeship check`` can compare single steps like any bundle's golden samples."""
    import torch

    wrapper, layers = _wrapper(model)
    _, kv, head_dim = cache_shape(model.config)
    n = len(ids)
    prefill = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, n), np.int64),
               "position_ids": np.arange(n, dtype=np.int64)[None]}
    names = [t.name for t in spec.inputs if t.name.startswith("past_key_values.")]
    for p in names:
        prefill[p] = np.zeros((1, kv, 0, head_dim), np.float32)
    out_names = [t.name for t in spec.outputs]

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
    return [(prefill, first), (decode, run(decode))]


def _save_single(work: Path, single: list[tuple[dict, dict]]) -> tuple[Path, Path]:
    from edgeship.bundle.golden import Sample, save_samples

    samples = [Sample(label, feeds, {}) for label, (feeds, _) in zip(("prefill", "decode"), single)]
    outs = {id(s): o for s, (_, o) in zip(samples, single)}
    save_samples(work / "inputs.npz", samples, lambda s: s.feeds)
    save_samples(work / "outputs.npz", samples, lambda s: outs[id(s)])
    return work / "inputs.npz", work / "outputs.npz"


def _save_golden(path: Path, prompts: list[list[int]], tokens: list[list[int]], logits: list[np.ndarray]) -> None:
    data = {}
    for i, (p, t, lg) in enumerate(zip(prompts, tokens, logits)):
        data[f"{i}/prompt"] = np.array(p, np.int64)
        data[f"{i}/tokens"] = np.array(t, np.int64)
        data[f"{i}/logits"] = lg.astype(np.float32)
    with open(path, "wb") as f:
        np.savez(f, **data)


def _manifest(name: str, folder: Path, spec: IOSpec, built: dict[str, Path], parity: dict[str, dict],
              rejected: dict[str, str], single: list, source: dict | None, generation: dict, max_new_tokens: int,
              tokenizer: bool) -> dict:
    from edgeship.bundle.manifest import VariantResult
    from edgeship.host import host_info
    from edgeship.pipeline.package import tool_versions
    from edgeship.runtimes.registry import requirements

    variants = {}
    for v, f in built.items():
        p = parity[v]
        variants[v] = VariantResult(name=v, file=f"models/{v}.onnx", precision=PRECISION[v], size=f.stat().st_size,
                                    passed={"cpu": p["passed"]}, max_abs=p["max_abs"], min_cosine=p["min_cosine"],
                                    tolerance={"logits": _tol(PRECISION[v])}).to_dict()
    order = ["fp32"] + [v for v in built if v != "fp32"]
    candidates = [{"id": v, "runtime": "onnxruntime", "variant": v, "precision": PRECISION[v], "options": {},
                   "p50_ms": None, "parity": {"passed": parity[v]["passed"], "max_abs": parity[v]["max_abs"],
                                               "min_cosine": parity[v]["min_cosine"]},
                   "requires": requirements("onnxruntime", PRECISION[v])} for v in order]
    notes = [f"variant {v} not shipped: {why}" for v, why in rejected.items()]
    return {
        "name": name,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tools": tool_versions(),
        "io": spec.to_dict(),
        "variants": variants,
        "defaults": {"cpu": "fp32"},
        "candidates": {"cpu": candidates},
        "golden": {"inputs": "golden/inputs.npz", "outputs": "golden/outputs.npz",
                   "samples": [{"label": "prefill", "sizes": {}, "about": "the first golden prompt, past of length 0"},
                               {"label": "decode", "sizes": {}, "about": "one greedy token after it, with its cache"}]},
        "generation": {**{k: v for k, v in generation.items() if v is not None},
                       "golden": GOLDEN_FILE, "max_new_tokens": max_new_tokens,
                       "parity": {v: {k: x for k, x in p.items() if k != "why"} for v, p in parity.items()}},
        **({"tokenizer": "tokenizer.json"} if tokenizer else {}),
        "torchscript": None,
        "source": {"file": folder.name, "format": "hf-folder", "task": "text-generation", "exporter": "dynamo",
                   "opset": 18, **(source or {})},
        "host": host_info(),
        "notes": notes,
    }


def _tol(precision: str) -> dict:
    from edgeship.parity.tolerances import tolerance_for

    return tolerance_for(precision).to_dict()
