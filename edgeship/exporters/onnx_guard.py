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
from pathlib import Path

from edgeship.runtimes.external_data import ALLOWED_KEYS, ExternalRef, check_entries

__all__ = ["ALLOWED_KEYS", "check_external_data", "external_tensors"]


def external_tensors(model):
    """Yield every TensorProto of ``model`` (graphs, subgraphs, attributes, functions, sparse)."""
    def graph_tensors(g):
        yield from g.initializer
        for sp in g.sparse_initializer:
            yield sp.values
            yield sp.indices
        for node in g.node:
            yield from node_tensors(node)

    def node_tensors(node):
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for sp in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
                yield sp.values
                yield sp.indices
            if a.HasField("g"):
                yield from graph_tensors(a.g)
            for g in a.graphs:
                yield from graph_tensors(g)

    yield from graph_tensors(model.graph)
    for f in model.functions:
        for node in f.node:
            yield from node_tensors(node)
    for ti in model.training_info:
        yield from graph_tensors(ti.initialization)
        yield from graph_tensors(ti.algorithm)


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
