"""Stage 3, onnx: export to ONNX (or copy an ONNX input), checked and opened by onnxruntime.

Reads ``loaded``, ``example_args``, ``spec``; adds ``onnx_export`` (the raw file, exporter, opset).
"""

from __future__ import annotations

from edgeship.exporters.loading import ONNX
from edgeship.pipeline.context import Context, required


def onnx_stage(ctx: Context) -> str:
    loaded = required(ctx.loaded, "loaded")
    raw = ctx.workdir / "raw.onnx"
    if loaded.format == ONNX:
        from edgeship.exporters.onnx import OnnxExport, copy_onnx

        opset = copy_onnx(loaded.path, raw)
        e = OnnxExport(raw, "none (ONNX input)", opset)
    else:
        from edgeship.exporters.onnx import export_onnx

        e = export_onnx(ctx.export_module(), ctx.example_args, required(ctx.spec, "spec"), raw,
                        exporter=ctx.config.exporter, opset=ctx.config.opset)
        for n in e.notes:
            ctx.note(n)
    ctx.onnx_export = e
    return f"{e.exporter} exporter, opset {e.opset}, {raw.stat().st_size / 1e6:.2f} MB"
