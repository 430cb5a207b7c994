"""``edgeship run``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
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
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="onnxruntime (ort) or openvino; default: the bundle's first candidate whose runtime is installed.")] = None,
    quiet: opt.QuietOpt = False, verbose: opt.VerboseOpt = False,
) -> None:
    """Run BUNDLE once on inputs from .npy/.npz files and print (or save) the outputs."""
    setup_logging(verbose, quiet)
    import numpy as np

    from edgeship.cli import render
    from edgeship.model import load

    feeds = _read_feeds(input or [])
    model = load(bundle, target=target, variant=variant, runtime=runtime)
    outputs = model.run(feeds)
    out = console(to_stdout(output), quiet)
    render.outputs(out, model, outputs, output)
    if output:

        arrays: dict[str, Any] = dict(outputs)

        def save(path: Path) -> None:
            with open(path, "wb") as f:  # np.savez on a name would append .npz
                np.savez(f, **arrays)

        write_file(output, save, out, "--output", binary=True)


def _read_feeds(items: list[str]) -> dict[str, np.ndarray]:
    from edgeship.bundle.limits import open_regular, read_npy, read_npz

    if not items:
        raise SpecError("no inputs: pass --input NAME=FILE.npy for each input, or --input FILE.npz.")
    feeds = {}
    for item in items:
        name, sep, file = item.partition("=")
        what = f"--input {item}"
        if sep:
            feeds[name] = read_npy(Path(file), what, SpecError)
            continue
        with open_regular(Path(item), "--input", SpecError) as f:
            npy = f.read(6) == b"\x93NUMPY"
        if npy:
            raise SpecError(f"--input {item} is an .npy file (one array): name the input it feeds, --input NAME={item}.")
        feeds.update(read_npz(Path(item), what, SpecError))
    return feeds
