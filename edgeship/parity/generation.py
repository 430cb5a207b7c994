"""A parity gate that fits generation: teacher-forced next-token agreement and log-prob delta.

Elementwise tolerances (cosine, max abs) judge a decoder's logits poorly: what a user of a language
model sees is the token picked at each step. For every golden sequence (a prompt and the reference
model's greedy continuation of it) the candidate runs the whole sequence in one prefill call
(teacher forcing: it is fed the reference tokens, not its own), and at every continuation position
edgeship measures

- top-1 agreement: whether the candidate's argmax is the reference's next token;
- log-prob delta: |log p_candidate(token) - log p_reference(token)| of the reference's next token
  (log-softmax computed stably, in float64), its mean and max.

A variant passes when its agreement pooled over every continuation position reaches
``min_agreement`` and, where set, its mean log-prob delta stays within ``max_logprob_delta``.
Defaults (:data:`DEFAULT_GENERATION_TOLERANCES`): fp32 must agree everywhere (1.0), fp16 0.95,
int8 and int4 0.9; the log-prob delta is reported and not gated by default.

numpy only: no torch, no onnxruntime here (the caller passes ``logits_fn``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeship.errors import SpecError

LogitsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``logits_fn(input_ids, attention_mask) -> logits``: int64 [1, L] in, [1, L, vocab] out."""


@dataclass(frozen=True)
class GenerationTolerance:
    """Pass criteria of the generation gate; ``None`` means not applied."""

    min_agreement: float = 0.9
    max_logprob_delta: float | None = None  # mean |Δ log p| of the reference tokens, in nats

    def to_dict(self) -> dict:
        d: dict = {"min_agreement": self.min_agreement}
        if self.max_logprob_delta is not None:
            d["max_logprob_delta"] = self.max_logprob_delta
        return d


DEFAULT_GENERATION_TOLERANCES = {
    "fp32": GenerationTolerance(min_agreement=1.0),
    "fp16": GenerationTolerance(min_agreement=0.95),
    "int8": GenerationTolerance(min_agreement=0.9),
    "int4": GenerationTolerance(min_agreement=0.9),
}


def recorded_tolerance(criteria: object, precision: str) -> GenerationTolerance:
    """The generation tolerance a bundle's manifest records for a variant (its ``tolerance`` criteria:
    ``min_agreement``, ``max_logprob_delta``), checked: a value that is not a number in range gives
    the precision's default (a bundle may be crafted); an absent one, the default's."""
    default = generation_tolerance(precision)
    if not isinstance(criteria, dict):
        return default
    agree, delta = _number(criteria.get("min_agreement")), _number(criteria.get("max_logprob_delta"))
    if ("min_agreement" in criteria and (agree is None or not 0.0 <= agree <= 1.0)) \
            or ("max_logprob_delta" in criteria and (delta is None or delta < 0)):
        return default
    return GenerationTolerance(default.min_agreement if agree is None else agree,
                               default.max_logprob_delta if delta is None else delta)


def configured_tolerance(tolerance: Any, precision: str) -> GenerationTolerance:
    """The precision's default with the overrides of an :class:`edgeship.parity.tolerances.Tolerance`
    (``--tolerance int4:min_agreement=0.8``, ``int8/generation:max_logprob_delta=0.1``)."""
    default = generation_tolerance(precision)
    agree, delta = getattr(tolerance, "min_agreement", None), getattr(tolerance, "max_logprob_delta", None)
    return GenerationTolerance(default.min_agreement if agree is None else float(agree),
                               default.max_logprob_delta if delta is None else float(delta))


def _number(x: object) -> float | None:
    """``x`` as a finite float, or None when it is not a finite number (bools refused)."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def generation_tolerance(precision: str) -> GenerationTolerance:
    """The default generation tolerance of a precision (int8's for one not listed)."""
    return DEFAULT_GENERATION_TOLERANCES.get(precision, DEFAULT_GENERATION_TOLERANCES["int8"])


@dataclass(frozen=True)
class GoldenSequence:
    """A prompt and the reference's greedy continuation: ``ids[:prompt_len]`` is the prompt."""

    ids: np.ndarray
    prompt_len: int
    label: str = ""

    def __post_init__(self) -> None:
        ids = np.asarray(self.ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise SpecError(f"golden sequence {self.label!r}: ids must be a 1-D integer array, got "
                            f"{ids.dtype}{list(ids.shape)}.")
        if not 1 <= self.prompt_len < len(ids):
            raise SpecError(f"golden sequence {self.label!r}: prompt_len {self.prompt_len} leaves no continuation "
                            f"in {len(ids)} token(s); it must be between 1 and {len(ids) - 1}.")
        object.__setattr__(self, "ids", ids.astype(np.int64))

    @property
    def continuation(self) -> np.ndarray:
        return self.ids[self.prompt_len:]


@dataclass(frozen=True)
class SequenceAgreement:
    """One golden sequence: agreement and log-prob delta over its continuation positions."""

    label: str
    positions: int
    agreed: int
    mean_logprob_delta: float
    max_logprob_delta: float
    first_mismatch: int | None  # index into the continuation of the first disagreement

    @property
    def agreement(self) -> float:
        return self.agreed / self.positions

    def to_dict(self) -> dict:
        return {"label": self.label, "positions": self.positions, "agreement": self.agreement,
                "mean_logprob_delta": self.mean_logprob_delta, "max_logprob_delta": self.max_logprob_delta,
                "first_mismatch": self.first_mismatch}


@dataclass(frozen=True)
class GenerationReport:
    """The gate's verdict on one variant over the golden sequences."""

    variant: str
    sequences: tuple[SequenceAgreement, ...]
    tolerance: GenerationTolerance

    @property
    def positions(self) -> int:
        return sum(s.positions for s in self.sequences)

    @property
    def agreement(self) -> float:
        """Pooled over every continuation position of every sequence."""
        return sum(s.agreed for s in self.sequences) / self.positions

    @property
    def min_agreement(self) -> float:
        """The worst sequence's agreement."""
        return min(s.agreement for s in self.sequences)

    @property
    def mean_logprob_delta(self) -> float:
        return sum(s.mean_logprob_delta * s.positions for s in self.sequences) / self.positions

    @property
    def max_logprob_delta(self) -> float:
        return max(s.max_logprob_delta for s in self.sequences)

    @property
    def passed(self) -> bool:
        tol = self.tolerance
        return self.agreement >= tol.min_agreement and (
            tol.max_logprob_delta is None or self.mean_logprob_delta <= tol.max_logprob_delta)

    @property
    def reason(self) -> str:
        """Why it failed ('' when it passed)."""
        tol = self.tolerance
        if self.agreement < tol.min_agreement:
            return (f"teacher-forced next-token agreement {self.agreement:.3f} < {tol.min_agreement} over "
                    f"{self.positions} position(s) of {len(self.sequences)} golden sequence(s)")
        if tol.max_logprob_delta is not None and self.mean_logprob_delta > tol.max_logprob_delta:
            return f"mean log-prob delta {self.mean_logprob_delta:.3g} > {tol.max_logprob_delta}"
        return ""

    def to_dict(self) -> dict:
        """What report.json records per variant (``generation``)."""
        return {"passed": self.passed, "agreement": self.agreement, "min_agreement": self.min_agreement,
                "mean_logprob_delta": self.mean_logprob_delta, "max_logprob_delta": self.max_logprob_delta,
                "positions": self.positions, "tolerance": self.tolerance.to_dict(),
                "sequences": [s.to_dict() for s in self.sequences]}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis, in float64, shifted by the max so nothing overflows."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def sequence_logits(logits_fn: LogitsFn, seq: GoldenSequence) -> np.ndarray:
    """``logits_fn`` on the whole sequence (batch 1, all-ones mask): [L, vocab], checked."""
    ids = seq.ids[None, :]
    out = np.asarray(logits_fn(ids, np.ones_like(ids)))
    if out.ndim != 3 or out.shape[:2] != (1, len(seq.ids)):
        raise SpecError(f"golden sequence {seq.label!r}: logits_fn returned {out.dtype}{list(out.shape)} for "
                        f"{len(seq.ids)} token(s); it must return [1, {len(seq.ids)}, vocab].")
    if not np.all(np.isfinite(out)):
        raise SpecError(f"golden sequence {seq.label!r}: logits_fn returned NaN or Inf logits.")
    return out[0]


def compare_sequence(seq: GoldenSequence, candidate: np.ndarray, reference: np.ndarray) -> SequenceAgreement:
    """Agreement and log-prob delta of one sequence from its candidate logits [L, vocab] and its
    reference logits: [L, vocab] over the whole sequence, or [continuation, vocab], one row per
    generated token (what ``generate(output_logits=True)`` gives)."""
    # the logits at position p predict the token at p + 1
    steps = slice(seq.prompt_len - 1, len(seq.ids) - 1)
    target = seq.continuation
    if reference.ndim == 2 and reference.shape[0] == len(target):
        reference = np.concatenate([np.zeros((seq.prompt_len - 1, reference.shape[1]), reference.dtype), reference,
                                    np.zeros((1, reference.shape[1]), reference.dtype)])
    if candidate.shape != reference.shape:
        raise SpecError(f"golden sequence {seq.label!r}: candidate logits {list(candidate.shape)} and reference "
                        f"logits {list(reference.shape)} differ in shape.")
    if not np.all(np.isfinite(reference[steps])):
        raise SpecError(f"golden sequence {seq.label!r}: the reference logits hold NaN or Inf.")
    rows = np.arange(len(target))
    agree = np.argmax(candidate[steps], axis=-1) == target
    delta = np.abs(log_softmax(candidate[steps])[rows, target] - log_softmax(reference[steps])[rows, target])
    misses = np.flatnonzero(~agree)
    return SequenceAgreement(seq.label, len(target), int(agree.sum()), float(delta.mean()), float(delta.max()),
                             int(misses[0]) if misses.size else None)


def teacher_forced(sequences: Sequence[GoldenSequence], candidate: LogitsFn,
                   reference: LogitsFn | Sequence[np.ndarray], tolerance: GenerationTolerance | None = None,
                   variant: str = "", precision: str = "int8") -> GenerationReport:
    """Judge ``candidate`` on ``sequences`` against ``reference``: a logits function, or each
    sequence's reference logits already computed, [1, L, vocab], [L, vocab] or one row per
    continuation token [continuation, vocab].

    Raises:
        SpecError: no sequences, or logits of the wrong shape or with NaN/Inf.
    """
    if not sequences:
        raise SpecError("the generation gate needs at least one golden sequence (prompt + continuation).")
    if not callable(reference) and len(reference) != len(sequences):
        raise SpecError(f"{len(reference)} reference logits for {len(sequences)} golden sequence(s).")
    results = []
    for i, seq in enumerate(sequences):
        if callable(reference):
            ref = sequence_logits(reference, seq)
        else:
            ref = np.asarray(reference[i])
            ref = ref[0] if ref.ndim == 3 and ref.shape[0] == 1 else ref
        results.append(compare_sequence(seq, sequence_logits(candidate, seq), ref))
    tol = tolerance if tolerance is not None else generation_tolerance(precision)
    if not (0.0 <= tol.min_agreement <= 1.0) or (tol.max_logprob_delta is not None
                                                  and not (math.isfinite(tol.max_logprob_delta)
                                                           and tol.max_logprob_delta >= 0)):
        raise SpecError(f"generation tolerance {tol.to_dict()}: min_agreement must be in [0, 1] and "
                        "max_logprob_delta a finite number >= 0.")
    return GenerationReport(variant, tuple(results), tol)


def prefill_logits_fn(session: Any, layout: Any) -> LogitsFn:
    """A :data:`LogitsFn` over a decoder graph's onnxruntime session (duck-typed: ``run(None, feeds)``):
    the whole sequence in one prefill call, past of length 0. ``layout``: an
    ``edgeship.generate.DecoderLayout`` (``past_names``, ``kv_heads``, ``head_dim``, ``past_dtype``,
    ``position_ids``)."""
    out_names = [o.name for o in session.get_outputs()]
    at = out_names.index("logits")

    def fn(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        batch, length = input_ids.shape
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if layout.position_ids:
            feeds["position_ids"] = np.broadcast_to(np.arange(length, dtype=np.int64), (batch, length)).copy()
        empty = np.zeros((batch, layout.kv_heads, 0, layout.head_dim), dtype=np.dtype(layout.past_dtype))
        feeds.update({name: empty for name in layout.past_names})
        return session.run([out_names[at]], feeds)[0]

    return fn
