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
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle folder or zip, or an .onnx file (run on onnxruntime's defaults).")],
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", metavar="TEXT", help="NAME=FILE.npy (repeatable), FILE.npy for a model with one input, or a FILE.npz holding every input.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the outputs to this .npz (- for stdout: the .npz bytes).")] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="cpu, cuda or auto.")] = "cpu",
    variant: Annotated[str, typer.Option("--variant", help="Variant name, or auto for the target's default.")] = "auto",
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="onnxruntime (ort) or openvino; default: the bundle's first candidate whose runtime is installed.")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="SECONDS", help="Stop the inference after this long (a crafted graph can run forever), exit 2. Default: no limit.")] = None,
    quiet: opt.QuietOpt = False, verbose: opt.VerboseOpt = False,
) -> None:
    """Run BUNDLE (or an .onnx file) once on inputs from .npy/.npz files and print (or save) the outputs."""
    setup_logging(verbose, quiet)
    import numpy as np

    from edgeship.cli import render
    from edgeship.profiling.source import is_bundle
    from edgeship.runtimes.deadline import deadline

    seconds = opt.timeout(timeout)
    if is_bundle(bundle):
        from edgeship.model import load

        model = load(bundle, target=target, variant=variant, runtime=runtime, timeout=seconds)
        spec, name, what = model.spec, model.bundle.manifest.get("name"), f"{model.variant}, {model.target}"
        run_model = model.run
    else:
        spec, run_model = _onnx(bundle, target, variant, runtime)
        name, what = bundle.name, f"onnxruntime, {target}"
    feeds = _read_feeds(input or [], [t.name for t in spec.inputs])
    with deadline(seconds, "--timeout"):  # a raw .onnx runs through its runner, which reads it
        outputs = run_model(feeds)
    out = console(to_stdout(output), quiet)
    render.outputs(out, f"{name} ({what})", outputs)
    if output:

        arrays: dict[str, Any] = dict(outputs)

        def save(path: Path) -> None:
            with open(path, "wb") as f:  # np.savez on a name would append .npz
                np.savez(f, **arrays)

        write_file(output, save, out, "--output", binary=True)


def _onnx(path: Path, target: str, variant: str, runtime: str | None) -> tuple[Any, Any]:
    """(io spec, run(feeds) -> outputs) of a raw .onnx file on onnxruntime's defaults, its
    external data checked first (as ``profile``, ``inspect`` and ``compare`` take it)."""
    from edgeship.bundle.inspect import onnx_for_session, onnx_io
    from edgeship.runtimes.ort import OrtRunner, resolve_target
    from edgeship.runtimes.registry import ORT, runtime_name

    if variant != "auto" or (runtime is not None and runtime_name(runtime) != ORT):
        raise SpecError(f"{path} is an ONNX file: one model, run on onnxruntime; --variant and --runtime apply to bundles.")
    data = onnx_for_session(path)
    spec = onnx_io(data, str(path))
    t, providers = resolve_target(target)
    runner = OrtRunner(spec, data, target=t, providers=providers).load()
    return spec, runner.infer


def _read_feeds(items: list[str], inputs: list[str]) -> dict[str, np.ndarray]:
    """Feeds from ``--input`` values: NAME=FILE.npy, FILE.npz, or FILE.npy when ``inputs`` (the
    model's input names) has one name."""
    from edgeship.bundle.limits import open_regular, read_npy, read_npz

    if not items:
        one = f" (--input FILE.npy: this model has one input, {inputs[0]!r})" if len(inputs) == 1 else ""
        raise SpecError(f"no inputs: pass --input NAME=FILE.npy for each input, or --input FILE.npz{one}.")
    feeds = {}
    for item in items:
        name, sep, file = item.partition("=")
        what = f"--input {item}"
        if sep:
            feeds[name] = read_npy(Path(file), what, SpecError)
            continue
        with open_regular(Path(item), "--input", SpecError) as f:
            npy = f.read(6) == b"\x93NUMPY"
        if npy and len(inputs) == 1:
            feeds[inputs[0]] = read_npy(Path(item), what, SpecError)
        elif npy:
            raise SpecError(f"--input {item} is an .npy file (one array) and the model has {len(inputs)} inputs "
                            f"({', '.join(inputs)}): name the one it feeds, --input NAME={item}.")
        else:
            feeds.update(read_npz(Path(item), what, SpecError))
    return feeds
