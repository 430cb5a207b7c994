"""Generation parity of decoder bundles: the golden prompts' greedy tokens and per-step logits.

A decoder bundle (``edgeship.hf.decoder``) ships ``golden/generation.npz``: per prompt ``{i}/prompt``
(token ids), ``{i}/tokens`` (the eager model's greedy new tokens) and ``{i}/logits`` ([steps, vocab]).
``edgeship check`` re-runs generation with :mod:`edgeship.generate` on each variant it checks and adds
one row per prompt (output ``generation``): fp32 must give the same tokens and logits within the fp32
tolerance; a quantized variant must pass the teacher-forced generation gate
(:mod:`edgeship.parity.generation`: next-token agreement pooled over the prompts, log-prob delta),
its rows carrying each prompt's ``agreement`` and ``logprob_delta``. Needs numpy and onnxruntime only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeship.bundle.golden import read_bundle_npz
from edgeship.bundle.manifest import variants_of
from edgeship.errors import BundleError
from edgeship.parity.report import OutputCheck, ParityReport
from edgeship.spec import IOSpec

MAX_PROMPTS = 64
MAX_STEPS = 4096


def judge_generation(ref_tokens: list[list[int]], ref_logits: list[np.ndarray], got: Any, precision: str) -> dict:
    """Compare a generation (``got.tokens``, ``got.logits``) with the reference over all prompts.

    Returns:
        ``{"passed", "tokens_identical", "token_agreement", "max_abs", "min_cosine", "why"}``.
    """
    rows = [judge_prompt(rt, rl, gt, gl, precision) for rt, rl, gt, gl in zip(ref_tokens, ref_logits, got.tokens, got.logits)]
    same = sum(r["agree"] for r in rows)
    total = sum(len(t) for t in ref_tokens)
    return {"passed": all(r["passed"] for r in rows), "tokens_identical": all(r["tokens_identical"] for r in rows),
            "token_agreement": same / max(total, 1), "max_abs": max((r["max_abs"] for r in rows), default=0.0),
            "min_cosine": min((r["cosine"] for r in rows), default=1.0),
            "why": next((r["why"] for r in rows if r["why"]), None)}


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


def read_golden(b: Any) -> tuple[list[list[int]], list[list[int]], list[np.ndarray]]:
    """The golden prompts, tokens and logits of a decoder bundle, checked.

    Raises:
        BundleError: no such file, or arrays of the wrong kind or shape.
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
        prompts.append(p.tolist())
        tokens.append(t.tolist())
        logits.append(lg)
    if not prompts:
        raise BundleError(f"bundle {b.path}: {rel} holds no golden prompts; the bundle is corrupt or was edited.")
    return prompts, tokens, logits


def generation_checks(b: Any, spec: IOSpec, variants: list[str]) -> ParityReport:
    """Re-run greedy generation of the golden prompts on each variant (onnxruntime, CPU)."""
    import onnxruntime as ort

    from edgeship.generate import decoder_layout, generation_meta, run_loop
    from edgeship.parity.generation import recorded_tolerance

    layout = decoder_layout(spec)
    prompts, tokens, logits = read_golden(b)
    meta = generation_meta(b.manifest)
    eos = meta.get("eos_token_id")
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    shipped = variants_of(b.manifest)
    checks = []
    for name in variants:
        v = shipped[name]
        session = ort.InferenceSession(b.read(v.file), providers=["CPUExecutionProvider"])
        if v.precision != "fp32":  # quantized: the teacher-forced generation gate, as at export
            parity = b.manifest["generation"].get("parity")
            recorded = parity.get(name) if isinstance(parity, dict) else None
            tol = recorded_tolerance(recorded.get("teacher_forced") if isinstance(recorded, dict) else None, v.precision)
            checks += teacher_forced_checks(session, layout, name, tol, prompts, tokens, logits)
            continue
        for i, (p, t, lg) in enumerate(zip(prompts, tokens, logits)):
            got = run_loop(session, layout, [p], len(t), eos, int(meta.get("pad_token_id", 0)), output_logits=True)
            r = judge_prompt(t, lg, got.tokens[0], (got.logits or [np.zeros((0, 1))])[0], v.precision)
            checks.append(OutputCheck("onnxruntime-cpu", name, "generation", f"prompt-{i}", r["passed"],
                                      {"max_abs": r["max_abs"], "cosine": r["cosine"],
                                       "token_agreement": r["agree"] / len(t)}, r["why"]))
    return ParityReport(tuple(checks))


def teacher_forced_checks(session: Any, layout: Any, name: str, tolerance: Any, prompts: list[list[int]],
                          tokens: list[list[int]], logits: list[np.ndarray]) -> list[OutputCheck]:
    """One row per golden prompt with its teacher-forced agreement and mean log-prob delta; each row
    carries the gate's verdict, which is pooled over every prompt."""
    from edgeship.parity.generation import GoldenSequence, prefill_logits_fn, teacher_forced

    seqs = [GoldenSequence(np.array(p + t, np.int64), len(p), f"prompt-{i}") for i, (p, t) in enumerate(zip(prompts, tokens))]
    gate = teacher_forced(seqs, prefill_logits_fn(session, layout), logits, tolerance, variant=name)
    return [OutputCheck("onnxruntime-cpu", name, "generation", s.label, gate.passed,
                        {"agreement": s.agreement, "logprob_delta": s.mean_logprob_delta,
                         "max_logprob_delta": s.max_logprob_delta}, gate.reason or None)
            for s in gate.sequences]
