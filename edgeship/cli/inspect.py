"""``edgeship inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeship.cli import options as opt
from edgeship.cli.app import app, console, setup_logging, to_stdout, write_file


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="A bundle (folder or zip) or an .onnx file.")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write what it shows as JSON to this file (- for stdout; the tables then go to stderr); its schema: edgeship/schemas/inspect.json.")] = None,
    quiet: opt.QuietOpt = False, verbose: opt.VerboseOpt = False,
) -> None:
    """Show inputs, outputs, opset, op counts, precision, size and variants of a bundle or ONNX model."""
    setup_logging(verbose, quiet)
    from edgeship.bundle.inspect import inspect_path
    from edgeship.cli import render

    info = inspect_path(path)
    out = console(to_stdout(json_out))  # with --json - the JSON alone goes to stdout
    if quiet:
        out.print(render.inspection_line(info), markup=False)
    else:
        render.inspection(out, info)
    if json_out is not None:
        from edgeship import jsonout, schemas

        text = jsonout.dumps({**schemas.header("inspect"), **info}, indent=2) + "\n"
        write_file(json_out, lambda p: Path(p).write_text(text, encoding="utf-8"), console(to_stdout(json_out), quiet), "--json")
