"""Reading ONNX's protobuf wire format without the onnx package (the runtime side has none): the
message walker :mod:`edgeship.runtimes.external_data` uses, and :func:`summary`, the opset, op
counts and initializer types of a model, from which its precision class is read.

Field numbers are onnx.proto's: ModelProto graph 7, opset_import 8 (OperatorSetIdProto domain 1,
version 2); GraphProto node 1, initializer 5; NodeProto op_type 4, domain 7; TensorProto data_type 2.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

MAX_DEPTH = 100  # nested graphs, as protobuf's own recursion limit


class NotOnnxError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise NotOnnxError("truncated or overlong varint")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if b < 0x80:
            return value, i


def fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of one message: an int for varints, the bytes for length-delimited.

    A tag is read as protobuf's C++ parser (onnxruntime's, OpenVINO's) reads it, as 32 bits: one
    with bits above those, which that parser would cut to another field than its value names (an
    overlong tag hiding a graph from this scan), is refused, as is field number 0."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        if key >> 32 or key >> 3 == 0:
            raise NotOnnxError(f"a field tag {'over 32 bits' if key >> 32 else 'of field number 0'} at byte {i}")
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
            yield field, value
        elif wire == 2:
            n, i = varint(buf, i)
            if i + n > len(buf):
                raise NotOnnxError("a field runs past the end of its message")
            yield field, buf[i:i + n]
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 3:  # a group: unused by onnx.proto, but parsers skip it, so skip it too
            i = _skip_group(buf, i, field)
        else:  # an end-group without a start; 6 and 7 do not exist
            raise NotOnnxError(f"unexpected wire type {wire}")
    if i != len(buf):
        raise NotOnnxError("a fixed-size field runs past the end of its message")


def _skip_group(buf: memoryview, i: int, field: int) -> int:
    """The index after the end-group tag of ``field`` (groups nest)."""
    depth = [field]
    while depth:
        key, i = varint(buf, i)
        if key >> 32:  # as in fields(): the C++ parser would see another tag (and close the group elsewhere)
            raise NotOnnxError(f"a field tag over 32 bits at byte {i}")
        wire = key & 7
        if wire == 0:
            _, i = varint(buf, i)
        elif wire == 2:
            n, i = varint(buf, i)
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 3:
            depth.append(key >> 3)
        elif wire == 4 and depth[-1] == key >> 3:
            depth.pop()
        else:
            raise NotOnnxError("a group is not closed")
        if i > len(buf) or len(depth) > MAX_DEPTH:
            raise NotOnnxError("a group runs past the end of its message")
    return i


def summary(data: bytes) -> tuple[int | None, Counter, set[int]]:
    """(the default-domain opset, op type -> count in the main graph, the data types of its
    initializers) of a serialized ONNX model.

    Raises:
        NotOnnxError: the bytes are not a well-formed protobuf message.
    """
    opset: int | None = None
    ops: Counter = Counter()
    types: set[int] = set()
    for field, value in fields(memoryview(data)):
        if field == 8 and isinstance(value, memoryview):
            entry = dict(fields(value))
            domain = entry.get(1, b"")
            if (bytes(domain) if isinstance(domain, memoryview) else b"") in (b"", b"ai.onnx") and isinstance(entry.get(2), int):
                opset = int(entry[2])
        elif field == 7 and isinstance(value, memoryview):
            for g_field, item in fields(value):
                if g_field == 1 and isinstance(item, memoryview):
                    op = next((bytes(v).decode("utf-8", "replace") for f, v in fields(item)
                               if f == 4 and isinstance(v, memoryview)), "")
                    ops[op] += 1
                elif g_field == 5 and isinstance(item, memoryview):
                    types.update(int(v) for f, v in fields(item) if f == 2 and isinstance(v, int))
    return opset, ops, types
