"""Latency figures: the statistics of a timed run and how they are written for people."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def format_ms(ms: float | None) -> str:
    """Milliseconds to three significant figures in µs, ms or s ("6.39 µs", "1.72 ms")."""
    if ms is None or ms != ms:
        return "—"
    for value, unit in ((ms * 1e3, "µs"), (ms, "ms"), (ms / 1e3, "s")):
        text = f"{value:.3g}"
        if "e" not in text and float(text) < 1000:
            return f"{text} {unit}"
    return f"{ms / 1e3:.0f} s"



@dataclass(frozen=True)
class Stats:
    """Latency statistics in milliseconds over ``count`` timed calls (std with ddof=1)."""

    count: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, latencies_ms) -> Stats:
        a = np.asarray(latencies_ms, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no latencies to summarise")
        p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
        return cls(int(a.size), float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0,
                   float(a.min()), float(p50), float(p90), float(p95), float(p99), float(a.max()))

    def to_dict(self) -> dict:
        return asdict(self)
