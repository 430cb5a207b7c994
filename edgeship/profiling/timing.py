"""The timing loop of the profiler and of the candidates' selection: one configuration's calls,
timed one by one.

The loop (:func:`time_calls`) reads ``time.perf_counter_ns`` just before and after each call,
stores the difference in a preallocated int64 array and keeps the garbage collector off, so
nothing but the call sits between the two clock reads. What a call is comes from
:mod:`edgeship.profiling.harness`; statistics from :mod:`~edgeship.profiling.stats`, idle
detection from :mod:`~edgeship.profiling.idle`, peak memory from :mod:`~edgeship.profiling.memory`
and per-op profiles from :mod:`~edgeship.profiling.opprofile`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np


def time_calls(call: Callable, args: tuple, warmup: int = 10, iterations: int | None = 100,
               duration: float | None = None, clock: Callable[[], int] = time.perf_counter_ns) -> np.ndarray:
    """Run ``call(*args)`` ``warmup`` times untimed, then time each call; nanoseconds per call.

    With ``duration`` (seconds) it runs until that much time has passed (at least one call),
    else exactly ``iterations`` calls. ``clock`` (integer nanoseconds) is read around each call
    and for the duration's deadline; tests pass a fake one to get exact figures.
    """
    for _ in range(warmup):
        call(*args)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        if duration is None:
            count = 100 if iterations is None else int(iterations)
            buf: np.ndarray = np.empty(count, dtype=np.int64)
            for i in range(count):
                t0 = clock()
                call(*args)
                buf[i] = clock() - t0
            return buf
        deadline = clock() + int(duration * 1e9)
        buf = np.empty(4096, dtype=np.int64)
        n = 0
        while True:
            t0 = clock()
            call(*args)
            t1 = clock()
            if n == buf.size:  # rare: doubling keeps the amortised cost out of the way
                buf = np.concatenate([buf, np.empty(buf.size, dtype=np.int64)])
            buf[n] = t1 - t0
            n += 1
            if t1 >= deadline:
                return buf[:n]
    finally:
        if gc_was:
            gc.enable()
