"""Measurement primitives of the profiler: timing loop, harnesses, peak RSS, per-op profiles.

Torch-free: numpy and onnxruntime (imported where needed); the torch harness imports torch
inside itself. What one configuration times is a :class:`Harness`: ``call(*args)`` is exactly
one inference with inputs prepared once, outside the loop:

- onnxruntime on CPU: ``session.run(output_names, feeds)`` with the feeds dict built once;
- onnxruntime on CUDA: ``session.run_with_iobinding(binding)``, the inputs copied to the
  device once and the outputs bound to the device, so no host/device copy is timed; onnxruntime
  synchronises the device at the end of each run, so the time covers the GPU work;
- PyTorch: ``module(*tensors)`` under ``torch.inference_mode()``, tensors made once.

The loop (:func:`time_calls`) reads ``time.perf_counter_ns`` just before and after each call,
stores the difference in a preallocated int64 array and keeps the garbage collector off, so
nothing but the call sits between the two clock reads.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import math
import os
import sys
import tempfile
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeship.errors import ModelLoadError, SpecError

log = logging.getLogger(__name__)

_KERNEL = "_kernel_time"


def format_ms(ms: float | None) -> str:
    """Milliseconds to three significant figures in µs, ms or s ("6.39 µs", "1.72 ms")."""
    if ms is None or ms != ms:
        return "—"
    for value, unit in ((ms * 1e3, "µs"), (ms, "ms"), (ms / 1e3, "s")):
        text = f"{value:.3g}"
        if "e" not in text and float(text) < 1000:
            return f"{text} {unit}"
    return f"{ms / 1e3:.0f} s"


def _noop() -> None:
    pass


@dataclass
class Harness:
    """One opened configuration: ``call(*args)`` runs one inference; ``close()`` releases it."""

    call: Callable
    args: tuple
    providers: tuple[str, ...] = ()
    io_binding: bool = False
    close: Callable[[], None] = _noop
    session: Any = None  # the onnxruntime session, for end_profiling()


@dataclass(frozen=True)
class Stats:
    """Latency statistics in milliseconds over ``count`` timed calls (std with ddof=1)."""

    count: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, latencies_ms) -> Stats:
        a = np.asarray(latencies_ms, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no latencies to summarise")
        p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
        return cls(int(a.size), float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0,
                   float(a.min()), float(p50), float(p90), float(p95), float(p99), float(a.max()))

    def to_dict(self) -> dict:
        return asdict(self)


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


# ----------------------------------------------------------------------------- memory
def lifetime_peak_mb() -> float | None:
    """The process's lifetime peak RSS (``ru_maxrss``) in MiB; None where the ``resource`` module
    does not exist (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 2**20 if sys.platform == "darwin" else kb / 1024  # macOS reports bytes


RSS_NOT_MEASURED = "not measured on this platform"
# what the per-op total counts (it can exceed the measured p50)
KERNEL_TIME = ("the sum of every node's kernel time, without session overhead; kernels on parallel threads add up, "
               "so it can exceed the wall-clock p50")


class PeakRss:
    """Peak resident memory of this process, reset per configuration where Linux allows it.

    Writing ``5`` to ``/proc/self/clear_refs`` resets VmHWM (Linux ≥ 4.0), so the peak covers
    one configuration; elsewhere it falls back to ``ru_maxrss``, the process's lifetime peak;
    where neither exists (Windows) it is not measured and reads NaN (``scope`` says which:
    ``configuration``, ``process`` or ``unmeasured``).
    """

    def __init__(self) -> None:
        if self._reset():
            self.scope = "configuration"
        else:
            self.scope = "process" if lifetime_peak_mb() is not None else "unmeasured"

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return PeakRss._status("VmHWM") is not None
        except OSError:
            return False

    @staticmethod
    def _status(key: str) -> float | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) / 1024  # kB -> MiB
        except OSError:
            pass
        return None

    def reset(self) -> None:
        if self.scope == "configuration":
            self._reset()

    def current_mb(self) -> float:
        v = self._status("VmRSS")
        return v if v is not None else self.peak_mb()

    def peak_mb(self) -> float:
        """MiB; NaN where not measured."""
        if self.scope == "configuration":
            v = self._status("VmHWM")
            if v is not None:
                return v
        peak = lifetime_peak_mb()
        return math.nan if peak is None else peak


# ----------------------------------------------------------------------------- onnxruntime
def bind_io(session, feeds: dict, output_names: list[str], device: str = "cuda", device_id: int = 0):
    """IO binding: copy ``feeds`` to ``device`` once and bind the outputs there.

    Returns ``(call, args, keep)``: ``call(*args)`` runs the session on the bound tensors; ``keep``
    holds the device copies alive as long as the binding is used.
    """
    import onnxruntime as ort

    binding = session.io_binding()
    keep = []
    for name, arr in feeds.items():
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), device, device_id)
        keep.append(value)
        binding.bind_ortvalue_input(name, value)
    for name in output_names:
        binding.bind_output(name, device, device_id)
    binding.synchronize_inputs()
    return session.run_with_iobinding, (binding,), keep


def ort_harness(model, target: str, providers: list[str], threads: int, feeds: dict,
                profile_prefix: str | None = None, options: dict | None = None) -> Harness:
    """Open an onnxruntime session for ``model`` (bytes or path) and prepare its timed call;
    ``options``: a candidate's ``spinning`` and ``opt_level``."""
    from edgeship.runtimes.ort import open_session, session_options

    o = options or {}
    so = session_options(threads, profile_prefix=profile_prefix, spinning=o.get("spinning"), opt_level=o.get("opt_level"))
    session = open_session(model, target=target, providers=providers, error=ModelLoadError, options=so, what="the model")
    active = tuple(session.get_providers())
    names = [o.name for o in session.get_outputs()]
    if target != "cpu" and "CUDAExecutionProvider" in active:
        call, args, keep = bind_io(session, feeds, names, "cuda")
        return Harness(call, args, active, True, close=keep.clear, session=session)
    return Harness(session.run, (names, feeds), active, session=session)


def openvino_harness(model, precision: str, threads: int, feeds: dict) -> Harness:
    """Compile ``model`` (its bytes) with OpenVINO at ``precision`` and prepare its timed call."""
    from edgeship.runtimes.openvino import OpenVINORunner
    from edgeship.spec import IOSpec

    if not isinstance(model, bytes):
        raise SpecError("OpenVINO takes the model's bytes; a model with external data cannot run on it.")
    runner = OpenVINORunner(IOSpec((), ()), model, precision=precision, options={"threads": threads},
                            error=ModelLoadError, what="the model").load()
    call, args = runner.timing_call(feeds)
    return Harness(call, args, ("OpenVINO:CPU",), close=runner.close)


def ort_op_profile(model, target: str, providers: list[str], threads: int, feeds: dict,
                   warmup: int, runs: int, top: int, options: dict | None = None) -> OpProfile:
    """Profile ``runs`` inferences with onnxruntime's own profiler in a separate session
    (profiling slows the runs, so the timed session never has it on) and aggregate its JSON."""
    with tempfile.TemporaryDirectory(prefix="edgeship-prof-") as d:
        h = ort_harness(model, target, providers, threads, feeds, profile_prefix=os.path.join(d, "ort"), options=options)
        try:
            for _ in range(warmup + runs):
                h.call(*h.args)
            path = h.session.end_profiling()
        finally:
            h.close()
        with open(path) as f:
            events = json.load(f)
    return aggregate_ort_profile(events, skip_runs=warmup, top=top)


@dataclass(frozen=True)
class OpShare:
    """Time of one op type or node per inference (µs), calls per inference, share of node time."""

    name: str
    op_type: str
    us: float
    calls: float
    share: float
    provider: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class OpProfile:
    """onnxruntime's per-node kernel times per inference (trimmed means over ``runs`` profiled runs)."""

    runs: int
    total_us: float
    op_types: tuple[OpShare, ...] = ()
    nodes: tuple[OpShare, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"runs": self.runs, "total_us": self.total_us,
                "op_types": [o.to_dict() for o in self.op_types], "nodes": [n.to_dict() for n in self.nodes]}


def _trimmed_mean(values) -> float:
    a = np.sort(np.asarray(values, dtype=np.float64))
    k = a.size // 10
    return float(a[k:a.size - k].mean())


def aggregate_ort_profile(events: list, skip_runs: int = 0, top: int = 10) -> OpProfile:
    """Top op types and nodes by kernel time per inference from onnxruntime's profiling JSON.

    Node events (``cat == "Node"``, name ``<node>_kernel_time``, ``dur`` in µs, ``args.op_name``)
    count when they fall inside a ``model_run`` session event after the first ``skip_runs``
    (warm-up) runs. A node's time per inference is the mean over the kept runs of its time in each
    run, trimmed of the fastest and slowest 10% of runs, so a stalled run (a descheduled thread on
    a busy machine) does not dominate while sub-µs differences survive (onnxruntime writes whole
    µs). An op type's time is the sum over its nodes; shares are of the sum over all nodes. Calls
    per inference are averaged. Without ``model_run`` events every node event counts (mean per call).
    """
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    starts = [a for a, _ in runs]
    kept = len(runs) - skip_runs
    nodes: dict[str, list] = {}  # name -> [op type, provider, calls, time per kept run (or per call)]
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith(_KERNEL):
            continue
        i = bisect_right(starts, e["ts"]) - 1
        if runs and (i < skip_runs or e["ts"] > runs[i][1]):
            continue
        args = e.get("args") or {}
        entry = nodes.setdefault(e["name"][: -len(_KERNEL)], [args.get("op_name", "?"), args.get("provider", ""), 0,
                                                              np.zeros(kept) if runs else []])
        entry[2] += 1
        if runs:
            entry[3][i - skip_runs] += float(e.get("dur", 0))
        else:
            entry[3].append(float(e.get("dur", 0)))
    if not runs:
        kept = max((v[2] for v in nodes.values()), default=0)
    if not nodes or kept <= 0:
        return OpProfile(max(kept, 0), 0.0)
    per_node = {n: (op, prov, calls / kept, _trimmed_mean(t) if runs else float(np.mean(t)))
                for n, (op, prov, calls, t) in nodes.items()}
    total = sum(v[3] for v in per_node.values()) or 1.0
    types: dict[str, list] = {}
    for op, _, calls, us in per_node.values():
        t = types.setdefault(op, [0.0, 0.0])
        t[0] += us
        t[1] += calls
    op_rows = sorted((OpShare(op, op, us, calls, us / total) for op, (us, calls) in types.items()), key=lambda r: -r.us)
    node_rows = sorted((OpShare(n, op, us, calls, us / total, prov) for n, (op, prov, calls, us) in per_node.items()),
                       key=lambda r: -r.us)
    return OpProfile(kept, sum(v[3] for v in per_node.values()), tuple(op_rows[:top]), tuple(node_rows[:top]))


# ----------------------------------------------------------------------------- torch
def torch_harness(load_module: Callable, threads: int, feeds: dict, input_names: list[str]) -> Harness:
    """Load a PyTorch module (eager or TorchScript) and prepare ``module(*tensors)`` under
    ``inference_mode`` with ``threads`` intra-op threads; ``close()`` restores both."""
    from contextlib import ExitStack

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    stack = ExitStack()
    try:
        module = load_module()
        stack.enter_context(torch.inference_mode())
        args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names)
    except BaseException:
        stack.close()
        torch.set_num_threads(previous)
        raise

    def close() -> None:
        stack.close()
        torch.set_num_threads(previous)

    return Harness(module, args, ("torch-cpu",), close=close)
