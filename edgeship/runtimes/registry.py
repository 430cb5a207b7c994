"""The runtimes a candidate can name, which candidates exist for each, what they need of a host,
their options, and one factory for their runners. Torch-free.

A candidate runs on ``onnxruntime`` (options: ``threads``, ``spinning``, ``opt_level``) or
``openvino`` (options: ``threads``, ``cache_dir``; the optional extra). :func:`candidate_configs`
is the one list of the candidates a bundle's variants can have (the export's selection, ``tune``
and the profiler all take it from here); :func:`requirements` says what each needs of a host and
:func:`unmet` whether this host has it. :func:`check_options` validates what a manifest says
before anything is opened, and :func:`make_runner` opens one.

Thread counts are stored so they mean the same on another host: ``1``, or ``cores/N`` (this host's
usable cores divided by N); every count is capped at the usable cores when a runner is made
(:func:`edgeship.host.resolve_threads`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeship.errors import SpecError
from edgeship.host import cpu_flags, cpu_mask, resolve_threads, usable_cpus
from edgeship.runtimes import openvino as ov_runtime
from edgeship.runtimes.base import Runner
from edgeship.runtimes.ort import MAX_THREADS, OPT_LEVELS, TARGET_PROVIDERS, OrtRunner, available_providers
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


# x86 CPU flags of native bf16 (OpenVINO's CPU plugin runs bf16 on either)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class CandidateConfig:
    """A candidate before it is measured: ``id`` is the variant's name for the variant on
    onnxruntime's defaults (so the plain fp32 candidate is ``fp32``)."""

    id: str
    runtime: str
    variant: str
    precision: str
    options: dict = field(default_factory=dict)

    @property
    def plain(self) -> bool:
        return self.runtime == ORT and not self.options


def openvino_precisions(variant: str, precision: str) -> list[str]:
    """The precisions OpenVINO runs a variant at as a candidate: an fp32 file at f32, and at bf16
    where this CPU has native bf16 (:func:`unmet`); the static-int8 QDQ file as OpenVINO quantizes
    it. Not the dynamic-int8 file (DynamicQuantizeLinear/MatMulInteger: 3.5x slower than onnxruntime
    on MiniLM) nor fp16 (OpenVINO's CPU plugin computes it in f32 or bf16 anyway)."""
    if precision == "fp32":
        bf16 = ov_runtime.has_bf16() and unmet(requirements(OPENVINO, "bf16")) is None
        return ["fp32", "bf16"] if bf16 else ["fp32"]
    return ["int8"] if precision == "int8" and variant == "int8_static" else []


def candidate_configs(variants: dict[str, str], target: str, tune: bool = True, runtimes: tuple[str, ...] | None = None,
                      cores: int | None = None) -> list[CandidateConfig]:
    """The candidates of ``variants`` (name -> precision class) on ``target``: each on onnxruntime's
    defaults, and with ``tune`` on the cpu target onnxruntime's session options (one thread, half the
    cores stored as ``cores/2``, no spinning, the extended graph level for fp32) and OpenVINO
    (:func:`openvino_precisions`) where installed.

    Args:
        runtimes: only these runtimes (default: every installed one).
        cores: usable cores (default: :func:`usable_cpus`).
    """
    allowed = runtimes or tuple(r for r in RUNTIMES if installed(r))
    out = [CandidateConfig(n, ORT, n, p) for n, p in variants.items()] if ORT in allowed else []
    if not tune or target != "cpu":
        return out
    cores = cores or usable_cpus()
    if ORT in allowed:
        for n, p in variants.items():
            if cores > 1:
                out.append(CandidateConfig(f"{n}+threads=1", ORT, n, p, {"threads": 1}))
                if cores > 2:
                    out.append(CandidateConfig(f"{n}+threads=cores/2", ORT, n, p, {"threads": "cores/2"}))
            out.append(CandidateConfig(f"{n}+spinning=off", ORT, n, p, {"spinning": False}))
        if "fp32" in variants:
            out.append(CandidateConfig("fp32+opt_level=extended", ORT, "fp32", "fp32", {"opt_level": "extended"}))
    if OPENVINO in allowed and installed(OPENVINO):
        for n, p in variants.items():
            for q in openvino_precisions(n, p):
                suffix = "@openvino" if q in (p, "int8") else f"@openvino-{q}"
                out.append(CandidateConfig(f"{n}{suffix}", OPENVINO, n, q))
    return out


def requirements(runtime: str, precision: str, target: str = "cpu") -> dict:
    """What a candidate needs of a host, as the manifest records it: ``runtime`` (installed),
    ``cpu_any`` (at least one of these CPU flags: native bf16 for OpenVINO's bf16) and
    ``providers`` (onnxruntime execution providers a GPU target needs)."""
    req: dict = {"runtime": runtime}
    if runtime == OPENVINO and precision == "bf16":
        req["cpu_any"] = list(BF16_FLAGS)
    if runtime == ORT and target in TARGET_PROVIDERS and target != "cpu":
        req["providers"] = TARGET_PROVIDERS[target][:1]
    return req


def unmet(requires: dict) -> str | None:
    """Why a candidate with these requirements cannot run on this host (in words), or None when it
    can. CPU flags masked by ``EDGESHIP_CPU_MASK`` count as absent."""
    runtime = requires.get("runtime")
    if runtime not in RUNTIMES:
        return f"runtime {runtime!r} is unknown to this edgeship (upgrade edgeship)"
    if not installed(runtime):
        return f"{runtime} is not installed here (pip install 'edgeship[{runtime}]')"
    wanted = [f for f in requires.get("cpu_any") or [] if isinstance(f, str)]
    if wanted and not set(wanted) & set(cpu_flags()):
        masked = sorted(set(wanted) & cpu_mask())
        return (f"it needs a CPU with {' or '.join(wanted)}; this one has none"
                + (f" (EDGESHIP_CPU_MASK hides {', '.join(masked)})" if masked else ""))
    providers = [p for p in requires.get("providers") or [] if isinstance(p, str)]
    missing = [p for p in providers if p not in available_providers()]
    if missing:
        return f"it needs {', '.join(missing)}, which this onnxruntime does not have (install onnxruntime-gpu)"
    return None


def check_threads_option(runtime: str, t: object) -> None:
    """A stored thread count: a whole number from 1 to :data:`MAX_THREADS`, or ``cores/N``.

    Raises:
        SpecError: anything else.
    """
    try:
        if isinstance(t, int) and not isinstance(t, bool) and t > MAX_THREADS:
            raise SpecError("too many")
        resolve_threads(t, usable=1)
    except SpecError as e:
        label = "OpenVINO" if runtime == OPENVINO else runtime
        raise SpecError(f"{label} threads={t!r}: use a whole number from 1 to {MAX_THREADS}, or cores/N "
                        "(the usable cores divided by N).") from e


def check_options(runtime: str, options: object) -> None:
    """Refuse a runtime or options edgeship would not know how to apply.

    Raises:
        SpecError: an unknown runtime, option or value.
    """
    if runtime not in RUNTIMES:
        raise SpecError(f"unknown runtime {runtime!r}; use {', '.join(RUNTIMES)}.")
    if not isinstance(options, dict):
        raise SpecError("runtime options must be an object")
    if options.get("threads") is not None:
        check_threads_option(runtime, options["threads"])
    if runtime == OPENVINO:
        ov_runtime.check_options({k: v for k, v in options.items() if k != "threads"})
        return
    unknown = set(options) - set(ORT_OPTION_KEYS)
    if unknown:
        raise SpecError(f"unknown onnxruntime option(s) {', '.join(sorted(map(str, unknown)))}; use {', '.join(ORT_OPTION_KEYS)}.")
    if options.get("spinning") is not None and not isinstance(options["spinning"], bool):
        raise SpecError(f"onnxruntime spinning={options['spinning']!r}: use true or false.")
    if options.get("opt_level") is not None and options["opt_level"] not in OPT_LEVELS:
        raise SpecError(f"onnxruntime opt_level={options['opt_level']!r}: use one of {', '.join(OPT_LEVELS)}.")


def for_this_host(runtime: str, options: dict) -> dict:
    """A candidate's options checked (:func:`check_options`) and with its thread count resolved for
    this host (``cores/N``, and any count above the usable cores, become what this host has).

    Raises:
        SpecError: as :func:`check_options`.
    """
    options = dict(options)
    check_options(runtime, options)
    if options.get("threads") is not None:
        options["threads"] = resolve_threads(options["threads"])
    return options


def make_runner(spec: IOSpec, model: bytes | str | os.PathLike, runtime: str, *, target: str = "cpu",
                precision: str = "fp32", options: dict | None = None, name: str | None = None,
                what: str | None = None, **ort_kwargs: Any) -> Runner:
    """A (not yet loaded) runner for one candidate: ``model`` is a path or the verified bytes.

    Raises:
        SpecError: unknown runtime or options; OpenVINO given a path (it takes bytes only) or a
            target other than cpu.
    """
    options = for_this_host(runtime, options or {})
    if runtime == ORT:
        return OrtRunner(spec, model, target=target, name=name, runtime_options=options, **ort_kwargs)
    if target != "cpu":
        raise SpecError(f"OpenVINO runs on the cpu target here, not {target!r}.")
    data = model if isinstance(model, bytes) else Path(model).read_bytes()  # a work-folder file of the export
    return ov_runtime.OpenVINORunner(spec, data, precision=precision, options=options, name=name,
                                     what=what or "the model bytes")
