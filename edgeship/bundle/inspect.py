"""``edgeship inspect``: what is inside a bundle or an ONNX file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from edgeship.errors import BundleError, ModelLoadError
from edgeship.spec import IOSpec


def onnx_summary(data: bytes) -> dict:
    """Opset and op counts of an ONNX model (needs the onnx package)."""
    try:
        import onnx
    except ImportError:
        return {"opset": None, "ops": {}, "note": "install onnx to see op counts"}
    m = onnx.load_model_from_string(data)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "ops": dict(Counter(n.op_type for n in m.graph.node))}


def onnx_io(data: bytes, what: str) -> IOSpec:
    """The inputs and outputs of an ONNX model held as bytes (onnxruntime reads no external data
    files from bytes).

    Raises:
        ModelLoadError: onnxruntime cannot open it.
    """
    from edgeship.runtimes.ort import io_specs, open_session

    inputs, outputs = io_specs(open_session(data, error=ModelLoadError, what=what))
    return IOSpec(inputs, outputs)


def inspect_path(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path} does not exist; pass a bundle or an .onnx file.")
    if path.is_dir() or path.name.endswith(".zip"):
        from edgeship.bundle import open_bundle

        b = open_bundle(path)
        m = b.manifest
        variants = {}
        for name, v in m["variants"].items():
            try:
                summary = onnx_summary(b.read(v["file"]))
            except BundleError:
                raise
            except Exception as e:  # protobuf DecodeError and friends
                raise BundleError(f"bundle {path}: {v['file']} is not a readable ONNX model ({e}).") from e
            variants[name] = {**v, **summary}
        size = sum(f["size"] for f in m["files"].values())
        return {"path": str(path), "kind": "bundle", "name": m.get("name"), "size_mb": size / 1e6,
                "inputs": m["io"]["inputs"], "outputs": m["io"]["outputs"], "variants": variants,
                "defaults": m.get("defaults", {}), "torchscript": m.get("torchscript"),
                "created_at": m.get("created_at"), "tools": m.get("tools"), "source": m.get("source")}
    data = path.read_bytes()
    io = onnx_io(data, str(path))
    s = onnx_summary(data)
    return {"path": str(path), "kind": "onnx", "size_mb": len(data) / 1e6, **io.to_dict(),
            "variants": {"model": {"precision": "?", "size": len(data), **s}}}
