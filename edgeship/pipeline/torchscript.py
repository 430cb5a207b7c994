"""Stage 2, torchscript (optional): trace (script as fallback), freeze, parity-check, keep.

Reads ``loaded``, ``spec``, ``example_args``, ``samples``, ``references``; adds
``torchscript_path`` (the frozen module in the work folder) and its checks to ``parity``.
"""

from __future__ import annotations

from edgeship.errors import ExportError
from edgeship.exporters.loading import EXPORTED_PROGRAM, ONNX
from edgeship.pipeline.context import Context, Skip, required
from edgeship.pipeline.parity import apart_samples, check_parity, fp32_tolerance, worst_text


def torchscript_stage(ctx: Context) -> str:
    loaded = required(ctx.loaded, "loaded")
    if not ctx.config.torchscript:
        raise Skip("--no-torchscript")
    if loaded.format == ONNX:
        raise Skip("ONNX input")
    if loaded.format == EXPORTED_PROGRAM:
        raise Skip("ExportedProgram input: its graph module is not traceable to TorchScript")
    import torch

    from edgeship.exporters.onnx import param_bytes
    from edgeship.exporters.torchscript import to_torchscript
    from edgeship.runtimes.torchscript import TorchScriptRunner

    sm, how = to_torchscript(ctx.export_module(), ctx.example_args)
    report = check_parity(ctx, [TorchScriptRunner(required(ctx.spec, "spec"), sm)], "torchscript", fp32_tolerance(ctx))
    if not report.passed:
        bad = report.failures()[0]
        if any(c.sample in apart_samples(ctx) for c in report.failures()):  # where axes kept apart differed
            ctx.apart_failed = f"TorchScript ({how}) fails parity: [{bad.sample}] {bad.reason}"
        raise ExportError(f"TorchScript ({how}) fails parity, not shipped: [{bad.sample}] {bad.reason}")
    path = ctx.workdir / "torchscript" / "model.pt"
    ctx.ensure_room(param_bytes(sm), "the TorchScript archive")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(sm, str(path))
    ctx.torchscript_path = path
    return f"{how} + freeze; {worst_text(report)}"
