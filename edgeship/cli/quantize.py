"""``edgeship quantize``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeship.cli import options as opt
from edgeship.cli.app import app, console, setup_logging
from edgeship.errors import EdgeshipError


@app.command()
def quantize(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="An fp32 ONNX model.")],
    method: Annotated[str, typer.Option("--method", "-m", help="dynamic, static, fp16 or int4 (weight-only, block 32, symmetric).")] = "dynamic",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write the quantized model (default: MODEL.<variant>.onnx beside it).")] = None,
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", metavar="TEXT", help="Example sizes NAME:SHAPE[:DTYPE] for the model's symbolic axes (repeatable).")] = None,
    example_inputs: Annotated[Optional[Path], typer.Option("--example-inputs", help=".npz of real inputs for the parity check.")] = None,
    calibration: opt.CalibOpt = None, calibration_method: opt.CalibMethodOpt = "minmax", calibration_samples: opt.CalibSamplesOpt = 64,
    eval_data: opt.EvalOpt = None, eval_samples: opt.EvalSamplesOpt = 256, eval_split: opt.EvalSplitOpt = 0.0,
    no_fallback: Annotated[bool, typer.Option("--no-fallback", help="Do not keep harmful nodes in fp32.")] = False,
    tolerance: opt.TolOpt = None,
    quiet: opt.QuietOpt = False, verbose: opt.VerboseOpt = False,
) -> None:
    """Quantize an ONNX model on its own (dynamic/static int8, fp16 or int4), parity-checked against it."""
    setup_logging(verbose, quiet)
    from edgeship.cli import render
    from edgeship.pipeline import quantize_model

    out = console(quiet=quiet)
    # the library runs the export pipeline into a temporary bundle: its torchscript, select and
    # package stages (and the select note) say nothing about the file this command writes
    with render.StageProgress(out, hide=("torchscript", "select", "package")) as progress:
        try:
            result = quantize_model(model, method, output, inputs=tuple(input or ()), example_inputs=example_inputs,
                                    calibration=calibration, calibration_method=calibration_method,
                                    calibration_samples=calibration_samples, fallback=not no_fallback,
                                    eval_data=eval_data, eval_samples=eval_samples, eval_split=eval_split,
                                    tolerances=opt.tolerances(tolerance), progress=progress)
        except EdgeshipError as e:
            if e.report is not None:
                render.parity_table(out, e.report, title="Parity vs fp32 ONNX")
            raise
    render.parity_table(out, result.parity, title="Parity vs fp32 ONNX")
    render.variant_table(out, {result.variant.name: result.variant}, {})
    render.notes(out, [n for n in result.notes if ") is the default" not in n and not n.startswith("ONNX input")])
    console().print(f"{'' if quiet else chr(10)}wrote {result.output.resolve()}", markup=False)
