"""Stage 7, select: per target, the default variant is the fastest that passes parity there.

Reads ``spec``, ``samples``, ``variants`` (with ``passed``), ``targets``; adds ``latency``
(p50 ms of each passing variant per target) and ``defaults`` (target -> variant).
"""

from __future__ import annotations

import random

import numpy as np

from edgeship.pipeline.context import Context, required
from edgeship.profiling.timing import time_calls
from edgeship.runtimes.ort import OrtRunner

# a quantized variant must beat fp32 by this much to be the default: at equal speed, keep fp32
MIN_SPEEDUP = 1.05


def quick_p50s(runners: dict[str, OrtRunner], feeds: dict, rounds: int = 7, block_s: float = 0.025) -> dict[str, float]:
    """p50 latency in ms of each runner on ``feeds``, measured interleaved.

    The variants take turns in short blocks (a new order each round; the profiler's timing loop),
    and each figure is the median of its block medians: on a shared machine a burst of load then
    hits every variant alike instead of whichever happened to be timed during it.
    """
    calls = {n: (r.loaded_session().run, (r.output_names, feeds)) for n, r in runners.items()}
    blocks: dict[str, list[float]] = {n: [] for n in calls}
    order = list(calls)
    rng = random.Random(0)
    for round_ in range(rounds):
        rng.shuffle(order)
        for n in order:
            run, args = calls[n]
            ns = time_calls(run, args, warmup=3 if round_ == 0 else 0, iterations=None, duration=block_s)
            blocks[n].append(float(np.median(ns)))
    return {n: float(np.median(b) / 1e6) for n, b in blocks.items()}


def select_stage(ctx: Context) -> str:
    spec = required(ctx.spec, "spec")
    feeds = ctx.samples[0].feeds
    for t in ctx.targets:
        passing = [n for n, v in ctx.variants.items() if v.passed.get(t)]
        if not passing:
            continue
        runners = {n: OrtRunner(spec, ctx.variants[n].file, target=t).load() for n in passing}
        try:
            for n, ms in quick_p50s(runners, feeds).items():
                ctx.latency[(n, t)] = ms
        finally:
            for r in runners.values():
                r.close()
        base = ctx.latency.get(("fp32", t))
        best = min(passing, key=lambda n: ctx.latency[(n, t)])
        if base is not None and best != "fp32" and ctx.latency[(best, t)] * MIN_SPEEDUP > base:
            best = "fp32"
        if best != "fp32" and "fp32" in passing and ctx.parity.vacuous:
            ctx.note(f"{t}: {best} is faster but not the default: the parity evidence is vacuous for "
                     f"{', '.join(map(repr, ctx.parity.vacuous))}, so nothing shows it is accurate; fp32 is")
            best = "fp32"
        ctx.defaults[t] = best
        if best == "fp32" and base is not None and len(passing) > 1:
            slower = [f"{n} {ctx.latency[(n, t)]:.3g} ms ({ctx.latency[(n, t)] / base:.2f}× fp32)"
                      for n in passing if n != "fp32" and ctx.latency[(n, t)] > base]
            ctx.note(f"{t}: fp32 ({base:.3g} ms) is the default: " + (", ".join(slower) if slower else
                     "no quantized variant is at least 5% faster") + " on this machine")
    return ", ".join(f"{t}: {v}" for t, v in ctx.defaults.items())
