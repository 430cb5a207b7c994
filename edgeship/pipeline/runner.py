"""The export pipeline: ordered stages over one context, each timed and recorded.

A failed optional stage (TorchScript, a quantized variant) is recorded and the pipeline goes on;
a failed required stage (load, ONNX export, optimisation, fp32 parity, packaging) or bad input
anywhere (bad calibration data) stops it, and nothing is written to the output path: all work
happens in a temporary folder until the atomic write.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import gc
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship.bundle.manifest import VariantResult
from edgeship.config import ExportConfig
from edgeship.errors import EdgeshipError, ExportError, ParityError, QuantizationError, SpecError, clip
from edgeship.hf.folder import is_hf_folder
from edgeship.parity.report import ParityReport
from edgeship.pipeline.context import Context, Degraded, Skip, StageResult, required
from edgeship.pipeline.load import load_stage
from edgeship.pipeline.mobile import mobile_stage, wanted
from edgeship.pipeline.onnx import onnx_stage
from edgeship.pipeline.optimize import optimize_stage
from edgeship.pipeline.package import package_stage
from edgeship.pipeline.parity import parity_stage
from edgeship.pipeline.profile import profile_stage
from edgeship.pipeline.quantize import quantize_stage
from edgeship.pipeline.select import select_stage
from edgeship.pipeline.torchscript import torchscript_stage
from edgeship.pipeline.workdir import work_folder
from edgeship.spec import IOSpec

if TYPE_CHECKING:
    from edgeship.profiling.profiler import ProfileReport

log = logging.getLogger(__name__)

# (name, function, required)
STAGES: list[tuple[str, Callable[[Context], str], bool]] = [
    ("load", load_stage, True),
    ("torchscript", torchscript_stage, False),
    ("onnx", onnx_stage, True),
    ("optimize", optimize_stage, True),
    ("quantize", quantize_stage, False),
    ("parity", parity_stage, True),
    ("mobile", mobile_stage, True),  # --target mobile: ORT-format twins, parity-checked
    ("select", select_stage, True),
    ("profile", profile_stage, False),  # before package, so its report files are in the manifest
    ("package", package_stage, True),
]
# stages that run only when the config asks for them (no "skipped" line otherwise)
OPT_IN: dict[str, Callable[[ExportConfig], bool]] = {"profile": lambda cfg: cfg.profile,
                                                     "mobile": lambda cfg: wanted(cfg.targets)}


@dataclass(frozen=True)
class ExportResult:
    """What ``edgeship export`` produced."""

    bundle: Path
    stages: tuple[StageResult, ...]
    parity: ParityReport
    defaults: dict[str, str]
    notes: tuple[str, ...]
    spec: IOSpec
    variants: dict[str, VariantResult]
    profile: ProfileReport | None = None  # with --profile


Progress = Callable[[str, str, "StageResult | None"], None]
RUN_THE_GRAPH = ("torchscript", "onnx", "optimize", "quantize", "parity")  # where axes kept apart can fail
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
MIN_OPSET = 7  # the oldest opset onnxruntime runs


def check_config(cfg: ExportConfig) -> None:
    """Usage errors that must stop an export before it starts (nothing silently ignored).

    Raises:
        SpecError: --atol/--rtol not finite and ≥ 0 (as --tolerance), --opset outside what onnx
            knows, an unknown --calibration-method, or --eval-split outside [0, 1) or --eval-samples below 1.
    """
    import onnx

    from edgeship.parity.tolerances import parse_tolerance

    for key, value in (("atol", cfg.atol), ("rtol", cfg.rtol)):
        if value is not None:
            try:
                parse_tolerance(f"fp32:{key}={value}")
            except SpecError as e:
                raise SpecError(f"--{key} {value}: must be a finite number ≥ 0 ({e}).") from e
    newest = onnx.defs.onnx_opset_version()
    if cfg.opset is not None and not MIN_OPSET <= cfg.opset <= newest:
        raise SpecError(f"--opset {cfg.opset}: use an ONNX opset from {MIN_OPSET} to {newest} (onnx {onnx.__version__}), "
                        "or leave it out for the exporter's default.")
    if not 0 <= cfg.eval_split < 1:
        raise SpecError(f"--eval-split {cfg.eval_split}: use a fraction from 0 (hold none out) to below 1.")
    if cfg.eval_samples < 1:
        raise SpecError(f"--eval-samples {cfg.eval_samples}: use at least 1.")
    folder = is_hf_folder(cfg.model)
    if cfg.load.task is not None and not folder:
        raise SpecError(f"--task {cfg.load.task} applies to a Hugging Face save_pretrained folder (with config.json); "
                        f"{cfg.model} is not one. Drop --task.")
    if cfg.calibration_method not in CALIBRATION_METHODS:
        raise SpecError(f"--calibration-method {cfg.calibration_method!r}: use one of {', '.join(CALIBRATION_METHODS)}.")


def _silent(event: str, name: str, result: StageResult | None = None) -> None:
    pass


def _run_stage(fn: Callable[[Context], str], ctx: Context, name: str) -> str:
    """Run one stage; a full disk (report, golden or model files in the work folder) is an
    error naming the folder, not a traceback."""
    try:
        return fn(ctx)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ExportError(
            f"stage {name}: {e.strerror} while writing in the work folder {ctx.workdir}; free space in "
            f"{tempfile.gettempdir()} or point TMPDIR at a folder with room. Nothing was written to "
            f"{ctx.config.output_path}."
        ) from e


@contextlib.contextmanager
def _frozen_heap() -> Iterator[Callable[[], None]]:
    """Keep the objects that exist before each stage (torch's modules: hundreds of thousands) out
    of the garbage collector's full collections while the export runs (``gc.freeze``; the function
    yielded freezes what the stages made so far), and give them all back after. torch.onnx.export
    makes enough objects to trigger full collections, and each walked the whole heap: the dynamo
    export of ResNet-style 64x64 took 0.61 s or 0.86 s by turns, 0.62 s every time with this.
    An application that froze part of its heap itself is left as it is."""
    if gc.get_freeze_count():
        yield lambda: None
        return
    gc.freeze()
    try:
        yield gc.freeze
    finally:
        gc.unfreeze()


class _FailedApart(Exception):
    """A stage failed with equal unnamed dynamic axes kept apart: the export is run again with them tied."""

    def __init__(self, reason: str, error: EdgeshipError | None):
        super().__init__(reason)
        self.reason, self.error = reason, error


def export(config: ExportConfig, progress: Progress = _silent) -> ExportResult:
    """Run every stage on ``config``; ``progress(event, stage, result)`` sees start/end events.

    Unnamed dynamic axes of equal example size (``--dynamic input_ids:1 --dynamic attention_mask:1``)
    start apart; when a stage after load fails in a way keeping them apart can explain (the trace,
    the ONNX export, onnxruntime or fp32 parity failing on a sample where their sizes differ, or an
    exporter's error naming them: :func:`axes_may_cause`), the export starts again once with each
    group tied to one symbol, and a note says why. Any other failure (a full disk, a missing
    target, a timeout, a failure at equal sizes) stops the export at once, as without the axes.

    Raises:
        EdgeshipError: a required stage failed (nothing was written to the output path).
    """
    from edgeship.exporters.floors import require

    require("onnx")  # every export path writes or reads ONNX; torch is checked where it is loaded
    check_config(config)
    if is_hf_folder(config.model):
        from edgeship.pipeline.decoder import export_folder

        decoded = export_folder(config, progress)  # a causal LM: the decoder export (KV cache, generation)
        if decoded is not None:
            return decoded
    if config.decoder_graph != "auto":
        raise SpecError(f"--decoder-graph {str(config.decoder_graph)[:40]} applies to a causal LM (a save_pretrained "
                        f"folder whose task is causal-lm); {config.model} is not one. Drop --decoder-graph.")
    try:
        return _export(config, progress)
    except _FailedApart as apart:
        try:
            return _export(config, progress, apart.reason)
        except EdgeshipError as e:
            first = apart.error
            if first is None or type(e) is not type(first):
                raise
            # the tied run's own error, its class and fields kept, its message saying both runs
            both = (f"{first} Tied to one symbol, they failed the same way." if str(e) == str(first)
                    else f"{first} Tied to one symbol, they failed as well: {e}")
            combined = copy.copy(e)
            combined.args = (both,)
            raise combined from e


def _export(config: ExportConfig, progress: Progress, tie_reason: str | None = None) -> ExportResult:
    with work_folder() as work, _frozen_heap() as refreeze:
        ctx = Context(config=config, workdir=work, tie_reason=tie_reason)
        for name, fn, must in STAGES:
            if name in OPT_IN and not OPT_IN[name](config):
                continue
            progress("start", name, None)
            refreeze()
            t0 = time.perf_counter()
            try:
                detail, status = _run_stage(fn, ctx, name), "ok"
            except Skip as s:
                detail, status = str(s), "skipped"
            except Degraded as w:
                detail, status = str(w), "warning"
            except EdgeshipError as e:
                # an optional stage may fail on its own work; bad input (a SpecError such as bad
                # calibration data) stops the export whatever the stage
                if must or not isinstance(e, (ExportError, QuantizationError)):
                    _retry_tied(ctx, name, e, time.perf_counter() - t0, progress)
                    ctx.stages.append(StageResult(name, "failed", time.perf_counter() - t0, str(e)))
                    progress("end", name, ctx.stages[-1])
                    raise
                detail, status = str(e), "failed"
                if ctx.apart_failed:
                    _retry_tied(ctx, name, None, time.perf_counter() - t0, progress)
                ctx.note(f"optional stage {name} failed: {e}")
            result = StageResult(name, status, time.perf_counter() - t0, detail)
            ctx.stages.append(result)
            progress("end", name, result)
        return ExportResult(required(ctx.bundle_path, "bundle_path"), tuple(ctx.stages), ctx.parity, dict(ctx.defaults),
                            tuple(ctx.notes), required(ctx.spec, "spec"), dict(ctx.manifest_variants), ctx.profile)


def _retry_tied(ctx: Context, stage: str, error: EdgeshipError | None, seconds: float, progress: Progress) -> None:
    """Raise :class:`_FailedApart` when ``stage`` failed while equal unnamed axes were kept apart
    (a required stage's error other than bad input, or an optional stage that failed where their
    sizes differ); the stage's line says the export starts again with them tied."""
    if not ctx.apart or ctx.tie_reason or stage not in RUN_THE_GRAPH or not axes_may_cause(ctx, error):
        return
    cause = str(error if error is not None else ctx.apart_failed)
    at = re.search(r"on sample \S+ \(([^)]*)\): (.*?)(?:; the export does not follow|$)", cause, re.S)
    if at:  # the error itself, not the sample's label and sizes
        cause = at.group(2)
    reason = f"the {stage} stage failed with them apart: {clip(cause, 200)}"
    groups = "; ".join(", ".join(axes) for axes in ctx.apart.values())
    progress("end", stage, StageResult(stage, "warning", seconds,
                                       f"failed with {groups} apart; exporting again with each group as one symbol"))
    raise _FailedApart(reason, error)


def axes_may_cause(ctx: Context, error: EdgeshipError | None) -> bool:
    """Whether keeping equal unnamed axes apart can explain a stage's failure, so a run with them
    tied may pass: an optional stage that failed where they differed (``ctx.apart_failed``); an
    export or parity failure on a golden sample where they took different sizes
    (:func:`~edgeship.pipeline.parity.apart_samples`, by the report's failed checks, else the
    ``[sample]`` the message names); or an exporter's or onnxruntime's error naming one of their
    symbols. Never a full disk, a missing target, a timeout, bad input or any other error."""
    from edgeship.pipeline.parity import apart_samples, apart_symbols

    if error is None:
        return ctx.apart_failed is not None
    if not isinstance(error, (ExportError, ParityError, QuantizationError)):
        return False
    samples = apart_samples(ctx)
    failures = error.report.failures() if error.report is not None else []
    if failures:
        judged = [c for c in failures if c.variant == "fp32"] or failures  # fp32's failure is the one raised
        return any(c.sample in samples for c in judged)
    text = str(error)
    if any(f"[{label}]" in text or f"sample {label}" in text for label in samples):
        return True
    return any(re.search(rf"(?<![\w]){re.escape(sym)}(?![\w])", text) for sym in apart_symbols(ctx))


@dataclass(frozen=True)
class QuantizeResult:
    """What ``edgeship quantize`` produced: the written file and the evidence for it."""

    output: Path
    variant: VariantResult
    parity: ParityReport
    stages: tuple[StageResult, ...]
    notes: tuple[str, ...]


def quantize_model(model: str | os.PathLike[str], method: str = "dynamic", output: str | os.PathLike[str] | None = None, *,
                   inputs: tuple[str, ...] = (), example_inputs: str | os.PathLike[str] | None = None,
                   calibration: str | None = None, calibration_method: str = "minmax", calibration_samples: int = 64,
                   fallback: bool = True, tolerances: dict[str, Any] | None = None, eval_data: str | None = None,
                   eval_samples: int = 256, eval_split: float = 0.0,
                   progress: Progress = _silent) -> QuantizeResult:
    """Quantize an fp32 ONNX model on its own: the export pipeline with one variant, parity-checked
    against the fp32 model (on ``eval_data``, or a held-out ``eval_split`` of ``calibration``, too),
    written to ``output`` (default ``MODEL.<variant>.onnx`` beside it).

    Raises:
        SpecError: an unknown ``method``.
        QuantizationError: the variant could not be built or failed parity (``report`` holds the checks).
    """
    from edgeship.pipeline.quantize import VARIANT

    if method not in VARIANT:
        raise SpecError(f"--method {method!r}: use dynamic, static, fp16 or int4.")
    name = VARIANT[method][0]
    model = Path(model)
    out = Path(output) if output is not None else model.with_name(f"{model.stem}.{name}.onnx")
    with tempfile.TemporaryDirectory(prefix="edgeship-quantize-") as tmp:
        cfg = ExportConfig(model=model, output=Path(tmp) / "q.edgeship", inputs=inputs,
                           example_inputs=Path(example_inputs) if example_inputs else None, quantize=(method,),
                           calibration=calibration, calibration_method=calibration_method,
                           calibration_samples=calibration_samples, fallback=fallback, targets=("cpu",),
                           eval_data=eval_data, eval_samples=eval_samples, eval_split=eval_split,
                           torchscript=False, tolerances=tolerances or {})
        result = export(cfg, progress)
        if name not in result.variants:
            why = next((n for n in result.notes if n.startswith(name)), "see the notes above")
            raise QuantizationError(f"{name} of {model} was not written: {why}", report=result.parity)
        v = result.variants[name]
        shutil.copyfile(result.bundle / v.file, out)
    return QuantizeResult(out, v, result.parity, result.stages, result.notes)
