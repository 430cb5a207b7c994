"""Stage 3, onnx: export to ONNX (or copy an ONNX input), checked and opened by onnxruntime.

Reads ``loaded``, ``example_args``, ``spec``, ``samples``, ``references``; adds ``onnx_export``
(the raw file, exporter, opset).

With ``--exporter auto`` the exported file is run on the golden samples at once: an exporter
can keep an input axis symbolic and still fix a size inside the graph (torch 2.13's dynamo
exporter does so for torchvision's vit_b_16 at batch 1). When it fails on a sample where a
dynamic axis changed size, the other exporter and then the dynamo exporter at the second
sample's sizes are tried, and the first that follows the axes ships, with a note saying why.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from edgeship.errors import ExportError
from edgeship.exporters.loading import ONNX
from edgeship.parity.evaluate import run_parity
from edgeship.parity.tolerances import effective_tolerances
from edgeship.pipeline.context import Context, required
from edgeship.runtimes.ort import OrtRunner

if TYPE_CHECKING:
    from edgeship.exporters.onnx import OnnxExport


def onnx_stage(ctx: Context) -> str:
    loaded = required(ctx.loaded, "loaded")
    raw = ctx.workdir / "raw.onnx"
    if loaded.format == ONNX:
        from edgeship.exporters.onnx import OnnxExport, copy_onnx

        ctx.ensure_room(_onnx_bytes(loaded.path), "a copy of the ONNX model")
        opset = copy_onnx(loaded.path, raw)
        e = OnnxExport(raw, "none (ONNX input)", opset)
    else:
        from edgeship.exporters.onnx import export_onnx

        _room_for_export(ctx)
        e = export_onnx(ctx.export_module(), ctx.example_args, required(ctx.spec, "spec"), raw,
                        exporter=ctx.config.exporter, opset=ctx.config.opset)
        for n in e.notes:
            ctx.note(n)
        why = dynamic_failure(ctx, e.path) if ctx.apart else None
        if why is not None:  # equal unnamed axes kept apart: the runner ties them and starts again
            raise ExportError(f"the {e.exporter} exporter's ONNX does not follow the dynamic axes: {why}")
        if ctx.config.exporter == "auto":
            e = _follow_dynamic_axes(ctx, e)
    ctx.onnx_export = e
    return f"{e.exporter} exporter, opset {e.opset}, {raw.stat().st_size / 1e6:.2f} MB"


def _room_for_export(ctx: Context) -> None:
    """Room for an exporter's ONNX file: the weights, twice (the dynamo exporter writes them out,
    then edgeship saves the model as one file)."""
    from edgeship.exporters.onnx import param_bytes

    ctx.ensure_room(2 * param_bytes(ctx.export_module()), "the ONNX export")


def _onnx_bytes(path: Path) -> int:
    """An ONNX file's size with its external-data files (the copy inlines them)."""
    from edgeship.runtimes.external_data import external_refs

    data = path.read_bytes()
    size = len(data)
    for location in {r.location for r in external_refs(data)}:
        target = path.parent / location  # checked when the model was loaded
        size += target.stat().st_size if target.is_file() else 0
    return size


def dynamic_failure(ctx: Context, path: Path) -> str | None:
    """Why the ONNX file at ``path`` fails fp32 parity on a sample where a dynamic axis changed
    size, or None (it passes, or it fails only at the example's sizes: not an exporter matter)."""
    samples = [s for s in ctx.samples if s.sizes != ctx.samples[0].sizes]
    if not samples:
        return None
    refs = [ctx.references[ctx.samples.index(s)] for s in samples]
    with OrtRunner(required(ctx.spec, "spec"), path, name="onnxruntime-cpu") as runner:
        report = run_parity([runner], samples, refs, effective_tolerances(ctx.config).for_precision("fp32"))
    return None if report.passed else f"[{report.failures()[0].sample}] {report.failures()[0].reason}"


def _follow_dynamic_axes(ctx: Context, first: OnnxExport) -> OnnxExport:
    from edgeship.exporters.onnx import OnnxExport, export_onnx
    from edgeship.pipeline.load import to_torch

    why = dynamic_failure(ctx, first.path)
    if why is None:
        return first
    spec = required(ctx.spec, "spec")
    second = next(s for s in ctx.samples if s.sizes != ctx.samples[0].sizes)
    other = "torchscript" if first.exporter == "dynamo" else "dynamo"
    tries = [(f"the {other} exporter", other, ctx.example_args),
             (f"the dynamo exporter at the second sample's sizes ({second.describe()})", "dynamo",
              to_torch(second.feeds, spec.inputs))]
    tried: list[str] = []
    for label, exporter, args in tries:
        path = ctx.workdir / f"raw-{len(tried)}.onnx"
        _room_for_export(ctx)
        try:
            alt = export_onnx(ctx.export_module(), args, spec, path, exporter=exporter, opset=ctx.config.opset)
        except ExportError as e:
            tried.append(f"{label}: export failed ({e})")
            continue
        still = dynamic_failure(ctx, path)
        if still is None:
            shutil.move(path, first.path)
            ctx.note(f"the {first.exporter} exporter's ONNX does not follow the dynamic axes ({why}); "
                     f"shipped {label}, which does" + (f" (tried first: {'; '.join(tried)})" if tried else ""))
            return OnnxExport(first.path, alt.exporter + ("" if args is ctx.example_args else " (second sizes)"),
                             alt.opset, alt.notes)
        tried.append(f"{label}: also fails ({still})")
    ctx.note(f"the {first.exporter} exporter's ONNX does not follow the dynamic axes; no other exporter did either: "
             + "; ".join(tried))
    return first
