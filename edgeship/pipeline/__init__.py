"""The export pipeline: ordered stages over one context, each timed and recorded.

A failed optional stage (TorchScript, a quantized variant) is recorded and the pipeline goes on;
a failed required stage (load, ONNX export, optimisation, fp32 parity, packaging) or bad input
anywhere (bad calibration data) stops it, and nothing is written to the output path: all work
happens in a temporary folder until the atomic write.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeship.config import ExportConfig
from edgeship.errors import EdgeshipError, ExportError, QuantizationError
from edgeship.pipeline.context import Context, StageResult
from edgeship.pipeline.package import package_stage
from edgeship.pipeline.prepare import load_stage
from edgeship.pipeline.quantize import quantize_stage
from edgeship.pipeline.profiling import profile_stage
from edgeship.pipeline.stages import (
    Skip, onnx_stage, optimize_stage, parity_stage, select_stage, torchscript_stage,
)

log = logging.getLogger(__name__)

# (name, function, required)
STAGES: list[tuple[str, Callable[[Context], str], bool]] = [
    ("load", load_stage, True),
    ("torchscript", torchscript_stage, False),
    ("onnx", onnx_stage, True),
    ("optimize", optimize_stage, True),
    ("quantize", quantize_stage, False),
    ("parity", parity_stage, True),
    ("select", select_stage, True),
    ("profile", profile_stage, False),  # before package, so its report files are in the manifest
    ("package", package_stage, True),
]
# stages that run only when the config asks for them (no "skipped" line otherwise)
OPT_IN: dict[str, Callable[[ExportConfig], bool]] = {"profile": lambda cfg: cfg.profile}


@dataclass(frozen=True)
class ExportResult:
    """What ``edgeship export`` produced."""

    bundle: Path
    stages: tuple[StageResult, ...]
    parity: object  # ParityReport
    defaults: dict
    notes: tuple[str, ...]
    spec: object  # IOSpec
    variants: dict  # name -> manifest entry (precision, size, parity, latency_ms, ...)
    profile: object = None  # ProfileReport, with --profile


def _silent(event: str, name: str, result: StageResult | None = None) -> None:
    pass


def export(config: ExportConfig, progress: Callable = _silent) -> ExportResult:
    """Run every stage on ``config``; ``progress(event, stage, result)`` sees start/end events.

    Raises:
        EdgeshipError: a required stage failed (nothing was written to the output path).
    """
    from edgeship.exporters.floors import require

    require("onnx")  # every export path writes or reads ONNX; torch is checked where it is loaded
    with tempfile.TemporaryDirectory(prefix="edgeship-") as work:
        ctx = Context(config=config, workdir=Path(work))
        for name, fn, required in STAGES:
            if name in OPT_IN and not OPT_IN[name](config):
                continue
            progress("start", name, None)
            t0 = time.perf_counter()
            try:
                detail, status = fn(ctx), "ok"
            except Skip as s:
                detail, status = str(s), "skipped"
            except EdgeshipError as e:
                # an optional stage may fail on its own work; bad input (a SpecError such as bad
                # calibration data) stops the export whatever the stage
                if required or not isinstance(e, (ExportError, QuantizationError)):
                    ctx.stages.append(StageResult(name, "failed", time.perf_counter() - t0, str(e)))
                    progress("end", name, ctx.stages[-1])
                    raise
                detail, status = str(e), "failed"
                ctx.note(f"optional stage {name} failed: {e}")
            result = StageResult(name, status, time.perf_counter() - t0, detail)
            ctx.stages.append(result)
            progress("end", name, result)
        return ExportResult(ctx.bundle_path, tuple(ctx.stages), ctx.parity, dict(ctx.defaults),
                            tuple(ctx.notes), ctx.spec, dict(ctx.manifest_variants), ctx.profile)
