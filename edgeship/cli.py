"""The ``edgeship`` command line: options -> config -> public API -> render. No logic of its own.

Exit codes: 0 done and every gate passed, 1 a gate failed (parity), 2 bad usage or bad input.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeship.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EdgeshipError, QuantizationError, SpecError

app = typer.Typer(
    name="edgeship", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
    help="Ship trained PyTorch models to the edge: export, quantize, check, compare, inspect, run and profile bundles.",
)
log = logging.getLogger("edgeship")


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = 120  # logs and CI: wide enough for the parity table
    return console


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=_console(True), show_path=False, show_time=False)],
                        force=True)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _json_kwargs(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise SpecError(f"--arch-kwargs must be a JSON object, e.g. '{{\"num_classes\": 10}}'; got {text!r} ({e}).") from e
    if not isinstance(value, dict):
        raise SpecError(f"--arch-kwargs must be a JSON object; got {type(value).__name__}.")
    return value


ArchOpt = Annotated[Optional[str], typer.Option("--arch", help="module:factory (or file.py:factory) that builds the nn.Module for a state_dict or checkpoint; modules import from the current directory or PYTHONPATH.")]
ArchKwOpt = Annotated[Optional[str], typer.Option("--arch-kwargs", help="JSON object of keyword arguments for the --arch factory.")]
TrustOpt = Annotated[bool, typer.Option("--trust-pickle", help="Load a whole pickled nn.Module (runs code from the file: only for files you trust).")]
ImportOpt = Annotated[Optional[list[str]], typer.Option("--import", help="Module to import before unpickling, so its classes resolve (repeatable).")]
CodeOpt = Annotated[Optional[list[str]], typer.Option("--code", help="Python file to run before unpickling, defining the model's classes (repeatable).")]
JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Write the parity report as JSON to this file.")]
JunitOpt = Annotated[Optional[Path], typer.Option("--junit", help="Write a JUnit XML file: one testcase per runner × variant × output.")]
TargetOpt = Annotated[list[str], typer.Option("--target", "-t", help="Targets, comma-separated: cpu, cuda, tensorrt, an onnxruntime provider name, or auto (cpu, plus cuda where present).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
TolOpt = Annotated[Optional[list[str]], typer.Option("--tolerance", help="Tolerance override [SCOPE:]KEY=VALUE (repeatable). SCOPE: a precision (fp32, fp16, int8), PRECISION/OUTPUT or */OUTPUT; no scope: every precision. KEY: atol, rtol, min_cosine, min_top1, max_outlier_frac. Overrides [tool.edgeship.tolerances] in pyproject.toml or [tolerances] in edgeship.toml.")]
CalibOpt = Annotated[Optional[str], typer.Option("--calibration", help="Calibration data for static int8: an .npz (one array per input, leading sample axis), a folder of .npz/.npy, or module:function yielding feed dicts. Without it static int8 uses synthetic inputs and says so loudly.")]
CalibMethodOpt = Annotated[str, typer.Option("--calibration-method", help="minmax, entropy or percentile.")]
CalibSamplesOpt = Annotated[int, typer.Option("--calibration-samples", min=1, help="Use at most this many calibration samples.")]


def _tolerances(items) -> dict:
    """Project file, then --tolerance options (which win); says where the file values came from."""
    from edgeship.config import project_tolerances
    from edgeship.parity import Tolerances, tolerances_from_options

    from_file, source = project_tolerances()
    if source:
        log.info("tolerances from %s: %s", source, from_file)
    return Tolerances(from_file).merged(tolerances_from_options(list(items or []))).overrides


def _load_options(arch, arch_kwargs, trust_pickle, imports, code):
    from edgeship.exporters.loading import LoadOptions

    return LoadOptions(arch=arch, arch_kwargs=_json_kwargs(arch_kwargs), trust_pickle=trust_pickle,
                       imports=tuple(imports or ()), code=tuple(code or ()))


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="The model file: TorchScript, ExportedProgram (.pt2), state_dict/checkpoint (with --arch), pickled module (with --trust-pickle) or ONNX. Detected by content.")],
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="Input spec NAME:SHAPE[:DTYPE], e.g. x:1x3x224x224 or ids:1x128:int64 (repeatable, in forward() order; dtype defaults to float32).")] = None,
    example_inputs: Annotated[Optional[Path], typer.Option("--example-inputs", help=".npz with one array per input name: the example (and first golden sample).")] = None,
    dynamic: Annotated[Optional[list[str]], typer.Option("--dynamic", help="Symbolic axis NAME:AXIS[=SYMBOL], e.g. ids:1=seq (repeatable).")] = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Make axis 0 of every input the symbolic 'batch' axis.")] = False,
    output_names: Annotated[Optional[list[str]], typer.Option("--output-names", help="Names for the outputs, comma-separated (default: dict keys, else output / output_N).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Bundle path (default ./<model name>.edgeship; end it in .zip for a zipped bundle).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Bundle name (default: the model file's stem).")] = None,
    arch: ArchOpt = None, arch_kwargs: ArchKwOpt = None, trust_pickle: TrustOpt = False,
    imports: ImportOpt = None, code: CodeOpt = None,
    exporter: Annotated[str, typer.Option("--exporter", help="ONNX exporter: auto (dynamo, then the TorchScript-based one), dynamo or torchscript.")] = "auto",
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (default 20 for dynamo, where onnxruntime fuses Gelu; 17 for the TorchScript-based exporter).")] = None,
    target: TargetOpt = ["auto"],  # noqa: B006 - typer needs a literal default
    atol: Annotated[Optional[float], typer.Option("--atol", help="fp32 absolute tolerance (default 1e-4).")] = None,
    rtol: Annotated[Optional[float], typer.Option("--rtol", help="fp32 relative tolerance (default 1e-3).")] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Golden samples at the example's sizes (one more is added at second sizes of dynamic axes).")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated golden inputs.")] = 0,
    no_torchscript: Annotated[bool, typer.Option("--no-torchscript", help="Skip the TorchScript stage.")] = False,
    quantize: Annotated[list[str], typer.Option("--quantize", "-q", help="Variants, comma-separated: fp32, dynamic, static, fp16, or auto (dynamic int8; static int8 when --calibration is given; fp16 where CUDA is a target). Each is parity-checked; per target the fastest passing one is the default.")] = ["auto"],  # noqa: B006
    calibration: CalibOpt = None, calibration_method: CalibMethodOpt = "minmax", calibration_samples: CalibSamplesOpt = 64,
    no_fallback: Annotated[bool, typer.Option("--no-fallback", help="Do not keep harmful nodes in fp32 when an int8 variant misses its tolerance.")] = False,
    tolerance: TolOpt = None,
    profile: Annotated[bool, typer.Option("--profile", help="Profile every variant on every target before packaging; adds the results to report.json and a report.html with charts to the bundle.")] = False,
    json_out: JsonOpt = None, junit: JunitOpt = None, verbose: VerboseOpt = False,
) -> None:
    """Export MODEL to a self-verifying bundle: load, TorchScript, ONNX, optimise, parity, package."""
    _setup_logging(verbose)
    from edgeship.config import ExportConfig
    from edgeship.pipeline import export as run_export

    cfg = ExportConfig(
        model=model, output=output, name=name, inputs=tuple(input or ()), example_inputs=example_inputs,
        dynamic=tuple(dynamic or ()), dynamic_batch=dynamic_batch, output_names=tuple(_split(output_names)),
        load=_load_options(arch, arch_kwargs, trust_pickle, imports, code), exporter=exporter, opset=opset,
        targets=tuple(_split(target)), atol=atol, rtol=rtol, samples=samples, seed=seed,
        torchscript=not no_torchscript, quantize=tuple(_split(quantize)), calibration=calibration,
        calibration_method=calibration_method, calibration_samples=calibration_samples, fallback=not no_fallback,
        profile=profile, tolerances=_tolerances(tolerance),
    )
    from edgeship import render

    console = _console()
    with render.StageProgress(console) as progress:
        try:
            result = run_export(cfg, progress)
        except EdgeshipError as e:
            if getattr(e, "report", None) is not None:
                render.parity_table(console, e.report, failures_only=True)
                _write_reports(e.report, json_out, junit)
            raise
    render.parity_table(console, result.parity)
    render.tolerance_table(console, result.parity)
    render.variant_table(console, result.variants, result.defaults)
    if result.profile is not None:
        render.profile_table(console, result.profile)
    render.notes(console, result.notes)
    _write_reports(result.parity, json_out, junit)
    defaults = ", ".join(f"{t}={v}" for t, v in result.defaults.items())
    console.print(f"\nBundle: {Path(result.bundle).resolve()}  (default variant: {defaults})", markup=False)


@app.command()
def quantize(
    model: Annotated[Path, typer.Argument(help="An fp32 ONNX model.")],
    method: Annotated[str, typer.Option("--method", "-m", help="dynamic, static or fp16.")] = "dynamic",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write the quantized model (default: MODEL.<variant>.onnx beside it).")] = None,
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="Example sizes NAME:SHAPE[:DTYPE] for the model's symbolic axes (repeatable).")] = None,
    example_inputs: Annotated[Optional[Path], typer.Option("--example-inputs", help=".npz of real inputs for the parity check.")] = None,
    calibration: CalibOpt = None, calibration_method: CalibMethodOpt = "minmax", calibration_samples: CalibSamplesOpt = 64,
    no_fallback: Annotated[bool, typer.Option("--no-fallback", help="Do not keep harmful nodes in fp32.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Quantize an ONNX model on its own (dynamic/static int8 or fp16), parity-checked against it."""
    _setup_logging(verbose)
    import shutil
    import tempfile

    from edgeship import render
    from edgeship.config import ExportConfig
    from edgeship.pipeline import export as run_export
    from edgeship.pipeline.quantize import VARIANT

    if method not in VARIANT:
        raise SpecError(f"--method {method!r}: use dynamic, static or fp16.")
    variant = VARIANT[method][0]
    out = output or model.with_name(f"{model.stem}.{variant}.onnx")
    console = _console()
    with tempfile.TemporaryDirectory(prefix="edgeship-quantize-") as tmp:
        cfg = ExportConfig(model=model, output=Path(tmp) / "q.edgeship", inputs=tuple(input or ()),
                           example_inputs=example_inputs, quantize=(method,), calibration=calibration,
                           calibration_method=calibration_method, calibration_samples=calibration_samples,
                           fallback=not no_fallback, targets=("cpu",))
        with render.StageProgress(console) as progress:
            result = run_export(cfg, progress)
        render.parity_table(console, result.parity)
        render.variant_table(console, result.variants, {})
        render.notes(console, result.notes)
        if variant not in result.variants:
            raise QuantizationError(f"{variant} of {model} did not pass parity or could not be built; see the notes above.")
        shutil.copyfile(result.bundle / result.variants[variant]["file"], out)
    console.print(f"\nWrote {out.resolve()}", markup=False)


def _write_reports(report, json_out, junit) -> None:
    from edgeship.parity import write_json, write_junit

    if json_out:
        write_json(report, json_out)
    if junit:
        write_junit(report, junit)


@app.command()
def check(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder (NAME.edgeship) or zip.")],
    target: TargetOpt = ["cpu"],  # noqa: B006
    variant: Annotated[Optional[list[str]], typer.Option("--variant", help="Variants to check, comma-separated (default: all).")] = None,
    against: Annotated[Optional[Path], typer.Option("--against", help="Re-run this PyTorch model on the golden inputs too (needs torch).")] = None,
    inputs: Annotated[Optional[Path], typer.Option("--inputs", help="Your own inputs (.npz: one array per input, or <i>/<input> keys for several samples) in place of the golden ones; needs --against for the reference outputs.")] = None,
    arch: ArchOpt = None, arch_kwargs: ArchKwOpt = None, trust_pickle: TrustOpt = False,
    imports: ImportOpt = None, code: CodeOpt = None, tolerance: TolOpt = None,
    json_out: JsonOpt = None, junit: JunitOpt = None,
    quiet: Annotated[Optional[bool], typer.Option("--quiet/--table", help="Print one line instead of the table (default: quiet when CI=true).")] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Re-check BUNDLE against its golden outputs with onnxruntime alone. Exit 1 on drift, 2 on a bad bundle."""
    _setup_logging(verbose)
    from edgeship import render
    from edgeship.verify import check as run_check

    opts = _load_options(arch, arch_kwargs, trust_pickle, imports, code) if (arch or trust_pickle) else None
    report = run_check(bundle, tuple(_split(target)), tuple(_split(variant)), against, opts,
                       tolerances=_tolerances(tolerance), inputs=inputs)
    _write_reports(report, json_out, junit)
    console = _console()
    if quiet is None:
        quiet = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not quiet or not report.passed:
        render.parity_table(console, report, failures_only=quiet)
        render.tolerance_table(console, report)
    status = "passed" if report.passed else "FAILED"
    console.print(f"check {status}: {bundle} ({len(report.summary())} runner × variant × output checks)",
                  markup=False)
    if not report.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="The reference: a bundle or an .onnx file (e.g. yesterday's release).")],
    b: Annotated[Path, typer.Argument(help="The candidate: a bundle or an .onnx file (e.g. today's build).")],
    variant_a: Annotated[str, typer.Option("--variant-a", help="Variant of A when it is a bundle (default: its CPU default).")] = "auto",
    variant_b: Annotated[str, typer.Option("--variant-b", help="Variant of B when it is a bundle.")] = "auto",
    inputs: Annotated[Optional[Path], typer.Option("--inputs", help="Inputs (.npz); default: A's golden inputs, else B's, else seeded random ones.")] = None,
    tolerance: TolOpt = None, json_out: JsonOpt = None, junit: JunitOpt = None, verbose: VerboseOpt = False,
) -> None:
    """Run A and B on the same inputs and judge B against A: same metrics, tolerances and localisation as parity."""
    _setup_logging(verbose)
    from edgeship import render
    from edgeship.compare import compare as run_compare

    report = run_compare(a, b, variant_a=variant_a, variant_b=variant_b, inputs=inputs, tolerances=_tolerances(tolerance))
    _write_reports(report, json_out, junit)
    console = _console()
    render.parity_table(console, report, title=f"{b.name} vs {a.name}")
    render.tolerance_table(console, report)
    console.print(f"compare {'passed' if report.passed else 'FAILED'}: {b} vs {a}", markup=False)
    if not report.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A bundle (folder or zip) or an .onnx file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show inputs, outputs, opset, op counts, size and variants of a bundle or ONNX model."""
    from edgeship import render
    from edgeship.inspection import inspect_path

    info = inspect_path(path)
    if json_out:
        print(json.dumps(info, indent=2, default=str))
    else:
        render.inspection(_console(), info)


@app.command()
def run(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder or zip.")],
    input: Annotated[Optional[list[str]], typer.Option("--input", "-i", help="NAME=FILE.npy (repeatable), or a single FILE.npz holding every input.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the outputs to this .npz.")] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="cpu, cuda or auto.")] = "cpu",
    variant: Annotated[str, typer.Option("--variant", help="Variant name, or auto for the target's default.")] = "auto",
) -> None:
    """Run BUNDLE once on inputs from .npy/.npz files and print (or save) the outputs."""
    import numpy as np

    from edgeship import render
    from edgeship.runtime import load

    feeds = _read_feeds(input or [])
    model = load(bundle, target=target, variant=variant)
    outputs = model.run(feeds)
    if output:
        np.savez(output, **outputs)
    render.outputs(_console(), model, outputs, output)


def _read_feeds(items: list[str]) -> dict:
    import zipfile

    import numpy as np

    from edgeship.golden import npz_arrays

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


def main() -> None:
    """Entry point: EdgeshipError -> message and exit code, without a traceback."""
    try:
        rc = app(standalone_mode=False)  # returns typer.Exit's code in this mode
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except EdgeshipError as e:
        from rich.text import Text

        _console(True).print(Text.assemble(("error: ", "bold red"), str(e)))
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as e:
        # typer ships its own copy of click's exceptions: recognise them by shape
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(EXIT_BAD_INPUT if e.exit_code == 2 else e.exit_code)
        raise


def _ints(values: list[str] | None, flag: str) -> tuple:
    try:
        return tuple(int(v) for v in _split(values)) or (None,)
    except ValueError as e:
        raise SpecError(f"{flag} takes whole numbers, comma-separated (e.g. {flag} 1,2); got {', '.join(values or [])}.") from e


@app.command("profile")
def profile_command(
    source: Annotated[Path, typer.Argument(help="A bundle (folder or zip) or an .onnx file.")],
    target: TargetOpt = ["cpu"],  # noqa: B006
    variant: Annotated[Optional[list[str]], typer.Option("--variant", help="Variants, comma-separated (default: every variant of the bundle).")] = None,
    threads: Annotated[Optional[list[str]], typer.Option("--threads", help="Intra-op thread counts, comma-separated, e.g. 1,2,4 (default: one per core).")] = None,
    batch: Annotated[Optional[list[str]], typer.Option("--batch", help="Batch sizes, comma-separated, e.g. 1,8 (default: the golden sample's batch).")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls before timing each configuration.")] = 10,
    iterations: Annotated[Optional[int], typer.Option("--iterations", "-n", help="Timed calls per configuration (default 200).")] = None,
    duration: Annotated[Optional[float], typer.Option("--duration", help="Seconds of timed calls per configuration, in place of --iterations.")] = None,
    per_op: Annotated[bool, typer.Option("--per-op", help="Also aggregate onnxruntime's profiler output: top op types and nodes by time.")] = False,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows in the per-op tables.")] = 10,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON (every call's latency goes to an .npz beside it); usable as a --baseline later.")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Write one CSV row per configuration.")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained report.html with charts.")] = None,
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="A previous --json file: exit 1 when any configuration's p50 regressed by more than --max-regression.")] = None,
    max_regression: Annotated[str, typer.Option("--max-regression", help="Allowed p50 regression against --baseline, e.g. 10% (or 10).")] = "10%",
    compare_torch: Annotated[Optional[Path], typer.Option("--compare-torch", help="Add eager PyTorch (and the bundle's TorchScript) rows for this model file (needs torch; pass --arch for a state_dict: the bundle's recorded one is quoted, never run).")] = None,
    arch: ArchOpt = None, arch_kwargs: ArchKwOpt = None, trust_pickle: TrustOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Measure latency of a bundle or .onnx file per target × variant × threads × batch. Exit 1 on a regression against --baseline."""
    _setup_logging(verbose)
    from edgeship import render
    from edgeship.config import ProfileConfig
    from edgeship.profiler import compare, parse_percent, profile, write_csv, write_json

    limit = parse_percent(max_regression)
    opts = _load_options(arch, arch_kwargs, trust_pickle, None, None) if (arch or trust_pickle) else None
    cfg = ProfileConfig(targets=tuple(_split(target)), variants=tuple(_split(variant)), threads=_ints(threads, "--threads"),
                        batches=_ints(batch, "--batch"), warmup=warmup, iterations=iterations, duration=duration,
                        per_op=per_op, top=top, compare_torch=compare_torch, load=opts)
    console = _console()
    with render.ProfileProgress(console) as progress:
        report = profile(source, cfg, progress)
    comparison = compare(report, baseline, limit) if baseline else None
    render.profile_table(console, report)
    if comparison is not None:
        render.comparison_table(console, comparison)
    if json_out:
        write_json(report, json_out, comparison)
    if csv_out:
        write_csv(report, csv_out)
    if html_out:
        from edgeship.report_html import write_html

        write_html(html_out, report, comparison)
    if comparison is not None:
        comparison.check()  # RegressionError: exit 1, naming each configuration and both p50s
        console.print(f"baseline passed: {comparison.message()}", markup=False)
