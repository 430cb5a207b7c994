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

onnx ≥ 1.21 and onnxruntime have checks of their own; this guard does not rely on them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgeship.errors import ModelLoadError, UnsafeModelError

ALLOWED_KEYS = ("location", "offset", "length", "checksum")


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
        entries = {}
        for e in t.external_data:
            if e.key not in ALLOWED_KEYS:
                raise ModelLoadError(
                    f"{model_path}: tensor {t.name!r} has an unknown external-data key {e.key[:60]!r} "
                    f"(allowed: {', '.join(ALLOWED_KEYS)}); the file is malformed or hostile, so it "
                    "was refused before reading any external data."
                )
            if e.key in entries:
                raise ModelLoadError(f"{model_path}: tensor {t.name!r} repeats the external-data key {e.key!r}.")
            entries[e.key] = e.value
        target = _check_location(entries.get("location", ""), t.name, model_path, folder)
        _check_range(entries, t.name, model_path, target)
    return count


def _check_location(location: str, tensor: str, model_path: Path, folder: Path) -> Path:
    def refuse(why: str):
        raise UnsafeModelError(
            f"{model_path}: tensor {tensor!r} keeps its data in {location!r}, which {why}; external "
            "data must be a plain file inside the model's folder. Refused before reading it: "
            "re-save the model with onnx.save(..., save_as_external_data=True) next to the .onnx file."
        )

    if not location:
        refuse("is empty")
    parts = location.replace("\\", "/").split("/")
    if "\x00" in location or location.startswith(("/", "\\", "~")) or (len(location) > 1 and location[1] == ":") \
            or os.path.isabs(location):
        refuse("is an absolute path")
    if ".." in parts:
        refuse("climbs out of the folder with '..'")
    if "\\" in location:
        refuse("uses backslashes")
    names = [p for p in parts if p not in ("", ".")]
    if not names:
        refuse("names no file")
    here = folder
    st = os.lstat(folder)
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
            refuse("is (or passes through) a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        refuse("is not a regular file")
    if st.st_nlink > 1:
        refuse("is hard-linked elsewhere")
    if os.path.commonpath([folder, os.path.realpath(here)]) != str(folder):
        refuse("escapes the model's folder")
    return here


def _check_range(entries: dict, tensor: str, model_path: Path, target: Path) -> None:
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
