"""``edgeship check``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeship.cli import options as opt
from edgeship.cli.app import app, console, one_stdout, setup_logging, to_stdout
from edgeship.config import LoadOptions
from edgeship.errors import EXIT_GATE_FAILED

DEFAULT_TIMEOUT_S = 600  # all the check's inference; a model that needs more on a slow device: --timeout


@app.command()
@opt.with_load_options
def check(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle folder (NAME.edgeship) or zip.")],
    target: opt.TargetOpt = ["cpu"],  # noqa: B006
    variant: Annotated[Optional[list[str]], typer.Option("--variant", metavar="TEXT", help="Check these variants on onnxruntime's defaults (or --runtime), comma-separated, instead of the candidates.")] = None,
    against: Annotated[Optional[Path], typer.Option("--against", help="Re-run this PyTorch model on the golden inputs too (needs torch).")] = None,
    inputs: Annotated[Optional[Path], typer.Option("--inputs", help="Your own inputs (.npz: one array per input, or <i>/<input> keys for several samples) in place of the golden ones; needs --against for the reference outputs.")] = None, tolerance: opt.TolOpt = None,
    json_out: opt.JsonOpt = None, junit: opt.JunitOpt = None,
    quiet: Annotated[Optional[bool], typer.Option("--quiet/--table", "-q", help="Print only the result line (and failing rows) instead of the table; default: quiet when CI=true, --table to force the table.")] = None,
    runtime: Annotated[Optional[list[str]], typer.Option("--runtime", metavar="TEXT", help="Check the variants on these runtimes' defaults, comma-separated: onnxruntime (ort), openvino; instead of the candidates.")] = None,
    candidates: Annotated[str, typer.Option("--candidates", help="default: the candidate edgeship.load runs on this host, and fp32 on onnxruntime; all: every candidate this host can run. Ignored with --variant or --runtime.")] = "default",
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS", help=f"Stop when the check's inference has taken this long (a crafted graph can run forever), exit 2; 0 for no limit. Default {DEFAULT_TIMEOUT_S}.")] = DEFAULT_TIMEOUT_S,
    browser: opt.BrowserOpt = None,
    webgpu: Annotated[str, typer.Option("--webgpu", metavar="auto|swiftshader|off", help="--target web: also check on WebGPU where the browser has an adapter (auto), on Chromium's CPU implementation of WebGPU (swiftshader: slow, any machine), or not (off).")] = "auto",
    verbose: opt.VerboseOpt = False, load: Optional[LoadOptions] = None,
) -> None:
    """Re-check what BUNDLE runs on this host (and fp32) against its golden outputs. Exit 1 on drift, 2 on a bad bundle."""
    setup_logging(verbose, bool(quiet))
    one_stdout(json=json_out, junit=junit)
    from edgeship.cli import render
    from edgeship.parity.check import check as run_check
    from edgeship.runtimes.deadline import deadline

    with deadline(opt.timeout(timeout), "--timeout"):
        report = run_check(bundle, tuple(opt.split(target)), tuple(opt.split(variant)), against, load,
                           tolerances=opt.tolerances(tolerance), inputs=inputs,
                           runtimes=opt.runtimes(runtime) if runtime else (), candidates=candidates,
                           browser=browser, webgpu=webgpu)
    out = console(to_stdout(json_out, junit))
    if quiet is None:
        quiet = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not quiet or not report.passed:
        render.parity_table(out, report, failures_only=quiet)
        render.tolerance_table(out, report)
    opt.write_reports(report, json_out, junit, console(to_stdout(json_out, junit), quiet))
    status = "passed" if report.passed else "FAILED"
    rows = report.summary()
    failed = sum(not r["passed"] for r in rows)
    what = "candidate" if any(r.get("candidate") for r in rows) else "runner × variant"
    out.print(f"check {status}: {bundle} ({f'{failed} of ' if failed else ''}{len(rows)} {what} × output checks"
              f"{' failed' if failed else ''})", markup=False)
    if not report.passed:
        raise typer.Exit(EXIT_GATE_FAILED)
