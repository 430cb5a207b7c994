"""Stage 6, parity: every variant on every target against the eager reference.

Reads ``spec``, ``samples``, ``references``, ``variants`` (and ``targets`` when quantize set them);
adds ``targets``, each variant's ``passed`` per target and the checks to ``parity``; drops a
variant that fails on every target (recorded in ``rejected``). fp32 must pass everywhere.
Also the helpers the other stages use to parity-check what they build.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from edgeship.bundle.golden import Sample
from edgeship.errors import ParityError
from edgeship.parity.evaluate import run_parity
from edgeship.parity.report import ParityReport
from edgeship.parity.tolerances import Tolerance, effective_tolerances
from edgeship.pipeline.context import NONDETERMINISTIC, Context, required
from edgeship.pipeline.heldout import gate_margins, margin_text
from edgeship.pipeline.mobile import export_targets
from edgeship.runtimes.base import Runner
from edgeship.runtimes.ort import MOBILE, OrtRunner, providers_for

log = logging.getLogger(__name__)


def fp32_tolerance(ctx: Context) -> Callable[[str], Tolerance]:
    return effective_tolerances(ctx.config).for_precision("fp32")


def dynamic_note(ctx: Context) -> Callable[[Sample], str]:
    """For failures on the second-size sample: name the axes and sizes that changed."""
    base = ctx.samples[0].sizes
    spec = required(ctx.spec, "spec")

    def note(sample: Sample) -> str:
        changed = {k: v for k, v in sample.sizes.items() if base.get(k) != v}
        if not changed:
            return ""
        axes = [f"{t.name}:{ax} ({sym}={changed[sym]}, exported at {base[sym]})"
                for t in spec.inputs for ax, sym in t.dynamic_axes.items() if sym in changed]
        text = ("the export does not follow the dynamic axis " + ", ".join(axes) + ": the trace "
                "specialised that size (e.g. a view/reshape with a fixed size); fix the model code "
                "or drop the axis from --dynamic/--dynamic-batch")
        equal = _equal_symbols(spec, base, changed)
        if equal:  # different symbols of one example size: the model may need them equal
            text += ("; or, if those axes must be equal (an attention mask and its ids), give them one symbol: "
                     + " ".join(f"--dynamic {a}={sym}" for sym, group in equal.items() for a in group))
        return text

    return note


def apart_samples(ctx: Context) -> set[str]:
    """Labels of the golden samples on which axes the load stage kept apart (equal unnamed axes,
    ``ctx.apart``) took different sizes: the only samples where keeping them apart can fail."""
    if not ctx.apart or ctx.spec is None:
        return set()
    syms = {f"{t.name}:{ax}": sym for t in ctx.spec.inputs for ax, sym in t.dynamic_axes.items()}
    groups = [[syms[a] for a in axes if a in syms] for axes in ctx.apart.values()]
    return {s.label for s in ctx.samples if any(len({s.sizes.get(sym) for sym in g}) > 1 for g in groups)}


def apart_symbols(ctx: Context) -> set[str]:
    """The symbols of the axes kept apart (``input_ids_dim1``...), as exporters name them in errors."""
    if not ctx.apart or ctx.spec is None:
        return set()
    axes = {a for group in ctx.apart.values() for a in group}
    return {sym for t in ctx.spec.inputs for ax, sym in t.dynamic_axes.items() if f"{t.name}:{ax}" in axes}


def _equal_symbols(spec, base: dict, changed: dict) -> dict[str, list[str]]:
    """Axes with different symbols that had one size in the example and took different sizes
    here, grouped under the first one's symbol: {symbol: ["input:axis", ...]}."""
    by_size: dict[int, list[tuple[str, str]]] = {}
    for t in spec.inputs:
        for ax, sym in t.dynamic_axes.items():
            if sym in changed:
                by_size.setdefault(base[sym], []).append((f"{t.name}:{ax}", sym))
    return {members[0][1]: [a for a, _ in members] for members in by_size.values()
            if len({changed[sym] for _, sym in members}) > 1}


def check_parity(ctx: Context, runners: list[Runner], variant: str, tol: Callable[[str], Tolerance]) -> ParityReport:
    """Run ``runners`` on the golden samples, judge them against the eager reference, and add
    the checks to ``ctx.parity``."""
    report = run_parity(runners, *ctx.gate_samples(), tol, variant, dynamic_note(ctx))
    ctx.parity = ctx.parity.merged(report)
    return report


def worst_text(report: ParityReport) -> str:
    max_abs = max((r.get("max_abs", float("inf")) for r in report.summary()), default=0.0)
    return f"max abs {max_abs:.2e} over {len({c.sample for c in report.checks})} sample(s)"


def parity_stage(ctx: Context) -> str:
    """Every variant on every target against the eager reference. fp32 must pass; another
    variant that fails on a target is not made that target's default (and is dropped when it
    fails everywhere)."""
    spec = required(ctx.spec, "spec")
    ctx.targets = ctx.targets or export_targets(ctx.config.targets)
    for t in ctx.targets:
        providers_for(t)  # TargetUnavailableError before any work
    targets = [t for t in ctx.targets if t != MOBILE]  # the mobile stage checks the ORT-format twins there
    for name, v in list(ctx.variants.items()):
        tol = effective_tolerances(ctx.config).for_precision(v.precision)
        runners: list[Runner] = [OrtRunner(spec, v.file, target=t, name=f"onnxruntime-{t}") for t in targets]
        report = check_parity(ctx, runners, name, tol)
        for r in runners:
            r.close()
        passed = {t: all(c.passed for c in report.checks if c.runner == f"onnxruntime-{t}") for t in targets}
        ctx.variants[name] = v = replace(v, passed=passed)
        if name == "fp32" and not report.passed:
            bad = report.failures()[0]
            cause = next((f" Likely cause: the {n}." for n in ctx.notes if n.startswith(NONDETERMINISTIC)), "")
            raise ParityError(
                f"fp32 ONNX parity failed: {bad.runner} output {bad.output!r} on sample {bad.sample}: "
                f"{bad.reason}.{cause} Nothing was written.",
                report=ctx.parity,  # so --json/--junit still get written
            )
        if v.precision != "fp32":
            ctx.gates[name] = gate_margins(report, name, tol, {s.label for s in ctx.eval_samples})
            text = margin_text(name, ctx.gates[name], ctx.eval_source)
            if text:
                ctx.note(text)
        if not any(passed.values()):
            ctx.rejected[name] = {"reason": report.failures()[0].reason}
            del ctx.variants[name]
            ctx.note(f"{name} fails parity on every target and is not shipped")
    return f"{len(ctx.variants)} variant(s) × {', '.join(targets)}: " + ", ".join(
        f"{n} {'pass' if all(v.passed.values()) else 'partial'}" for n, v in ctx.variants.items())
