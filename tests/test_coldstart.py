"""Cold start in a fresh process (edgeship.profiling.coldstart): the request a child reads, why a
child gave nothing, the child's own side, the real spawn, and real children."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FakeChildren

import edgeship.profiling.coldstart as coldstart
from edgeship.config import LoadOptions
from edgeship.profiling import harness
from edgeship.profiling.coldstart import ColdStart, Request
from edgeship.profiling.source import open_source

REASONS = {"crash": "its process was killed by signal SIGSEGV",
           "timeout": "its process did not finish within 60 s and was stopped",
           "error": "its process exited with status 1: ModelLoadError: cannot open the model",
           "garbage": "its process printed no result"}


# ----------------------------------------------------------------------------- the request
def test_request_round_trips_the_model_and_feeds():
    feeds = {"file": np.arange(6, dtype=np.float32).reshape(2, 3), "a/b.1": np.array([[1, 2]], dtype=np.int64),
             "mask": np.array([True, False])}  # names numpy's savez would choke on
    for model in (b"\x00model bytes\n\xff", "relative/model.onnx"):
        req = coldstart.decode(Request.ort(model, "cpu", ["CPUExecutionProvider"], 3, feeds, {"spinning": False}).encode())
        assert req.runtime == "onnxruntime" and req.params == {"target": "cpu", "providers": ["CPUExecutionProvider"],
                                                               "threads": 3, "options": {"spinning": False}}
        assert req.model == (model if isinstance(model, bytes) else os.path.abspath(model))
        assert list(req.feeds) == list(feeds)
        for k, a in feeds.items():
            assert req.feeds[k].dtype == a.dtype and np.array_equal(req.feeds[k], a)
    with pytest.raises(ValueError, match="not a cold-start request"):
        coldstart.decode(b'{"runtime": "tensorflow"}\n')


def test_measure_says_why_a_child_gave_nothing(monkeypatch):
    req = Request.ort(b"m", "cpu", ["CPUExecutionProvider"], 1, {"x": np.zeros((1, 2), np.float32)})
    for how in sorted(REASONS):
        fake = FakeChildren()
        fake.fail[0] = how
        monkeypatch.setattr(coldstart, "spawn", fake)
        assert coldstart.measure(req, 60.0) == ColdStart(reason=REASONS[how])

    def replies(out: bytes, rc: int = 0):
        return lambda argv, data, t: subprocess.CompletedProcess(argv, rc, out, b"")

    bad = [b"edgeship-cold-start {\"session_ms\": -1, \"first_run_ms\": 0, \"import_ms\": 0}",
           b"edgeship-cold-start {\"session_ms\": 1}", b"edgeship-cold-start [1, 2]", b"edgeship-cold-start NaN"]
    for out in bad:
        monkeypatch.setattr(coldstart, "spawn", replies(out))
        got = coldstart.measure(req)
        assert got.cold_start_ms is None and got.reason == f"its process printed an unusable result: {out.decode()}"

    def cannot_start(argv, data, t):
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    monkeypatch.setattr(coldstart, "spawn", cannot_start)
    assert coldstart.measure(req).reason.startswith("its process could not start: [Errno 2]")
    monkeypatch.setattr(coldstart, "spawn", replies(b'edgeship-cold-start {"session_ms": 2, "first_run_ms": 0.5, '
                                                    b'"import_ms": 90}\n'))
    assert coldstart.measure(req) == ColdStart(2.0, 0.5, 90.0) and coldstart.measure(req).cold_start_ms == 2.5


# ----------------------------------------------------------------------------- the child itself
def test_the_child_opens_the_configuration_it_is_given(mlp_bundle, files, monkeypatch):
    """:func:`coldstart.child`, run in this process: the harness gets the request's arguments."""
    from conftest import arch

    src = open_source(mlp_bundle)
    feeds = {"x": files["x"]}
    seen = []
    real = harness.ort_harness
    monkeypatch.setattr(harness, "ort_harness", lambda *a, **k: seen.append((a, k)) or real(*a, **k))
    got = coldstart.child(Request.ort(src.model("fp32"), "cpu", ["CPUExecutionProvider"], 1, feeds,
                                      {"spinning": False, "opt_level": "extended"}).encode())
    (args, kwargs), = seen
    assert args[:4] == (src.model("fp32"), "cpu", ["CPUExecutionProvider"], 1) and np.array_equal(args[4]["x"], files["x"])
    assert kwargs == {"options": {"spinning": False, "opt_level": "extended"}}
    assert set(got) == {"session_ms", "first_run_ms", "import_ms"} and all(v >= 0 for v in got.values())
    eager = coldstart.child(Request.torch(1, feeds, ["x"], path=files["dir"] / "mlp_state.pt",
                                          load=LoadOptions(arch=arch("MLP"))).encode())
    script = coldstart.child(Request.torch(1, feeds, ["x"], torchscript=(files["dir"] / "mlp_ts.pt").read_bytes()).encode())
    assert all(v >= 0 for v in (*eager.values(), *script.values()))


def test_spawn_copes_with_a_child_that_stops_reading_or_hangs():
    """The real spawn (not replaced here): a child that exits without reading its 32 MiB of stdin is an exit status,
    not a broken pipe here; one that runs past its time limit is stopped (the limit is no claim
    about speed: 2 s against a child that sleeps for 10 minutes)."""
    py = [sys.executable, "-c"]
    p = coldstart.spawn([*py, "import sys; print('bye'); sys.exit(3)"], [b"x" * (32 << 20), b"y"], 60.0)
    assert p.returncode == 3 and p.stdout.strip() == b"bye"
    p = coldstart.spawn([*py, "import sys; print(len(sys.stdin.buffer.read()))"], [b"ab", b"\n", b"cd"], 60.0)
    assert p.returncode == 0 and p.stdout.strip() == b"5"
    with pytest.raises(subprocess.TimeoutExpired):
        coldstart.spawn([*py, "import time; time.sleep(600)"], [b""], 2.0)



def test_a_real_child_process_opens_a_model_or_says_why_not(mlp_bundle):
    """End to end: real child processes, one given the bundle's fp32 model, one given bytes that are not a model."""
    feeds = {"x": np.zeros((1, 10), np.float32)}
    good = coldstart.measure(Request.ort(open_source(mlp_bundle).model("fp32"), "cpu", ["CPUExecutionProvider"], 1, feeds))
    assert good.reason is None and good.session_ms > 0 and good.first_run_ms > 0 and good.import_ms > 0
    bad = coldstart.measure(Request.ort(b"not a model", "cpu", ["CPUExecutionProvider"], 1, feeds))
    assert bad.cold_start_ms is None, bad
    assert bad.reason.startswith("its process exited with status 1: UnsafeModelError: onnxruntime cannot open"), bad
