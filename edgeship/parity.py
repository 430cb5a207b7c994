"""Parity: metrics, tolerances, reports and their JSON/JUnit writers.

Every candidate is compared with the eager reference (never chained), per output and per
golden sample. Metrics: max abs, max rel, mean abs, cosine similarity, SNR (dB), top-1
agreement (for ``[batch, classes]`` score outputs) and the fraction of elements outside
``atol + rtol * |ref|``. Numpy only: ``edgeship check`` runs without torch.

Non-finite values are never hidden: ``nonfinite_ref`` counts the NaN/Inf elements of the
reference (shown in the table, JSON and JUnit), a candidate NaN/Inf where the reference has
another value fails (``nonfinite_mismatch``), and a reference with any NaN fails, since NaN
matching NaN proves nothing (usually NaN/Inf golden inputs, or a model that makes NaN on them).
Matching infinities (e.g. -inf in masked logits) pass.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from edgeship.errors import brief
from edgeship.spec import format_shape


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria; ``None`` means the criterion is not applied."""

    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    min_top1: float | None = None
    max_outlier_frac: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


DEFAULT_TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, max_outlier_frac=0.0),
    "fp16": Tolerance(min_cosine=0.999),
    "int8": Tolerance(min_cosine=0.99, min_top1=0.99),
}


TOLERANCE_KEYS = ("atol", "rtol", "min_cosine", "min_top1", "max_outlier_frac")
TOLERANCE_SYNTAX = "[PRECISION[/OUTPUT]:|*/OUTPUT:]KEY=VALUE, e.g. int8/logits:min_top1=0.98 or fp32:atol=1e-3"


def tolerance_for(precision: str) -> Tolerance:
    """The default tolerance of a precision (fp32's for an unknown one)."""
    return DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"])


@dataclass(frozen=True)
class Tolerances:
    """Per precision and per output tolerances: defaults, then scoped overrides.

    Scopes, from weakest to strongest: ``fp32`` (a precision), ``*/logits`` (an output in every
    precision), ``int8/logits`` (an output in one precision). Values come from the built-in
    defaults, then the project's config file, then the command line.
    """

    overrides: dict = field(default_factory=dict)  # scope -> {key: value}

    def get(self, precision: str, output: str) -> Tolerance:
        return self.apply(tolerance_for(precision), precision, output)

    def apply(self, tol: Tolerance, precision: str, output: str) -> Tolerance:
        """``tol`` with this set's overrides for (precision, output) on top."""
        for scope in (precision, f"*/{output}", f"{precision}/{output}"):
            if scope in self.overrides:
                tol = replace(tol, **self.overrides[scope])
        return tol

    def for_precision(self, precision: str):
        """A callable output -> Tolerance, for :func:`run_parity`."""
        return lambda output: self.get(precision, output)

    def merged(self, other: Tolerances | dict) -> Tolerances:
        """``other`` wins where both set a key."""
        extra = other.overrides if isinstance(other, Tolerances) else other
        out = {k: dict(v) for k, v in self.overrides.items()}
        for scope, values in extra.items():
            out.setdefault(scope, {}).update(values)
        return Tolerances(out)

    @classmethod
    def from_dict(cls, data: dict, where: str = "tolerances") -> Tolerances:
        from edgeship.errors import SpecError

        if not isinstance(data, dict):
            raise SpecError(f"{where} must be a table of scopes (fp32, int8/logits, */embedding, ...).")
        out = {}
        for scope, values in data.items():
            _check_scope(scope, where)
            if not isinstance(values, dict):
                raise SpecError(f"{where}.{scope} must be a table of {', '.join(TOLERANCE_KEYS)}.")
            out[scope] = {k: _check_value(k, v, f"{where}.{scope}") for k, v in values.items()}
        return cls(out)


def _check_scope(scope: str, where: str) -> None:
    from edgeship.errors import SpecError

    precision, _, output = scope.partition("/")
    if precision not in (*DEFAULT_TOLERANCES, "*") or (precision == "*" and not output):
        raise SpecError(f"{where}: scope {scope!r} must be a precision ({', '.join(DEFAULT_TOLERANCES)}), "
                        "PRECISION/OUTPUT or */OUTPUT.")


def _check_value(key: str, value, where: str) -> float:
    from edgeship.errors import SpecError

    if key not in TOLERANCE_KEYS:
        raise SpecError(f"{where}: unknown tolerance {key!r}; use {', '.join(TOLERANCE_KEYS)}.")
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise SpecError(f"{where}: {key} must be a number, got {value!r}.") from e
    if not math.isfinite(v) or v < 0 or (key.startswith("min_") or key == "max_outlier_frac") and v > 1:
        raise SpecError(f"{where}: {key}={value!r} is out of range (must be ≥ 0{', ≤ 1' if key != 'atol' and key != 'rtol' else ''}).")
    return v


def parse_tolerance(text: str) -> tuple[str, str, float]:
    """``int8/logits:min_top1=0.98`` -> ("int8/logits", "min_top1", 0.98); no scope means every precision."""
    from edgeship.errors import SpecError

    scope, sep, rest = text.rpartition(":")
    key, eq, value = rest.partition("=")
    if not eq or not key:
        raise SpecError(f"cannot read --tolerance {text!r}: expected {TOLERANCE_SYNTAX}.")
    key = key.strip()
    if sep:
        _check_scope(scope, "--tolerance")
    return (scope if sep else "*"), key, _check_value(key, value.strip(), "--tolerance")


def tolerances_from_options(items: list[str]) -> dict:
    """Repeated --tolerance options as a scope -> {key: value} dict (``*`` = every precision)."""
    out: dict = {}
    for item in items:
        scope, key, value = parse_tolerance(item)
        scopes = list(DEFAULT_TOLERANCES) if scope == "*" else [scope]
        for sc in scopes:
            out.setdefault(sc, {})[key] = value
    return out


def is_score_vector(ref: np.ndarray) -> bool:
    """A ``[batch, classes]`` float output whose rows are not unit vectors: logits or scores,
    where top-1 agreement means something (an L2-normalised embedding is not one)."""
    if ref.ndim != 2 or ref.shape[1] < 2 or ref.dtype.kind != "f":
        return False
    norms = np.linalg.norm(ref.astype(np.float64), axis=1)
    return not np.allclose(norms, 1.0, atol=1e-3)


def metrics(ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> dict:
    """Compare two arrays of the same shape; all figures as plain floats."""
    r = np.asarray(ref, dtype=np.float64)
    g = np.asarray(got, dtype=np.float64)
    finite = np.isfinite(r) & np.isfinite(g)
    nonfinite_mismatch = int(np.count_nonzero(~finite & ~((r == g) | (np.isnan(r) & np.isnan(g)))))
    diff = np.abs(np.where(finite, r, 0.0) - np.where(finite, g, 0.0))  # no inf - inf warnings
    out = {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "max_rel": float((diff / np.maximum(np.abs(np.where(finite, r, 0)), 1e-12)).max()) if diff.size else 0.0,
        "nonfinite_mismatch": nonfinite_mismatch,
        "nonfinite_ref": int(np.count_nonzero(~np.isfinite(r))),
        "nan_ref": int(np.count_nonzero(np.isnan(r))),
    }
    rf, gf = np.where(finite, r, 0).ravel(), np.where(finite, g, 0).ravel()
    nr, ng = float(np.linalg.norm(rf)), float(np.linalg.norm(gf))
    out["cosine"] = 1.0 if nr == ng == 0 else (float(rf @ gf / (nr * ng)) if nr and ng else 0.0)
    noise = float(np.sum((rf - gf) ** 2))
    out["snr_db"] = math.inf if noise == 0 else (10 * math.log10(float(np.sum(rf**2)) / noise) if nr else -math.inf)
    if is_score_vector(ref):
        out["top1"] = float(np.mean(r.argmax(1) == g.argmax(1)))
    atol = tol.atol if tol.atol is not None else 1e-4
    rtol = tol.rtol if tol.rtol is not None else 1e-3
    outside = (diff > atol + rtol * np.abs(np.where(finite, r, 0))) | (~finite & (r != g))
    out["outlier_frac"] = float(outside.mean()) if outside.size else 0.0
    return out


def judge(m: dict, tol: Tolerance) -> str | None:
    """Return why ``m`` misses ``tol``, or None when it passes."""
    if m.get("nan_ref"):
        return (f"the reference has {m['nan_ref']} NaN value(s), which prove nothing about the candidate "
                "(NaN/Inf in the golden inputs, or a model that makes NaN on them); use finite inputs "
                "in the model's domain (--example-inputs)")
    if m.get("nonfinite_mismatch"):
        return f"{m['nonfinite_mismatch']} NaN/Inf values that the reference does not have"
    if tol.max_outlier_frac is not None and m["outlier_frac"] > tol.max_outlier_frac:
        return (f"{m['outlier_frac']:.2%} of elements outside atol={tol.atol} + rtol={tol.rtol}·|ref| "
                f"(max abs {m['max_abs']:.3g}, allowed fraction {tol.max_outlier_frac:.2%})")
    if tol.min_cosine is not None and m["cosine"] < tol.min_cosine:
        return f"cosine {m['cosine']:.6f} < {tol.min_cosine}"
    if tol.min_top1 is not None and "top1" in m and m["top1"] < tol.min_top1:
        return f"top-1 agreement {m['top1']:.3f} < {tol.min_top1}"
    return None


@dataclass(frozen=True)
class OutputCheck:
    """One output of one candidate on one sample."""

    runner: str
    variant: str
    output: str
    sample: str
    passed: bool
    metrics: dict = field(default_factory=dict)
    reason: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ParityReport:
    """All checks of a run, with the tolerances that applied."""

    checks: tuple[OutputCheck, ...]
    tolerances: dict = field(default_factory=dict)
    divergence: dict = field(default_factory=dict)  # variant -> first divergent node (localize.explain)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def failures(self) -> list[OutputCheck]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> list[dict]:
        """One row per runner × variant × output: the worst figure over samples."""
        rows: dict[tuple, dict] = {}
        for c in self.checks:
            key = (c.runner, c.variant, c.output)
            row = rows.setdefault(key, {"runner": c.runner, "variant": c.variant, "output": c.output,
                                        "samples": 0, "passed": True, "reason": None})
            row["samples"] += 1
            for k, v in c.metrics.items():
                worse = min if k in ("cosine", "snr_db", "top1") else max
                row[k] = worse(row[k], v) if k in row else v
            if not c.passed and row["passed"]:
                row["passed"], row["reason"] = False, f"[{c.sample}] {c.reason}"
        return list(rows.values())

    def to_dict(self) -> dict:
        return {"passed": self.passed, "tolerances": self.tolerances, "divergence": self.divergence,
                "summary": self.summary(), "checks": [c.to_dict() for c in self.checks]}

    def merged(self, other: ParityReport) -> ParityReport:
        return ParityReport(self.checks + other.checks, {**self.tolerances, **other.tolerances},
                            {**self.divergence, **other.divergence})

    def with_divergence(self, variant: str, where: dict | None) -> ParityReport:
        return replace(self, divergence={**self.divergence, variant: where}) if where else self


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


def write_json(report: ParityReport, path: Path) -> None:
    Path(path).write_text(json.dumps(report.to_dict(), indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    raise TypeError(type(o).__name__)


def write_junit(report: ParityReport, path: Path, suite: str = "edgeship.parity") -> None:
    """One testcase per runner × variant × output; failures carry the metrics."""
    rows = report.summary()
    ts = ET.Element("testsuite", name=suite, tests=str(len(rows)),
                    failures=str(sum(not r["passed"] for r in rows)), errors="0", skipped="0")
    for r in rows:
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{r['runner']}.{r['variant']}", name=r["output"])
        figures = ", ".join(f"{k}={r[k]:.6g}" for k in ("max_abs", "max_rel", "cosine", "snr_db", "top1", "outlier_frac",
                                                          "nonfinite_ref") if k in r)
        if not r["passed"]:
            f = ET.SubElement(tc, "failure", message=r["reason"] or "parity failed", type="ParityError")
            where = report.divergence.get(r["variant"])
            f.text = f"{r['reason']}\n{figures}" + (f"\nfirst divergent node: {where['node']} ({where['op_type']}): "
                                                   f"{where['hint']}" if where else "")
        else:
            ET.SubElement(tc, "system-out").text = figures
    root = ET.Element("testsuites")
    root.append(ts)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
