"""Stage ``mobile`` (with ``--target mobile``): ORT-format twins of the variants, for ONNX Runtime Mobile.

Runs after parity, before select. Reads ``spec``, the golden samples, ``variants`` (with ``passed``)
and ``targets``; adds, for each fp32 and int8 variant that passed on cpu, a variant ``NAME_ort``
(``format="ort"``, ``source=NAME``) whose file onnxruntime's converter wrote
(:mod:`edgeship.exporters.ort_format`), parity-checked on the ``mobile`` target (onnxruntime's CPU
provider, opening the file's bytes as ``edgeship.load`` does) against the eager reference like every
variant; and ``mobile`` (the operator config every ORT variant needs, and how they were written).

fp16 gets no twin: it is the CUDA variant (DESIGN.md), and onnxruntime's CPU provider, a phone's,
runs few fp16 kernels (it inserts casts around the rest), so on a phone it is fp32's work plus casts.

The mobile default (:func:`select_mobile`) is not the fastest here: this host is not a phone. It is
the smallest passing file, where a lossy (int8) file leads only when its parity evidence is not
vacuous, it was not calibrated on synthetic inputs, and it is at most :data:`LOSSY_SIZE` of the fp32
file (a variant that quantized a classifier head only is not worth its accuracy loss); the rest follow
by size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from edgeship.bundle.manifest import Candidate
from edgeship.errors import ParityError
from edgeship.parity.tolerances import effective_tolerances
from edgeship.pipeline.context import Context, Skip, Variant, required
from edgeship.runtimes.ort import MOBILE, OrtRunner, resolve_targets
from edgeship.runtimes.registry import ORT, requirements

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")  # the precisions that get an ORT-format twin
LOSSY_SIZE = 0.5  # an int8 file leads the mobile target only at or below this fraction of fp32's size
SUFFIX = "_ort"


def export_targets(targets: Iterable[str]) -> list[str]:
    """The export's targets: ``mobile`` brings ``cpu`` (its variants are built and checked there first,
    and the bundle keeps them for desktop and server use)."""
    names = resolve_targets(list(targets))
    if MOBILE in names and "cpu" not in names:
        names.insert(names.index(MOBILE), "cpu")
    return names


def wanted(targets: Iterable[str]) -> bool:
    return MOBILE in targets


def mobile_stage(ctx: Context) -> str:
    from edgeship.exporters import ort_format
    from edgeship.pipeline.parity import check_parity

    spec = required(ctx.spec, "spec")
    sources = {n: v for n, v in ctx.variants.items()
               if v.format == "onnx" and v.precision in PRECISIONS and v.passed.get("cpu")}
    for n, v in ctx.variants.items():
        if v.format == "onnx" and n not in sources:
            why = ("it did not pass parity on cpu" if v.precision in PRECISIONS else
                   "fp16 is the CUDA variant: onnxruntime's CPU provider, a phone's, runs few fp16 kernels"
                   if v.precision == "fp16" else f"only {' and '.join(PRECISIONS)} variants are converted")
            ctx.note(f"mobile: no ORT-format twin of {n} ({why})")
    if not sources:
        raise Skip("no fp32 or int8 variant to convert")
    converted, config = ort_format.convert({n: v.file for n, v in sources.items()}, ctx.workdir / "mobile")
    tolerances = effective_tolerances(ctx.config)
    done = []
    for n, path in converted.items():
        src = sources[n]
        name = n + SUFFIX
        runner = OrtRunner(spec, path.read_bytes(), target=MOBILE, name=f"onnxruntime-{MOBILE}")
        try:
            report = check_parity(ctx, [runner], name, tolerances.for_precision(src.precision))
        finally:
            runner.close()
        if not report.passed:
            bad = report.failures()[0]
            if n == "fp32":
                raise ParityError(f"--target mobile: the ORT-format fp32 file onnxruntime's converter wrote fails parity "
                                  f"({bad.output!r} on sample {bad.sample}: {bad.reason}), while fp32.onnx passes. "
                                  "Export without --target mobile and report this with the model. Nothing was written.",
                                  report=ctx.parity)
            ctx.rejected[name] = {"reason": bad.reason}
            ctx.note(f"{name} (the ORT-format {n}) fails parity on {MOBILE} and is not shipped")
            continue
        ctx.variants[name] = Variant(name, path, src.precision, kind=src.kind, excluded_nodes=src.excluded_nodes,
                                     format="ort", source=n, passed={MOBILE: True})
        done.append(name)
    if "fp32" + SUFFIX not in ctx.variants and not done:
        raise Skip("no ORT-format variant passed parity")
    ctx.mobile = {"operators_config": config, "operators": ort_format.operators(config)}
    return f"{', '.join(done)} ({len(ctx.mobile['operators'])} operators in {ort_format.CONFIG})"


def mobile_order(sizes: dict[str, int], precisions: dict[str, str], vacuous: bool,
                 unproven: frozenset[str] = frozenset()) -> list[str]:
    """The mobile target's candidates in the order ``load`` tries them (module docstring): first the
    smallest of those that may lead (fp32, or int8 at most :data:`LOSSY_SIZE` of the fp32 twin's size
    with non-vacuous parity evidence, and not in ``unproven``: static int8 calibrated on synthetic
    inputs), then the others, smallest first."""
    fp32 = "fp32" + SUFFIX

    def may_lead(n: str) -> bool:
        return precisions[n] == "fp32" or (not vacuous and n not in unproven and fp32 in sizes
                                           and sizes[n] <= LOSSY_SIZE * sizes[fp32])

    return sorted(sizes, key=lambda n: (not may_lead(n), sizes[n], n))


def select_mobile(ctx: Context) -> None:
    """The mobile target's candidates and default (see the module's docstring): smallest first."""
    passing = [n for n, v in ctx.variants.items() if v.passed.get(MOBILE)]
    if not passing:
        return
    size = {n: ctx.variants[n].file.stat().st_size for n in passing}
    vacuous = bool(ctx.parity.vacuous)
    synthetic = ctx.calibration is not None and ctx.calibration.synthetic  # never the default silently
    unproven = frozenset(n for n in passing if synthetic and ctx.variants[n].kind == "static")
    order = mobile_order(size, {n: ctx.variants[n].precision for n in passing}, vacuous, unproven)
    ctx.candidates[MOBILE] = [
        Candidate(id=n, runtime=ORT, variant=n, precision=ctx.variants[n].precision, p50_ms=None,
                  requires=requirements(ORT, ctx.variants[n].precision, MOBILE),
                  max_abs=_worst(ctx, n, "max_abs", max), min_cosine=_worst(ctx, n, "cosine", min))
        for n in order]
    ctx.defaults[MOBILE] = order[0]
    fp32 = "fp32" + SUFFIX
    if order[0] == fp32 and len(order) > 1:
        why = ("the parity evidence is vacuous" if vacuous else
               f"no int8 file is at most {LOSSY_SIZE:.0%} of fp32's {size[fp32]} bytes")
        ctx.note(f"{MOBILE}: {fp32} is the default ({why}); the bundle ships "
                 + ", ".join(f"{n} ({size[n]} bytes)" for n in order[1:]))


def _worst(ctx: Context, name: str, key: str, pick: Callable[[list[float]], float]) -> float | None:
    values = [r[key] for r in ctx.parity.summary() if r["variant"] == name and key in r]
    return pick(values) if values else None

