"""``edgeship run``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgeship.cli import options as opt
from edgeship.cli.app import app, console, setup_logging, to_stdout, write_file
from edgeship.errors import SpecError


@app.command()
def run(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder or zip.")],
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="NAME=FILE.npy (repeatable), or a single FILE.npz holding every input.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the outputs to this .npz (- for stdout: the .npz bytes).")] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="cpu, cuda or auto.")] = "cpu",
    variant: Annotated[str, typer.Option("--variant", help="Variant name, or auto for the target's default.")] = "auto",
    quiet: opt.QuietOpt = False, verbose: opt.VerboseOpt = False,
) -> None:
    """Run BUNDLE once on inputs from .npy/.npz files and print (or save) the outputs."""
    setup_logging(verbose, quiet)
    import numpy as np

    from edgeship.cli import render
    from edgeship.model import load

    feeds = _read_feeds(input or [])
    model = load(bundle, target=target, variant=variant)
    outputs = model.run(feeds)
    out = console(to_stdout(output), quiet)
    render.outputs(out, model, outputs, output)
    if output:
        arrays: dict[str, Any] = dict(outputs)

        def save(path: Path) -> None:
            with open(path, "wb") as f:  # np.savez on a name would append .npz
                np.savez(f, **arrays)

        write_file(output, save, out, binary=True)


def _read_feeds(items: list[str]) -> dict:
    import zipfile

    import numpy as np

    from edgeship.bundle.golden import npz_arrays

    if not items:
        raise SpecError("no inputs: pass --input NAME=FILE.npy for each input, or --input FILE.npz.")
    feeds = {}
    for item in items:
        name, sep, file = item.partition("=")
        try:
            if not sep:
                with np.load(item, allow_pickle=False) as data:
                    feeds.update(npz_arrays(data))
            else:
                feeds[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise SpecError(f"--input {item}: cannot read it ({e}); use NAME=FILE.npy or FILE.npz.") from e
    return feeds
