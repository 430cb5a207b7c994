"""Whether other threads of this process are using the CPU (idle onnxruntime pools spin after a
run), read exactly where the platform allows it: what the candidates' timing waits for."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable


def other_threads_cpu() -> Callable[[], float] | None:
    """A function giving the CPU seconds used so far by this process's threads other than the
    caller, read exactly, or None where the platform cannot (then use ``time.process_time``).

    Linux: each thread's own CPU clock (``clock_gettime`` on the clock id the kernel derives from
    its thread id, ``MAKE_THREAD_CPUCLOCK``), which includes the slice a thread is running right
    now; the process clock adds other threads' time only at the scheduler tick (4 ms here), so a
    short poll of it sees 0 or 4 ms of a spinning thread. Made once per calling thread.
    """
    if not sys.platform.startswith("linux") or not hasattr(time, "clock_gettime_ns"):
        return None
    import threading

    return _other_threads_cpu(threading.get_native_id())


@functools.lru_cache(maxsize=8)
def _other_threads_cpu(me: int) -> Callable[[], float] | None:
    def cpu() -> float:
        total = 0
        for name in os.listdir("/proc/self/task"):
            tid = int(name)
            if tid != me:
                try:
                    total += time.clock_gettime_ns(((~tid) << 3) | 6)  # CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED
                except OSError:  # the thread ended meanwhile
                    pass
        return total / 1e9

    try:
        cpu()
    except (OSError, ValueError, OverflowError):
        return None
    return cpu


def wait_idle(max_s: float = 0.2, poll_s: float | None = None, clock: Callable[[], float] = time.perf_counter,
              cpu: Callable[[], float] | None = None, sleep: Callable[[float], None] = time.sleep) -> float:
    """Wait until no other thread of this process uses the CPU, at most ``max_s``; the seconds waited.

    Idle onnxruntime pools spin after a run (32-34 ms of a core here, longer on a slower CPU, since
    the spin is counted in iterations): a measurement that starts meanwhile shares the cores with
    them. This polls the CPU time of the process's other threads every ``poll_s`` and returns once
    a poll saw them use less than a fifth of it. By default it reads the threads' own CPU clocks
    (:func:`other_threads_cpu`) every millisecond, so it returns within about a millisecond of the
    spin's end; where those cannot be read, the process's CPU time every 10 ms (the kernel adds other
    threads' time to it at its tick, so a poll must span a few ticks).
    """
    if cpu is None:
        cpu = other_threads_cpu()
        if poll_s is None:
            poll_s = 0.01 if cpu is None else 0.001
        cpu = cpu or time.process_time
    if poll_s is None:
        poll_s = 0.01
    t0 = clock()
    last, at = cpu(), t0
    while at - t0 < max_s:
        sleep(poll_s)
        now, now_at = cpu(), clock()
        if now - last < max(now_at - at, poll_s) * 0.2:
            break
        last, at = now, now_at
    return clock() - t0


def cores_busy(poll_s: float = 0.001, cpu: Callable[[], float] | None = None,
               clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Whether other threads of this process used at least a fifth of a core over the next
    ``poll_s`` (an idle pool still spinning, say). False where their CPU time cannot be read
    exactly (:func:`other_threads_cpu`): a caller then treats the cores as free."""
    cpu = cpu or other_threads_cpu()
    if cpu is None:
        return False
    before, t0 = cpu(), clock()
    sleep(poll_s)
    return cpu() - before >= max(clock() - t0, poll_s) * 0.2
