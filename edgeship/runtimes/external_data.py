"""External data of ONNX models, found and checked without the onnx package (torch- and onnx-free).

An ONNX tensor may keep its bytes in another file (``data_location = EXTERNAL`` with
``location``, ``offset``, ``length`` and ``checksum`` entries). onnxruntime resolves those
locations against the model's folder when given a path, and against the process's *current
directory* when given the model's bytes: a model handed over as bytes can read ``.env`` from
wherever the app runs. So:

- :func:`external_refs` lists every tensor with external data straight from the protobuf wire
  format (the runtime side has no onnx package), walking every message type where a TensorProto
  can live (:data:`TENSOR_PATHS`, onnx.proto's own, checked against onnx's descriptor by a test):
  graphs, subgraphs, attributes, local functions and their attribute defaults, sparse tensors
  and training info; tags and enums are read as protobuf's C++ parser reads them;
- :func:`refuse_external_data` refuses any such tensor in model bytes (bundle variants never
  have external data: it is inlined at export) before onnxruntime sees them;
- :func:`check_entries` checks the locations of a user's raw ``.onnx`` file (a plain, unlinked
  file inside the model's folder, the range inside the file) before anything reads them
  (``bundle.inspect.onnx_for_session`` and ``exporters.onnx_guard`` use it).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeship.errors import EdgeshipError, ModelLoadError, UnsafeModelError
from edgeship.runtimes.onnx_wire import MAX_DEPTH, NotOnnxError, fields

ALLOWED_KEYS = ("location", "offset", "length", "checksum")
# Every message type of onnx.proto (onnx-ml) that can hold a TensorProto, reached from ModelProto,
# and each of its fields that leads to one: message -> {field number: the message that field holds}.
# Derived from onnx's own descriptor (exporters.onnx_guard.derive_tensor_paths); a test checks that
# this table equals what the installed onnx.onnx_ml_pb2 gives, so it cannot drift. The runtime side
# has no onnx package, hence the copy.
TENSOR_PATHS: dict[str, dict[int, str]] = {
    "ModelProto": {7: "GraphProto", 20: "TrainingInfoProto", 25: "FunctionProto"},
    "GraphProto": {1: "NodeProto", 5: "TensorProto", 15: "SparseTensorProto"},
    "NodeProto": {5: "AttributeProto"},
    "AttributeProto": {5: "TensorProto", 6: "GraphProto", 10: "TensorProto", 11: "GraphProto",
                       22: "SparseTensorProto", 23: "SparseTensorProto"},
    "SparseTensorProto": {1: "TensorProto", 2: "TensorProto"},
    "FunctionProto": {7: "NodeProto", 11: "AttributeProto"},  # 11: attribute defaults (attribute_proto)
    "TrainingInfoProto": {1: "GraphProto", 2: "GraphProto"},
}
TENSOR = "TensorProto"
ORT_FORMAT_ID = b"ORTM"  # onnxruntime takes model bytes with this at offset 4 as an ORT-format model
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION, _EXTERNAL = 8, 13, 14, 1


@dataclass(frozen=True)
class ExternalRef:
    """A tensor that keeps its data in another file: its name and its external-data entries."""

    tensor: str
    entries: tuple[tuple[str, str], ...]

    @property
    def location(self) -> str:
        return dict(self.entries).get("location", "")


def _tensor_ref(buf: memoryview) -> ExternalRef | None:
    name, entries, external = "", [], False
    for field, value in fields(buf):
        if field == _TENSOR_NAME and isinstance(value, memoryview):
            name = bytes(value).decode("utf-8", "replace")
        elif field == _TENSOR_EXTERNAL and isinstance(value, memoryview):
            entry = dict(fields(value))
            key, val = entry.get(1, b""), entry.get(2, b"")
            entries.append((bytes(key).decode("utf-8", "replace") if isinstance(key, memoryview) else "",
                            bytes(val).decode("utf-8", "replace") if isinstance(val, memoryview) else ""))
        elif field == _TENSOR_LOCATION and isinstance(value, int) and value & 0xFFFFFFFF == _EXTERNAL:
            external = True  # protobuf reads an enum as int32: 1 + 2**32 is EXTERNAL too
    return ExternalRef(name, tuple(entries)) if external or entries else None


def _walk(buf: memoryview, kind: str, depth: int) -> Iterator[ExternalRef]:
    if depth > MAX_DEPTH:
        raise NotOnnxError(f"messages nested deeper than {MAX_DEPTH}")
    if kind == TENSOR:
        ref = _tensor_ref(buf)
        if ref is not None:
            yield ref
        return
    nested = TENSOR_PATHS[kind]
    for field, value in fields(buf):
        if field in nested and isinstance(value, memoryview):
            yield from _walk(value, nested[field], depth + 1)


def external_refs(data: bytes) -> list[ExternalRef]:
    """Every tensor of an ONNX model (its serialized bytes) that uses external data, wherever a
    TensorProto can live (:data:`TENSOR_PATHS`: graphs, subgraphs, node attributes, local functions
    and their attribute defaults, sparse tensors, training info).

    Raises:
        NotOnnxError: the bytes are not a well-formed protobuf message.
    """
    return list(_walk(memoryview(data), "ModelProto", 0))


def refuse_external_data(data: bytes, what: str, error: type[EdgeshipError] = UnsafeModelError,
                         where: str = "") -> None:
    """Refuse model bytes that name external data, before onnxruntime sees them.

    Args:
        what: the model, as messages name it; ``where`` prefixes the message (``bundle PATH: ``).

    Raises:
        error: a tensor keeps its data in another file, or the bytes are not a protobuf message
            (which a parser could read differently from this scan). Bytes with the ORT format's file
            identifier (onnxruntime reads them as flatbuffers) are checked by :func:`refuse_ort_external_data`.
    """
    if data[4:8] == ORT_FORMAT_ID:  # onnxruntime takes the bytes as an ORT-format (flatbuffers) model
        refuse_ort_external_data(data, what, error, where)
        return
    try:
        refs = external_refs(data)
    except NotOnnxError as e:
        raise error(f"{where}onnxruntime cannot open {what}: it is not a readable ONNX model ({e}).") from e
    if refs:
        raise error(
            f"{where}{what} keeps tensor {refs[0].tensor!r} in external data {refs[0].location[:80]!r} "
            f"({len(refs)} tensor{'s' if len(refs) > 1 else ''} in all); given as bytes, onnxruntime would "
            "read that file from the current directory, so it was refused before onnxruntime saw it. "
            "A bundle never needs external data (export inlines it): this one was edited; re-export it."
        )


def refuse_ort_external_data(data: bytes, what: str, error: type[EdgeshipError] = UnsafeModelError,
                             where: str = "") -> None:
    """Refuse ORT-format model bytes that onnxruntime would read external data for, or that cannot be
    read as an ORT-format model (see :mod:`edgeship.runtimes.ort_format`).

    Raises:
        error: a tensor has an external-data offset, or the flatbuffer does not read.
    """
    from edgeship.runtimes.ort_format import NotOrtFormat, external_tensors

    try:
        names = external_tensors(data)
    except NotOrtFormat as e:
        raise error(f"{where}{what} is marked as an ORT-format model (file identifier ORTM at byte 4) but does "
                    f"not read as one ({e}); re-export it, or pass the ONNX model.") from e
    if names:
        raise error(f"{where}{what} is an ORT-format model that keeps tensor {names[0][:80]!r} in external data "
                    f"({len(names)} tensor{'s' if len(names) > 1 else ''} in all); onnxruntime would read it from "
                    "another file, so it was refused before onnxruntime saw it. edgeship writes ORT-format files "
                    "with every tensor inline: this one was edited; re-export it.")


def check_entries(ref: ExternalRef, model_path: Path, folder: Path) -> Path:
    """Check one tensor's external-data entries; returns the file they name.

    Raises:
        UnsafeModelError: a location that escapes the model's folder or is linked.
        ModelLoadError: an unknown or repeated key, a missing file, or an offset/length past the end.
    """
    entries: dict[str, str] = {}
    for key, value in ref.entries:
        if key not in ALLOWED_KEYS:
            raise ModelLoadError(
                f"{model_path}: tensor {ref.tensor!r} has an unknown external-data key {key[:60]!r} "
                f"(allowed: {', '.join(ALLOWED_KEYS)}); the file is malformed or hostile, so it "
                "was refused before reading any external data."
            )
        if key in entries:
            raise ModelLoadError(f"{model_path}: tensor {ref.tensor!r} repeats the external-data key {key!r}.")
        entries[key] = value
    target = _check_location(entries.get("location", ""), ref.tensor, model_path, folder)
    _check_range(entries, ref.tensor, model_path, target)
    return target


def _check_location(location: str, tensor: str, model_path: Path, folder: Path) -> Path:
    def refuse(why: str) -> UnsafeModelError:
        return UnsafeModelError(
            f"{model_path}: tensor {tensor!r} keeps its data in {location!r}, which {why}; external "
            "data must be a plain file inside the model's folder. Refused before reading it: "
            "re-save the model with onnx.save(..., save_as_external_data=True) next to the .onnx file."
        )

    if not location:
        raise refuse("is empty")
    parts = location.replace("\\", "/").split("/")
    if "\x00" in location or location.startswith(("/", "\\", "~")) or (len(location) > 1 and location[1] == ":") \
            or os.path.isabs(location):
        raise refuse("is an absolute path")
    if ".." in parts:
        raise refuse("climbs out of the folder with '..'")
    if "\\" in location:
        raise refuse("uses backslashes")
    names = [p for p in parts if p not in ("", ".")]
    if not names:
        raise refuse("names no file")
    here, st = folder, None
    for part in names:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            raise ModelLoadError(
                f"{model_path}: tensor {tensor!r} keeps its data in {location!r}, which does not exist "
                f"next to the model ({folder}); copy the external data file along with the .onnx file."
            ) from None
        except OSError as e:
            raise ModelLoadError(f"{model_path}: cannot stat external data {location!r}: {e}") from e
        if stat.S_ISLNK(st.st_mode):
            raise refuse("is (or passes through) a symbolic link")
    if st is None or not stat.S_ISREG(st.st_mode):
        raise refuse("is not a regular file")
    if st.st_nlink > 1:
        raise refuse("is hard-linked elsewhere")
    if os.path.commonpath([folder, os.path.realpath(here)]) != str(folder):
        raise refuse("escapes the model's folder")
    return here


def _check_range(entries: dict[str, str], tensor: str, model_path: Path, target: Path) -> None:
    size = os.lstat(target).st_size
    values = {}
    for key in ("offset", "length"):
        raw = entries.get(key)
        if raw is None:
            continue
        if not raw.isascii() or not raw.isdigit():
            raise ModelLoadError(
                f"{model_path}: tensor {tensor!r} has external-data {key} {raw[:40]!r}; it must be a "
                "non-negative integer."
            )
        values[key] = int(raw)
    offset = values.get("offset", 0)
    end = offset + values.get("length", 0)
    if offset > size or end > size:
        raise ModelLoadError(
            f"{model_path}: tensor {tensor!r} reads bytes {offset}..{end} of {entries['location']!r}, "
            f"which has only {size} bytes; the external data file is truncated or does not belong "
            "to this model."
        )
