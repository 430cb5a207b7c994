"""Issue 20, item 12: external data hidden anywhere a TensorProto can live is found by the torch- and
onnx-free wire scan (``runtimes.external_data``) and by the onnx-side guard (``exporters.onnx_guard``),
and a re-signed bundle that hides some is refused before onnxruntime sees it."""

import json

import numpy as np
import onnx
import pytest
from hostile_helpers import OrtSpy, resign, snapshot
from onnx import TensorProto, helper, numpy_helper
from onnx import onnx_ml_pb2 as pb

import edgeship
from edgeship.errors import BundleError, UnsafeModelError
from edgeship.exporters.onnx_guard import check_external_data, derive_tensor_paths, external_tensors
from edgeship.runtimes.external_data import TENSOR_PATHS, external_refs, refuse_external_data
from edgeship.runtimes.onnx_wire import NotOnnxError


def test_the_scan_table_is_onnx_proto_s_own():
    """The runtime's table (no onnx there) is what onnx's descriptor says: every message type from
    ModelProto that can hold a TensorProto, with every field that leads to one."""
    assert TENSOR_PATHS == derive_tensor_paths(pb.ModelProto.DESCRIPTOR)
    assert TENSOR_PATHS["FunctionProto"][11] == "AttributeProto"  # attribute defaults of local functions


def _external(name: str = "leak", location: str = ".env") -> TensorProto:
    t = numpy_helper.from_array(np.zeros(4, np.float32), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location
    return t


def _paths(here: str = "ModelProto", seen: frozenset = frozenset({"ModelProto"})):
    """Every chain of (message, field) from ModelProto to a TensorProto that visits no message type twice."""
    if here == "TensorProto":
        yield ()
        return
    for field, nested in TENSOR_PATHS[here].items():
        if nested not in seen:
            for rest in _paths(nested, seen | {nested}):
                yield ((here, field), *rest)


PATHS = list(_paths())


def test_the_paths_cover_every_field_of_the_table():
    assert {edge for path in PATHS for edge in path} == {(m, f) for m, fields in TENSOR_PATHS.items() for f in fields}


def _model_with_tensor_at(path) -> bytes:
    """A ModelProto whose only external tensor sits at the end of ``path`` (built from the descriptor)."""
    model = pb.ModelProto(ir_version=8)
    msg = model
    for name, number in path:
        assert msg.DESCRIPTOR.name == name
        fd = msg.DESCRIPTOR.fields_by_number[number]
        child = getattr(msg, fd.name)
        child = child.add() if hasattr(child, "add") else child
        if fd.message_type.name == "TensorProto":
            child.CopyFrom(_external())
        else:
            child.SetInParent()
        msg = child
    return model.SerializeToString()


@pytest.mark.parametrize("path", PATHS, ids=lambda p: "/".join(f"{m.removesuffix('Proto')}.{f}" for m, f in p))
def test_external_data_is_found_wherever_a_tensor_can_live(path):
    data = _model_with_tensor_at(path)
    assert [r.tensor for r in external_refs(data)] == ["leak"], path
    with pytest.raises(UnsafeModelError, match="external data"):
        refuse_external_data(data, "the model")
    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    assert [t.name for t in external_tensors(proto) if t.data_location == TensorProto.EXTERNAL] == ["leak"], path


def _leaky_function_model(location: str = ".env", n: int = 10, out: str = "y") -> onnx.ModelProto:
    """y = x + c, where c is a local function's *attribute default* (``FunctionProto.attribute_proto``),
    a tensor whose bytes are external data at ``location``: the graph itself names no external data."""
    default = helper.make_attribute("value", _external("value", location))
    default.t.ClearField("dims")
    default.t.dims.append(n)
    const = helper.make_node("Constant", [], ["c"])
    ref = const.attribute.add()
    ref.name, ref.ref_attr_name, ref.type = "value", "value", onnx.AttributeProto.TENSOR
    fn = onnx.FunctionProto(name="Leak", domain="local", input=["x"], output=["y"],
                            node=[const, helper.make_node("Add", ["x", "c"], ["y"])],
                            opset_import=[helper.make_opsetid("", 17)])
    fn.attribute_proto.append(default)
    g = helper.make_graph([helper.make_node("Leak", ["x"], [out], domain="local")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", n])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
                             ir_version=8, functions=[fn])


def test_function_attribute_default_in_a_resigned_bundle_is_refused(bundle_copy, tmp_path, cli, monkeypatch, files):
    """Before the fix ``edgeship.load(b)(x)`` returned the bytes of ``.env`` from the current directory."""
    secret = b"API_KEY=do-not-leak-this-value!!" + b"\n" * 8  # 40 bytes: 10 float32
    (tmp_path / ".env").write_bytes(secret)
    monkeypatch.chdir(tmp_path)
    m = json.loads((bundle_copy / "manifest.json").read_text())
    out_name = m["io"]["outputs"][0]["name"]
    (bundle_copy / "models" / "fp32.onnx").write_bytes(_leaky_function_model(out=out_name).SerializeToString())
    resign(bundle_copy, "models/fp32.onnx")
    m["files"] = json.loads((bundle_copy / "manifest.json").read_text())["files"]
    m["io"]["outputs"][0]["shape"] = ["batch", 10]
    m["candidates"] = {"cpu": [{"id": "fp32+opt_level=disable", "runtime": "onnxruntime", "variant": "fp32",
                                "precision": "fp32", "options": {"opt_level": "disable"}}]}
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    before = snapshot(bundle_copy)
    spy = OrtSpy(monkeypatch)
    x = np.zeros((1, 10), np.float32)
    with pytest.raises(BundleError, match=r"fp32.onnx keeps tensor 'value' in external data '.env'"):
        leaked = edgeship.load(bundle_copy)(x)
        assert secret not in np.asarray(leaked).tobytes()
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    for args in (("run", bundle_copy, "--input", f"x={tmp_path / 'x.npy'}", "-o", out), ("check", bundle_copy),
                 ("profile", bundle_copy, "-n", "1"), ("compare", bundle_copy, bundle_copy)):
        code, msg = cli(*args)
        assert code == 2 and "external data '.env'" in msg and "Traceback" not in msg, (args, msg)
    assert not out.exists()
    assert spy.calls == []
    assert snapshot(bundle_copy) == before


def test_function_attribute_default_in_a_raw_onnx_is_guarded(tmp_path, cli, monkeypatch):
    """The onnx-side guard (export) and the raw-.onnx commands check attribute defaults too."""
    (tmp_path / "secret.bin").write_bytes(np.arange(10, dtype=np.float32).tobytes())
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "model.onnx"
    model = _leaky_function_model("../secret.bin")
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UnsafeModelError, match="climbs out"):
        check_external_data(model, path)
    monkeypatch.chdir(folder)
    spy = OrtSpy(monkeypatch)
    for args in (("inspect", path), ("profile", path, "-n", "1"), ("export", path, "-o", tmp_path / "o.edgeship")):
        code, msg = cli(*args)
        assert code == 2 and "climbs out of the folder" in msg and "Traceback" not in msg, (args, msg)
    assert spy.calls == []


def _overlong_tag(data: bytes, field: int) -> bytes:
    """``data`` with the tag of every top-level ``field`` rewritten as 5 bytes with bit 32 set:
    protobuf's C++ parser (onnxruntime's, OpenVINO's) reads a tag modulo 2**32, so it still sees ``field``."""
    from edgeship.runtimes.onnx_wire import varint

    mv, i, out = memoryview(data), 0, bytearray()
    while i < len(mv):
        start = i
        key, i = varint(mv, i)
        if key & 7 == 0:
            _, i = varint(mv, i)
        else:
            n, i = varint(mv, i)
            i += n
        if key >> 3 == field:
            k = key | (1 << 32)
            out += bytes([(k >> s & 0x7F) | 0x80 for s in range(0, 28, 7)]) + bytes([k >> 28])
            out += bytes(mv[start + 1:i])  # the one-byte tag replaced
        else:
            out += bytes(mv[start:i])
    return bytes(out)


def _add_model(w: TensorProto) -> bytes:
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def test_a_tag_over_32_bits_cannot_hide_a_graph():
    """Before the fix the scan read field 7 + 2**29 (not the graph) and found nothing in it."""
    import onnxruntime as ort

    plain = _overlong_tag(_add_model(numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")), 7)
    session = ort.InferenceSession(plain, providers=["CPUExecutionProvider"])  # onnxruntime reads the graph
    assert session.run(None, {"x": np.zeros(4, np.float32)})[0].tolist() == [0, 1, 2, 3]
    with pytest.raises(UnsafeModelError, match=r"not a readable ONNX model \(a field tag over 32 bits"):
        refuse_external_data(_overlong_tag(_add_model(_external("w")), 7), "the model")


def test_data_location_is_read_as_protobuf_reads_an_enum():
    """An enum varint is cut to 32 bits by protobuf: 1 + 2**32 is EXTERNAL."""
    t = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    t.ClearField("raw_data")
    g = helper.make_graph([], "g", [], [], [t])
    data = helper.make_model(g, ir_version=8).SerializeToString()
    t_old = t.SerializeToString()
    t_new = t_old + bytes([14 << 3, 0x81, 0x80, 0x80, 0x80, 0x10])  # data_location = 1 + 2**32
    g_old = g.SerializeToString()
    g_new = g_old.replace(bytes([0x2A, len(t_old)]) + t_old, bytes([0x2A, len(t_new)]) + t_new)
    crafted = data.replace(bytes([0x3A, len(g_old)]) + g_old, bytes([0x3A, len(g_new)]) + g_new)
    parsed = onnx.load_model_from_string(crafted)
    assert parsed.graph.initializer[0].data_location == TensorProto.EXTERNAL
    assert [r.tensor for r in external_refs(crafted)] == ["w"]


def test_bytes_onnxruntime_would_read_as_ort_format_are_refused():
    """Valid protobuf (an unknown field) that carries the ORT format's identifier at byte 4: the
    scan finds nothing, but onnxruntime would parse the bytes as flatbuffers instead."""
    data = bytes([0xA2, 0x06, 0x06, 0x00]) + b"ORTM\x00"  # field 100, 6 bytes: 00 O R T M 00
    assert external_refs(data) == []
    with pytest.raises(UnsafeModelError, match="ORT-format model"):
        refuse_external_data(data, "the model")


def test_garbage_is_not_onnx():
    with pytest.raises(NotOnnxError):
        external_refs(b"\x3a\xff\xff\xff\xff\x0f")
