"""Stage 4, optimize: onnxruntime's offline graph optimisation (basic level, portable across
execution providers). Reads ``onnx_export``; adds the ``fp32`` variant."""

from __future__ import annotations

from edgeship.pipeline.context import Context, Variant, required


def optimize_stage(ctx: Context) -> str:
    from edgeship.exporters.optimize import optimize_onnx

    src = required(ctx.onnx_export, "onnx_export").path
    dst = ctx.workdir / "models" / "fp32.onnx"
    ctx.ensure_room(src.stat().st_size, "onnxruntime's optimised model")
    dst.parent.mkdir(parents=True, exist_ok=True)
    how = optimize_onnx(src, dst)
    if how.startswith("kept"):
        ctx.note(f"optimize: {how}")
    ctx.variants["fp32"] = Variant("fp32", dst, "fp32")
    return f"{how}, {dst.stat().st_size / 1e6:.2f} MB"
