"""``edgeship check``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeship.cli import options as opt
from edgeship.cli.app import app, console, setup_logging, to_stdout
from edgeship.config import LoadOptions
from edgeship.errors import EXIT_GATE_FAILED


@app.command()
@opt.with_load_options
def check(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder (NAME.edgeship) or zip.")],
    target: opt.TargetOpt = ["cpu"],  # noqa: B006
    variant: Annotated[Optional[list[str]], typer.Option("--variant", help="Variants to check, comma-separated (default: all).")] = None,
    against: Annotated[Optional[Path], typer.Option("--against", help="Re-run this PyTorch model on the golden inputs too (needs torch).")] = None,
    inputs: Annotated[Optional[Path], typer.Option("--inputs", help="Your own inputs (.npz: one array per input, or <i>/<input> keys for several samples) in place of the golden ones; needs --against for the reference outputs.")] = None, tolerance: opt.TolOpt = None,
    json_out: opt.JsonOpt = None, junit: opt.JunitOpt = None,
    quiet: Annotated[Optional[bool], typer.Option("--quiet/--table", "-q", help="Print only the result line (and failing rows) instead of the table; default: quiet when CI=true, --table to force the table.")] = None,
    runtime: opt.RuntimeOpt = None,
    verbose: opt.VerboseOpt = False, load: Optional[LoadOptions] = None,
) -> None:
    """Re-check BUNDLE against its golden outputs with onnxruntime alone. Exit 1 on drift, 2 on a bad bundle."""
    setup_logging(verbose, bool(quiet))
    from edgeship.cli import render
    from edgeship.parity.check import check as run_check

    report = run_check(bundle, tuple(opt.split(target)), tuple(opt.split(variant)), against, load,
                       tolerances=opt.tolerances(tolerance), inputs=inputs, runtimes=opt.runtimes(runtime))
    out = console(to_stdout(json_out, junit))
    if quiet is None:
        quiet = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not quiet or not report.passed:
        render.parity_table(out, report, failures_only=quiet)
        render.tolerance_table(out, report)
    opt.write_reports(report, json_out, junit, console(to_stdout(json_out, junit), quiet))
    status = "passed" if report.passed else "FAILED"
    out.print(f"check {status}: {bundle} ({len(report.summary())} runner × variant × output checks)",
                  markup=False)
    if not report.passed:
        raise typer.Exit(EXIT_GATE_FAILED)
