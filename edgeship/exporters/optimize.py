"""Graph optimisation: onnxruntime's offline basic level, then ONNX shape inference.

The basic level only does provider-independent rewrites (constant folding, redundant node
elimination), so the optimised file stays portable across execution providers.
"""

from __future__ import annotations

from pathlib import Path

from edgeship.errors import ExportError


def optimize_onnx(src: Path, dst: Path) -> Path:
    """Write the optimised, shape-inferred model of ``src`` to ``dst``.

    Raises:
        ExportError: onnxruntime could not optimise the model.
    """
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime could not optimise {src.name}: {e}") from e
    try:
        onnx.shape_inference.infer_shapes_path(str(dst), str(dst))
    except Exception:  # shape inference is best effort: ORT already validated the graph
        pass
    return dst
