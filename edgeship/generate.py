"""Text generation over a decoder bundle: a torch-free loop on onnxruntime.

A decoder bundle holds one ONNX graph that does prefill and decode (Optimum's and onnxruntime-genai's
names): inputs ``input_ids`` [batch, seq], ``attention_mask`` [batch, past+seq], optionally
``position_ids`` [batch, seq], and ``past_key_values.{i}.key|value`` [batch, kv_heads, past, head_dim];
outputs ``logits`` [batch, seq, vocab] and ``present.{i}.key|value``. Prefill feeds a past of length 0;
each decode step feeds the one new token and the previous step's presents.

Each step's presents go in again as the next step's past. On CPU they travel as the numpy arrays
onnxruntime returns (it hands its output buffers to numpy; feeding them back is zero-copy):
measured on a 4-layer, hidden-256 Llama-style graph, that ran as fast as IO binding with OrtValues
and within a few percent of a bare ``session.run`` loop (docs/llm.md). On a CUDA target the loop
binds the cache to the GPU with IO binding (``io_binding=True`` forces it anywhere). onnxruntime-
genai's builder graph (``generation.padded_batches`` false: its GroupQueryAttention writes the new
step into the past it is given when the present is the same buffer) keeps, on CPU, one cache buffer
per past for the whole generation, bound as both past and present, as ``og.Generator`` runs it
(``past_present_share_buffer``): no step copies the cache (measured on B9's int4 graph: 5,390 ->
6,750 tokens/s, docs/llm.md); ``io_binding=False`` turns it off. A graph without
``position_ids`` is fed without them (the model derives positions from the cache). Greedy by default, as transformers'
``generate(do_sample=False)``; sampling with ``temperature``, ``top_k``, ``top_p`` and a ``seed``
(applied in transformers' order: temperature, top-k, top-p). A batch of prompts of different lengths
is padded on the left, with position ids from the attention mask as transformers computes them; on a
graph that cannot take left padding (the bundle's ``generation.padded_batches`` is false: onnxruntime-
genai's builder graph, whose GroupQueryAttention reads the mask as lengths), prompts of different
lengths run one at a time.

    m = edgeship.load("tiny-llama.edgeship")
    ids = m.generate([1, 5, 9], max_new_tokens=16)           # the new token ids
    ids = m.generate("some text", max_new_tokens=16)          # with the bundle's tokenizer
    out = generate(m, [[1, 5, 9], [1, 7]], max_new_tokens=8, output_logits=True)  # Generation
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeship.errors import BundleError, InferenceError, SpecError
from edgeship.spec import IOSpec

PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)")
MAX_NEW_TOKENS = 1 << 20  # far beyond any context window; refuses a runaway request
SHARED_CACHE_START = 4096  # positions a shared cache buffer holds at first (it doubles when a step needs more)
Prompt = str | Sequence[int] | Sequence[Sequence[int]] | Sequence[str] | np.ndarray


@dataclass(frozen=True)
class DecoderLayout:
    """What the generation loop needs to know of a decoder graph, read from its IOSpec."""

    past_names: tuple[str, ...]        # past_key_values.0.key, past_key_values.0.value, 1.key, ...
    present_names: tuple[str, ...]     # present.0.key, ... in the same order
    kv_heads: int
    head_dim: int
    past_dtype: str
    position_ids: bool


@dataclass(frozen=True)
class Generation:
    """What :func:`generate` returns: per prompt, the new token ids (up to and including the end-of-
    sequence token when one stopped it) and, with ``output_logits``, the logits of each step
    ([steps, vocab], float32), as transformers' ``output_logits=True`` gives them."""

    tokens: list[list[int]]
    logits: list[np.ndarray] | None = None


def decoder_layout(spec: IOSpec) -> DecoderLayout:
    """The decoder's cache layout, or SpecError when ``spec`` is not a decoder graph with a KV cache.

    Raises:
        SpecError: inputs or outputs missing, or past shapes that are not [batch, heads, past, dim]
            with fixed heads and dim.
    """
    names = {t.name: t for t in spec.inputs}
    outs = {t.name for t in spec.outputs}
    layers = sorted({int(m.group(1)) for n in names if (m := PAST.fullmatch(n))})
    missing = [n for n in ("input_ids", "attention_mask") if n not in names] + (["logits"] if "logits" not in outs else [])
    if not layers or missing:
        raise SpecError(
            "this bundle is not a decoder language model with a KV cache: generate needs inputs input_ids, "
            "attention_mask and past_key_values.{i}.key/value and outputs logits and present.{i}.key/value; "
            f"it has inputs {', '.join(names) or 'none'} and outputs {', '.join(outs) or 'none'}. "
            "Call the model with m(feeds) instead, or export a causal LM folder (edgeship export DIR)."
        )
    past, present = [], []
    for i in range(len(layers)):
        for kind in ("key", "value"):
            p, q = f"past_key_values.{i}.{kind}", f"present.{i}.{kind}"
            if p not in names or q not in outs:
                raise SpecError(f"decoder graph: layer {i} has no {p} input or no {q} output; "
                                "the layers must be numbered from 0 without gaps. Re-export the model.")
            past.append(p)
            present.append(q)
    first = names[past[0]]
    shape = first.shape
    if len(shape) != 4 or not isinstance(shape[1], int) or not isinstance(shape[3], int) \
            or any(names[p].shape[1:4:2] != shape[1:4:2] or names[p].dtype != first.dtype for p in past):
        raise SpecError(f"decoder graph: {past[0]} has shape {list(shape)}; every past input must be "
                        "[batch, kv_heads, past, head_dim] with fixed kv_heads and head_dim and one dtype. Re-export the model.")
    return DecoderLayout(tuple(past), tuple(present), shape[1], shape[3], first.dtype, "position_ids" in names)


def check_max_new_tokens(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_NEW_TOKENS:
        raise SpecError(f"max_new_tokens={value!r}: use a whole number from 1 to {MAX_NEW_TOKENS}.")
    return int(value)


def _real(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _whole(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _check_sampling(temperature: float, top_k: int, top_p: float, seed: int | None = None) -> None:
    if not (_real(temperature) and np.isfinite(temperature) and temperature > 0):
        raise SpecError(f"temperature={temperature!r}: use a number above 0 (1.0 leaves the logits as they are).")
    if not _whole(top_k) or top_k < 0:
        raise SpecError(f"top_k={top_k!r}: use a whole number ≥ 0 (0 keeps every token).")
    if not (_real(top_p) and 0 < top_p <= 1):
        raise SpecError(f"top_p={top_p!r}: use a number in (0, 1] (1.0 keeps every token).")
    if seed is not None and (not _whole(seed) or seed < 0):
        raise SpecError(f"seed={seed!r}: use a whole number ≥ 0, or None for a fresh random seed.")


def _eos_set(eos: int | Sequence[int] | None) -> frozenset[int]:
    if eos is None:
        return frozenset()
    items = [eos] if isinstance(eos, (int, np.integer)) else list(eos)
    if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in items):
        raise SpecError(f"eos_token_id={eos!r}: use a token id, a list of them, or None.")
    return frozenset(int(x) for x in items)


def _batch(prompt: Any, encode: Any) -> tuple[list[list[int]], bool]:
    """The prompts as lists of ids, and whether a single prompt was given."""
    if isinstance(prompt, str):
        return [list(encode([prompt])[0])], True
    if isinstance(prompt, np.ndarray):
        if prompt.ndim not in (1, 2) or prompt.dtype.kind not in "iu":
            raise SpecError(f"prompt array of dtype {prompt.dtype} and shape {list(prompt.shape)}: "
                            "pass integer token ids, 1-D for one prompt or 2-D for a batch.")
        return ([prompt.tolist()], True) if prompt.ndim == 1 else (prompt.tolist(), False)
    if isinstance(prompt, Sequence) and prompt and all(isinstance(p, str) for p in prompt):
        return [list(x) for x in encode(list(prompt))], False
    if isinstance(prompt, Sequence) and prompt and all(isinstance(p, (int, np.integer)) and not isinstance(p, bool)
                                                       for p in prompt):
        return [[int(x) for x in prompt]], True
    if isinstance(prompt, Sequence) and prompt and all(isinstance(p, (Sequence, np.ndarray)) and not isinstance(p, str)
                                                       for p in prompt):
        for i, p in enumerate(prompt):
            if isinstance(p, np.ndarray) and (p.ndim != 1 or p.dtype.kind not in "iu") \
                    or not isinstance(p, np.ndarray) and not all(_whole(x) for x in p):
                raise SpecError(f"prompt {i} of the batch is not a list of token ids (whole numbers): "
                                f"{str(p)[:60]}.")
        return [[int(x) for x in p] for p in prompt], False
    raise SpecError(f"prompt of type {type(prompt).__name__}: pass a text, a list of token ids, or a list of either "
                    "(a batch).")


def _pick(logits: np.ndarray, do_sample: bool, temperature: float, top_k: int, top_p: float,
          rng: np.random.Generator) -> np.ndarray:
    """The next token per row of ``logits`` [batch, vocab]."""
    if not do_sample:
        return logits.argmax(-1)
    if np.isnan(logits).any() or not np.isfinite(logits).any(-1).all():
        raise InferenceError("sampling: the model's logits hold NaN or no finite value (an overflow in the graph, "
                             "often a reduced-precision variant): no distribution to sample from. Try the fp32 "
                             "variant, or greedy decoding to see them.")
    x = logits.astype(np.float64) / temperature
    if top_k and top_k < x.shape[-1]:
        kth = np.partition(x, -top_k, axis=-1)[:, -top_k][:, None]
        x = np.where(x < kth, -np.inf, x)
    if top_p < 1.0:  # keep the smallest set whose probability reaches top_p (at least one token)
        order = np.argsort(-x, axis=-1)
        sorted_x = np.take_along_axis(x, order, -1)
        p = np.exp(sorted_x - sorted_x[:, :1])
        p /= p.sum(-1, keepdims=True)
        drop_sorted = np.cumsum(p, -1) - p >= top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, -1)
        x = np.where(drop, -np.inf, x)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.array([rng.choice(p.shape[-1], p=row) for row in p])


class _Session:
    """One step of the graph on an onnxruntime session, the cache kept as OrtValues (IO binding) on
    ``device`` (``cuda``: the cache never leaves the GPU; only the last logits come to the host)."""

    def __init__(self, session: Any, layout: DecoderLayout, device: str = "cpu"):
        self.session = session
        self.layout = layout
        self.device = device
        self.out_names = [o.name for o in session.get_outputs()]
        self.logits_at = self.out_names.index("logits")
        self.present_at = [self.out_names.index(n) for n in layout.present_names]
        self.binding = session.io_binding()  # one per generation; inputs re-bound each step

    def empty_past(self, batch: int, length: int = 0) -> list[Any]:
        import onnxruntime as ort

        lay = self.layout
        z = np.zeros((batch, lay.kv_heads, 0, lay.head_dim), dtype=np.dtype(lay.past_dtype))
        return [ort.OrtValue.ortvalue_from_numpy(z)] * len(lay.past_names)

    def step(self, feeds: dict[str, np.ndarray], past: list[Any]) -> tuple[np.ndarray, list[Any]]:
        binding = self.binding
        for name, a in feeds.items():
            binding.bind_cpu_input(name, a)
        for name, v in zip(self.layout.past_names, past):
            binding.bind_ortvalue_input(name, v)
        binding.clear_binding_outputs()  # a bound output keeps its last value, of the last step's shape
        for name in self.out_names:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        outs = binding.get_outputs()  # new OrtValues each run: the presents become the next step's past
        return outs[self.logits_at].numpy(), [outs[i] for i in self.present_at]


class _SharedCache:
    """One step of a GroupQueryAttention graph (onnxruntime-genai's builder) on CPU with the cache in
    one buffer per past, bound with IO binding as both the past input and the present output: the
    graph writes each step's keys and values into it in place (the op shares the buffer when the past
    and present are the same memory, reading ``attention_mask``'s sum as each row's length), so no
    step copies the cache. The buffer holds ``capacity`` positions and doubles when a step needs more.
    The decode steps' logits land in one preallocated array, returned each step (read it before the
    next step)."""

    def __init__(self, model: Any, layout: DecoderLayout):
        self.model = model
        self.session = model.session
        self.layout = layout
        self.arrays: list[np.ndarray] = []
        self.logits: np.ndarray | None = None  # [batch, 1, vocab] of the decode steps

    def empty_past(self, batch: int, length: int = 0) -> list[Any]:
        self.binding = self.session.io_binding()
        self.binding.bind_output("logits")  # first: onnxruntime checks bound outputs in the graph's order
        self.logits = None
        self.arrays = []
        self.limit = max(length, 1)  # the positions the generation needs at most
        self._allocate(batch, min(self.limit, SHARED_CACHE_START))
        return []

    def _allocate(self, batch: int, capacity: int) -> None:
        import onnxruntime as ort

        lay = self.layout
        old = self.arrays
        self.arrays = [np.zeros((batch, lay.kv_heads, capacity, lay.head_dim), dtype=np.dtype(lay.past_dtype))
                       for _ in lay.past_names]
        for a, b in zip(self.arrays, old):
            a[:, :, :b.shape[2]] = b
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self.arrays]  # views of the arrays: no copy
        for p, q, v in zip(lay.past_names, lay.present_names, self.values):
            self.binding.bind_ortvalue_input(p, v)
            self.binding.bind_ortvalue_output(q, v)

    def step(self, feeds: dict[str, np.ndarray], past: list[Any]) -> tuple[np.ndarray, list[Any]]:
        binding = self.binding
        total = feeds["attention_mask"].shape[1]
        if total > self.arrays[0].shape[2]:
            self._allocate(feeds["input_ids"].shape[0], max(total, min(2 * total, self.limit)))
        for name, a in feeds.items():
            binding.bind_cpu_input(name, a)
        try:
            self.session.run_with_iobinding(binding)
        except Exception as e:
            raise InferenceError(
                f"onnxruntime failed a generation step of {self.model.bundle.path} (variant {self.model.variant}) "
                f"with the cache shared between past and present (the bundle's generation.padded_batches is false: "
                f"onnxruntime-genai's GroupQueryAttention graph): {str(e)[:300]}. Call generate(..., io_binding=False) "
                "to run it without, or re-export the model.") from e
        if self.logits is not None:
            return self.logits, past
        logits = binding.get_outputs()[0].numpy()  # the first step's (the prompt's positions)
        import onnxruntime as ort

        # every later step has one position: its logits go to one array, bound once
        self.logits = np.empty((logits.shape[0], 1, logits.shape[-1]), dtype=logits.dtype)
        binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self.logits))
        return logits, past


class _Runs:
    """One step through ``run(feeds) -> outputs by name`` (numpy in, numpy out): ``Model.run`` (any
    runtime; the Model's feed checks and ``timeout``) or a bare onnxruntime session's ``run``."""

    def __init__(self, run: Any, layout: DecoderLayout):
        self.run = run
        self.layout = layout

    def empty_past(self, batch: int, length: int = 0) -> list[Any]:
        lay = self.layout
        return [np.zeros((batch, lay.kv_heads, 0, lay.head_dim), dtype=np.dtype(lay.past_dtype))] * len(lay.past_names)

    def step(self, feeds: dict[str, np.ndarray], past: list[Any]) -> tuple[np.ndarray, list[Any]]:
        outs = self.run({**feeds, **dict(zip(self.layout.past_names, past))})
        return outs["logits"], [outs[n] for n in self.layout.present_names]


def generate(model: Any, prompt: Prompt, max_new_tokens: int = 32, eos_token_id: int | Sequence[int] | None = None,
             *, pad_token_id: int | None = None, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, seed: int | None = None, output_logits: bool = False,
             io_binding: bool | None = None) -> Generation:
    """Generate up to ``max_new_tokens`` after each prompt with a loaded decoder bundle.

    Args:
        model: an ``edgeship.Model`` of a decoder bundle.
        prompt: token ids (a list of ints or a 1-D array), a text (needs the bundle's tokenizer),
            or a batch: a list of either, or a 2-D array; a batch is padded on the left.
        max_new_tokens: how many tokens at most to add to each prompt.
        eos_token_id: stop a prompt at this token (or any of these); None: the bundle's own
            (from the model's generation config), ``[]``: never stop early.
        pad_token_id: the id that pads a batch (and a finished prompt's steps); default: the bundle's.
        do_sample: sample instead of taking the most likely token (greedy, the default).
        temperature, top_k, top_p: sampling's shaping, as in transformers.
        seed: the sampling's random seed (``numpy.random.default_rng``).
        output_logits: also return each step's logits.
        io_binding: keep the cache in onnxruntime as OrtValues (IO binding) instead of feeding numpy
            arrays through ``Model.run``; default: on a CUDA target, and on CPU for onnxruntime-genai's
            GroupQueryAttention graph, whose cache is then one buffer written in place (for other
            graphs on CPU onnxruntime hands outputs to numpy without a copy, and the two ran at the
            same speed: docs/llm.md). False: ``Model.run`` with numpy arrays everywhere.

    Raises:
        SpecError: the bundle is not a decoder, a prompt is empty or not token ids, or a bad argument.
    """
    layout = decoder_layout(model.spec)
    max_new_tokens = check_max_new_tokens(max_new_tokens)
    _check_sampling(temperature, top_k, top_p, seed)
    meta = generation_meta(model.manifest)
    eos = _eos_set(meta.get("eos_token_id") if eos_token_id is None else eos_token_id)
    vocab = next((t.shape[2] for t in model.spec.outputs if t.name == "logits" and len(t.shape) == 3
                  and isinstance(t.shape[2], int)), None)
    top = vocab if vocab is not None else 1 << 31
    if pad_token_id is not None and (not _whole(pad_token_id) or not 0 <= pad_token_id < top):
        raise SpecError(f"pad_token_id={pad_token_id!r}: use a token id of the model's vocabulary [0, {top}), or None "
                        "for the bundle's.")
    if pad_token_id is None and not 0 <= meta.get("pad_token_id", 0) < top:
        raise BundleError(f"manifest.json: generation.pad_token_id is {meta['pad_token_id']}, outside the model's "
                          f"vocabulary [0, {top}); the bundle is corrupt or was edited.")
    pad = pad_token_id if pad_token_id is not None else meta.get("pad_token_id")
    if pad is None:
        pad = min((e for e in eos if e < top), default=0)
    rows, _ = _batch(prompt, lambda texts: encode_texts(model, texts))
    if any(not r for r in rows):
        raise SpecError("a prompt is empty: give at least one token id (or a text the tokenizer turns into one).")
    if vocab is not None and any(not 0 <= x < vocab for r in rows for x in r):
        raise SpecError(f"a prompt holds a token id outside the model's vocabulary [0, {vocab}).")
    context = context_length(model)
    longest = max(len(r) for r in rows)
    if context is not None and longest + max_new_tokens > context:
        raise SpecError(f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} is {longest + max_new_tokens} "
                        f"positions, over the model's context of {context}; shorten the prompt or ask for fewer "
                        "new tokens (edgeship does not cut prompts).")
    stepper: _Session | _SharedCache | _Runs
    if io_binding is not False and _shares_cache(model, meta):
        stepper = _SharedCache(model, layout)
    else:
        if io_binding is None:  # measured on CPU: numpy feeds as fast as IO binding (docs/llm.md); CUDA keeps the cache on the GPU
            io_binding = getattr(model, "target", "cpu") == "cuda"
        use_binding = io_binding and getattr(model, "runtime", None) == "onnxruntime"
        stepper = _Session(model.session, layout, "cuda" if model.target == "cuda" else "cpu") \
            if use_binding else _Runs(model.run, layout)
    rng = np.random.default_rng(seed)
    if meta.get("padded_batches") is False and len({len(r) for r in rows}) > 1:
        # GroupQueryAttention (onnxruntime-genai's builder graph) cannot take left padding: one prompt at a time
        parts = [_loop(stepper, layout, [r], max_new_tokens, eos, int(pad), do_sample, temperature, top_k, top_p,
                       rng, output_logits) for r in rows]
        return Generation([p.tokens[0] for p in parts], [p.logits[0] for p in parts if p.logits] if output_logits else None)
    return _loop(stepper, layout, rows, max_new_tokens, eos, int(pad), do_sample, temperature, top_k, top_p,
                 rng, output_logits)


def _shares_cache(model: Any, meta: dict) -> bool:
    """Whether :class:`_SharedCache` runs ``model``: onnxruntime-genai's GroupQueryAttention graph
    (``generation.padded_batches`` false) on onnxruntime on CPU, open, without a per-call ``timeout``
    (which only ``Model.run`` enforces) and not in the parallel execution mode (a Model refuses that
    after fork(), through ``Model.run``)."""
    if meta.get("padded_batches") is not False or getattr(model, "runtime", None) != "onnxruntime" \
            or getattr(model, "target", None) != "cpu" or getattr(model, "timeout", None) is not None:
        return False
    session = getattr(model, "session", None)  # None once the Model is closed: Model.run says so
    return session is not None and not str(session.get_session_options().execution_mode).endswith("ORT_PARALLEL")


def run_loop(session: Any, layout: DecoderLayout, rows: list[list[int]], max_new_tokens: int,
             eos: Sequence[int] = (), pad: int = 0, *, output_logits: bool = False,
             shared_cache: bool = False) -> Generation:
    """Greedy generation over a bare ``onnxruntime.InferenceSession`` (the export's parity check and
    ``edgeship check`` use it on a variant's file). ``shared_cache``: step as ``Model.generate`` steps a
    GroupQueryAttention graph on CPU (:class:`_SharedCache`), for the export's timing of that graph."""
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict) -> dict:
        return dict(zip(names, session.run(names, feeds)))

    stepper: _SharedCache | _Runs = _Runs(run, layout)
    if shared_cache:
        from types import SimpleNamespace

        where = SimpleNamespace(session=session, bundle=SimpleNamespace(path="the export's graph"), variant="fp32")
        stepper = _SharedCache(where, layout)
    return _loop(stepper, layout, rows, max_new_tokens, frozenset(eos), pad, False, 1.0, 0, 1.0,
                 np.random.default_rng(0), output_logits)


def _loop(stepper: _Session | _SharedCache | _Runs, layout: DecoderLayout, rows: list[list[int]], max_new_tokens: int,
          eos: frozenset[int], pad: int, do_sample: bool, temperature: float, top_k: int, top_p: float,
          rng: np.random.Generator, output_logits: bool) -> Generation:
    batch, longest = len(rows), max(len(r) for r in rows)
    ids = np.full((batch, longest), pad, dtype=np.int64)
    mask = np.zeros((batch, longest), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, longest - len(r):] = r
        mask[i, longest - len(r):] = 1
    past = stepper.empty_past(batch, longest + max_new_tokens)
    tokens: list[list[int]] = [[] for _ in rows]
    logits_seen: list[list[np.ndarray]] = [[] for _ in rows]
    done = np.zeros(batch, dtype=bool)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if layout.position_ids:  # transformers': cumsum of the mask - 1, padding at 1
        pos = np.cumsum(mask, -1) - 1
        pos[mask == 0] = 1
        feeds["position_ids"] = pos
        last_pos = np.ascontiguousarray(pos[:, -1:])
    for _ in range(max_new_tokens):
        logits, past = stepper.step(feeds, past)
        last = logits[:, -1, :]
        nxt = _pick(last, do_sample, temperature, top_k, top_p, rng)
        nxt = np.where(done, pad, nxt)
        for i in range(batch):
            if not done[i]:
                tokens[i].append(int(nxt[i]))
                if output_logits:
                    logits_seen[i].append(np.array(last[i], dtype=np.float32))
                if int(nxt[i]) in eos:
                    done[i] = True
        if done.all():
            break
        mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        feeds = {"input_ids": nxt.astype(np.int64).reshape(batch, 1), "attention_mask": mask}
        if layout.position_ids:
            last_pos = last_pos + 1
            feeds["position_ids"] = last_pos
    return Generation(tokens, [np.stack(x) if x else np.zeros((0, last.shape[-1]), np.float32) for x in logits_seen]
                      if output_logits else None)


def generation_meta(manifest: dict) -> dict:
    """The manifest's ``generation`` section (token ids of a decoder bundle), checked: {} when absent.

    Raises:
        SpecError: a field that is not a token id (or list of them for ``eos_token_id``).
    """
    from edgeship.errors import BundleError

    meta = manifest.get("generation")
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise BundleError("manifest.json: 'generation' is not an object; the bundle is corrupt or was edited.")
    out: dict = {}
    for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
        v = meta.get(key)
        ok = v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or (
            key == "eos_token_id" and isinstance(v, list) and len(v) <= 64
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v))
        if not ok:
            raise BundleError(f"manifest.json: generation.{key} is {str(v)[:60]!r}, not a token id; "
                              "the bundle is corrupt or was edited.")
        if v is not None:
            out[key] = v
    ctx = meta.get("context_length")
    if ctx is not None and (not isinstance(ctx, int) or isinstance(ctx, bool) or not 0 < ctx <= 1 << 24):
        raise BundleError(f"manifest.json: generation.context_length is {str(ctx)[:60]!r}, not a count of tokens; "
                          "the bundle is corrupt or was edited.")
    if ctx is not None:
        out["context_length"] = ctx
    padded = meta.get("padded_batches")
    if padded is not None and not isinstance(padded, bool):
        raise BundleError(f"manifest.json: generation.padded_batches is {str(padded)[:60]!r}, not true or false; "
                          "the bundle is corrupt or was edited.")
    if padded is not None:
        out["padded_batches"] = padded
    return out


def context_length(model: Any) -> int | None:
    """The model's context in tokens, as the bundle records it (``preprocess.tokenizer.max_length``: the
    least of the tokenizer's model_max_length and the config's max_position_embeddings, checked when the
    bundle was loaded), else the generation section's ``context_length`` (the config's
    max_position_embeddings, for a decoder bundle without a tokenizer); None where neither is recorded."""
    tok = (getattr(model, "preprocess", None) or {}).get("tokenizer")
    value = tok.get("max_length") if isinstance(tok, dict) else generation_meta(model.manifest).get("context_length")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def encode_texts(model: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, unpadded and never truncated (a generation prompt is not cut: a prompt
    over the context is refused by :func:`generate`), with the tokenizer the bundle carries (the
    ``tokenizers`` library, special tokens added as the original tokenizer's ``__call__`` does).

    Raises:
        SpecError: the bundle has no tokenizer, ``tokenizers`` is not installed, or too much text.
        InferenceError: the tokenizers library fails on the texts.
    """
    return [list(e.ids) for e in model._pre.encoder().encodings(list(texts), truncation=False)]
