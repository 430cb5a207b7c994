"""Stage 7, select: per target, the default is the fastest candidate that passes parity there.

A candidate is (runtime, variant's model file, precision, runtime options): every passing variant
on onnxruntime's defaults, and, with ``config.tune`` on the cpu target, onnxruntime's session
options (intra-op threads, spinning, graph optimisation level) and OpenVINO where it is installed
(f32, bf16 where the CPU has it, the static-int8 QDQ file). Candidates beyond the variants'
defaults are parity-checked (the precision class's tolerance) before their first timing, and
those that pass are timed interleaved and adaptively (:func:`quick_p50s`, which opens and checks
them when it suits the timing).

Reads ``spec``, ``samples``, ``references``, ``variants`` (with ``passed``), ``targets``; adds
``latency`` (p50 ms of each passing variant on onnxruntime's defaults per target), ``defaults``
(target -> variant) and ``candidates`` (target -> passing candidates, the default first).
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeship.bundle.golden import Sample
from edgeship.bundle.manifest import Candidate
from edgeship.errors import EdgeshipError, brief
from edgeship.host import usable_cpus
from edgeship.parity.evaluate import run_parity
from edgeship.parity.tolerances import Tolerance
from edgeship.pipeline.context import Context, required
from edgeship.profiling.timing import cores_busy, time_calls, wait_idle
from edgeship.runtimes import openvino as ov_runtime
from edgeship.runtimes.base import Runner
from edgeship.runtimes.ort import OrtRunner
from edgeship.runtimes.registry import OPENVINO, ORT, installed, make_runner
from edgeship.spec import IOSpec

log = logging.getLogger(__name__)

# a candidate must beat the plain fp32 one by this much to be the default: at equal speed, keep fp32
MIN_SPEEDUP = 1.05
# candidates within this factor of the fastest are a tie (the selection's noise; see rank)
NEAR_TIE = 1.03
# adaptive timing (quick_p50s): up to ROUNDS rounds of one block each, a block ~BLOCK_S long (at
# least MIN_CALLS calls); a candidate slower than the best so far by DROP[rounds done] stops being
# timed (1.5x after one round, 1.2x after later ones), and before the last round LAST_MARGIN decides
ROUNDS = 3
BLOCK_S = 0.003
MIN_CALLS = 3
MAX_CALLS = 2000
# untimed calls before each block: after another model ran (and after a pause), the first calls
# of EfficientNet-style took up to 2x as long for ~5 ms (caches, idle threads waking), on
# onnxruntime and OpenVINO alike
WARM_S = 0.006
DROP = {1: 1.5, 2: 1.2}
# before the last round, a runner goes on only if its fastest block is within this factor of the
# best's slowest: the last block moves each figure only within its blocks so far, so any other
# cannot end within NEAR_TIE of the fastest nor, if it is the fp32 reference, within MIN_SPEEDUP
LAST_MARGIN = NEAR_TIE * MIN_SPEEDUP
# onnxruntime's idle intra-op workers spin for 32-34 ms after a run (measured from the threads'
# schedstat, EfficientNet-style at 2 threads; OpenVINO's idle threads use no CPU). In one process,
# blocks of four sessions of one int8 model taken in turns measured 1.0 to 6.2 ms for the same
# 1.0 ms call: after a block of a session that spins, the next block of another waits until the
# process is idle (timing.wait_idle), at most SETTLE_MAX_S.
SETTLE_MAX_S = 0.2
# ...unless the spinning session reopens faster than this: closing it ends its threads at once
# (ResNet-style 64x64 reopens in 2 ms)
REOPEN_MAX_S = 0.01


@dataclass(frozen=True)
class CandidateConfig:
    """A candidate before it is measured: ``id`` is the variant's name for the variant on
    onnxruntime's defaults (so the plain fp32 candidate is ``fp32``)."""

    id: str
    runtime: str
    variant: str
    precision: str
    options: dict = field(default_factory=dict)

    @property
    def plain(self) -> bool:
        return self.runtime == ORT and not self.options


def candidate_configs(variants: dict[str, str], target: str, tune: bool = True, runtimes: tuple[str, ...] | None = None,
                      cores: int | None = None) -> list[CandidateConfig]:
    """The candidates of ``variants`` (name -> precision class) on ``target``.

    Args:
        tune: add onnxruntime's session options and the other installed runtimes (cpu target only).
        runtimes: only these runtimes (default: every installed one).
        cores: usable cores (default: :func:`usable_cpus`).
    """
    allowed = runtimes or tuple(r for r in (ORT, OPENVINO) if installed(r))
    out = [CandidateConfig(n, ORT, n, p) for n, p in variants.items()] if ORT in allowed else []
    if not tune or target != "cpu":
        return out
    cores = cores or usable_cpus()
    if ORT in allowed:
        for n, p in variants.items():
            if cores > 1:
                out.append(CandidateConfig(f"{n}+threads=1", ORT, n, p, {"threads": 1}))
                if cores > 2:
                    out.append(CandidateConfig(f"{n}+threads={cores // 2}", ORT, n, p, {"threads": cores // 2}))
            out.append(CandidateConfig(f"{n}+spinning=off", ORT, n, p, {"spinning": False}))
        if "fp32" in variants:
            out.append(CandidateConfig("fp32+opt_level=extended", ORT, "fp32", "fp32", {"opt_level": "extended"}))
    if OPENVINO in allowed and installed(OPENVINO):
        if "fp32" in variants:
            out.append(CandidateConfig("fp32@openvino", OPENVINO, "fp32", "fp32"))
            if ov_runtime.has_bf16():
                out.append(CandidateConfig("fp32@openvino-bf16", OPENVINO, "fp32", "bf16"))
        for n, p in variants.items():
            if n.startswith("int8_static"):
                out.append(CandidateConfig(f"{n}@openvino", OPENVINO, n, p))
    return out


def quick_p50s(runners: Mapping[str, Runner], feeds: dict, rounds: int = ROUNDS, block_s: float = BLOCK_S,
               keep: str | None = None, settle: Callable[[], object] = lambda: wait_idle(SETTLE_MAX_S),
               prepare: Mapping[str, Callable[[], bool]] | None = None,
               busy: Callable[[], bool] = lambda: cores_busy()) -> dict[str, float]:
    """p50 latency in ms of each runner on ``feeds``, measured interleaved and adaptively.

    The runners take turns in short blocks (the profiler's timing loop), a new order each round,
    and each figure is the median of its block medians: on a shared machine a burst of load then
    hits every runner alike instead of whichever happened to be timed during it. A block is sized
    to ``block_s`` from a first few calls (which count towards its :data:`WARM_S` of untimed
    ones). A runner whose figure so far is :data:`DROP` times the best's (1.5 after the first
    round) stops being timed (it cannot win), except ``keep`` (the reference the default must
    beat); before the last round, which moves a figure only within its blocks so far (``rounds``
    of 3 or more), only the runners whose fastest block is within :data:`LAST_MARGIN` of the best's
    slowest go on, the best among them: twice the candidates do not cost twice the time.

    No block shares the cores with the idle threads of the runner before it, which spin for a
    while (``spins_when_idle``: onnxruntime with more than one thread): a runner on one thread
    (``one_core``) may go next (the spinning thread has the other core); otherwise the spinning
    runner is closed, which ends its threads, and reopened before its next block if it opened in
    under :data:`REOPEN_MAX_S`, else the next block waits for the spinning to stop (``settle``).
    A runner no longer timed is closed. So the runners must be able to reopen (fresh ones).

    Args:
        prepare: runner name -> a function that opens and checks it (False: leave it out). Runners
            that do not spin when idle are prepared during the waits while the spinning lasts
            (``busy``); the others, and those left over, just before their first block; in the first
            round the runners that spin go first.
    """
    pending = dict(prepare or {})
    calls: dict[str, tuple[Callable, tuple]] = {}
    spins = {n: bool(getattr(r, "spins_when_idle", False)) for n, r in runners.items()}
    one_core = {n: bool(getattr(r, "one_core", False)) for n, r in runners.items()}

    def ready(n: str) -> bool:
        if n in pending and not pending.pop(n)():
            return False
        if n not in calls:  # (re)opens it
            calls[n] = runners[n].timing_call(feeds)
        return True

    def pause() -> None:  # a spinning pool holds a core: no timing, but other runners can be prepared meanwhile
        while (n := next((m for m in pending if not spins[m]), None)) and busy():
            ready(n)
        settle()

    def close(n: str) -> None:
        runners[n].close()
        calls.pop(n, None)

    blocks: dict[str, list[float]] = {n: [] for n in runners}
    size: dict[str, int] = {}
    warm: dict[str, int] = {}
    rng = random.Random(0)
    active = list(runners)
    rng.shuffle(active)
    active.sort(key=lambda n: not spins[n])  # the first round: the spinning ones first, the others prepared meanwhile
    spinning: str | None = ""  # the runner whose threads may still spin ("": whatever ran before, e.g. parity)
    spare_core = usable_cpus() > 1
    for round_ in range(rounds):
        order = list(active)
        if round_:
            rng.shuffle(order)
        while order:
            n = order[0]
            if spinning is not None and spare_core:  # a one-thread runner can go now: a core is free
                n = next((m for m in order if one_core[m]), n)
            order.remove(n)
            if spinning is not None and spinning != n and not (spare_core and one_core[n]):
                load_s = getattr(runners[spinning], "load_s", None) if spinning else None
                if load_s is not None and load_s <= REOPEN_MAX_S:
                    close(spinning)
                else:
                    pause()
                spinning = None
            if not ready(n):
                active.remove(n)
                continue
            run, args = calls[n]
            count = None
            if n not in size:  # size its block from a few calls, which count towards its warm-up
                per_call = max(float(np.median(time_calls(run, args, warmup=2, iterations=MIN_CALLS))), 1.0)
                size[n] = int(min(MAX_CALLS, max(MIN_CALLS, block_s * 1e9 / per_call)))
                warm[n] = int(min(MAX_CALLS, max(2, WARM_S * 1e9 / per_call)))
                count = max(2, warm[n] - 2 - MIN_CALLS)
            blocks[n].append(float(np.median(time_calls(run, args, warmup=count or warm[n], iterations=size[n]))))
            if spins[n]:
                spinning = n
        before = active
        if len(active) > 1:
            so_far = {n: float(np.median(blocks[n])) for n in active}
            best = min(active, key=so_far.__getitem__)
            if rounds >= 3 and round_ + 1 == rounds - 1:
                reach = max(blocks[best]) * LAST_MARGIN
                active = [best] + [n for n in active if n != best and min(blocks[n]) <= reach]
            else:
                factor = DROP[min(round_ + 1, max(DROP))]
                active = [n for n in active if n == keep or so_far[n] <= so_far[best] * factor]
        for n in before:
            if n not in active:
                close(n)
                spinning = None if spinning == n else spinning
        if len(active) <= 1:
            break
    return {n: float(np.median(b) / 1e6) for n, b in blocks.items() if b}


def parity_of(runner: Runner, samples: list[Sample], references: list[dict], tol: Callable[[str], Tolerance],
              variant: str) -> tuple[bool, dict, str | None]:
    """(passed, {max_abs, min_cosine}, the first failure's reason) of one runner on the samples."""
    report = run_parity([runner], samples, references, tol, variant)
    rows = report.summary()
    figures = {"max_abs": max((r.get("max_abs", 0.0) for r in rows), default=None),
               "min_cosine": min((r.get("cosine", 1.0) for r in rows), default=None)}
    bad = report.failures()
    return report.passed, figures, (f"{bad[0].output}: {bad[0].reason}" if bad else None)


def measure_candidates(spec: IOSpec, configs: list[CandidateConfig], model_of: Callable[[str], bytes | Path],
                       target: str, feeds: dict, samples: list[Sample], references: list[dict],
                       tol_of: Callable[[CandidateConfig], Callable[[str], Tolerance]], checked: dict[str, dict] | None = None,
                       note: Callable[[str], None] = log.info) -> list[Candidate]:
    """Open, parity-check and time ``configs``; the ones that pass, measured, in ``configs`` order.

    Args:
        model_of: a variant's model (verified bytes or a work-folder path).
        tol_of: a candidate -> its per-output tolerance (its precision class's).
        checked: candidate id -> parity figures already known to pass (the parity stage's variants);
            the others are checked here.
        note: told why a candidate is left out (does not open, fails parity).
    """
    checked = checked or {}
    runners: dict[str, Runner] = {}
    figures: dict[str, dict] = {}

    def ready(c: CandidateConfig) -> bool:  # open it and check its parity; False: leave it out
        r = runners[c.id]
        try:
            r.load()
        except EdgeshipError as e:
            note(f"{target}: candidate {c.id} does not open ({brief(e)}); left out")
            return False
        if c.id in checked:
            figures[c.id] = checked[c.id]
            return True
        ok, fig, why = parity_of(r, samples, references, tol_of(c), c.variant)
        if not ok:
            note(f"{target}: candidate {c.id} fails parity for {c.precision} ({why}); left out")
            r.close()
            return False
        figures[c.id] = fig
        return True

    try:
        for c in configs:
            runners[c.id] = make_runner(spec, model_of(c.variant), c.runtime, target=target, precision=c.precision,
                                        options=c.options, name=c.id, what=f"variant {c.variant}")
        # opened by quick_p50s when it suits the timing (while a spinning session holds the cores)
        p50 = quick_p50s(runners, feeds, keep="fp32", prepare={c.id: functools.partial(ready, c) for c in configs}) \
            if runners else {}
    finally:
        for r in runners.values():
            r.close()
    by_id = {c.id: c for c in configs}
    return [Candidate(id=i, runtime=by_id[i].runtime, variant=by_id[i].variant, precision=by_id[i].precision,
                      options=dict(by_id[i].options), p50_ms=round(p50[i], 4), passed=True,
                      max_abs=figures[i].get("max_abs"), min_cosine=figures[i].get("min_cosine"))
            for i in runners if i in p50 and i in figures]


def rank(candidates: list[Candidate], vacuous: bool = False) -> list[Candidate]:
    """The candidates fastest first, except that a candidate must beat the plain fp32 one by
    :data:`MIN_SPEEDUP` to go before it, that among candidates within :data:`NEAR_TIE` of the
    fastest the simplest leads (onnxruntime before OpenVINO, then the fewest options: a difference
    that small is the selection's noise, and onnxruntime runs wherever the bundle loads), and
    that with vacuous parity evidence only fp32-precision candidates may lead."""
    ms = {c.id: c.p50_ms if c.p50_ms is not None else float("inf") for c in candidates}
    order = sorted(candidates, key=lambda c: ms[c.id])
    if not order:
        return order
    plain = next((c for c in candidates if c.id == "fp32"), None)
    eligible = [c for c in order if c.precision == "fp32"] if vacuous else order
    best = eligible[0] if eligible else order[0]
    ties = [c for c in eligible if ms[c.id] <= ms[best.id] * NEAR_TIE]
    best = min(ties, key=lambda c: (c.runtime != ORT, len(c.options), ms[c.id]))  # best itself is a tie
    if plain is not None and best is not plain and ms[best.id] * MIN_SPEEDUP > ms[plain.id]:
        best = plain
    return [best] + [c for c in order if c is not best]


def select_stage(ctx: Context) -> str:
    from edgeship.parity.tolerances import effective_tolerances

    spec = required(ctx.spec, "spec")
    feeds = ctx.samples[0].feeds
    tolerances = effective_tolerances(ctx.config)
    for t in ctx.targets:
        passing = [n for n, v in ctx.variants.items() if v.passed.get(t)]
        if not passing:
            continue
        extra = [c for c in candidate_configs({n: ctx.variants[n].precision for n in passing}, t, ctx.config.tune)
                 if not c.plain]
        if extra:
            ranked = measure_candidates(
                spec, [CandidateConfig(n, ORT, n, ctx.variants[n].precision) for n in passing] + extra,
                lambda n: ctx.variants[n].file, t, feeds, ctx.samples, ctx.references,
                lambda c: tolerances.for_precision(c.precision),
                checked={n: _variant_figures(ctx, n) for n in passing}, note=ctx.note)
            for c in ranked:
                if c.plain and c.p50_ms is not None:
                    ctx.latency[(c.id, t)] = c.p50_ms
        else:  # the variants on onnxruntime's defaults: no second parity run
            runners = {n: OrtRunner(spec, ctx.variants[n].file, target=t).load() for n in passing}
            try:
                for n, ms in quick_p50s(runners, feeds, keep="fp32").items():
                    ctx.latency[(n, t)] = ms
            finally:
                for r in runners.values():
                    r.close()
            ranked = [Candidate(id=n, runtime=ORT, variant=n, precision=ctx.variants[n].precision,
                                p50_ms=round(ctx.latency[(n, t)], 4), **_variant_figures(ctx, n)) for n in passing]
        vacuous = bool(ctx.parity.vacuous) and "fp32" in passing
        order = rank(ranked, vacuous)
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
            ctx.note(f"{t}: fp32 ({base:.3g} ms) is the default: " + (", ".join(slower) if slower else
                     "no quantized variant is at least 5% faster") + " on this machine")
        elif not best.plain:
            ctx.note(f"{t}: the default is {best.describe()} ({best.p50_ms:.3g} ms"
                     + (f", {base / best.p50_ms:.2f}× faster than fp32 on onnxruntime's defaults" if base and best.p50_ms else "")
                     + ")")
    return ", ".join(f"{t}: {cs[0].id}" for t, cs in ctx.candidates.items())


def _variant_figures(ctx: Context, name: str) -> dict:
    rows = [r for r in ctx.parity.summary() if r["variant"] == name]
    return {"max_abs": max((r.get("max_abs", 0.0) for r in rows), default=None),
            "min_cosine": min((r.get("cosine", 1.0) for r in rows), default=None)}
