"""Stages 2-7: torchscript, onnx, optimize, parity, select. Each takes the context and
returns a one-line detail; raising ``EdgeshipError`` fails it."""

from __future__ import annotations

import logging

from edgeship.errors import ExportError, ParityError
from edgeship.exporters.loading import EXPORTED_PROGRAM, ONNX
from edgeship.parity import ParityReport, run_parity, tolerance_for
from edgeship.pipeline.context import Context
from edgeship.pipeline.prepare import NONDETERMINISTIC
from edgeship.runtimes.ort import OrtRunner, available_providers

log = logging.getLogger(__name__)


class Skip(Exception):
    """Raised by a stage that does not apply; its message says why."""


def fp32_tolerance(ctx: Context):
    return tolerance_for("fp32", {"atol": ctx.config.atol, "rtol": ctx.config.rtol})


def dynamic_note(ctx: Context):
    """For failures on the second-size sample: name the axes and sizes that changed."""
    base = ctx.samples[0].sizes

    def note(sample) -> str:
        changed = {k: v for k, v in sample.sizes.items() if base.get(k) != v}
        if not changed:
            return ""
        axes = [f"{t.name}:{ax} ({sym}={changed[sym]}, exported at {base[sym]})"
                for t in ctx.spec.inputs for ax, sym in t.dynamic_axes.items() if sym in changed]
        return ("the export does not follow the dynamic axis " + ", ".join(axes) + ": the trace "
                "specialised that size (e.g. a view/reshape with a fixed size); fix the model code "
                "or drop the axis from --dynamic/--dynamic-batch")

    return note


def _parity(ctx: Context, runners, variant: str, tol) -> ParityReport:
    report = run_parity(runners, ctx.samples, ctx.references, tol, variant, dynamic_note(ctx))
    ctx.parity = ctx.parity.merged(report)
    return report


def _worst(report: ParityReport) -> str:
    rows = report.summary()
    max_abs = max((r.get("max_abs", float("inf")) for r in rows), default=0.0)
    return f"max abs {max_abs:.2e} over {len(ctx_samples(report))} sample(s)"


def ctx_samples(report: ParityReport) -> set:
    return {c.sample for c in report.checks}


def torchscript_stage(ctx: Context) -> str:
    if not ctx.config.torchscript:
        raise Skip("--no-torchscript")
    if ctx.loaded.format == ONNX:
        raise Skip("ONNX input")
    if ctx.loaded.format == EXPORTED_PROGRAM:
        raise Skip("ExportedProgram input: its graph module is not traceable to TorchScript")
    import torch

    from edgeship.exporters.torchscript import to_torchscript
    from edgeship.runtimes.torchscript import TorchScriptRunner

    sm, how = to_torchscript(ctx.loaded.module, ctx.example_args)
    report = _parity(ctx, [TorchScriptRunner(ctx.spec, sm)], "torchscript", fp32_tolerance(ctx))
    if not report.passed:
        bad = report.failures()[0]
        raise ExportError(f"TorchScript ({how}) fails parity, not shipped: [{bad.sample}] {bad.reason}")
    path = ctx.workdir / "torchscript" / "model.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(sm, str(path))
    ctx.torchscript_path = path
    return f"{how} + freeze; {_worst(report)}"


def onnx_stage(ctx: Context) -> str:
    raw = ctx.workdir / "raw.onnx"
    if ctx.loaded.format == ONNX:
        from edgeship.exporters.onnx import OnnxExport, copy_onnx

        opset = copy_onnx(ctx.loaded.path, raw)
        ctx.onnx_export = OnnxExport(raw, "none (ONNX input)", opset)
    else:
        from edgeship.exporters.onnx import export_onnx

        ctx.onnx_export = export_onnx(ctx.loaded.source, ctx.example_args, ctx.spec, raw,
                                      exporter=ctx.config.exporter, opset=ctx.config.opset)
        for n in ctx.onnx_export.notes:
            ctx.note(n)
    OrtRunner(ctx.spec, raw, target="cpu").load().close()  # an ORT session must open
    e = ctx.onnx_export
    return f"{e.exporter} exporter, opset {e.opset}, {raw.stat().st_size / 1e6:.2f} MB"


def optimize_stage(ctx: Context) -> str:
    from edgeship.exporters.optimize import optimize_onnx

    dst = ctx.workdir / "models" / "fp32.onnx"
    dst.parent.mkdir(parents=True, exist_ok=True)
    how = optimize_onnx(ctx.onnx_export.path, dst)
    if how.startswith("kept"):
        ctx.note(f"optimize: {how}")
    ctx.variants["fp32"] = {"file": dst, "precision": "fp32"}
    return f"{how}, {dst.stat().st_size / 1e6:.2f} MB"


def resolve_targets(requested) -> list[str]:
    have = available_providers()
    targets = []
    for t in requested:
        if t == "auto":
            targets += ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in have else [])
        else:
            targets.append(t)
    return list(dict.fromkeys(targets))


def parity_stage(ctx: Context) -> str:
    from edgeship.runtimes.ort import providers_for

    ctx.targets = resolve_targets(ctx.config.targets)
    for t in ctx.targets:
        providers_for(t)  # TargetUnavailableError before any work
    failed = []
    for name, v in ctx.variants.items():
        tol = tolerance_for(v["precision"], {"atol": ctx.config.atol, "rtol": ctx.config.rtol})
        runners = [OrtRunner(ctx.spec, v["file"], target=t, name=f"onnxruntime-{t}") for t in ctx.targets]
        report = _parity(ctx, runners, name, tol)
        for r in runners:
            r.close()
        v["parity"] = {t: all(c.passed for c in report.checks if c.runner == f"onnxruntime-{t}")
                       for t in ctx.targets}
        if not report.passed:
            failed.append((name, report.failures()[0]))
    fp32_fail = [f for n, f in failed if n == "fp32"]
    if fp32_fail:
        bad = fp32_fail[0]
        cause = next((f" Likely cause: the {n}." for n in ctx.notes if n.startswith(NONDETERMINISTIC)), "")
        err = ParityError(
            f"fp32 ONNX parity failed: {bad.runner} output {bad.output!r} on sample {bad.sample}: "
            f"{bad.reason}.{cause} Nothing was written."
        )
        err.report = ctx.parity  # so --json/--junit still get written
        raise err
    return f"{len(ctx.variants)} variant(s) × {', '.join(ctx.targets)}: all within tolerance"


def select_stage(ctx: Context) -> str:
    for t in ctx.targets:
        passing = [n for n, v in ctx.variants.items() if v.get("parity", {}).get(t)]
        if passing:
            ctx.defaults[t] = passing[0]
    return ", ".join(f"{t}: {v}" for t, v in ctx.defaults.items())
