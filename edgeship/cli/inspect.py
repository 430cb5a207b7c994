"""``edgeship inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeship.cli import options as opt
from edgeship.cli.app import app, console, setup_logging


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="A bundle (folder or zip) or an .onnx file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (to stdout) instead of tables.")] = False,
    quiet: opt.QuietOpt = False, verbose: opt.VerboseOpt = False,
) -> None:
    """Show inputs, outputs, opset, op counts, precision, size and variants of a bundle or ONNX model."""
    setup_logging(verbose, quiet)
    from edgeship.bundle.inspect import inspect_path
    from edgeship.cli import render

    info = inspect_path(path)
    if json_out:
        from edgeship import jsonout

        print(jsonout.dumps(info, indent=2))
    elif quiet:
        console().print(render.inspection_line(info), markup=False)
    else:
        render.inspection(console(), info)
