"""``edgeship tune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeship.cli import options as opt
from edgeship.cli.app import app, console, setup_logging


@app.command()
def tune(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle folder (NAME.edgeship) or zip.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the tuned bundle here instead of replacing BUNDLE.")] = None,
    runtime: Annotated[Optional[list[str]], typer.Option("--runtime", metavar="TEXT", help="Only these runtimes, comma-separated: onnxruntime (ort), openvino (default: every installed one).")] = None,
    quiet: opt.QuietOpt = False, verbose: opt.VerboseOpt = False,
) -> None:
    """Re-measure BUNDLE's candidates on this machine (parity on the golden samples first) and rewrite its defaults; -q prints only what changed."""
    setup_logging(verbose, quiet)
    from edgeship.cli import render
    from edgeship.pipeline.tune import tune as run_tune
    from edgeship.runtimes.registry import runtime_name

    runtimes = tuple(runtime_name(r) for r in opt.split(runtime)) or None
    result = run_tune(bundle, output, runtimes=runtimes)
    out, detail = console(), console(quiet=quiet)
    render.candidates_table(detail, result.after)
    for line in result.notes:
        detail.print(f"note: {line}", markup=False)
    for t, sel in result.selection.items():
        noise = f"{sel['noise'] * 100:.1f}%" if sel.get("noise") is not None else "not measured (one block each)"
        detail.print(f"{t}: timing noise {noise} across {sel.get('blocks', 0)} interleaved blocks; a lossy candidate had to be "
                  f"more than {(sel['lossy_margin'] - 1) * 100:.1f}% faster than the best exact one", markup=False)
    for line in result.changes:
        out.print(line, markup=False)
    out.print(f"Tuned bundle: {result.bundle}", markup=False)
