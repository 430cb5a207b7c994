"""Generation parity of decoder bundles: the golden prompts' greedy tokens and per-step logits.

A decoder bundle (``edgeship.exporters.hf_decoder``) ships ``golden/generation.npz``: per prompt ``{i}/prompt``
(token ids), ``{i}/tokens`` (the eager model's greedy new tokens) and ``{i}/logits`` ([steps, vocab]).
``edgeship check`` re-runs generation with :mod:`edgeship.generate` on each variant it checks and adds
one row per prompt (output ``generation``): fp32 must give the same tokens and logits within the fp32
tolerance; a quantized variant must pass the teacher-forced generation gate
(:mod:`edgeship.parity.generation`: next-token agreement pooled over the prompts, log-prob delta), its
rows carrying each prompt's ``agreement`` and ``logprob_delta`` beside the free-running figures.
Needs numpy and onnxruntime only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeship.bundle.golden import read_bundle_npz
from edgeship.bundle.manifest import variants_of
from edgeship.errors import BundleError, EdgeshipError, InferenceError, brief
from edgeship.parity.report import OutputCheck, ParityReport
from edgeship.spec import IOSpec

MAX_PROMPTS = 64
MAX_STEPS = 4096
MAX_PROMPT_TOKENS = 8192  # golden prompts are a few dozen tokens; a longer one is a crafted bundle


def judge_prompt(ref_tokens: list[int], ref_logits: np.ndarray, tokens: list[int], logits: np.ndarray,
                 precision: str) -> dict:
    """One prompt: tokens agreement and the logits' metrics (``parity.metrics``) over the agreeing steps."""
    from edgeship.parity.metrics import judge, metrics
    from edgeship.parity.tolerances import tolerance_for

    tol = tolerance_for(precision)
    n = min(len(ref_tokens), len(tokens))
    agree = next((i for i in range(n) if ref_tokens[i] != tokens[i]), n)
    steps = min(agree + 1, n)
    m = metrics(ref_logits[:steps], logits[:steps], tol) if steps else {"max_abs": 0.0, "cosine": 1.0}
    why = judge(m, tol) if steps else None
    identical = list(ref_tokens) == list(tokens)
    if why is None and precision == "fp32" and not identical:
        why = f"greedy tokens differ from the eager model's from step {agree} ({ref_tokens[agree:agree + 3]} vs " \
              f"{list(tokens[agree:agree + 3])})"
    return {"passed": why is None, "tokens_identical": identical, "agree": agree, "max_abs": float(m["max_abs"]),
            "cosine": float(m["cosine"]), "why": why}


def read_golden(b: Any, vocab: int | None = None) -> tuple[list[list[int]], list[list[int]], list[np.ndarray]]:
    """The golden prompts, tokens and logits of a decoder bundle, checked: token ids in [0, ``vocab``)
    and logits ``vocab`` wide (``vocab``: the graph's logits width, where fixed), prompts of at most
    :data:`MAX_PROMPT_TOKENS` tokens.

    Raises:
        BundleError: no such file, arrays of the wrong kind or shape, ids outside the vocabulary.
    """
    meta = b.manifest.get("generation")
    rel = meta.get("golden") if isinstance(meta, dict) else None
    if not isinstance(rel, str) or rel not in b.files:
        raise BundleError(f"bundle {b.path}: manifest.json 'generation' names no listed golden file; "
                          "the bundle is corrupt or was edited.")
    samples = read_bundle_npz(b, rel)
    prompts, tokens, logits = [], [], []
    for i, s in enumerate(samples[:MAX_PROMPTS]):
        p, t, lg = s.get("prompt"), s.get("tokens"), s.get("logits")
        if not (isinstance(p, np.ndarray) and isinstance(t, np.ndarray) and isinstance(lg, np.ndarray)
                and p.ndim == 1 and t.ndim == 1 and lg.ndim == 2 and p.dtype.kind in "iu" and t.dtype.kind in "iu"
                and lg.dtype.kind == "f" and p.size and 0 < t.size <= MAX_STEPS and lg.shape[0] == t.size):
            raise BundleError(f"bundle {b.path}: {rel} sample {i} is not a prompt, its tokens and their logits; "
                              "the bundle is corrupt or was edited.")
        if p.size > MAX_PROMPT_TOKENS:
            raise BundleError(f"bundle {b.path}: {rel} sample {i} has a prompt of {p.size} tokens, over the "
                              f"{MAX_PROMPT_TOKENS} a golden prompt may have; the bundle is corrupt or was edited.")
        if vocab is not None:
            if lg.shape[1] != vocab:
                raise BundleError(f"bundle {b.path}: {rel} sample {i} has logits {lg.shape[1]} wide; the model's "
                                  f"vocabulary is {vocab}. The bundle is corrupt or was edited.")
            for what, a in (("prompt", p), ("tokens", t)):
                bad = a[(a < 0) | (a >= vocab)]
                if bad.size:
                    raise BundleError(f"bundle {b.path}: {rel} sample {i} {what} holds token id {int(bad[0])} outside "
                                      f"the model's vocabulary [0, {vocab}); the bundle is corrupt or was edited.")
        prompts.append(p.tolist())
        tokens.append(t.tolist())
        logits.append(lg)
    if not prompts:
        raise BundleError(f"bundle {b.path}: {rel} holds no golden prompts; the bundle is corrupt or was edited.")
    return prompts, tokens, logits


def prompt_checks(session: Any, layout: Any, golden: tuple[list[list[int]], list[list[int]], list[np.ndarray]],
                  eos: list[int], pad: int, variant: str, precision: str) -> list[OutputCheck]:
    """Greedy generation of each golden prompt on ``session`` (an onnxruntime session of one variant),
    judged against the golden tokens and logits: one check per prompt (output ``generation``).

    Raises:
        InferenceError: onnxruntime fails to run a prompt.
    """
    from edgeship.generate import run_loop

    checks = []
    for i, (p, t, lg) in enumerate(zip(*golden)):
        try:
            got = run_loop(session, layout, [p], len(t), eos, pad, output_logits=True)
        except EdgeshipError:
            raise
        except Exception as e:  # onnxruntime's own errors (a graph that fails on these ids, memory)
            raise InferenceError(f"variant {variant}: onnxruntime failed generating golden prompt {i} "
                                 f"({len(p)} tokens): {brief(e)}") from e
        r = judge_prompt(t, lg, got.tokens[0], (got.logits or [np.zeros((0, 1))])[0], precision)
        checks.append(OutputCheck("onnxruntime-cpu", variant, "generation", f"prompt-{i}", r["passed"],
                                  {"max_abs": r["max_abs"], "cosine": r["cosine"], "token_agreement": r["agree"] / len(t)},
                                  r["why"]))
    return checks


def eos_and_pad(manifest: dict) -> tuple[list[int], int]:
    """The end-of-sequence ids and the pad id a decoder bundle generates with (checked)."""
    from edgeship.generate import generation_meta

    meta = generation_meta(manifest)
    eos = meta.get("eos_token_id")
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    return eos, int(meta.get("pad_token_id", min(eos) if eos else 0))


def generation_checks(b: Any, spec: IOSpec, variants: list[str]) -> ParityReport:
    """Re-run greedy generation of the golden prompts on each variant (onnxruntime, CPU)."""
    import onnxruntime as ort

    from edgeship.generate import decoder_layout
    from edgeship.parity.generation import recorded_tolerance

    layout = decoder_layout(spec)
    vocab = next((t.shape[2] for t in spec.outputs if t.name == "logits" and len(t.shape) == 3
                  and isinstance(t.shape[2], int)), None)
    golden = read_golden(b, vocab)
    eos, pad = eos_and_pad(b.manifest)
    shipped = variants_of(b.manifest)
    checks: list[OutputCheck] = []
    for name in variants:
        v = shipped[name]
        session = ort.InferenceSession(b.read(v.file), providers=["CPUExecutionProvider"])
        if v.precision != "fp32":  # quantized: the teacher-forced generation gate, as at export
            rows, _ = quantized_checks(session, layout, golden, eos, pad, name, v.precision,
                                       recorded_tolerance(v.tolerance.get("generation", v.tolerance.get("logits")),
                                                          v.precision))
            checks += rows
            continue
        checks += prompt_checks(session, layout, golden, eos, pad, name, v.precision)
    return ParityReport(tuple(checks))


def quantized_checks(session: Any, layout: Any, golden: tuple[list[list[int]], list[list[int]], list[np.ndarray]],
                     eos: list[int], pad: int, variant: str, precision: str, tolerance: Any = None) -> tuple[list[OutputCheck], Any]:
    """A quantized variant's rows: the free-running generation's figures (:func:`prompt_checks`) with each
    prompt's teacher-forced ``agreement`` and log-prob delta beside them, and the verdict of the generation
    gate (:func:`edgeship.parity.generation.teacher_forced`, pooled over every prompt); and the gate's report."""
    from edgeship.parity.generation import GoldenSequence, prefill_logits_fn, teacher_forced

    prompts, tokens, logits = golden
    free = prompt_checks(session, layout, golden, eos, pad, variant, precision)
    seqs = [GoldenSequence(np.array(list(p) + list(t), np.int64), len(p), f"prompt-{i}")
            for i, (p, t) in enumerate(zip(prompts, tokens))]
    try:
        gate = teacher_forced(seqs, prefill_logits_fn(session, layout), logits, tolerance, variant=variant,
                              precision=precision)
    except EdgeshipError:
        raise
    except Exception as e:  # onnxruntime's own errors
        raise InferenceError(f"variant {variant}: onnxruntime failed on the teacher-forced golden prompts: "
                             f"{brief(e)}") from e
    rows = [OutputCheck(f.runner, variant, "generation", f.sample, gate.passed,
                        {**f.metrics, "agreement": s.agreement, "logprob_delta": s.mean_logprob_delta,
                         "max_logprob_delta": s.max_logprob_delta}, gate.reason or None)
            for f, s in zip(free, gate.sequences)]
    return rows, gate
