"""ORT-format (flatbuffers) models, read without onnxruntime's tools package (torch-, onnx- and flatbuffers-free).

ONNX Runtime Mobile runs models in the ORT format (``.ort``, file identifier ``ORTM`` at byte 4:
see :data:`edgeship.runtimes.external_data.ORT_FORMAT_ID`). edgeship ships such files for the mobile
target (:mod:`edgeship.exporters.ort_format` writes them), and onnxruntime's Python package opens them
like ONNX models. Before it does, :func:`check_ort_model` walks every tensor the format can hold
(initializers, sparse initializers, node attributes, subgraphs) and refuses one that keeps its data in
an external file (``Tensor.external_data_offset`` >= 0), as :func:`~edgeship.runtimes.external_data.refuse_external_data`
does for ONNX. It reads the flatbuffer by hand (little-endian offsets, bounds-checked) because
``onnxruntime.tools`` imports torch where it is installed, and the runtime side never does.

Field slots are those of onnxruntime's schema (``onnxruntime/core/flatbuffers/schema/ort.fbs``; the
generated readers in ``onnxruntime/tools/ort_format_model/ort_flatbuffers_py``, which a test compares).
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator

# table -> {field: vtable slot}, from ort.fbs (slot = 4 + 2 * field index)
SLOTS: dict[str, dict[str, int]] = {
    "InferenceSession": {"ort_version": 4, "model": 6},
    "Model": {"opset_import": 6, "graph": 18},
    "OperatorSetId": {"domain": 4, "version": 6},
    "Graph": {"initializers": 4, "nodes": 8, "sparse_initializers": 18},
    "Node": {"domain": 8, "op_type": 14, "attributes": 24},
    "Attribute": {"t": 16, "g": 18, "tensors": 26, "graphs": 28},
    "Tensor": {"name": 4, "external_data_offset": 16},
    "SparseTensor": {"values": 4, "indices": 6},
}
MAX_DEPTH = 100  # nested subgraphs
MAX_TABLES = 2_000_000  # tables visited: a crafted file can point many nodes at one subgraph


class NotOrtFormat(ValueError):
    """The bytes are not a readable ORT-format model (an offset points outside them, or too deep)."""


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.visited = 0

    def _get(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise NotOrtFormat(f"offset {pos} is outside the {len(self.data)} bytes")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def field(self, table: int, slot: int) -> int | None:
        """The position of a table's field, or None when it is absent."""
        vtable = table - self._get("<i", table)
        if slot >= self._get("<H", vtable):
            return None
        off = self._get("<H", vtable + slot)
        return table + off if off else None

    def table(self, table: int, slot: int) -> int | None:
        pos = self.field(table, slot)
        return None if pos is None else self._indirect(pos)

    def _indirect(self, pos: int) -> int:
        self.visited += 1
        if self.visited > MAX_TABLES:
            raise NotOrtFormat(f"more than {MAX_TABLES} tables")
        return pos + self._get("<I", pos)

    def tables(self, table: int, slot: int) -> Iterator[int]:
        pos = self.field(table, slot)
        if pos is None:
            return
        vec = self._indirect(pos)
        for i in range(self._get("<I", vec)):
            yield self._indirect(vec + 4 + 4 * i)

    def string(self, table: int, slot: int) -> str | None:
        pos = self.table(table, slot)
        if pos is None:
            return None
        n = self._get("<I", pos)
        if pos + 4 + n > len(self.data):
            raise NotOrtFormat("a string runs past the end")
        return bytes(self.data[pos + 4:pos + 4 + n]).decode("utf-8", "replace")

    def int64(self, table: int, slot: int, default: int) -> int:
        pos = self.field(table, slot)
        return default if pos is None else self._get("<q", pos)


def is_ort_format(data: bytes) -> bool:
    """Whether onnxruntime takes these model bytes as an ORT-format model (its file identifier at byte 4)."""
    from edgeship.runtimes.external_data import ORT_FORMAT_ID

    return data[4:8] == ORT_FORMAT_ID


def _root(r: _Reader) -> int:
    return r._get("<I", 0)


def ort_format_version(data: bytes) -> str | None:
    """The ORT format version an ``.ort`` file was written in (``InferenceSession.ort_version``,
    e.g. ``"6"``), or None when it records none.

    Raises:
        NotOrtFormat: the bytes cannot be read as an ORT-format model.
    """
    r = _Reader(data)
    return r.string(_root(r), SLOTS["InferenceSession"]["ort_version"])


def external_tensors(data: bytes) -> list[str]:
    """The names of the tensors in an ORT-format model that keep their data in another file.

    Raises:
        NotOrtFormat: the bytes cannot be read as an ORT-format model.
    """
    r = _Reader(data)
    found: list[str] = []

    def tensor(t: int) -> None:
        if r.int64(t, SLOTS["Tensor"]["external_data_offset"], -1) >= 0:
            found.append(r.string(t, SLOTS["Tensor"]["name"]) or "?")

    def graph(g: int, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise NotOrtFormat(f"subgraphs nest more than {MAX_DEPTH} deep")
        s = SLOTS["Graph"]
        for t in r.tables(g, s["initializers"]):
            tensor(t)
        for sp in r.tables(g, s["sparse_initializers"]):
            for slot in SLOTS["SparseTensor"].values():
                part = r.table(sp, slot)
                if part is not None:
                    tensor(part)
        a = SLOTS["Attribute"]
        for node in r.tables(g, s["nodes"]):
            for attr in r.tables(node, SLOTS["Node"]["attributes"]):
                one = r.table(attr, a["t"])
                if one is not None:
                    tensor(one)
                for t in r.tables(attr, a["tensors"]):
                    tensor(t)
                sub = r.table(attr, a["g"])
                if sub is not None:
                    graph(sub, depth + 1)
                for sub in r.tables(attr, a["graphs"]):
                    graph(sub, depth + 1)

    try:
        model = r.table(_root(r), SLOTS["InferenceSession"]["model"])
        g = None if model is None else r.table(model, SLOTS["Model"]["graph"])
        if g is not None:
            graph(g, 0)
    except RecursionError as e:
        raise NotOrtFormat("subgraphs nest too deeply") from e
    return found


def summary(data: bytes) -> tuple[int | None, Counter]:
    """The default-domain opset and the op counts of an ORT-format model's main graph (as inspect
    shows them for ONNX models; contrib ops keep their domain, ``com.microsoft.FusedGemm``).

    Raises:
        NotOrtFormat: the bytes cannot be read as an ORT-format model.
    """
    r = _Reader(data)
    model = r.table(_root(r), SLOTS["InferenceSession"]["model"])
    if model is None:
        raise NotOrtFormat("it holds no model")
    opset = None
    o = SLOTS["OperatorSetId"]
    for entry in r.tables(model, SLOTS["Model"]["opset_import"]):
        if (r.string(entry, o["domain"]) or "") in ("", "ai.onnx"):
            opset = r.int64(entry, o["version"], 0)
    ops: Counter = Counter()
    g = r.table(model, SLOTS["Model"]["graph"])
    for node in r.tables(g, SLOTS["Graph"]["nodes"]) if g is not None else ():
        domain = r.string(node, SLOTS["Node"]["domain"]) or ""
        op = r.string(node, SLOTS["Node"]["op_type"]) or "?"
        ops[op if domain in ("", "ai.onnx") else f"{domain}.{op}"] += 1
    return opset, ops
