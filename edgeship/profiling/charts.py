"""report.html's units and charts: one unit per column, and the inline SVG latency charts
(distribution per configuration with clipped calls marked and counted, p50 per call and per item).
No script, no external resource."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

import numpy as np

from edgeship.profiling.stats import format_ms

if TYPE_CHECKING:
    from edgeship.profiling.profiler import ConfigResult

PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#a463f2", "#97bbf5", "#9c6b4e")

_UNITS = (("µs", 1e-3), ("ms", 1.0), ("s", 1e3))  # name, milliseconds per unit
_SIZES = (("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30))
DOTS = 300  # most dots drawn per configuration; more calls are sampled evenly
_DIST_LEFT, _DIST_RIGHT = 300, 830  # the distribution chart's plot area, in pixels


def time_unit(values_ms: Iterable[float | None]) -> tuple[str, float]:
    """The one unit a column of times is shown in: the largest in which its median is at least 1.

    Args:
        values_ms: the column's values in milliseconds; None and NaN are skipped.

    Returns:
        (name, milliseconds per unit), e.g. ("µs", 1e-3); ("ms", 1.0) for an empty column.
    """
    finite = [v for v in values_ms if v is not None and math.isfinite(v) and v > 0]
    if not finite:
        return _UNITS[1]
    median = float(np.median(finite))
    return next((u for u in reversed(_UNITS) if median >= u[1]), _UNITS[0])


def size_unit(sizes: Iterable[int]) -> tuple[str, int]:
    """The one unit a column of byte sizes is shown in, chosen like :func:`time_unit`."""
    positive = [s for s in sizes if s > 0]
    median = float(np.median(positive)) if positive else 1.0
    return next((u for u in reversed(_SIZES) if median >= u[1]), _SIZES[0])


def number(v: float | None) -> str:
    """Three significant figures in fixed point, thousands separated ("0.952", "3.47", "1,240"); "—" for none."""
    if v is None or not math.isfinite(v):
        return "—"
    if abs(v) < 1e-9:  # zero, or float noise (a std of identical calls): below any clock's resolution
        return "0"
    decimals = min(max(0, 2 - math.floor(math.log10(abs(v)))), 9)
    return f"{v:,.{decimals}f}"


def in_unit(v: float | None, unit: tuple[str, float]) -> str:
    """``v`` (ms or bytes) as a plain number in ``unit``."""
    return number(None if v is None else v / unit[1])


def _tick(v: float, unit: tuple[str, float]) -> str:
    """An axis tick in ``unit``, as short as it reads exactly ("0.5", "20")."""
    return f"{round(v / unit[1], 9):g}"


# ----------------------------------------------------------------------------- scales
@dataclass(frozen=True)
class _Axis:
    """A scale from values (ms) to pixels: ``at(v)``, its ticks, its last value and its kind."""

    at: Callable[[float], float]
    ticks: list[float]
    end: float
    log: bool


def _nice(span: float) -> float:
    """The smallest round step (1, 2 or 5 × 10^k) that cuts ``span`` into at most 6 intervals."""
    exp = (math.floor(math.log10(span)) if span > 0 else 0) - 1
    for m in (1, 2, 5, 10, 20, 50):
        if span / (m * 10**exp) <= 6:
            return m * 10**exp
    return 10 ** (exp + 2)


def _linear(hi: float, p0: float, p1: float) -> _Axis:
    """A linear scale from 0 to a round number above ``hi``, mapped onto [p0, p1]."""
    step = _nice(max(hi, 1e-9) * 1.05)
    top = step * math.ceil(max(hi, 1e-9) * 1.05 / step)
    ticks = [i * step for i in range(int(round(top / step)) + 1)]
    return _Axis(lambda v: p0 + v / top * (p1 - p0), ticks, top, False)


def _scale(lo: float, hi: float, p0: float, p1: float) -> _Axis:
    """Log when the values span more than 20×, else linear from 0."""
    lo, hi = max(lo, 1e-6), max(hi, lo * 1.01, 1e-6)
    if hi / lo <= 20:
        return _linear(hi, p0, p1)
    a, b = math.log10(lo) - 0.05, math.log10(hi) + 0.05
    ticks = [m * 10**e for e in range(math.floor(a), math.ceil(b) + 1) for m in (1, 2, 5) if a <= math.log10(m * 10**e) <= b]
    return _Axis(lambda v: p0 + (math.log10(max(v, 1e-9)) - a) / (b - a) * (p1 - p0), ticks, 10**b, True)


# ----------------------------------------------------------------------------- charts
def distribution_svg(results: Iterable[ConfigResult]) -> str:
    """One row per configuration: dots for calls, box p25–p75, whiskers p1–p99, bar at p50.

    The axis ends near 1.5 × the highest p99 (or at the slowest call, when that is nearer), so one
    stall does not squash every box; calls beyond the end are not drawn but counted at the row's
    right end (a red ▸ with the count and the slowest call).
    """
    rows = [(r, np.asarray(r.latencies_ms)) for r in results if r.latencies_ms is not None and len(r.latencies_ms)]
    if not rows:
        return ""
    left, right, width, top, row_h = _DIST_LEFT, _DIST_RIGHT, 1020, 24, 30
    height = top + row_h * len(rows) + 40
    qs = [np.percentile(a, [1, 25, 50, 75, 99]) for _, a in rows]
    lo = min(float(a.min()) for _, a in rows)
    slowest = max(float(a.max()) for _, a in rows)
    axis = _scale(lo, min(slowest, 1.5 * max(float(q[4]) for q in qs)), left, right)
    unit = time_unit([axis.end])
    rng = np.random.default_rng(0)
    out = [f'<svg id="chart-distribution" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           'aria-label="latency distribution per configuration">']
    for t in axis.ticks:
        out.append(f'<line class="grid" x1="{axis.at(t):.1f}" x2="{axis.at(t):.1f}" y1="{top - 6}" y2="{height - 34}"/>'
                   f'<text x="{axis.at(t):.1f}" y="{height - 18}" text-anchor="middle">{_tick(t, unit)}</text>')
    for i, ((r, a), q) in enumerate(zip(rows, qs)):
        out.append(_distribution_row(r, a, q, top + i * row_h + row_h / 2, PALETTE[i % len(PALETTE)], axis, unit, rng))
    out.append(f'<text x="{(left + right) / 2}" y="{height - 2}" text-anchor="middle">latency per call '
               f'({unit[0]}, {"log scale" if axis.log else "linear scale"})</text></svg>')
    return "".join(out)


def _distribution_row(r: ConfigResult, a: np.ndarray, q: np.ndarray, y: float, color: str, axis: _Axis,
                      unit: tuple[str, float], rng: np.random.Generator) -> str:
    """One configuration's dots (``a``: its calls, ms), box, whiskers and median (``q``: p1, p25, p50,
    p75, p99), and the marker of its clipped calls."""
    p1, p25, p50, p75, p99 = (float(v) for v in q)
    inside, beyond = a[a <= axis.end], a[a > axis.end]
    pts = inside if inside.size <= DOTS else inside[np.linspace(0, inside.size - 1, DOTS).astype(int)]
    jitter = rng.uniform(-9.6, 9.6, size=pts.size)
    x = axis.at
    out = [f'<text x="{_DIST_LEFT - 10}" y="{y + 4:.1f}" text-anchor="end">{escape(r.label)}</text>',
           f'<g fill="{color}" fill-opacity="0.28">'
           + "".join(f'<circle cx="{x(v):.1f}" cy="{y + j:.1f}" r="1.6"/>' for v, j in zip(pts, jitter)) + "</g>",
           f'<line class="axis" x1="{x(p1):.1f}" x2="{x(p99):.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
           f'<rect x="{x(p25):.1f}" y="{y - 8:.1f}" width="{max(x(p75) - x(p25), 1):.1f}" height="16" '
           f'fill="{color}" fill-opacity="0.35" stroke="{color}"/>'
           f'<line x1="{x(p50):.1f}" x2="{x(p50):.1f}" y1="{y - 10:.1f}" y2="{y + 10:.1f}" stroke="#1d2329" stroke-width="2.5">'
           f"<title>{escape(r.label)}: p50 {format_ms(r.stats.p50)}, p99 {format_ms(r.stats.p99)}</title></line>"]
    if beyond.size:
        out.append(_clipped_marker(int(beyond.size), float(beyond.max()), x(axis.end), y, unit))
    return "".join(out)


def _clipped_marker(count: int, slowest_ms: float, x: float, y: float, unit: tuple[str, float]) -> str:
    """A red ▸ at the axis end: ``count`` calls were slower than the axis shows, up to ``slowest_ms``."""
    return (f'<g class="clipped" data-clipped="{count}"><title>{count} call(s) beyond the axis end, not drawn; '
            f"the slowest took {format_ms(slowest_ms)}</title>"
            f'<path d="M{x + 3:.1f},{y - 6:.1f} l9,6 l-9,6 z" fill="#cf222e"/>'
            f'<text x="{x + 16:.1f}" y="{y + 4:.1f}">{count} beyond, max {in_unit(slowest_ms, unit)} {unit[0]}</text></g>')


def p50_svg(results: Iterable[ConfigResult], per_item: bool = False) -> str:
    """Grouped bars: p50 per (target/variant, batch) group, one bar per thread count.

    Args:
        results: the configurations.
        per_item: show p50 ÷ batch (latency per item) instead of p50 per call.
    """
    results = list(results)
    if not results:
        return ""

    def value(r: ConfigResult) -> float:
        return r.stats.p50 / r.batch if per_item else r.stats.p50

    threads = sorted({r.threads for r in results})
    groups: dict[tuple, dict] = {}
    for r in results:
        groups.setdefault((r.target, r.variant, r.batch), {})[r.threads] = r
    left, top, plot_h, bar_w, gap = 70, 30, 240, 22, 26
    group_w = max(len(threads) * bar_w, 7 * max(len(f"{t}/{v}") for t, v, _ in groups))  # room for the label
    width = max(520, left + len(groups) * (group_w + gap) + 40)
    height = top + plot_h + 70
    axis = _linear(max(value(r) for r in results), top + plot_h, top)
    unit = time_unit([axis.end])
    what = "per item" if per_item else "per call"
    out = [f'<svg id="chart-p50{"-item" if per_item else ""}" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="p50 {what} by threads and batch">']
    for t in axis.ticks:
        out.append(f'<line class="grid" x1="{left}" x2="{width - 20}" y1="{axis.at(t):.1f}" y2="{axis.at(t):.1f}"/>'
                   f'<text x="{left - 6}" y="{axis.at(t) + 4:.1f}" text-anchor="end">{_tick(t, unit)}</text>')
    x = left + gap / 2
    for (target, variant, batch), by_t in groups.items():
        x0 = x + (group_w - len(threads) * bar_w) / 2
        for k, t in enumerate(threads):
            bar = by_t.get(t)
            if bar is not None:
                h = top + plot_h - axis.at(value(bar))
                out.append(f'<rect x="{x0 + k * bar_w:.1f}" y="{axis.at(value(bar)):.1f}" width="{bar_w - 3}" '
                           f'height="{max(h, 0.5):.1f}" fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(bar.label)}: '
                           f"p50 {what} {format_ms(value(bar))}</title></rect>")
        mid = x + group_w / 2
        out.append(f'<text x="{mid:.1f}" y="{top + plot_h + 16}" text-anchor="middle">batch {batch}</text>'
                   f'<text x="{mid:.1f}" y="{top + plot_h + 31}" text-anchor="middle">{escape(f"{target}/{variant}")}</text>')
        x += group_w + gap
    out.append(f'<line class="axis" x1="{left}" x2="{width - 20}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    for k, t in enumerate(threads):
        out.append(f'<rect x="{left + k * 110}" y="{height - 22}" width="12" height="12" fill="{PALETTE[k % len(PALETTE)]}"/>'
                   f'<text x="{left + k * 110 + 17}" y="{height - 12}">threads {t}</text>')
    out.append(f'<text x="{left}" y="{top - 12}">p50 latency {what} ({unit[0]})</text></svg>')
    return "".join(out)


# ----------------------------------------------------------------------------- sections
