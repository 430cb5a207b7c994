"""Running candidates, then judging their outputs: the one parity path of export, check and compare.

:func:`collect_outputs` runs each candidate on every sample and keeps what it returned (or why
it failed); :func:`judge_outputs` compares those outputs with the references under the
tolerances. :func:`run_parity` is the two in a row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from edgeship.bundle.golden import Sample
from edgeship.errors import InferenceTimeout, SpecError, brief
from edgeship.parity.metrics import judge, metrics
from edgeship.parity.report import OutputCheck, ParityReport
from edgeship.parity.tolerances import Tolerance
from edgeship.runtimes.base import Runner
from edgeship.spec import format_shape

ToleranceOf = Callable[[str], Tolerance]


@dataclass(frozen=True)
class RunResult:
    """What one runner returned on one sample: its outputs, or why it failed."""

    runner: str
    index: int  # of the sample, in the order collected
    sample: Sample
    outputs: dict[str, np.ndarray] | None
    error: str | None = None


def collect_outputs(runners: Sequence[Runner], samples: Sequence[Sample]) -> list[RunResult]:
    """Run every runner on every sample and keep what came back. A runner that raises on a
    sample is recorded with the reason (the sample's axis sizes included), not raised; except a
    deadline that passed (``InferenceTimeout``), which ends the whole run."""
    results = []
    for runner in runners:
        for i, sample in enumerate(samples):
            try:
                results.append(RunResult(runner.name, i, sample, runner.infer(sample.feeds)))
            except InferenceTimeout:
                raise
            except Exception as e:
                why = f"{runner.name} failed on sample {sample.label} ({sample.describe()}): {brief(e)}"
                results.append(RunResult(runner.name, i, sample, None, why))
    return results


def reference_outputs(runner: Runner, samples: Sequence[Sample]) -> list[dict[str, np.ndarray]]:
    """The reference's outputs on every sample (for check --inputs and compare).

    Raises:
        SpecError: the reference itself fails on a sample.
    """
    outputs = []
    for r in collect_outputs([runner], samples):
        if r.outputs is None:
            raise SpecError(f"the reference could not run: {r.error}; check that the inputs fit it.")
        outputs.append(r.outputs)
    return outputs


def compare_outputs(runner: str, variant: str, sample: str, sizes: str, ref: dict[str, np.ndarray],
                    got: dict[str, np.ndarray], tol_of: ToleranceOf, note: str = "") -> list[OutputCheck]:
    """Judge one runner's outputs on one sample against the reference's, output by output."""
    checks = []
    for name, r in ref.items():
        tol = tol_of(name)
        if name not in got:
            checks.append(OutputCheck(runner, variant, name, sample, False,
                                      reason=f"output {name!r} missing (got {', '.join(got)})"))
            continue
        g = got[name]
        if g.shape != r.shape:
            checks.append(OutputCheck(runner, variant, name, sample, False, reason=(
                f"output {name!r} has shape {format_shape(g.shape)}, reference "
                f"{format_shape(r.shape)} at {sizes}: the export fixed a size that should follow "
                "the input (a traced reshape/view?)" + (f"; {note}" if note else ""))))
            continue
        m = metrics(r, g, tol)
        why = judge(m, tol)
        if why is not None and "outside atol" in why:
            why += _relative_small(name, r, g, m, tol)
        if why is not None and r.ndim == 2 and r.shape[0] > 1 and judge(metrics(_rows_sorted(r), _rows_sorted(g), tol), tol) is None:
            why += (f"; yet the same rows are there in another order: {name!r} looks order-insensitive (detections "
                    "after NMS with tied scores come out in either order); compare it sorted, or break the ties")
        checks.append(OutputCheck(runner, variant, name, sample, why is None, m, why))
    return checks


RELATIVE_SMALL = 1e-3  # max abs error below this fraction of the output's scale: rounding, not a wrong export


def _relative_small(name: str, ref: np.ndarray, got: np.ndarray, m: dict, tol: Tolerance) -> str:
    """Why an atol failure on a large-magnitude output is float32 rounding, and the per-output atol
    that passes it (twice what this sample needs, rounded up to 1, 2 or 5 × 10^k), or "" when the
    error is not small relative to the output's scale."""
    scale = m.get("scale", 0.0)
    if m.get("nonfinite_mismatch") or scale <= 0 or m["max_abs"] > RELATIVE_SMALL * scale:
        return ""
    r, g = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    finite = np.isfinite(r) & np.isfinite(g)
    rtol = tol.rtol if tol.rtol is not None else 1e-3
    need = float(np.max(np.abs(r - g)[finite] - rtol * np.abs(r[finite]), initial=0.0))
    step = 10.0 ** math.floor(math.log10(2 * need)) if need > 0 else 1e-4
    suggest = next(k * step for k in (1, 2, 5, 10) if k * step >= 2 * need)
    return (f"; the error is small relative to the output's magnitude (max abs {m['max_abs']:.2g} on values up to "
            f"{scale:.4g}: {m['max_abs'] / scale:.1e} of it), as float32 rounding on large values gives (pixel-space "
            f"boxes, unnormalised scores), not a wrong export; to accept it for this output: --tolerance "
            f"fp32/{name}:atol={suggest:.3g}")


def _rows_sorted(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])] if a.size else a


def vacuous_outputs(references: Sequence[dict[str, np.ndarray]], tol_of: ToleranceOf) -> dict[str, str]:
    """Outputs whose parity evidence proves nothing: empty on every golden sample, or every value
    below the absolute tolerance (a head initialised near zero) so that atol alone would pass
    anything. Returns {output: why}."""
    out: dict[str, str] = {}
    for name in references[0] if references else ():
        arrays = [np.asarray(ref[name]) for ref in references if name in ref]
        if all(a.size == 0 for a in arrays):
            out[name] = (f"parity evidence is vacuous for output {name!r}: empty on every golden sample; give "
                         "--example-inputs that produce non-empty outputs (e.g. images with detections)")
            continue
        atol = tol_of(name).atol
        scale = max((float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0)) for a in arrays if a.dtype.kind in "fc"),
                    default=None)
        if atol is not None and scale is not None and scale < atol:
            out[name] = (f"parity evidence is vacuous for output {name!r}: every value is below atol={atol:g} "
                         f"(max |ref| {scale:.3g}), so atol would pass anything; judged relative to the output's "
                         "scale instead")
    return out


def _scaled(tol: Tolerance, scale: float) -> Tolerance:
    """For an output whose values are all below ``tol.atol``: atol relative to its scale."""
    return replace(tol, atol=scale * (tol.rtol if tol.rtol is not None else 1e-3))


def judge_outputs(results: Sequence[RunResult], references: Sequence[dict[str, np.ndarray]], tol: Tolerance | ToleranceOf,
                  variant: str = "fp32", dynamic_note: Callable[[Sample], str] | None = None) -> ParityReport:
    """Judge collected outputs against ``references`` (one dict per sample, in the order the
    samples were collected) under ``tol`` (one Tolerance, or output name -> Tolerance).

    A run that failed on a sample fails every output for it; ``dynamic_note(sample)`` adds why
    when the sample put a dynamic axis at a second size (that is how a trace specialised to
    batch 1 shows up).
    """
    given: ToleranceOf = tol if callable(tol) else (lambda _output: tol)
    vacuous = vacuous_outputs(references, given)
    scales = {n: max((float(np.max(np.abs(ref[n][np.isfinite(ref[n])]), initial=0.0)) for ref in references
                      if n in ref and ref[n].dtype.kind in "fc"), default=0.0)
              for n in vacuous if "below atol" in vacuous[n]}

    def tol_of(output: str) -> Tolerance:
        t = given(output)
        return _scaled(t, scales[output]) if output in scales else t

    checks: list[OutputCheck] = []
    for r in results:
        ref = references[r.index]
        note = dynamic_note(r.sample) if dynamic_note else ""
        if r.outputs is None:
            why = f"{r.error}; {note}" if note else str(r.error)
            checks += [OutputCheck(r.runner, variant, n, r.sample.label, False, reason=why) for n in ref]
            continue
        checks += compare_outputs(r.runner, variant, r.sample.label, r.sample.describe(), ref, r.outputs, tol_of, note)
    outputs = list(references[0]) if references else []
    # the tolerances as given (recorded in bundles, so check re-derives the same scaling from them)
    return ParityReport(tuple(checks), {variant: {o: given(o).to_dict() for o in outputs}}, vacuous=vacuous)


def run_parity(candidates: Sequence[Runner], samples: Sequence[Sample], references: Sequence[dict[str, np.ndarray]],
               tol: Tolerance | ToleranceOf, variant: str = "fp32",
               dynamic_note: Callable[[Sample], str] | None = None) -> ParityReport:
    """:func:`collect_outputs` then :func:`judge_outputs`: every candidate on every sample,
    compared with ``references``."""
    return judge_outputs(collect_outputs(candidates, samples), references, tol, variant, dynamic_note)
