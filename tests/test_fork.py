"""A Model loaded before fork() and called in the child (a pre-fork server such as gunicorn --preload).

What each runtime does there (measured; see the openvino module's and the Model's docstrings):
onnxruntime runs (bit-identical results, on one thread: its pool's threads do not survive fork)
except in its parallel execution mode, which would hang and so refuses; OpenVINO refuses a model
compiled before the fork (a call can hang) and refuses to compile in a child of a process that
compiled one. Every child here has a watchdog and the parent a deadline, so a hang fails the test
instead of hanging the suite; children leave with ``os._exit`` (a normal exit runs onnxruntime's
C++ exit handlers, which hang in a fork()ed child whenever onnxruntime was imported before the fork).
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import edgeship
from edgeship.errors import TargetUnavailableError

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")

DEADLINE_S = 60


def in_child(fn: Callable[[], Any], deadline: int = DEADLINE_S) -> tuple[str, Any]:
    """Run ``fn()`` in a fork()ed child: ``("ok", its value)``, ``("raised", (type name, message))``
    or ``("hung", how it ended)`` when the child's watchdog (SIGALRM) or the parent's deadline ended it."""
    r, w = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns that the process has threads (the runtimes')
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.close(r)
            signal.alarm(deadline)
            try:
                out: tuple[str, Any] = ("ok", fn())
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                out = ("raised", (type(e).__name__, str(e)))
            data = pickle.dumps(out)
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks, end = [], time.monotonic() + deadline + 15
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([r], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                break
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    done, status = os.waitpid(pid, os.WNOHANG)
    if not done and not chunks:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "hung", "killed by the parent's deadline"
    if not done:
        _, status = os.waitpid(pid, 0)
    if not chunks:
        return "hung", f"child ended by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {status}"
    return pickle.loads(b"".join(chunks))


def _inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(rng.standard_normal((k % 3 + 1, 10)) * (k + 1)).astype(np.float32) for k in range(4)]


def _calls_from_threads(m: edgeship.Model, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Each input on its own thread (of the child), all at once."""
    out: list[Any] = [None] * len(xs)

    def work(k: int) -> None:
        try:
            out[k] = m(xs[k])
        except BaseException as e:  # noqa: BLE001 - raised again below, in the calling thread
            out[k] = e

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for y in out:
        if isinstance(y, BaseException):
            raise y
    return out


@pytest.mark.parametrize("threads", [None, 1])
def test_onnxruntime_runs_in_a_forked_child(mlp_bundle, threads):
    m = edgeship.load(mlp_bundle, runtime="onnxruntime", threads=threads)
    xs = _inputs()
    want = [m(x) for x in xs]
    status, got = in_child(lambda: ([m(x) for x in xs], _calls_from_threads(m, xs), m.run({"x": xs[0]})["output"]))
    assert status == "ok", got
    one_thread, many_threads, by_name = got
    for a, b, w in zip(one_thread, many_threads, want):
        np.testing.assert_array_equal(a, w)
        np.testing.assert_array_equal(b, w)
    np.testing.assert_array_equal(by_name, want[0])
    np.testing.assert_array_equal(m(xs[1]), want[1])  # and the parent goes on


def test_onnxruntime_parallel_mode_refuses_in_a_forked_child_instead_of_hanging(mlp_bundle):
    m = edgeship.load(mlp_bundle, inter_op_threads=2)
    x = _inputs()[0]
    want = m(x)
    for call in (lambda: m(x), lambda: m({"x": x})):
        status, got = in_child(call)
        assert status == "raised", (status, got)
        assert got[0] == "InferenceError" and "parallel execution mode" in got[1] and "after fork" in got[1], got
    np.testing.assert_array_equal(m(x), want)
    one = edgeship.load(mlp_bundle, inter_op_threads=1)  # one inter-op thread: nothing to wait for, it runs
    status, got = in_child(lambda: one(x))
    assert status == "ok", got
    np.testing.assert_array_equal(got, one(x))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_compiled_before_fork_refuses_in_the_child_instead_of_hanging(mlp_bundle, precision):
    pytest.importorskip("openvino")
    from edgeship.runtimes import openvino as ov_runtime

    if precision == "bf16" and not ov_runtime.has_bf16():
        pytest.skip("no native bf16 on this CPU")
    m = edgeship.load(mlp_bundle, runtime="openvino", variant="fp32")
    runner = ov_runtime.OpenVINORunner(m.spec, m.bundle.read("models/fp32.onnx"), precision=precision).load()
    xs = _inputs()
    want = [m(x) for x in xs]
    runner.run(None, {"x": xs[0]})
    for call in (lambda: m(xs[0]), lambda: _calls_from_threads(m, xs), lambda: runner.run(None, {"x": xs[0]})):
        status, got = in_child(call)
        assert status == "raised", (status, got)
        assert got[0] == "InferenceError" and "fork()ed" in got[1] and "post_fork" in got[1], got
    for x, w in zip(xs, want):  # the parent's model goes on, on every thread
        np.testing.assert_array_equal(m(x), w)
    np.testing.assert_array_equal(_calls_from_threads(m, xs)[2], want[2])


def test_openvino_does_not_compile_in_a_child_of_a_process_that_compiled(mlp_bundle):
    pytest.importorskip("openvino")
    edgeship.load(mlp_bundle, runtime="openvino").close()  # this process has compiled an OpenVINO model

    def child() -> tuple[str, Any]:
        try:
            edgeship.load(mlp_bundle, runtime="openvino")
        except TargetUnavailableError as e:
            m = edgeship.load(mlp_bundle)  # onnxruntime still loads here
            return str(e), (m.runtime, m(_inputs()[0]))
        return "loaded", None

    status, got = in_child(child)
    assert status == "ok", got
    message, (runtime, y) = got
    assert "fork()ing this one" in message and "spawn" in message, message
    assert runtime == "onnxruntime"
    np.testing.assert_array_equal(y, edgeship.load(mlp_bundle)(_inputs()[0]))
