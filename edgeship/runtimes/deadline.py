"""Deadlines for inference. Torch-free.

A graph runs as long as it says: a 511-byte ONNX Loop of 2^62 iterations never returns, and
nothing in the file can be checked for it ahead of time (a trip count can come from an input).
So a deadline bounds the time inference may take:

- ``with deadline(seconds, what):`` sets one for everything run inside it (``edgeship check
  --timeout``: the whole check, default 600 s), through a context variable that
  :class:`~edgeship.runtimes.ort.OrtRunner` and the OpenVINO runner read on each inference;
- ``edgeship.load(..., timeout=s)`` bounds each call of the Model (:func:`timed`); without it
  the call path is untouched (benchmarks B3/B8 measure it).

onnxruntime is stopped with ``RunOptions.terminate``, set from a timer thread when the time is
up (onnxruntime checks it between nodes and in each Loop iteration): the call raises
:class:`~edgeship.errors.InferenceTimeout` and the session stays usable. OpenVINO cannot stop an
inference it started (``InferRequest.cancel`` does not end a running Loop, measured on 2026.4): the
call raises after the deadline with the inference still running on one of its threads until it
ends, and a process holding such an inference cannot exit normally (the CLI leaves with
``os._exit``). Torch (``check --against``) runs without a deadline.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from edgeship.errors import InferenceTimeout, SpecError

Clock = Callable[[], float]


@dataclass(frozen=True)
class Deadline:
    """A point in time (on ``clock``) by which inference must be done; ``what`` names the setting
    (``--timeout 600``, ``timeout=0.5``) in messages."""

    seconds: float
    at: float
    what: str
    clock: Clock = time.monotonic

    @classmethod
    def start(cls, seconds: float, what: str, clock: Clock = time.monotonic) -> Deadline:
        return cls(seconds, clock() + seconds, what, clock)

    def left(self) -> float:
        return self.at - self.clock()

    def exceeded(self, what: str, runtime: str = "onnxruntime", stuck: bool = False) -> InferenceTimeout:
        how = ("OpenVINO cannot stop an inference it started: it keeps running on one of its threads"
               if stuck else f"{runtime} stopped it")
        return InferenceTimeout(
            f"inference of {what} did not finish within {self.what} s ({how}). A graph can run as long as it says "
            "(an ONNX Loop with a huge trip count, in a few hundred bytes): if the model is yours and this slow here, "
            "give it more time; otherwise do not run it.", stuck=stuck)


_current: ContextVar[Deadline | None] = ContextVar("edgeship_deadline", default=None)


def check_seconds(seconds: object, what: str) -> float:
    """A timeout in seconds: a finite number above 0.

    Raises:
        SpecError: anything else.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise SpecError(f"{what}={seconds!r}: use a number of seconds above 0 (how long inference may take).")
    return float(seconds)


@contextlib.contextmanager
def deadline(seconds: float | None, what: str = "--timeout", clock: Clock = time.monotonic) -> Iterator[Deadline | None]:
    """A deadline ``seconds`` from now for every inference run inside (none for None or 0)."""
    if not seconds:
        yield None
        return
    label = f"{what} {seconds:g}" if what.startswith("--") else f"{what}={seconds:g}"
    d = Deadline.start(check_seconds(seconds, what), label, clock)
    token = _current.set(d)
    try:
        yield d
    finally:
        _current.reset(token)


def current() -> Deadline | None:
    """The deadline set around the caller, if any."""
    return _current.get()


def _terminate(options: Any) -> None:
    options.terminate = True


def run_ort(run: Callable[..., Any], names: Any, feeds: Any, d: Deadline, what: str) -> Any:
    """``run(names, feeds, run_options)`` (an onnxruntime session's ``run``), stopped at ``d``.

    Raises:
        InferenceTimeout: the deadline passed before or during the run.
    """
    import onnxruntime as ort

    left = d.left()
    if left <= 0:
        raise d.exceeded(what)
    options = ort.RunOptions()
    options.log_severity_level = 4  # the stop is reported as InferenceTimeout, not in onnxruntime's log
    timer = threading.Timer(left, _terminate, (options,))
    timer.daemon = True
    timer.start()
    try:
        return run(names, feeds, options)
    except Exception as e:
        if options.terminate:
            raise d.exceeded(what) from e
        raise
    finally:
        timer.cancel()


def timed(run: Callable[..., Any], seconds: float, what: str, onnxruntime: bool) -> Callable[..., Any]:
    """A Model's call ``run(names, feeds, options)`` bounded to ``seconds`` per call
    (``edgeship.load(timeout=...)``)."""
    label = f"timeout={seconds:g}"
    if onnxruntime:
        def call(names: Any, feeds: Any, _options: Any = None) -> Any:
            return run_ort(run, names, feeds, Deadline.start(seconds, label), what)
    else:
        def call(names: Any, feeds: Any, _options: Any = None) -> Any:
            token = _current.set(Deadline.start(seconds, label))
            try:
                return run(names, feeds)
            finally:
                _current.reset(token)
    return call
