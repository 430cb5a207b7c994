"""The CI gate of the profiler: p50 per configuration against a baseline ``profile --json`` file.

Configurations are keyed by (target, variant, threads, batch). One that regressed by more than
``max_regression`` fails the gate (:class:`RegressionError`, exit 1) with both figures named;
configurations present on one side only are listed as ``missing`` or ``new``, never dropped
silently, and a baseline that shares no configuration with the run is a usage error.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edgeship import schemas
from edgeship.errors import RegressionError, SpecError

MAX_BASELINE_BYTES = 64 << 20  # a profile JSON of thousands of configurations with --per-op is a few MiB


def config_label(target: str, variant: str, threads: int, batch: int) -> str:
    return f"{target}/{variant} threads={threads} batch={batch}"


def parse_percent(text: str | float) -> float:
    """``"10%"`` or ``"10"`` -> 0.10."""
    try:
        value = float(str(text).strip().removesuffix("%"))
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise SpecError(f"--max-regression {text!r}: give a percentage such as 10% (or 10).")
    return value / 100


@dataclass(frozen=True)
class Delta:
    """p50 of one configuration in the baseline and now; status ok | regressed | new | missing."""

    target: str
    variant: str
    threads: int
    batch: int
    baseline_ms: float | None
    current_ms: float | None
    status: str

    @property
    def label(self) -> str:
        return config_label(self.target, self.variant, self.threads, self.batch)

    @property
    def change(self) -> float | None:
        return None if not self.baseline_ms or self.current_ms is None else self.current_ms / self.baseline_ms - 1

    def to_dict(self) -> dict:
        return {"target": self.target, "variant": self.variant, "threads": self.threads, "batch": self.batch,
                "baseline_p50_ms": self.baseline_ms, "current_p50_ms": self.current_ms, "change": self.change,
                "status": self.status}


@dataclass(frozen=True)
class Comparison:
    """p50 per configuration against a baseline profile; ``check()`` is the CI gate."""

    baseline: str
    max_regression: float
    rows: tuple[Delta, ...]

    @property
    def regressed(self) -> list[Delta]:
        return [r for r in self.rows if r.status == "regressed"]

    @property
    def unmatched(self) -> list[Delta]:
        return [r for r in self.rows if r.status in ("new", "missing")]

    @property
    def passed(self) -> bool:
        return not self.regressed

    def message(self) -> str:
        parts = []
        if self.regressed:
            parts.append(f"p50 latency regressed more than {self.max_regression:.0%} against {self.baseline} in "
                         f"{len(self.regressed)} configuration(s): " + "; ".join(
                             f"{r.label}: {r.current_ms:.4g} ms vs baseline {r.baseline_ms:.4g} ms ({r.change:+.1%})"
                             for r in self.regressed))
        for status, what in (("missing", "in the baseline but not measured now"), ("new", "measured now but not in the baseline")):
            rows = [r.label for r in self.unmatched if r.status == status]
            if rows:
                parts.append(f"{len(rows)} configuration(s) {what}: {', '.join(rows)}")
        return ". ".join(parts) or f"no configuration regressed more than {self.max_regression:.0%}"

    def check(self) -> None:
        """Raise RegressionError (exit 1) naming every regressed configuration and both figures."""
        if self.regressed:
            raise RegressionError(self.message() + ".")

    def to_dict(self) -> dict:
        return {"baseline": self.baseline, "max_regression": self.max_regression, "passed": self.passed,
                "rows": [r.to_dict() for r in self.rows]}


def read_baseline(path: str | os.PathLike) -> dict[tuple[str, str, int, int], float]:
    """p50 (ms) by (target, variant, threads, batch) from a ``profile --json`` file.

    Any version up to this edgeship's is read (a file without ``schema_version``, written before it
    existed, is version 1); keys it does not know are ignored.

    Raises:
        SpecError: unreadable, not a regular file (a FIFO is refused without blocking), over
            :data:`MAX_BASELINE_BYTES`, nested too deeply, not a profile, or of a newer ``schema_version`` than this edgeship reads.
    """
    from edgeship.fileio import read_bounded

    where = f"--baseline {path}"
    # no FIFO, device or folder (never blocks), nothing read past the bound
    raw = read_bounded(Path(path), where, SpecError, MAX_BASELINE_BYTES,
                       "No profile JSON is that large; pass a file written by `edgeship profile --json`.")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecError(f"{where}: not a profile JSON written by `edgeship profile --json` ({e!r}).") from e
    except RecursionError as e:
        raise SpecError(f"{where}: nests its arrays or objects too deeply to be a profile JSON; pass a file "
                        "written by `edgeship profile --json`.") from e
    schemas.check_version(data, "profile", where)
    try:
        return {(r["target"], r["variant"], int(r["threads"]), int(r["batch"])): float(r["stats"]["p50"])
                for r in data["results"]}
    except (ValueError, KeyError, TypeError, OverflowError) as e:
        raise SpecError(f"--baseline {path}: not a profile JSON written by `edgeship profile --json` ({e!r}).") from e


def compare(report, baseline: str | os.PathLike, max_regression: float = 0.10) -> Comparison:
    """Compare p50 per configuration; configurations on one side only are listed, not dropped.

    Raises:
        SpecError: the baseline is unreadable or shares no configuration with ``report``.
    """
    base = read_baseline(baseline)
    now = {r.key: r.stats.p50 for r in report.results}
    if not set(base) & set(now):
        raise SpecError(f"--baseline {baseline} shares no configuration with this run (baseline: "
                        f"{', '.join(config_label(*k) for k in base) or 'none'}); profile the same --target, "
                        "--variant, --threads and --batch.")
    rows = []
    for k in list(now) + [k for k in base if k not in now]:
        b, c = base.get(k), now.get(k)
        status = "missing" if c is None else "new" if b is None else "regressed" if c > b * (1 + max_regression) else "ok"
        rows.append(Delta(k[0], k[1], k[2], k[3], b, c, status))
    return Comparison(str(baseline), max_regression, tuple(rows))
