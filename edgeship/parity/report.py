"""Parity reports: one check per candidate × output × sample, their summary, JSON and JUnit."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edgeship import jsonout, schemas
from edgeship.bundle.golden import describe_sample


@dataclass(frozen=True)
class OutputCheck:
    """One output of one candidate on one sample (``candidate``: the bundle candidate's id where
    the runner ran one, as ``check`` does; None for a variant checked on a runtime's defaults)."""

    runner: str
    variant: str
    output: str
    sample: str
    passed: bool
    metrics: dict = field(default_factory=dict)
    reason: str | None = None
    candidate: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ParityReport:
    """All checks of a run, with the tolerances that applied."""

    checks: tuple[OutputCheck, ...]
    tolerances: dict = field(default_factory=dict)
    divergence: dict = field(default_factory=dict)  # variant -> first divergent node (localize.explain)
    vacuous: dict = field(default_factory=dict)  # output -> why its evidence proves nothing (evaluate.vacuous_outputs)
    skipped: dict = field(default_factory=dict)  # candidate id -> why it was not checked on this host
    runners: dict = field(default_factory=dict)  # runner name -> what it ran, in words (onnxruntime-web's version, the browser's)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def failures(self) -> list[OutputCheck]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> list[dict]:
        """One row per candidate (or runner) × variant × output: the worst figure over samples."""
        rows: dict[tuple, dict] = {}
        for c in self.checks:
            key = (c.candidate, c.runner, c.variant, c.output)
            row = rows.setdefault(key, {"candidate": c.candidate, "runner": c.runner, "variant": c.variant,
                                        "output": c.output, "samples": 0, "passed": True, "reason": None})
            row["samples"] += 1
            for k, v in c.metrics.items():
                worse = min if k in ("cosine", "snr_db", "top1", "token_agreement", "agreement") else max
                row[k] = worse(row[k], v) if k in row else v
            if not c.passed and row["passed"]:
                row["passed"], row["reason"] = False, f"[{c.sample}] {c.reason}"
        return list(rows.values())

    def to_dict(self) -> dict:
        return {"passed": self.passed, "tolerances": self.tolerances, "divergence": self.divergence,
                "warnings": list(self.vacuous.values()), "vacuous": self.vacuous, "skipped": self.skipped,
                "summary": self.summary(), "checks": [c.to_dict() for c in self.checks],
                "samples": {c.sample: describe_sample(c.sample) for c in self.checks},
                **({"runners": self.runners} if self.runners else {})}

    def merged(self, other: ParityReport) -> ParityReport:
        return ParityReport(self.checks + other.checks, {**self.tolerances, **other.tolerances},
                            {**self.divergence, **other.divergence}, {**self.vacuous, **other.vacuous},
                            {**self.skipped, **other.skipped}, {**self.runners, **other.runners})

    def of_candidate(self, candidate: str) -> ParityReport:
        """The same checks, each naming ``candidate`` (the bundle candidate its runner ran), and the
        tolerances keyed by it (two candidates of one variant may run at two precisions)."""
        return replace(self, checks=tuple(replace(c, candidate=candidate) for c in self.checks),
                       tolerances={candidate: next(iter(self.tolerances.values()), {})})

    def with_divergence(self, variant: str, where: dict | None) -> ParityReport:
        return replace(self, divergence={**self.divergence, variant: where}) if where else self


def write_json(report: ParityReport, path: Path) -> None:
    """The report as ``check``/``compare``/``export --json`` write it (its schema: ``edgeship/schemas/parity.json``)."""
    Path(path).write_text(jsonout.dumps({**schemas.header("parity"), **report.to_dict()}, indent=2))


def write_junit(report: ParityReport, path: Path, suite: str = "edgeship.parity") -> None:
    """One testcase per runner × variant × output; failures carry the metrics."""
    rows = report.summary()
    ts = ET.Element("testsuite", name=suite, tests=str(len(rows)),
                    failures=str(sum(not r["passed"] for r in rows)), errors="0", skipped="0")
    for r in rows:
        who = f"{r['candidate']}.{r['runner']}" if r.get("candidate") else f"{r['runner']}.{r['variant']}"
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{who}", name=r["output"])
        figures = ", ".join(f"{k}={r[k]:.6g}" for k in ("max_abs", "max_rel", "cosine", "snr_db", "top1", "outlier_frac",
                                                          "nonfinite_ref") if k in r)
        if not r["passed"]:
            f = ET.SubElement(tc, "failure", message=r["reason"] or "parity failed", type="ParityError")
            where = report.divergence.get(r["variant"])
            f.text = f"{r['reason']}\n{figures}" + (f"\nfirst divergent node: {where['node']} ({where['op_type']}): "
                                                   f"{where['hint']}" if where else "")
        else:
            ET.SubElement(tc, "system-out").text = figures
        if r["output"] in report.vacuous:  # a pass that proves nothing says so where CI shows it
            ET.SubElement(tc, "system-err").text = "WARNING: " + report.vacuous[r["output"]]
    if report.runners:  # what ran, where a name alone does not say it (onnxruntime-web's version, the browser's)
        props = ET.Element("properties")
        for name, what in report.runners.items():
            ET.SubElement(props, "property", name=f"runner.{name}", value=what)
        ts.insert(0, props)
    root = ET.Element("testsuites")
    root.append(ts)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
