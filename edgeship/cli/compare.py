"""``edgeship compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeship.cli import options as opt
from edgeship.cli.app import app, console, one_stdout, setup_logging, to_stdout
from edgeship.errors import EXIT_GATE_FAILED


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(metavar="A", help="The reference: a bundle or an .onnx file (e.g. yesterday's release).")],
    b: Annotated[Path, typer.Argument(metavar="B", help="The candidate: a bundle or an .onnx file (e.g. today's build).")],
    variant_a: Annotated[str, typer.Option("--variant-a", help="Variant of A when it is a bundle (default: its CPU default).")] = "auto",
    variant_b: Annotated[str, typer.Option("--variant-b", help="Variant of B when it is a bundle.")] = "auto",
    inputs: Annotated[Optional[Path], typer.Option("--inputs", help="Inputs (.npz); default: A's golden inputs, else B's, else seeded random ones.")] = None,
    runtime: opt.RuntimeOpt = None,
    tolerance: opt.TolOpt = None, json_out: opt.JsonOpt = None, junit: opt.JunitOpt = None,
    quiet: opt.QuietOpt = False, verbose: opt.VerboseOpt = False,
) -> None:
    """Run A and B on the same inputs and judge B against A: same metrics, tolerances and localisation as parity.

    A runs on onnxruntime; B on each --runtime (OpenVINO at B's own precision)."""
    setup_logging(verbose, quiet)
    one_stdout(json=json_out, junit=junit)
    from edgeship.cli import render
    from edgeship.parity.compare import compare as run_compare

    report = run_compare(a, b, variant_a=variant_a, variant_b=variant_b, inputs=inputs, tolerances=opt.tolerances(tolerance),
                         runtimes=opt.runtimes(runtime))
    stderr = to_stdout(json_out, junit)
    out = console(stderr, quiet and report.passed)
    render.parity_table(out, report, title=f"{b.name} vs {a.name}", failures_only=quiet)
    render.tolerance_table(out, report)
    opt.write_reports(report, json_out, junit, out)
    console(stderr).print(f"compare {'passed' if report.passed else 'FAILED'}: {b} vs {a}", markup=False)
    if not report.passed:
        raise typer.Exit(EXIT_GATE_FAILED)
