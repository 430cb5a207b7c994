"""Graph optimisation: onnxruntime's offline basic level, then ONNX shape inference.

The basic level only does provider-independent rewrites (constant folding, redundant node
elimination), so the optimised file stays portable across execution providers.
"""

from __future__ import annotations

from pathlib import Path

from edgeship.errors import ExportError, brief


def optimize_onnx(src: Path, dst: Path) -> str:
    """Write the optimised, shape-inferred model of ``src`` to ``dst``; return what was done.

    onnxruntime can write an optimised file that it cannot load again (seen with dynamo
    exports of transformer encoders); then the exported model is kept as it is.

    Raises:
        ExportError: onnxruntime could not open the model at all.
    """
    import shutil

    import onnx

    from edgeship.runtimes.ort import open_session, session_options

    open_session(src, options=session_options(basic_level=True, optimized_path=str(dst)), what=src.name)
    try:
        onnx.shape_inference.infer_shapes_path(str(dst), str(dst))
    except Exception:  # shape inference is best effort: ORT already validated the graph
        pass
    try:
        open_session(dst, what="its optimised file")
    except ExportError as e:
        shutil.copyfile(src, dst)
        return f"kept the exported graph: onnxruntime could not reload its optimised file ({brief(e.__cause__ or e)})"
    return "onnxruntime basic level + shape inference"
