"""Issue 20 item 17: a crafted graph can run as long as it says (a Loop of 2^62 iterations in a few
hundred bytes made ``check`` and a call never return). ``check`` (default 600 s) and ``run`` take
``--timeout``, ``edgeship.load`` takes ``timeout=``; onnxruntime stops the inference through
``RunOptions.terminate``. Processes that could hang run as children with a guard; the deadline
logic itself is tested with a fake clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hostile_helpers import PY, python_env, resign
from onnx import TensorProto as T
from onnx import helper as h

import edgeship
from edgeship.bundle import MANIFEST
from edgeship.errors import InferenceError, SpecError

GUARD_S = 180  # a child still running then has hung: the test fails instead of the suite hanging


def _loop_model(trips: int = 1 << 62) -> bytes:
    """x [batch, 10] -> output [batch, 4], through a Loop of ``trips`` iterations that carries x unchanged."""
    body = h.make_graph([h.make_node("Identity", ["c_in"], ["c_out"]), h.make_node("Identity", ["v_in"], ["v_out"])], "body",
                        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("c_in", T.BOOL, []),
                         h.make_tensor_value_info("v_in", T.FLOAT, ["batch", 10])],
                        [h.make_tensor_value_info("c_out", T.BOOL, []), h.make_tensor_value_info("v_out", T.FLOAT, ["batch", 10])])
    g = h.make_graph([h.make_node("Loop", ["trips", "go", "x"], ["v"], body=body), h.make_node("MatMul", ["v", "w"], ["output"])],
                     "runaway", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 10])],
                     [h.make_tensor_value_info("output", T.FLOAT, ["batch", 4])],
                     initializer=[h.make_tensor("trips", T.INT64, [], [trips]), h.make_tensor("go", T.BOOL, [], [True]),
                                  h.make_tensor("w", T.FLOAT, [10, 4], [0.1] * 40)])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=8).SerializeToString()


@pytest.fixture
def runaway(bundle_copy):
    """The MLP bundle with its fp32 variant (the default) replaced by the Loop, re-signed."""
    (bundle_copy / "models" / "fp32.onnx").write_bytes(_loop_model())
    resign(bundle_copy, "models/fp32.onnx")
    return bundle_copy


def _child(*args, code: str | None = None):
    cmd = [PY, "-c", code, *map(str, args)] if code else [PY, "-m", "edgeship", *map(str, args)]
    p = subprocess.run(cmd, env=python_env(), capture_output=True, text=True, timeout=GUARD_S)
    return p.returncode, " ".join((p.stdout + p.stderr).split())


def test_check_with_a_timeout_stops_a_runaway_loop(runaway):
    code, msg = _child("check", runaway, "--timeout", "1")
    assert code == 2, msg
    assert "did not finish within" in msg and "--timeout" in msg and "Traceback" not in msg, msg


def test_check_timeout_default_is_600_seconds_and_0_is_none():
    from edgeship.cli.check import DEFAULT_TIMEOUT_S

    assert DEFAULT_TIMEOUT_S == 600


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "abc"])
def test_bad_timeouts_are_usage_errors(bundle_copy, cli, value):
    code, msg = cli("check", bundle_copy, "--timeout", value)
    assert code == 2 and "--timeout" in msg and "Traceback" not in msg, msg


def test_check_passes_within_its_timeout(bundle_copy, cli):
    code, msg = cli("check", bundle_copy, "--timeout", "60")
    assert code == 0, msg


def test_run_with_a_timeout_stops_a_runaway_bundle(runaway, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 10), np.float32))
    code, msg = _child("run", runaway, "--input", x, "--timeout", "1", "--runtime", "onnxruntime")
    assert code == 2 and "did not finish within" in msg and "Traceback" not in msg, msg


def test_run_with_a_timeout_stops_a_runaway_onnx_file(tmp_path):
    path = tmp_path / "loop.onnx"
    path.write_bytes(_loop_model())
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 10), np.float32))
    code, msg = _child("run", path, "--input", x, "--timeout", "0.5")
    assert code == 2 and "did not finish within" in msg, msg


def test_run_on_openvino_with_a_timeout_returns(runaway, tmp_path):
    """OpenVINO cannot stop an inference once started: the CLI says so and exits anyway."""
    pytest.importorskip("openvino")
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 10), np.float32))
    code, msg = _child("run", runaway, "--input", x, "--timeout", "1", "--runtime", "openvino")
    assert code == 2 and "did not finish within" in msg and "OpenVINO" in msg, msg


def test_model_timeout_raises_and_the_model_still_runs(runaway, mlp_bundle):
    m = edgeship.load(runaway, runtime="onnxruntime", timeout=0.5)
    x = np.ones((2, 10), np.float32)
    with pytest.raises(InferenceError, match=r"did not finish within timeout=0.5 s"):
        m(x)
    with pytest.raises(InferenceError, match=r"did not finish within"):
        m({"x": x})
    ok = edgeship.load(mlp_bundle, timeout=30)
    assert ok(x).shape == (2, 4) and ok({"x": x})["output"].shape == (2, 4)


def test_model_without_a_timeout_keeps_its_native_call(mlp_bundle):
    m = edgeship.load(mlp_bundle, runtime="onnxruntime")
    assert m._run_checked == m.session._sess.run  # B3: nothing between the call and onnxruntime


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5"])
def test_model_timeout_must_be_a_positive_number(mlp_bundle, bad):
    with pytest.raises(SpecError, match="timeout"):
        edgeship.load(mlp_bundle, timeout=bad)


STUCK_CHILD = r"""
import faulthandler, os, sys, threading, time
faulthandler.dump_traceback_later(60, exit=True)  # a hang prints where, and ends the child
import numpy as np
import edgeship
from edgeship.errors import InferenceError, InferenceTimeout

m = edgeship.load(sys.argv[1], runtime="openvino", timeout=1.0)
x = np.ones((2, 10), np.float32)
try:
    m(x)
except InferenceTimeout as e:
    print("first:", e.stuck, flush=True)
print("except left", flush=True)  # freeing the stuck request here waited for it: the process froze


def again(label, call):
    t = time.monotonic()
    try:
        call()
    except InferenceError as e:
        print(label, type(e).__name__, getattr(e, "stuck", None), round(time.monotonic() - t, 1), str(e), flush=True)


again("second:", lambda: m(x))  # a new request for this thread waited for the stuck inference
again("dict:", lambda: m({"x": x}))
t = threading.Thread(target=again, args=("thread:", lambda: m(x)))
t.start()
t.join()
m.close()
print("closed", flush=True)
os._exit(0)
"""


def test_a_stuck_openvino_call_leaves_the_model_raising_at_once(runaway):
    """OpenVINO cannot stop a runaway inference: the timed-out call raises, the caller's except block
    ends (freeing the request would wait for it), and every later call, on any thread, raises at once
    (a new request would wait for it too)."""
    pytest.importorskip("openvino")
    p = subprocess.run([PY, "-c", STUCK_CHILD, str(runaway)], env=python_env(), capture_output=True, text=True,
                       timeout=90)
    out = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 0 and "first: True except left" in out and "closed" in out, out
    for label in ("second:", "dict:", "thread:"):
        assert f"{label} InferenceTimeout True 0.0 " in out, out
    assert "os._exit" in out and "new process" in out, out


def test_check_library_timeout(runaway):
    with pytest.raises(InferenceError, match="did not finish within"):
        edgeship.check(runaway, timeout=0.5)


# ----------------------------------------------------------------------------- the deadline, with a fake clock
class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_deadline_already_passed_runs_nothing():
    from edgeship.runtimes.deadline import Deadline, run_ort

    clock = FakeClock()
    d = Deadline.start(10, "--timeout 10", clock)
    clock.now += 11
    calls = []
    with pytest.raises(InferenceError, match=r"did not finish within --timeout 10 s"):
        run_ort(lambda *a: calls.append(a), ["y"], {}, d, "the model")
    assert not calls


def test_a_deadline_with_time_left_gives_onnxruntime_run_options():
    from edgeship.runtimes.deadline import Deadline, run_ort

    clock = FakeClock()
    d = Deadline.start(10, "--timeout 10", clock)
    clock.now += 3
    seen = []

    def run(names, feeds, options):
        seen.append(options)
        return ["ok"]

    assert run_ort(run, ["y"], {}, d, "the model") == ["ok"]
    assert len(seen) == 1 and seen[0].terminate is False


def test_the_deadline_is_shared_by_everything_inside_it():
    from edgeship.runtimes.deadline import current, deadline

    clock = FakeClock()
    assert current() is None
    with deadline(5, "--timeout 5", clock) as d:
        assert current() is d and d.left() == 5
        clock.now += 2
        assert current().left() == 3
    assert current() is None
    with deadline(None) as none:
        assert none is None and current() is None


def test_a_runaway_loop_in_a_manifest_default_for_openvino_in_check(runaway):
    """A manifest may name an OpenVINO candidate as the default: check stops it too, and exits."""
    pytest.importorskip("openvino")
    m = json.loads((runaway / MANIFEST).read_text())
    cands = m["candidates"]["cpu"]
    ov = [c for c in cands if c["id"] == "fp32@openvino"]
    if not ov:
        pytest.skip("the bundle lists no fp32@openvino candidate")
    m["candidates"]["cpu"] = ov + [c for c in cands if c["id"] != "fp32@openvino"]
    (runaway / MANIFEST).write_text(json.dumps(m))
    code, msg = _child("check", runaway, "--timeout", "1")
    assert code == 2 and "did not finish within" in msg, msg


def test_run_options_terminate_is_what_stops_onnxruntime():
    """The mechanism, on onnxruntime itself (no edgeship): the flag set from another thread ends a Loop."""
    code = r"""
import threading, numpy as np, onnxruntime as ort, sys
s = ort.InferenceSession(open(sys.argv[1], "rb").read(), providers=["CPUExecutionProvider"])
ro = ort.RunOptions()
threading.Timer(0.3, lambda: setattr(ro, "terminate", True)).start()
try:
    s.run(None, {"x": np.ones((1, 10), np.float32)}, ro)
except Exception as e:
    print("stopped:", "terminate" in str(e))
"""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
        f.write(_loop_model())
    try:
        rc, msg = _child(f.name, code=code)
    finally:
        os.unlink(f.name)
    assert rc == 0 and "stopped: True" in msg, msg


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="children and signals are POSIX here")
