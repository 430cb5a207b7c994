"""Timing candidates side by side: the engine behind the export's selection and ``edgeship tune``.

:func:`quick_p50s` times runners interleaved, in short blocks, adaptively (a runner that cannot win
stops being timed), so a burst of load on a shared machine hits every candidate alike; its
:class:`Timings` keep every block, so the same run also says how noisy it was (:meth:`Timings.noise`),
which decides how large a gain must be before a lossy candidate replaces an exact one.
:func:`measure_candidates` opens, checks (a callback: parity lives above this room) and times a list
of candidate configurations.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.bundle.manifest import Candidate
from edgeship.errors import EdgeshipError, brief
from edgeship.host import usable_cpus
from edgeship.profiling.idle import cores_busy, wait_idle
from edgeship.profiling.timing import time_calls
from edgeship.runtimes.base import Runner
from edgeship.runtimes.registry import CandidateConfig, make_runner, requirements
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
class Timings:
    """What :func:`quick_p50s` measured: per runner, the median of each of its blocks (ms), in the
    order taken (runners that never ran a block are absent)."""

    blocks: dict[str, tuple[float, ...]]

    @property
    def p50(self) -> dict[str, float]:
        """Each runner's figure: the median of its block medians, ms."""
        return {n: float(np.median(b)) for n, b in self.blocks.items()}

    def noise(self) -> float | None:
        """How much one runner's figure moved against the others in this run, relative: each
        block of a runner timed in two rounds or more is first divided by its round's level (the
        median, over those runners, of block ÷ the runner's own median), so a slow spell that hits
        every runner of a round alike, which cannot change which is faster, does not count; then
        (slowest - fastest) / median of those blocks, per runner; the median of that over the
        runners. None when no runner was timed twice. Blocks of one runner are taken rounds apart,
        interleaved with the others, so this is the error a comparison of two figures must exceed."""
        p50 = self.p50
        repeated = {n: b for n, b in self.blocks.items() if len(b) > 1 and p50[n] > 0}
        if not repeated:
            return None
        level = [float(np.median([b[i] / p50[n] for n, b in repeated.items() if len(b) > i]))
                 for i in range(max(map(len, repeated.values())))]
        spreads = []
        for b in repeated.values():
            norm = [x / level[i] for i, x in enumerate(b)]
            spreads.append((max(norm) - min(norm)) / float(np.median(norm)))
        return round(float(np.median(spreads)), 4)


def quick_p50s(runners: Mapping[str, Runner], feeds: dict, rounds: int = ROUNDS, block_s: float = BLOCK_S,
               keep: str | None = None, settle: Callable[[], object] = lambda: wait_idle(SETTLE_MAX_S),
               prepare: Mapping[str, Callable[[], bool]] | None = None,
               busy: Callable[[], bool] = lambda: cores_busy()) -> Timings:
    """The latency of each runner on ``feeds`` (its block medians), measured interleaved and adaptively.

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
    return Timings({n: tuple(x / 1e6 for x in b) for n, b in blocks.items() if b})


def measure_candidates(spec: IOSpec, configs: list[CandidateConfig], model_of: Callable[[str], bytes | Path],
                       target: str, feeds: dict, check: Callable[[CandidateConfig, Runner], dict | None],
                       note: Callable[[str], None] = log.info) -> tuple[list[Candidate], Timings]:
    """Open, check and time ``configs``: the ones that open and pass ``check``, measured, in
    ``configs`` order (each with what it requires of a host), and the timings themselves (their noise).

    Args:
        model_of: a variant's model (verified bytes or a work-folder path).
        check: an opened candidate's runner -> its parity figures (``max_abs``, ``min_cosine``),
            or None to leave it out (``check`` says why through its own note).
        note: told why a candidate is left out when it does not open.
    """
    runners: dict[str, Runner] = {}
    figures: dict[str, dict] = {}

    def ready(c: CandidateConfig) -> bool:  # open it and check it; False: leave it out
        r = runners[c.id]
        try:
            r.load()
        except EdgeshipError as e:
            note(f"{target}: candidate {c.id} does not open ({brief(e)}); left out")
            return False
        fig = check(c, r)
        if fig is None:
            r.close()
            return False
        figures[c.id] = fig
        return True

    try:
        for c in configs:
            runners[c.id] = make_runner(spec, model_of(c.variant), c.runtime, target=target, precision=c.precision,
                                        options=c.options, name=c.id, what=f"variant {c.variant}")
        # opened by quick_p50s when it suits the timing (while a spinning session holds the cores)
        timings = quick_p50s(runners, feeds, keep="fp32", prepare={c.id: functools.partial(ready, c) for c in configs}) \
            if runners else Timings({})
    finally:
        for r in runners.values():
            r.close()
    by_id = {c.id: c for c in configs}
    p50 = timings.p50
    return [Candidate(id=i, runtime=by_id[i].runtime, variant=by_id[i].variant, precision=by_id[i].precision,
                      options=dict(by_id[i].options), p50_ms=round(p50[i], 4), passed=True,
                      max_abs=figures[i].get("max_abs"), min_cosine=figures[i].get("min_cosine"),
                      requires=requirements(by_id[i].runtime, by_id[i].precision, target))
            for i in runners if i in p50 and i in figures], timings
