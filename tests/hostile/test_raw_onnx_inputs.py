"""Inputs edgeship makes from what a raw .onnx declares.

Issue 20 item 14: the declared shapes are bounded like ``--input`` (2^28 elements per input) and a
generated sample to 2 GiB, before anything is allocated (a 120-byte model drove ``compare`` to
9.6 GiB; an 8 TiB shape exited 3). Item 16: string, float8, sequence and optional inputs are
refused with a message (they crashed ``compare``), and an axis of size 0 is a size, not a symbol.
Children run under an address-space limit, so a regression fails without taking the machine's memory.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from hostile_helpers import PY, python_env
from onnx import TensorProto as T
from onnx import helper as h

from edgeship.errors import SpecError

LIMIT_AS = 3 << 30  # bytes of address space a child may map: a valid compare needs well under 1 GiB


def _save(path, inputs, outputs, nodes, opset=18, inits=()):
    import onnx

    m = h.make_model(h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)),
                     opset_imports=[h.make_opsetid("", opset)], ir_version=9)
    onnx.save(m, str(path))
    return path


def _relu(path, shape, dtype=T.FLOAT, n_inputs=1):
    names = [f"x{i}" for i in range(n_inputs)]
    node = h.make_node("Relu", names, ["y"]) if n_inputs == 1 else h.make_node("Sum", names, ["y"])
    return _save(path, [h.make_tensor_value_info(n, dtype, shape) for n in names],
                 [h.make_tensor_value_info("y", dtype, shape)], [node])


CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
sys.argv = ["edgeship", *sys.argv[1:]]
from edgeship.cli import main
try:
    main()
finally:  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's peak across exec)
    hwm = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
    print("PEAK_RSS_KB", hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def _child(*args) -> tuple[int, str, int]:
    p = subprocess.run([PY, "-c", CHILD.format(limit=LIMIT_AS), *map(str, args)], env=python_env(),
                       capture_output=True, text=True, timeout=300)
    out = " ".join((p.stdout + p.stderr).split())
    m = re.search(r"PEAK_RSS_KB (\d+)", out)
    return p.returncode, out, int(m.group(1)) // 1024 if m else -1


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_AS")
@pytest.mark.parametrize("case", ["2^30 elements", "8 TiB", "40 inputs of 2^27", "2^28+1 bools"])
@pytest.mark.parametrize("command", ["compare", "profile", "export"])
def test_declared_shapes_are_bounded_before_allocating(tmp_path, case, command):
    path = tmp_path / "m.onnx"
    if case == "2^30 elements":
        _relu(path, [1 << 15, 1 << 15])
    elif case == "8 TiB":
        _relu(path, [1 << 21, 1 << 20])
    elif case == "40 inputs of 2^27":
        _relu(path, [1 << 27], n_inputs=40)
    else:
        _save(path, [h.make_tensor_value_info("x", T.BOOL, [(1 << 28) + 1])], [h.make_tensor_value_info("y", T.BOOL, [(1 << 28) + 1])],
              [h.make_node("Not", ["x"], ["y"])])
    args = {"compare": ["compare", path, path], "profile": ["profile", path, "-n", "2", "--warmup", "0"],
            "export": ["export", path, "-o", tmp_path / "b.edgeship"]}[command]
    code, out, peak = _child(*args)
    assert code == 2, out
    assert "Traceback" not in out and ("268,435,456" in out or "GiB" in out), out
    assert 0 < peak < 1024, f"peak RSS {peak} MiB"
    assert not (tmp_path / "b.edgeship").exists()


def test_the_limit_is_the_one_input_specs_have(tmp_path):
    """Exactly 2^28 elements per input is allowed (as --input allows it), one more is not."""
    from edgeship.bundle.golden import check_generated
    from edgeship.spec import MAX_ELEMENTS, TensorSpec

    check_generated((TensorSpec("x", "float32", (MAX_ELEMENTS,)),), {})
    with pytest.raises(SpecError, match=r"input 'x' .* 268,435,457 elements, over the 268,435,456"):
        check_generated((TensorSpec("x", "uint8", (MAX_ELEMENTS + 1,)),), {})
    with pytest.raises(SpecError, match=r"symbol n=2\).* over the 268,435,456"):
        check_generated((TensorSpec("x", "uint8", ("n", MAX_ELEMENTS // 2 + 1)),), {"n": 2})
    with pytest.raises(SpecError, match=r"2.0 GiB"):
        check_generated(tuple(TensorSpec(f"x{i}", "float64", (MAX_ELEMENTS // 2,)) for i in range(3)), {})


def _typed(tmp_path, kind):
    path = tmp_path / f"{kind}.onnx"
    if kind == "string":
        return _save(path, [h.make_tensor_value_info("x", T.STRING, [2])], [h.make_tensor_value_info("y", T.STRING, [2])],
                     [h.make_node("Identity", ["x"], ["y"])])
    if kind == "float8":
        return _save(path, [h.make_tensor_value_info("x", T.FLOAT8E4M3FN, [2])],
                     [h.make_tensor_value_info("y", T.FLOAT8E4M3FN, [2])], [h.make_node("Identity", ["x"], ["y"])], opset=21)
    if kind == "sequence":
        return _save(path, [h.make_tensor_sequence_value_info("x", T.FLOAT, None)], [h.make_tensor_value_info("y", T.INT64, [])],
                     [h.make_node("SequenceLength", ["x"], ["y"])])
    if kind == "optional":
        return _save(path, [h.make_value_info("x", h.make_optional_type_proto(h.make_tensor_type_proto(T.FLOAT, [2])))],
                     [h.make_tensor_value_info("y", T.BOOL, [])], [h.make_node("OptionalHasElement", ["x"], ["y"])])
    if kind == "string output":
        return _save(path, [h.make_tensor_value_info("x", T.FLOAT, [2])], [h.make_tensor_value_info("y", T.STRING, [2])],
                     [h.make_node("Cast", ["x"], ["y"], to=T.STRING)])
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["string", "float8", "sequence", "optional", "string output"])
@pytest.mark.parametrize("command", ["compare", "profile", "export", "run"])
def test_inputs_edgeship_cannot_make_are_refused(tmp_path, cli, kind, command):
    path = _typed(tmp_path, kind)
    x = tmp_path / "x.npy"
    np.save(x, np.ones(2, np.float32))
    args = {"compare": ["compare", path, path], "profile": ["profile", path, "-n", "2", "--warmup", "0"],
            "export": ["export", path, "-o", tmp_path / "b.edgeship"], "run": ["run", path, "--input", x]}[command]
    code, msg = cli(*args)
    if kind == "string output" and command == "run":  # run prints what the model returns
        assert code == 0 and "y │ object" in msg, msg
        return
    assert code == 2, msg
    assert "Traceback" not in msg and re.search(r"(input|output) '[xy]'", msg), msg
    assert not (tmp_path / "b.edgeship").exists()


@pytest.mark.parametrize("shape", [[0, 3], ["n", 0], [2, 0, "m"]])
@pytest.mark.parametrize("command", ["compare", "profile", "export"])
def test_a_zero_size_axis_is_a_size(tmp_path, cli, shape, command):
    path = _relu(tmp_path / "zero.onnx", shape)
    args = {"compare": ["compare", path, path], "profile": ["profile", path, "-n", "2", "--warmup", "0"],
            "export": ["export", path, "-o", tmp_path / "b.edgeship", "--quantize", "fp32"]}[command]
    code, msg = cli(*args)
    assert code in (0, 2) and "Traceback" not in msg, msg
    if code == 2:
        assert "size 0" in msg or "empty" in msg, msg


def test_synthetic_calibration_is_bounded_in_total(monkeypatch):
    """static int8 without calibration data draws up to 32 synthetic samples: together at most
    2 GiB (here scaled down: 4 KiB of samples, each 4 KiB, gives one)."""
    import edgeship.exporters.calibration as calibration
    from edgeship.spec import TensorSpec

    monkeypatch.setattr(calibration, "MAX_SAMPLE_BYTES", 4096)
    calib = calibration.load_calibration(None, (TensorSpec("x", "float32", (1024,)),), limit=64)
    assert len(calib.samples) == 1
    monkeypatch.setattr(calibration, "MAX_SAMPLE_BYTES", 1 << 31)
    assert len(calibration.load_calibration(None, (TensorSpec("x", "float32", (1024,)),), limit=64).samples) == 32
