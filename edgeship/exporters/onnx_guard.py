"""Refuse ONNX files whose external data could read outside the model's folder.

An ONNX tensor may keep its bytes in another file (``data_location = EXTERNAL``, with
``location``, ``offset``, ``length`` and ``checksum`` entries). Before anything opens such a
file (``onnx.load`` with external data, onnxruntime), :func:`check_external_data` reads only the
protobuf's entries and ``lstat``s the files they name, and refuses:

- an unknown or repeated key (older onnx set any key as a Python attribute);
- an empty, absolute, ``..``, drive-letter or backslashed location, or one with a NUL byte;
- a location that is, or passes through, a symbolic link; a file that is hard-linked, not a
  regular file, or missing;
- an offset or length that is not a non-negative integer, or that ends past the end of the file.

onnx ≥ 1.21 and onnxruntime have checks of their own; this guard does not rely on them. The
checks themselves live in ``runtimes.external_data`` (torch- and onnx-free), shared with the
commands that hand a raw .onnx to onnxruntime.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeship.runtimes.external_data import ALLOWED_KEYS, TENSOR, TENSOR_PATHS, ExternalRef, check_entries

__all__ = ["ALLOWED_KEYS", "check_external_data", "derive_tensor_paths", "external_tensors"]


def derive_tensor_paths(root: Any) -> dict[str, dict[int, str]]:
    """From a protobuf descriptor (``onnx.onnx_ml_pb2.ModelProto.DESCRIPTOR``): every message type
    reachable from it that can hold a TensorProto, directly or nested, with each field that leads to
    one (message name -> {field number: message name}). ``runtimes.external_data.TENSOR_PATHS`` is
    this table for the installed onnx, copied so the runtime needs no onnx (a test keeps them equal)."""
    types: dict[str, Any] = {}
    todo = [root]
    while todo:
        d = todo.pop()
        if d.name not in types:
            types[d.name] = d
            todo += [f.message_type for f in d.fields if f.message_type is not None]
    holds = {TENSOR}
    grew = True
    while grew:  # a fixed point: a type holds a tensor when one of its fields' types does
        before = len(holds)
        holds |= {name for name, d in types.items()
                  if any(f.message_type is not None and f.message_type.name in holds for f in d.fields)}
        grew = len(holds) != before
    return {name: {f.number: f.message_type.name for f in d.fields if f.message_type is not None and f.message_type.name in holds}
            for name, d in types.items() if name in holds and name != TENSOR}


def external_tensors(model: Any) -> Iterator[Any]:
    """Yield every TensorProto of ``model``: every field of :data:`TENSOR_PATHS` (graphs, subgraphs,
    attributes, local functions and their attribute defaults, sparse tensors, training info), walked
    by message type as the runtime's wire scan walks it."""
    todo = [model]
    while todo:
        msg = todo.pop()
        d = msg.DESCRIPTOR
        if d.name == TENSOR:
            yield msg
            continue
        nested = []
        for number in TENSOR_PATHS[d.name]:
            fd = d.fields_by_number[number]
            value = getattr(msg, fd.name)
            # protobuf >= 5.29 has is_repeated (7 dropped label)
            if fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED:
                nested += list(value)
            elif msg.HasField(fd.name):
                nested.append(value)
        todo += reversed(nested)  # depth first, each message's fields in order


def check_external_data(model, model_path: Path) -> int:
    """Check every external-data reference of ``model`` (parsed without its external data).

    Returns:
        The number of tensors that use external data (0 for a self-contained file).

    Raises:
        UnsafeModelError: a location that escapes the model's folder or is linked.
        ModelLoadError: an unknown key, a missing file, or an offset/length past the end.
    """
    from onnx import TensorProto

    folder = Path(os.path.realpath(Path(model_path).parent))
    count = 0
    for t in external_tensors(model):
        external = t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL
        if not external and not len(t.external_data):
            continue
        count += 1
        check_entries(ExternalRef(t.name, tuple((e.key, e.value) for e in t.external_data)), Path(model_path), folder)
    return count
