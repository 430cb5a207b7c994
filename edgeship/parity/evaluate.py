"""Running candidates, then judging their outputs: the one parity path of export, check and compare.

:func:`collect_outputs` runs each candidate on every sample and keeps what it returned (or why
it failed); :func:`judge_outputs` compares those outputs with the references under the
tolerances. :func:`run_parity` is the two in a row.
"""

from __future__ import annotations

from edgeship.errors import brief
from edgeship.parity.metrics import judge, metrics
from edgeship.parity.report import OutputCheck, ParityReport
from edgeship.spec import format_shape


def compare_outputs(runner: str, variant: str, sample: str, sizes: str, ref: dict, got: dict,
                    tol_of, note: str = "") -> list[OutputCheck]:
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
        checks.append(OutputCheck(runner, variant, name, sample, why is None, m, why))
    return checks


def run_parity(candidates, samples, references: list[dict], tol, variant: str = "fp32",
               dynamic_note=None) -> ParityReport:
    """Run each candidate runner on every sample and compare with ``references``.

    ``tol`` is one Tolerance for every output, or a callable output name -> Tolerance.

    A runner that raises on a sample fails every output for it, with the sample's axis sizes
    in the reason (that is how a trace specialised to batch 1 shows up).
    """
    tol_of = tol if callable(tol) else (lambda _output: tol)
    checks = []
    for runner in candidates:
        for sample, ref in zip(samples, references):
            sizes = sample.describe()
            try:
                got = runner.infer(sample.feeds)
            except Exception as e:
                why = f"{runner.name} failed on sample {sample.label} ({sizes}): {brief(e)}"
                if dynamic_note:
                    why += "; " + dynamic_note(sample)
                checks += [OutputCheck(runner.name, variant, n, sample.label, False, reason=why) for n in ref]
                continue
            note = dynamic_note(sample) if dynamic_note else ""
            checks += compare_outputs(runner.name, variant, sample.label, sizes, ref, got, tol_of, note)
    outputs = list(references[0]) if references else []
    return ParityReport(tuple(checks), {variant: {o: tol_of(o).to_dict() for o in outputs}})
