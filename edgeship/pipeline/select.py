"""Stage 7, select: per target, the default is the fastest candidate that passes parity there.

A candidate is (runtime, variant's model file, precision, runtime options): every passing variant
on onnxruntime's defaults, and, with ``config.tune`` on the cpu target, onnxruntime's session
options and OpenVINO where it is installed (the list: :func:`edgeship.runtimes.registry.candidate_configs`).
Candidates beyond the variants' defaults are parity-checked (the precision class's tolerance)
before their first timing, and those that pass are timed interleaved and adaptively
(:mod:`edgeship.profiling.interleave`); :func:`rank` orders them.

Reads ``spec``, ``samples``, ``references``, ``variants`` (with ``passed``), ``targets``; adds
``latency`` (p50 ms of each passing variant on onnxruntime's defaults per target), ``defaults``
(target -> variant), ``candidates`` (target -> passing candidates, the default first) and
``selection`` (target -> the timing noise measured and the margin a lossy candidate had to beat).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edgeship.bundle.golden import Sample
from edgeship.bundle.manifest import Candidate
from edgeship.parity.evaluate import run_parity
from edgeship.parity.tolerances import Tolerance
from edgeship.pipeline.context import Context, required
from edgeship.pipeline.mobile import select_mobile
from edgeship.profiling import interleave
from edgeship.profiling.interleave import MIN_SPEEDUP, NEAR_TIE, Timings
from edgeship.runtimes.base import Runner
from edgeship.runtimes.ort import MOBILE, OrtRunner
from edgeship.runtimes.registry import ORT, CandidateConfig, candidate_configs, requirements

log = logging.getLogger(__name__)

EXACT = "fp32"  # the precision class whose candidates compute what the exported graph says


def parity_of(runner: Runner, samples: list[Sample], references: list[dict], tol: Callable[[str], Tolerance],
              variant: str) -> tuple[bool, dict, str | None]:
    """(passed, {max_abs, min_cosine}, the first failure's reason) of one runner on the samples."""
    report = run_parity([runner], samples, references, tol, variant)
    rows = report.summary()
    figures = {"max_abs": max((r.get("max_abs", 0.0) for r in rows), default=None),
               "min_cosine": min((r.get("cosine", 1.0) for r in rows), default=None)}
    bad = report.failures()
    return report.passed, figures, (f"{bad[0].output}: {bad[0].reason}" if bad else None)


def parity_check(target: str, samples: list[Sample], references: list[dict],
                 tol_of: Callable[[CandidateConfig], Callable[[str], Tolerance]], checked: dict[str, dict] | None = None,
                 note: Callable[[str], None] = log.info) -> Callable[[CandidateConfig, Runner], dict | None]:
    """The check :func:`~edgeship.profiling.interleave.measure_candidates` runs on each opened
    candidate: its parity on the samples at its precision class's tolerance (``checked``: candidate
    id -> figures already known to pass, not run again); None, with a note, when it fails."""
    known = checked or {}

    def check(c: CandidateConfig, runner: Runner) -> dict | None:
        if c.id in known:
            return known[c.id]
        ok, fig, why = parity_of(runner, samples, references, tol_of(c), c.variant)
        if not ok:
            note(f"{target}: candidate {c.id} fails parity for {c.precision} ({why}); left out")
            return None
        return fig

    return check


def lossy_margin(noise: float | None) -> float:
    """How much faster a lossy candidate must be than the best exact one to replace it: more than
    the timing noise measured in the same run (:meth:`Timings.noise`), and never less than
    :data:`MIN_SPEEDUP`."""
    return round(max(MIN_SPEEDUP, 1.0 + (noise or 0.0)), 4)


def selection_record(timings: Timings) -> dict:
    """What the manifest records of one target's selection: the measured noise, the lossy margin
    it set, and how both were measured."""
    noise = timings.noise()
    return {"noise": noise, "lossy_margin": lossy_margin(noise), "blocks": max(map(len, timings.blocks.values()), default=0),
            "method": "interleaved blocks, one per candidate per round, each divided by its round's level (what every "
                      "candidate of the round shared); noise = median over candidates timed more than once of "
                      "(slowest block - fastest) / median block"}


def rank(candidates: list[Candidate], vacuous: bool = False, noise: float | None = None) -> list[Candidate]:
    """The candidates in the order ``load`` tries them: each position holds the candidate that
    :func:`leader` picks from those not placed yet. So the order a host gets when it cannot run
    the first few (``load`` skips them) follows the same rules as the default."""
    rest, order = list(candidates), []
    while rest:
        best = leader(rest, vacuous, noise)
        order.append(best)
        rest.remove(best)
    return order


def leader(candidates: list[Candidate], vacuous: bool = False, noise: float | None = None) -> Candidate:
    """The one candidate that should run: the fastest, except that

    - among candidates within :data:`NEAR_TIE` of the fastest of their class the simplest leads
      (onnxruntime before OpenVINO, then the fewest options: a difference that small is the
      selection's noise, and onnxruntime runs wherever the bundle loads);
    - an exact (fp32-precision) candidate other than the plain fp32 one must beat it by
      :data:`MIN_SPEEDUP` to lead;
    - a lossy candidate (int8, fp16, bf16) leads only when it beats the best exact one by more than
      :func:`lossy_margin` of ``noise`` (the noise measured in the same run), and never with
      vacuous parity evidence: otherwise the exact one stays.
    """
    ms = {c.id: c.p50_ms if c.p50_ms is not None else float("inf") for c in candidates}
    order = sorted(candidates, key=lambda c: ms[c.id])

    def simplest(group: list[Candidate]) -> Candidate | None:
        if not group:
            return None
        ties = [c for c in group if ms[c.id] <= ms[group[0].id] * NEAR_TIE]
        return min(ties, key=lambda c: (c.runtime != ORT, len(c.options), ms[c.id]))

    plain = next((c for c in candidates if c.id == "fp32"), None)
    exact = simplest([c for c in order if c.precision == EXACT])
    if exact is not None and plain is not None and exact is not plain and ms[exact.id] * MIN_SPEEDUP > ms[plain.id]:
        exact = plain
    lossy = None if vacuous else simplest([c for c in order if c.precision != EXACT])
    best = exact if lossy is None or (exact is not None and ms[lossy.id] * lossy_margin(noise) >= ms[exact.id]) else lossy
    return best or order[0]


def select_stage(ctx: Context) -> str:
    from edgeship.parity.tolerances import effective_tolerances

    spec = required(ctx.spec, "spec")
    feeds = ctx.samples[0].feeds
    tolerances = effective_tolerances(ctx.config)
    for t in ctx.targets:
        if t == MOBILE:  # this host is not a phone: by size, not by speed here
            select_mobile(ctx)
            continue
        passing = [n for n, v in ctx.variants.items() if v.passed.get(t)]
        if not passing:
            continue
        extra = [c for c in candidate_configs({n: ctx.variants[n].precision for n in passing}, t, ctx.config.tune)
                 if not c.plain]
        if extra:
            check = parity_check(t, ctx.samples, ctx.references, lambda c: tolerances.for_precision(c.precision),
                                 checked={n: _variant_figures(ctx, n) for n in passing}, note=ctx.note)
            ranked, timings = interleave.measure_candidates(
                spec, [CandidateConfig(n, ORT, n, ctx.variants[n].precision) for n in passing] + extra,
                lambda n: ctx.variants[n].file, t, feeds, check, note=ctx.note)
            for c in ranked:
                if c.plain and c.p50_ms is not None:
                    ctx.latency[(c.id, t)] = c.p50_ms
        else:  # the variants on onnxruntime's defaults: no second parity run
            runners = {n: OrtRunner(spec, ctx.variants[n].file, target=t).load() for n in passing}
            try:
                timings = interleave.quick_p50s(runners, feeds, keep="fp32")
                for n, ms in timings.p50.items():
                    ctx.latency[(n, t)] = ms
            finally:
                for r in runners.values():
                    r.close()
            ranked = [Candidate(id=n, runtime=ORT, variant=n, precision=ctx.variants[n].precision,
                                p50_ms=round(ctx.latency[(n, t)], 4), requires=requirements(ORT, ctx.variants[n].precision, t),
                                **_variant_figures(ctx, n)) for n in passing]
        vacuous = bool(ctx.parity.vacuous) and "fp32" in passing
        ctx.selection[t] = selection_record(timings)
        order = rank(ranked, vacuous, ctx.selection[t]["noise"])
        if not order:
            continue
        best, fastest = order[0], rank(ranked)[0]
        if vacuous and fastest.precision != "fp32":
            ctx.note(f"{t}: {fastest.id} is faster but not the default: the parity evidence is vacuous for "
                     f"{', '.join(map(repr, ctx.parity.vacuous))}, so nothing shows it is accurate; fp32 is")
        ctx.candidates[t] = order
        ctx.defaults[t] = best.variant
        base = ctx.latency.get(("fp32", t))
        if best.id == "fp32" and base is not None and len(passing) > 1:
            slower = [f"{n} {ctx.latency[(n, t)]:.3g} ms ({ctx.latency[(n, t)] / base:.2f}× fp32)"
                      for n in passing if n != "fp32" and (n, t) in ctx.latency and ctx.latency[(n, t)] > base]
            margin = ctx.selection[t]["lossy_margin"]
            ctx.note(f"{t}: fp32 ({base:.3g} ms) is the default: " + (", ".join(slower) if slower else
                     f"no quantized variant is more than {(margin - 1) * 100:.0f}% faster (the timing noise of this run "
                     f"was {(ctx.selection[t]['noise'] or 0) * 100:.1f}%)") + " on this machine")
        elif not best.plain:
            ctx.note(f"{t}: the default is {best.describe()} ({best.p50_ms:.3g} ms"
                     + (f", {base / best.p50_ms:.2f}× faster than fp32 on onnxruntime's defaults" if base and best.p50_ms else "")
                     + ")")
    return ", ".join(f"{t}: {cs[0].id}" for t, cs in ctx.candidates.items())


def _variant_figures(ctx: Context, name: str) -> dict:
    rows = [r for r in ctx.parity.summary() if r["variant"] == name]
    return {"max_abs": max((r.get("max_abs", 0.0) for r in rows), default=None),
            "min_cosine": min((r.get("cosine", 1.0) for r in rows), default=None)}
