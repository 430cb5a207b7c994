"""Options shared by several commands, and turning option values into library arguments.

The model-loading options (``--arch``, ``--arch-kwargs``, ``--trust-pickle``, ``--trust-ops``, ``--import``,
``--code``) are one group: :func:`with_load_options` adds them to a command, which receives
them as a single ``load: LoadOptions | None`` (None when none was given).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from edgeship.config import LoadOptions
from edgeship.errors import SpecError

log = logging.getLogger("edgeship")
F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Write the parity report as JSON to this file (- for stdout).")]
JunitOpt = Annotated[Optional[Path], typer.Option("--junit", help="Write a JUnit XML file: one testcase per runner × variant × output (- for stdout).")]
TargetOpt = Annotated[list[str], typer.Option("--target", "-t", metavar="TEXT", help="Targets, comma-separated: cpu, cuda, tensorrt, mobile (export: also ORT-format variants for ONNX Runtime Mobile, with cpu), an onnxruntime provider name, auto (cpu, plus cuda where present), or web (onnxruntime-web in a headless Chromium: wasm, and WebGPU where the browser has it).")]
BrowserOpt = Annotated[Optional[Path], typer.Option("--browser", metavar="PATH", help="The Chromium (or Chrome) executable of --target web; default: $EDGESHIP_BROWSER, else chromium, chromium-browser or google-chrome on PATH.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result line and errors (no progress, tables or notes).")]
TolOpt = Annotated[Optional[list[str]], typer.Option("--tolerance", metavar="TEXT", help="Tolerance override [SCOPE:]KEY=VALUE (repeatable). SCOPE: a precision (fp32, fp16, int8), PRECISION/OUTPUT or */OUTPUT; no scope: every precision. KEY: atol, rtol, min_cosine, min_top1, max_outlier_frac, atol_scale (atol is at least this fraction of the output's largest value; fp32 default 1e-5, 0 turns it off). Overrides [tool.edgeship.tolerances] in pyproject.toml or [tolerances] in edgeship.toml.")]
CalibOpt = Annotated[Optional[str], typer.Option("--calibration", help="Calibration data for static int8: an .npz (one array per input, leading sample axis), a folder of .npz/.npy, or module:function yielding feed dicts. Without it static int8 uses synthetic inputs and says so loudly.")]
CalibMethodOpt = Annotated[str, typer.Option("--calibration-method", help="minmax, entropy or percentile.")]
EvalOpt = Annotated[Optional[str], typer.Option("--eval-data", help="Held-out inputs for the parity gates, in --calibration's formats (.npz with a leading sample axis, or arrays of the inputs' own rank split into batch-1 samples; a folder of .npz/.npy; module:function yielding feeds). Every variant must also pass on them; not stored in the bundle.")]
EvalSamplesOpt = Annotated[int, typer.Option("--eval-samples", min=1, help="Use at most this many held-out samples.")]
EvalSplitOpt = Annotated[float, typer.Option("--eval-split", min=0.0, max=0.9, help="Without --eval-data: the fraction of the --calibration samples held out for the gates, e.g. 0.25 (static int8 calibrates on the rest); 0, the default, holds none out.")]
CalibSamplesOpt = Annotated[int, typer.Option("--calibration-samples", min=1, help="Use at most this many calibration samples.")]
Int4BlockOpt = Annotated[int, typer.Option("--int4-block-size", help="int4: weights per scale along each MatMul's input axis, a power of two of at least 16 (default 32).")]
Int4SchemeOpt = Annotated[str, typer.Option("--int4-scheme", help="int4: sym (symmetric, the default) or asym (a zero point per block).")]
DecoderGraphOpt = Annotated[str, typer.Option("--decoder-graph", help="A causal LM's graph: auto (torch.onnx's and onnxruntime-genai's where installed; the faster that passes ships), torch.onnx or onnxruntime-genai (build only that one).")]

_LOAD_PARAMS = [
    inspect.Parameter("arch", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[str], typer.Option("--arch", help="module:factory (or file.py:factory) that builds the nn.Module for a state_dict or checkpoint; modules import from the current directory or PYTHONPATH.")]),
    inspect.Parameter("arch_kwargs", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[str], typer.Option("--arch-kwargs", help="JSON object of keyword arguments for the --arch factory.")]),
    inspect.Parameter("trust_pickle", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[bool, typer.Option("--trust-pickle", help="Load a whole pickled nn.Module (runs code from the file: only for files you trust).")]),
    inspect.Parameter("trust_ops", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[bool, typer.Option("--trust-ops", help="Run an ExportedProgram (.pt2) whose graph calls ops outside edgeship's allow-list of pure aten/prims ops (such ops can read or write files: only for files you trust).")]),
    inspect.Parameter("imports", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[list[str]], typer.Option("--import", metavar="TEXT", help="Module to import before unpickling, so its classes resolve (repeatable).")]),
    inspect.Parameter("code", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[list[str]], typer.Option("--code", metavar="TEXT", help="Python file to run before unpickling, defining the model's classes (repeatable).")]),
]


def with_load_options(fn: F) -> F:
    """Give command ``fn`` the model-loading options; it takes them as ``load: LoadOptions | None``."""
    sig = inspect.signature(fn, eval_str=True)
    params = [p for p in sig.parameters.values() if p.name != "load"]
    keyword = [p for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY]
    params = [p for p in params if p.kind != inspect.Parameter.KEYWORD_ONLY]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params] + keyword + _LOAD_PARAMS

    @functools.wraps(fn)
    def command(*, arch: str | None = None, arch_kwargs: str | None = None, trust_pickle: bool = False,
                trust_ops: bool = False, imports: list[str] | None = None, code: list[str] | None = None,
                **kwargs: Any) -> Any:
        given = arch or arch_kwargs or trust_pickle or trust_ops or imports or code
        load = LoadOptions(arch=arch, arch_kwargs=json_kwargs(arch_kwargs), trust_pickle=trust_pickle,
                           trust_ops=trust_ops, imports=tuple(imports or ()), code=tuple(code or ())) if given else None
        return fn(load=load, **kwargs)

    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command  # type: ignore[return-value]


RuntimeOpt = Annotated[Optional[list[str]], typer.Option("--runtime", metavar="TEXT", help="Runtimes, comma-separated: onnxruntime (ort), openvino (the optional extra). Default: onnxruntime.")]


def runtimes(values: list[str] | None) -> tuple[str, ...]:
    """--runtime ort,openvino -> ("onnxruntime", "openvino"); none given: onnxruntime."""
    from edgeship.runtimes.registry import runtime_name

    return tuple(dict.fromkeys(runtime_name(v) for v in split(values))) or ("onnxruntime",)


def split(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated option values as one list."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def ints(values: list[str] | None, flag: str) -> tuple[int | None, ...]:
    """Comma-separated whole numbers; ``(None,)`` (the default) when none were given."""
    try:
        return tuple(int(v) for v in split(values)) or (None,)
    except ValueError as e:
        raise SpecError(f"{flag} takes whole numbers, comma-separated (e.g. {flag} 1,2); got {', '.join(values or [])}.") from e


def json_kwargs(text: str | None) -> dict:
    """``--arch-kwargs``: a JSON object ({} when not given).

    Raises:
        SpecError: not JSON, nested too deeply to parse, or not an object.
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise SpecError(f"--arch-kwargs must be a JSON object, e.g. '{{\"num_classes\": 10}}'; got {text[:80]!r} ({e}).") from e
    except RecursionError as e:
        raise SpecError(f"--arch-kwargs nests its arrays or objects too deeply ({len(text)} characters); pass a flat "
                        "JSON object of keyword arguments, e.g. '{\"num_classes\": 10}'.") from e
    if not isinstance(value, dict):
        raise SpecError(f"--arch-kwargs must be a JSON object; got {type(value).__name__}.")
    return value


def tolerances(items: list[str] | None) -> dict:
    """Project file, then --tolerance options (which win); says where the file values came from."""
    from edgeship.parity.tolerances import Tolerances, project_tolerances, tolerances_from_options

    from_file, source = project_tolerances()
    if source:
        log.info("tolerances from %s: %s", source, from_file)
    return Tolerances(from_file).merged(tolerances_from_options(list(items or []))).overrides


def timeout(seconds: float | None) -> float | None:
    """``--timeout``: seconds above 0, or 0 (and None) for no limit.

    Raises:
        SpecError: a negative or non-finite number.
    """
    from edgeship.runtimes.deadline import check_seconds

    return None if seconds is None or seconds == 0 else check_seconds(seconds, "--timeout")


def write_reports(report: Any, json_out: Path | None, junit: Path | None, out: Any) -> None:
    """The parity report as JSON and/or JUnit XML, where asked (``-``: stdout); names each file on ``out``."""
    from edgeship.cli.app import write_file
    from edgeship.parity.report import write_json, write_junit

    if json_out:
        write_file(json_out, lambda p: write_json(report, p), out, "--json")
    if junit:
        write_file(junit, lambda p: write_junit(report, p), out, "--junit")
