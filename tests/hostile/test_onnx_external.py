"""ONNX inputs whose external data points where it must not: refused before any external byte is read."""

import os
import re

import numpy as np
import onnx
import pytest
from hostile_helpers import OrtSpy, assert_untouched
from onnx import TensorProto, helper, numpy_helper

import edgeship
from edgeship.config import LoadOptions
from edgeship.errors import ModelLoadError, UnsafeModelError
from edgeship.exporters.loading import ONNX, load_model
from edgeship.exporters.onnx_guard import check_external_data

W = np.arange(4, dtype=np.float32)


def _external(name: str, entries: dict) -> TensorProto:
    t = numpy_helper.from_array(W, name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, str(v)
    return t


def _model(folder, entries: dict, where: str = "initializer"):
    """x + w, with w's bytes in external data described by ``entries``."""
    folder.mkdir(parents=True, exist_ok=True)
    t = _external("w", entries)
    inp = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])]
    if where == "initializer":
        g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", inp, out, [t])
    elif where == "attribute":
        g = helper.make_graph([helper.make_node("Constant", [], ["w"], value=t), helper.make_node("Add", ["x", "w"], ["y"])],
                              "g", inp, out)
    else:  # a subgraph of an If node
        branch = helper.make_graph([helper.make_node("Constant", [], ["w2"], value=t)], "b", [],
                                   [helper.make_tensor_value_info("w2", TensorProto.FLOAT, [4])])
        cond = numpy_helper.from_array(np.array(True), "c")
        g = helper.make_graph([helper.make_node("If", ["c"], ["w"], then_branch=branch, else_branch=branch),
                               helper.make_node("Add", ["x", "w"], ["y"])], "g", inp, out, [cond])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # onnxruntime 1.20 reads IR <= 10
    path = folder / "model.onnx"
    path.write_bytes(m.SerializeToString())
    return path


@pytest.fixture
def no_external_reads(monkeypatch):
    """Fail the test if onnx loads external data or onnxruntime opens a session."""
    import onnx.external_data_helper as edh

    def boom(*a, **k):
        raise AssertionError("external data was read before the guard refused the model")

    monkeypatch.setattr(edh, "load_external_data_for_model", boom)
    monkeypatch.setattr(edh, "load_external_data_for_tensor", boom)
    return OrtSpy(monkeypatch)


def _outside(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(W.tobytes())
    return secret


def _symlink_file(tmp_path, d):
    os.symlink(_outside(tmp_path), d / "w.bin")
    return {"location": "w.bin"}


def _symlink_dir(tmp_path, d):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "w.bin").write_bytes(W.tobytes())
    d.mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path / "elsewhere", d / "sub")
    return {"location": "sub/w.bin"}


def _hardlink(tmp_path, d):
    d.mkdir(parents=True, exist_ok=True)
    os.link(_outside(tmp_path), d / "w.bin")
    return {"location": "w.bin"}


def _plain(d, size=16):
    d.mkdir(parents=True, exist_ok=True)
    (d / "w.bin").write_bytes(W.tobytes()[:size])


CASES = {
    "dotdot": (lambda t, d: _outside(t) and {"location": "../secret.bin"}, UnsafeModelError, "climbs out of the folder"),
    "deep dotdot": (lambda t, d: _outside(t) and {"location": "a/../../secret.bin"}, UnsafeModelError, "climbs out"),
    "absolute": (lambda t, d: {"location": str(_outside(t))}, UnsafeModelError, "absolute path"),
    "backslash dotdot": (lambda t, d: _outside(t) and {"location": "..\\secret.bin"}, UnsafeModelError, "climbs out"),
    "drive letter": (lambda t, d: {"location": "C:/Windows/win.ini"}, UnsafeModelError, "absolute path"),
    "empty location": (lambda t, d: {"location": ""}, UnsafeModelError, "is empty"),
    "no location": (lambda t, d: {"offset": 0}, UnsafeModelError, "is empty"),
    "symlinked file": (_symlink_file, UnsafeModelError, "symbolic link"),
    "symlinked folder": (_symlink_dir, UnsafeModelError, "symbolic link"),
    "hardlink": (_hardlink, UnsafeModelError, "hard-linked"),
    "a directory": (lambda t, d: (d / "w.bin").mkdir(parents=True) or {"location": "w.bin"}, UnsafeModelError, "not a regular file"),
    "missing file": (lambda t, d: {"location": "w.bin"}, ModelLoadError, "does not exist next to the model"),
    "offset past end": (lambda t, d: _plain(d) or {"location": "w.bin", "offset": 17, "length": 0}, ModelLoadError,
                        "which has only 16 bytes"),
    "length past end": (lambda t, d: _plain(d) or {"location": "w.bin", "offset": 8, "length": 16}, ModelLoadError, r"reads bytes 8\.\.24"),
    "negative offset": (lambda t, d: _plain(d) or {"location": "w.bin", "offset": -4}, ModelLoadError, "non-negative integer"),
    "offset not a number": (lambda t, d: _plain(d) or {"location": "w.bin", "offset": "0x10"}, ModelLoadError, "non-negative integer"),
    "unknown key": (lambda t, d: _plain(d) or {"location": "w.bin", "basepath": "/etc"}, ModelLoadError,
                    "unknown external-data key 'basepath'"),
    "attribute injection key": (lambda t, d: _plain(d) or {"location": "w.bin", "__class__": "x"}, ModelLoadError,
                                "unknown external-data key"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_external_data_refused_before_any_read(tmp_path, cli, no_external_reads, case):
    make, error, match = CASES[case]
    folder = tmp_path / "model"
    folder.mkdir()
    entries = make(tmp_path, folder)
    path = _model(folder, entries)
    with pytest.raises(error, match=match):
        load_model(path)
    out = tmp_path / "out.edgeship"
    code, msg = cli("export", path, "-o", out)
    assert code == 2, msg
    assert "Traceback" not in msg and re.search(match, msg), msg
    assert not no_external_reads.calls
    assert_untouched(out, {})


@pytest.mark.parametrize("where", ["attribute", "subgraph"])
def test_external_data_in_attributes_and_subgraphs_is_checked(tmp_path, no_external_reads, where):
    _outside(tmp_path)
    path = _model(tmp_path / "model", {"location": "../secret.bin"}, where)
    with pytest.raises(UnsafeModelError, match="climbs out"):
        load_model(path)
    assert not no_external_reads.calls


def test_guard_does_not_rely_on_onnx_checks(tmp_path):
    """The guard reads only the protobuf: it works on a ModelProto alone, whatever onnx would say."""
    _outside(tmp_path)
    path = _model(tmp_path / "model", {"location": "../secret.bin"})
    proto = onnx.ModelProto()
    proto.ParseFromString(path.read_bytes())
    with pytest.raises(UnsafeModelError, match="climbs out"):
        check_external_data(proto, path)


def test_legitimate_external_data_exports_to_a_self_contained_bundle(tmp_path, cli):
    folder = tmp_path / "model"
    _plain(folder)
    path = _model(folder, {"location": "w.bin", "offset": 0, "length": 16})
    assert load_model(path).format == ONNX
    assert check_external_data(onnx.load(str(path), load_external_data=False), path) == 1
    out = tmp_path / "ext.edgeship"
    code, msg = cli("export", path, "--input", "x:2x4", "-o", out)
    assert code == 0, msg
    m = edgeship.load(out, variant="fp32")
    np.testing.assert_allclose(m(np.ones((3, 4), np.float32)), 1 + np.tile(W, (3, 1)))
    shipped = onnx.load(str(out / "models" / "fp32.onnx"), load_external_data=False)
    assert all(t.data_location != TensorProto.EXTERNAL for t in shipped.graph.initializer)


def test_check_against_an_onnx_file_with_escaping_data(tmp_path, mlp_bundle, cli):
    _outside(tmp_path)
    path = _model(tmp_path / "model", {"location": "../secret.bin"})
    code, msg = cli("check", mlp_bundle, "--against", path)
    assert code == 2 and "climbs out of the folder" in msg
    with pytest.raises(UnsafeModelError):
        edgeship.check(mlp_bundle, against=path, load_options=LoadOptions())
