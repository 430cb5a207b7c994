"""Graph optimisation: onnxruntime's offline basic level, then ONNX shape inference.

The basic level only does provider-independent rewrites (constant folding, redundant node
elimination), so the optimised file stays portable across execution providers.
"""

from __future__ import annotations

from pathlib import Path

from edgeship.errors import ExportError


def optimize_onnx(src: Path, dst: Path) -> str:
    """Write the optimised, shape-inferred model of ``src`` to ``dst``; return what was done.

    onnxruntime can write an optimised file that it cannot load again (seen with dynamo
    exports of transformer encoders); then the exported model is kept as it is.

    Raises:
        ExportError: onnxruntime could not open the model at all.
    """
    import shutil

    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    so.log_severity_level = 4
    try:
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime could not optimise {src.name}: {e}") from e
    try:
        onnx.shape_inference.infer_shapes_path(str(dst), str(dst))
    except Exception:  # shape inference is best effort: ORT already validated the graph
        pass
    check = ort.SessionOptions()
    check.log_severity_level = 4
    try:
        ort.InferenceSession(str(dst), check, providers=["CPUExecutionProvider"])
    except Exception as e:
        shutil.copyfile(src, dst)
        return f"kept the exported graph: onnxruntime could not reload its optimised file ({_first(e)})"
    return "onnxruntime basic level + shape inference"


def _first(e: Exception) -> str:
    return " ".join(str(e).split())[:200]
