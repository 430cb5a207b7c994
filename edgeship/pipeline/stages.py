"""Stages torchscript, onnx, optimize, parity and select. Each takes the context and
returns a one-line detail; raising ``EdgeshipError`` fails it."""

from __future__ import annotations

import logging

from edgeship.errors import ExportError, ParityError
from edgeship.exporters.loading import EXPORTED_PROGRAM, ONNX
from edgeship.parity import ParityReport, run_parity
from edgeship.pipeline.context import Context
from edgeship.pipeline.prepare import NONDETERMINISTIC
from edgeship.runtimes.ort import OrtRunner, available_providers

log = logging.getLogger(__name__)


class Skip(Exception):
    """Raised by a stage that does not apply; its message says why."""


def fp32_tolerance(ctx: Context):
    return ctx.config.tolerance_set().for_precision("fp32")


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
    max_abs = max((r.get("max_abs", float("inf")) for r in report.summary()), default=0.0)
    return f"max abs {max_abs:.2e} over {len({c.sample for c in report.checks})} sample(s)"


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
    """Every variant on every target against the eager reference. fp32 must pass; another
    variant that fails on a target is not made that target's default (and is dropped when it
    fails everywhere)."""
    from edgeship.runtimes.ort import providers_for

    ctx.targets = ctx.targets or resolve_targets(ctx.config.targets)
    for t in ctx.targets:
        providers_for(t)  # TargetUnavailableError before any work
    for name, v in list(ctx.variants.items()):
        tol = ctx.config.tolerance_set().for_precision(v["precision"])
        runners = [OrtRunner(ctx.spec, v["file"], target=t, name=f"onnxruntime-{t}") for t in ctx.targets]
        report = _parity(ctx, runners, name, tol)
        for r in runners:
            r.close()
        v["parity"] = {t: all(c.passed for c in report.checks if c.runner == f"onnxruntime-{t}")
                       for t in ctx.targets}
        if name == "fp32" and not report.passed:
            bad = report.failures()[0]
            cause = next((f" Likely cause: the {n}." for n in ctx.notes if n.startswith(NONDETERMINISTIC)), "")
            err = ParityError(
                f"fp32 ONNX parity failed: {bad.runner} output {bad.output!r} on sample {bad.sample}: "
                f"{bad.reason}.{cause} Nothing was written."
            )
            err.report = ctx.parity  # so --json/--junit still get written
            raise err
        if not any(v["parity"].values()):
            ctx.rejected[name] = {"reason": report.failures()[0].reason}
            del ctx.variants[name]
            ctx.note(f"{name} fails parity on every target and is not shipped")
    return f"{len(ctx.variants)} variant(s) × {', '.join(ctx.targets)}: " + ", ".join(
        f"{n} {'pass' if all(v['parity'].values()) else 'partial'}" for n, v in ctx.variants.items())


def quick_p50s(runners: dict, feeds: dict, rounds: int = 7, block_s: float = 0.025) -> dict:
    """p50 latency in ms of each runner on ``feeds``, measured interleaved.

    The variants take turns in short blocks (a new order each round; the profiler's timing loop),
    and each figure is the median of its block medians: on a shared machine a burst of load then
    hits every variant alike instead of whichever happened to be timed during it.
    """
    import random

    import numpy as np

    from edgeship.latency import time_calls

    calls = {n: (r.session.run, (r.output_names, feeds)) for n, r in runners.items()}
    blocks: dict = {n: [] for n in calls}
    order = list(calls)
    rng = random.Random(0)
    for round_ in range(rounds):
        rng.shuffle(order)
        for n in order:
            run, args = calls[n]
            ns = time_calls(run, args, warmup=3 if round_ == 0 else 0, iterations=None, duration=block_s)
            blocks[n].append(float(np.median(ns)))
    return {n: float(np.median(b) / 1e6) for n, b in blocks.items()}


# a quantized variant must beat fp32 by this much to be the default: at equal speed, keep fp32
MIN_SPEEDUP = 1.05


def select_stage(ctx: Context) -> str:
    """Per target, the default is the fastest variant that passes there (measured p50)."""
    feeds = ctx.samples[0].feeds
    for t in ctx.targets:
        passing = [n for n, v in ctx.variants.items() if v.get("parity", {}).get(t)]
        if not passing:
            continue
        runners = {n: OrtRunner(ctx.spec, ctx.variants[n]["file"], target=t).load() for n in passing}
        try:
            for n, ms in quick_p50s(runners, feeds).items():
                ctx.latency[(n, t)] = ms
        finally:
            for r in runners.values():
                r.close()
        base = ctx.latency.get(("fp32", t))
        best = min(passing, key=lambda n: ctx.latency[(n, t)])
        if base is not None and best != "fp32" and ctx.latency[(best, t)] * MIN_SPEEDUP > base:
            best = "fp32"
        ctx.defaults[t] = best
        slower = [f"{n} {ctx.latency[(n, t)]:.3g} ms ({ctx.latency[(n, t)] / base:.2f}× fp32)"
                  for n in passing if n != "fp32" and base and ctx.latency[(n, t)] > base]
        if best == "fp32" and len(passing) > 1:
            reason = (f"{t}: fp32 ({base:.3g} ms) is the default: " + (", ".join(slower) if slower else
                      "no quantized variant is at least 5% faster") + " on this machine")
            ctx.note(reason)
    return ", ".join(f"{t}: {v}" for t, v in ctx.defaults.items())
