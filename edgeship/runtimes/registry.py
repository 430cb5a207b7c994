"""The runtimes a candidate can name, their options, and one factory for their runners. Torch-free.

A candidate runs on ``onnxruntime`` (options: ``threads``, ``spinning``, ``opt_level``) or
``openvino`` (options: ``threads``, ``cache_dir``; the optional extra). :func:`check_options`
validates what a manifest says before anything is opened, and :func:`make_runner` opens one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgeship.errors import SpecError
from edgeship.runtimes import openvino as ov_runtime
from edgeship.runtimes.base import Runner
from edgeship.runtimes.ort import MAX_THREADS, OPT_LEVELS, OrtRunner
from edgeship.spec import IOSpec

ORT = "onnxruntime"
OPENVINO = ov_runtime.RUNTIME
RUNTIMES = (ORT, OPENVINO)
ORT_OPTION_KEYS = ("threads", "spinning", "opt_level")
ALIASES = {"ort": ORT, "onnxruntime": ORT, "openvino": OPENVINO, "ov": OPENVINO}


def runtime_name(text: str) -> str:
    """``ort``/``onnxruntime``/``openvino``/``ov`` -> the runtime's name.

    Raises:
        SpecError: an unknown runtime.
    """
    name = ALIASES.get(str(text).strip().lower())
    if name is None:
        raise SpecError(f"unknown runtime {text!r}; use onnxruntime (ort) or openvino.")
    return name


def installed(runtime: str) -> bool:
    """Whether ``runtime`` can run here (onnxruntime always can: it is a base dependency)."""
    return runtime == ORT or (runtime == OPENVINO and ov_runtime.installed())


def check_options(runtime: str, options: object) -> None:
    """Refuse a runtime or options edgeship would not know how to apply.

    Raises:
        SpecError: an unknown runtime, option or value.
    """
    if runtime not in RUNTIMES:
        raise SpecError(f"unknown runtime {runtime!r}; use {', '.join(RUNTIMES)}.")
    if not isinstance(options, dict):
        raise SpecError("runtime options must be an object")
    if runtime == OPENVINO:
        ov_runtime.check_options(options)
        return
    unknown = set(options) - set(ORT_OPTION_KEYS)
    if unknown:
        raise SpecError(f"unknown onnxruntime option(s) {', '.join(sorted(map(str, unknown)))}; use {', '.join(ORT_OPTION_KEYS)}.")
    t = options.get("threads")
    if t is not None and (not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= MAX_THREADS):
        raise SpecError(f"onnxruntime threads={t!r}: use a whole number from 1 to {MAX_THREADS}.")
    if options.get("spinning") is not None and not isinstance(options["spinning"], bool):
        raise SpecError(f"onnxruntime spinning={options['spinning']!r}: use true or false.")
    if options.get("opt_level") is not None and options["opt_level"] not in OPT_LEVELS:
        raise SpecError(f"onnxruntime opt_level={options['opt_level']!r}: use one of {', '.join(OPT_LEVELS)}.")


def describe(runtime: str, precision: str, options: dict) -> str:
    """``onnxruntime fp32 threads=1 spinning=off`` — a candidate's configuration in words."""
    opts = " ".join(f"{k}={('on' if v else 'off') if isinstance(v, bool) else v}" for k, v in sorted(options.items()))
    return " ".join(x for x in (runtime, precision, opts) if x)


def make_runner(spec: IOSpec, model: bytes | str | os.PathLike, runtime: str, *, target: str = "cpu",
                precision: str = "fp32", options: dict | None = None, name: str | None = None,
                what: str | None = None, **ort_kwargs: Any) -> Runner:
    """A (not yet loaded) runner for one candidate: ``model`` is a path or the verified bytes.

    Raises:
        SpecError: unknown runtime or options; OpenVINO given a path (it takes bytes only) or a
            target other than cpu.
    """
    options = dict(options or {})
    check_options(runtime, options)
    if runtime == ORT:
        return OrtRunner(spec, model, target=target, name=name, runtime_options=options, **ort_kwargs)
    if target != "cpu":
        raise SpecError(f"OpenVINO runs on the cpu target here, not {target!r}.")
    data = model if isinstance(model, bytes) else Path(model).read_bytes()  # a work-folder file of the export
    return ov_runtime.OpenVINORunner(spec, data, precision=precision, options=options, name=name,
                                     what=what or "the model bytes")
