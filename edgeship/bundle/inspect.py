"""``edgeship inspect``: what is inside a bundle or an ONNX file."""

from __future__ import annotations

import os
from pathlib import Path

from edgeship.errors import BundleError, ModelLoadError
from edgeship.spec import IOSpec

INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                      "QLinearConv", "QLinearMatMul", "DynamicQuantizeLSTM", "QAttention", "MatMulIntegerToFloat",
                      "QGemm", "DynamicQuantizeMatMul"})
FLOAT16 = 10  # onnx.TensorProto.FLOAT16


def precision_of(ops: set[str], initializer_types: set[int]) -> str:
    """The precision class a graph was built in: int8 when it holds quantized ops, int4 when it holds
    weight-only MatMulNBits and no int8 op, fp16 when its weights are float16, else fp32 (what
    edgeship's tolerances are chosen by)."""
    if ops & INT8_OPS:
        return "int8"
    if "MatMulNBits" in ops:
        return "int4"
    return "fp16" if FLOAT16 in initializer_types else "fp32"


def onnx_summary(data: bytes) -> dict:
    """Opset, op counts and precision (detected from the graph) of an ONNX model, read from its
    protobuf wire format: the same answer with or without the onnx package installed.

    Raises:
        ModelLoadError: the bytes are not ONNX.
    """
    from edgeship.runtimes.onnx_wire import NotOnnxError, summary

    try:
        opset, ops, types = summary(data)
    except NotOnnxError as e:
        raise ModelLoadError(f"not an ONNX model ({e}).") from e
    return {"opset": opset, "ops": dict(ops), "precision": precision_of(set(ops), types)}


def graph_precision(data: bytes) -> str | None:
    """The precision class of an ONNX model's graph (int8, fp16 or fp32)."""
    return onnx_summary(data).get("precision")


def onnx_for_session(path: Path) -> bytes | str:
    """A user's raw .onnx file as onnxruntime should get it: its bytes when self-contained, else
    its path once every external-data location passed edgeship's guard (so onnxruntime resolves
    them in the model's folder, never in the current directory).

    Raises:
        ModelLoadError: not a regular file, not ONNX, or a bad external-data entry.
        UnsafeModelError: a location that escapes the model's folder or is linked.
    """
    from edgeship.bundle.limits import read_regular_file
    from edgeship.runtimes.external_data import check_entries, external_refs
    from edgeship.runtimes.onnx_wire import NotOnnxError

    data = read_regular_file(path, "ONNX input", ModelLoadError)
    try:
        refs = external_refs(data)
    except NotOnnxError as e:
        raise ModelLoadError(f"{path} is neither a bundle nor an ONNX model ({e}).") from e
    folder = Path(os.path.realpath(path.parent))
    for ref in refs:
        check_entries(ref, path, folder)
    return str(path) if refs else data


def onnx_io(data: bytes | str, what: str) -> IOSpec:
    """The inputs and outputs of an ONNX model (its bytes, or the path :func:`onnx_for_session` gave).

    Raises:
        ModelLoadError: onnxruntime cannot open it.
    """
    from edgeship.runtimes.ort import io_specs, open_session

    inputs, outputs = io_specs(open_session(data, error=ModelLoadError, what=what))
    return IOSpec(inputs, outputs)


def ort_summary(data: bytes) -> dict:
    """Opset and op counts of an ORT-format model (``edgeship.runtimes.ort_format.summary``).

    Raises:
        ModelLoadError: the bytes are not an ORT-format model.
    """
    from edgeship.runtimes.ort_format import NotOrtFormat, summary

    try:
        opset, ops = summary(data)
    except NotOrtFormat as e:
        raise ModelLoadError(f"not an ORT-format model ({e}).") from e
    return {"opset": opset, "ops": dict(ops), "precision": precision_of({o.rsplit(".", 1)[-1] for o in ops}, set())}


def _mobile(section: dict) -> dict:
    """The manifest's ``mobile`` section as inspect shows it (its fields of the right types only)."""
    ops = section.get("operators")
    written = section.get("written_by")
    return {"operators_config": _text(section.get("operators_config")),
            "operators": [o for o in ops if isinstance(o, str)] if isinstance(ops, list) else [],
            "written_by": {k: v for k, v in written.items() if isinstance(v, str)} if isinstance(written, dict) else {}}


def _task(m: dict) -> dict | None:
    """A Hugging Face bundle's task as inspect shows it (the manifest's task, preprocess and generation
    sections, their fields of the right types only); None for a bundle without a task."""
    task = m.get("task")
    if not isinstance(task, dict) or not isinstance(task.get("name"), str):
        return None
    def section(d: dict, key: str) -> dict:
        value = d.get(key)
        return value if isinstance(value, dict) else {}

    pre, gen = section(m, "preprocess"), section(m, "generation")
    tok, img, graph = section(pre, "tokenizer"), section(pre, "image"), section(gen, "graph")

    def whole(v: object) -> int | None:
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    labels = task.get("labels")
    size = [whole(img.get(k)) for k in ("height", "width", "channels")]
    return {"name": task["name"],
            "labels": labels if isinstance(labels, list) and all(isinstance(x, str) for x in labels) else None,
            "tokenizer": _text(tok.get("file")), "max_length": whole(tok.get("max_length")),
            "image": "x".join(map(str, size)) if all(size) else None,
            "graph": _text(graph.get("exporter")), "context_length": whole(gen.get("context_length"))}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _variant_info(recorded: dict, summary: dict, file_size: object) -> dict:
    """A variant as inspect shows it: what the manifest records, where it is of the right type
    (the manifest is not signed: informational fields may hold anything), over what the model
    file itself says (opset, op counts, precision); the size is the verified file's otherwise."""
    info = {**summary, **recorded}  # the manifest's precision wins for a bundle
    ops = recorded.get("ops")
    if not (isinstance(ops, dict) and all(isinstance(n, int) and not isinstance(n, bool) for n in ops.values())):
        info["ops"] = summary.get("ops")
    opset = recorded.get("opset")
    if not isinstance(opset, int) or isinstance(opset, bool):
        info["opset"] = summary.get("opset")
    size = recorded.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        info["size"] = file_size
    return info


def inspect_path(path: str | Path) -> dict:
    """What a bundle (a folder, or a zip recognised by its content, whatever its name) or an ONNX
    file holds.

    Raises:
        BundleError: a missing path, or a corrupt bundle.
        ModelLoadError, UnsafeModelError: an ONNX file that cannot be read or names bad external data.
    """
    from edgeship.bundle.limits import read_regular_file
    from edgeship.bundle.read import is_bundle, open_bundle

    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path} does not exist; pass a bundle or an .onnx file.")
    if is_bundle(path, ModelLoadError):  # by content: a zipped bundle under any name, an .onnx named .zip
        b = open_bundle(path)
        m = b.manifest
        variants = {}
        for name, v in m["variants"].items():
            try:
                data = b.read(v["file"])
                summary = ort_summary(data) if v.get("format") == "ort" else onnx_summary(data)
            except BundleError:
                raise
            except Exception as e:  # protobuf DecodeError and friends
                kind = "ORT-format" if v.get("format") == "ort" else "ONNX"
                raise BundleError(f"bundle {path}: {v['file']} is not a readable {kind} model ({e}).") from e
            variants[name] = _variant_info(v, summary, m["files"].get(v["file"], {}).get("size"))
        size = sum(f["size"] for f in m["files"].values())
        tools = m.get("tools")
        return {"path": str(path), "kind": "bundle", "name": m.get("name"), "size_mb": size / 1e6,
                "inputs": m["io"]["inputs"], "outputs": m["io"]["outputs"], "variants": variants,
                "defaults": m.get("defaults", {}), "torchscript": _text(m.get("torchscript")),
                "created_at": _text(m.get("created_at")),
                "tools": {k: v for k, v in tools.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
                if isinstance(tools, dict) else None,
                "source": m.get("source") if isinstance(m.get("source"), dict) else None,
                **({"mobile": _mobile(m["mobile"])} if isinstance(m.get("mobile"), dict) else {}),
                **({"task": t} if (t := _task(m)) is not None else {})}
    model = onnx_for_session(path)
    io = onnx_io(model, str(path))
    data = model if isinstance(model, bytes) else read_regular_file(path, "ONNX input", ModelLoadError)
    s = onnx_summary(data)  # the graph only: onnx.load_model_from_string reads no external data
    return {"path": str(path), "kind": "onnx", "size_mb": len(data) / 1e6, **io.to_dict(),
            "variants": {"model": {"precision": "? (install onnx to detect it)", "size": len(data), **s}}}
