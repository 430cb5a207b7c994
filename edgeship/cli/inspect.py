"""``edgeship inspect``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgeship.cli.app import app, console


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A bundle (folder or zip) or an .onnx file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show inputs, outputs, opset, op counts, size and variants of a bundle or ONNX model."""
    from edgeship.bundle.inspect import inspect_path
    from edgeship.cli import render

    info = inspect_path(path)
    if json_out:
        print(json.dumps(info, indent=2, default=str))
    else:
        render.inspection(console(), info)
