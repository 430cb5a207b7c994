"""report.html: a self-contained page (no scripts, no network, no CDN) with inline SVG charts.

Sections, top to bottom: a summary (one row per target × variant: the default ★, precision, size,
parity, p50 per call and per item, cold start), the export's stages (when written by ``edgeship
export --profile``), parity (the export's checks, the bundle's recorded parity, or a line saying a
raw .onnx file has none), the latency table, a latency distribution per configuration (box from
p25 to p75, whiskers p1 to p99, the median as a bar, calls as dots, calls beyond the axis counted
at its end), p50 per call and per item by threads and batch (grouped bars), the baseline
comparison when there is one, and onnxruntime's per-op breakdown.

Every table column shows one unit, named in its header; every chart axis one unit, named in its
title. Everything from a bundle (names, precisions) is escaped. SVG is written here, in Python.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeship.profiling.timing import KERNEL_TIME, RSS_NOT_MEASURED, format_ms

if TYPE_CHECKING:
    from edgeship.profiling.baseline import Comparison
    from edgeship.profiling.profiler import ConfigResult, ProfileReport

_PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#a463f2", "#97bbf5", "#9c6b4e")
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2329;margin:24px auto;max-width:1240px;padding:0 16px}
.scroll{overflow-x:auto}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde1e6;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#5c6670;margin:2px 0}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e6e9ed;padding:3px 8px;font-size:13px;text-align:right;white-space:nowrap}
th{background:#f4f6f8;font-weight:600}td.l,th.l{text-align:left}th.wrap{white-space:normal;min-width:17em}
td.star{color:#bf8700;font-size:15px;text-align:center}
.ok{color:#1a7f37}.bad{color:#cf222e;font-weight:600}.warn{color:#9a6700}
.charts{display:flex;flex-wrap:wrap;gap:8px 28px}.charts figcaption{width:0;min-width:100%}
figure{margin:12px 0 20px}figcaption{color:#5c6670;font-size:13px;max-width:900px}svg text{font:12px system-ui,sans-serif;fill:#1d2329}
svg .axis{stroke:#8c959f;stroke-width:1}svg .grid{stroke:#e6e9ed;stroke-width:1}svg .clipped text{fill:#cf222e}
"""
_UNITS = (("µs", 1e-3), ("ms", 1.0), ("s", 1e3))  # name, milliseconds per unit
_SIZES = (("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30))
_DOTS = 300  # most dots drawn per configuration; more calls are sampled evenly
_DIST_LEFT, _DIST_RIGHT = 300, 830  # the distribution chart's plot area, in pixels


def _table(head: list[str], rows: list[list], cls: str = "", left: int | set = 1, wrap: set | None = None) -> str:
    """An HTML table; ``left``: the first N columns, or a set of column indices, align left;
    ``wrap``: indices of header cells that may wrap."""
    lefts = set(range(left)) if isinstance(left, int) else left
    wraps = wrap or set()
    ths = []
    for i, h in enumerate(head):
        klass = " ".join(k for k in ("l" if i in lefts else "", "wrap" if i in wraps else "") if k)
        ths.append(f'<th class="{klass}">{escape(h)}</th>' if klass else f"<th>{escape(h)}</th>")
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            text, klass = c if isinstance(c, tuple) else (c, "")
            klass = " ".join(k for k in ("l" if i in lefts else "", klass) if k)
            cells.append(f'<td class="{klass}">{escape(str(text))}</td>' if klass else f"<td>{escape(str(text))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{"".join(ths)}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# ----------------------------------------------------------------------------- units
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


def _in(v: float | None, unit: tuple[str, float]) -> str:
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
        out.append(_distribution_row(r, a, q, top + i * row_h + row_h / 2, _PALETTE[i % len(_PALETTE)], axis, unit, rng))
    out.append(f'<text x="{(left + right) / 2}" y="{height - 2}" text-anchor="middle">latency per call '
               f'({unit[0]}, {"log scale" if axis.log else "linear scale"})</text></svg>')
    return "".join(out)


def _distribution_row(r: ConfigResult, a: np.ndarray, q: np.ndarray, y: float, color: str, axis: _Axis,
                      unit: tuple[str, float], rng: np.random.Generator) -> str:
    """One configuration's dots (``a``: its calls, ms), box, whiskers and median (``q``: p1, p25, p50,
    p75, p99), and the marker of its clipped calls."""
    p1, p25, p50, p75, p99 = (float(v) for v in q)
    inside, beyond = a[a <= axis.end], a[a > axis.end]
    pts = inside if inside.size <= _DOTS else inside[np.linspace(0, inside.size - 1, _DOTS).astype(int)]
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
            f'<text x="{x + 16:.1f}" y="{y + 4:.1f}">{count} beyond, max {_in(slowest_ms, unit)} {unit[0]}</text></g>')


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
                           f'height="{max(h, 0.5):.1f}" fill="{_PALETTE[k % len(_PALETTE)]}"><title>{escape(bar.label)}: '
                           f"p50 {what} {format_ms(value(bar))}</title></rect>")
        mid = x + group_w / 2
        out.append(f'<text x="{mid:.1f}" y="{top + plot_h + 16}" text-anchor="middle">batch {batch}</text>'
                   f'<text x="{mid:.1f}" y="{top + plot_h + 31}" text-anchor="middle">{escape(f"{target}/{variant}")}</text>')
        x += group_w + gap
    out.append(f'<line class="axis" x1="{left}" x2="{width - 20}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    for k, t in enumerate(threads):
        out.append(f'<rect x="{left + k * 110}" y="{height - 22}" width="12" height="12" fill="{_PALETTE[k % len(_PALETTE)]}"/>'
                   f'<text x="{left + k * 110 + 17}" y="{height - 12}">threads {t}</text>')
    out.append(f'<text x="{left}" y="{top - 12}">p50 latency {what} ({unit[0]})</text></svg>')
    return "".join(out)


# ----------------------------------------------------------------------------- sections
def _best_per_variant(report: ProfileReport) -> list[ConfigResult]:
    """Per target × variant, the configuration with the lowest p50 per item, in report order."""
    best: dict[tuple[str, str], ConfigResult] = {}
    for r in report.results:
        k = (r.target, r.variant)
        if k not in best or r.stats.p50 / r.batch < best[k].stats.p50 / best[k].batch:
            best[k] = r
    return list(best.values())


def _parity_cell(report: ProfileReport, r: ConfigResult) -> tuple[str, str]:
    """The summary's parity cell for ``r``: (text, css class)."""
    if r.runtime == "torch":
        return ("the reference", "") if r.variant == "torch-eager" else ("—", "")
    info = report.variant_info.get(r.variant)
    if info is None:
        return ("no record", "warn")
    ok = info.passed.get(r.target)
    if ok is None:
        return (f"not checked on {r.target}", "warn")
    return ("pass", "ok") if ok else ("FAIL", "bad")


def _summary(report: ProfileReport) -> str:
    """One row per target × variant, the default marked ★: what a reader wants before the details."""
    rows = _best_per_variant(report)
    infos = [report.variant_info.get(r.variant) for r in rows]
    size = size_unit(i.size for i in infos if i is not None)
    call = time_unit(r.stats.p50 for r in rows)
    item = time_unit(r.stats.p50 / r.batch for r in rows)
    cold = time_unit(r.cold_start_ms for r in rows)
    head = ["default", "target", "variant", "precision", f"size ({size[0]})", "parity", f"p50 / call ({call[0]})",
            f"p50 / item ({item[0]})", f"cold start ({cold[0]})", "measured at"]
    body = []
    for r, info in zip(rows, infos):
        star = ("★", "star") if report.defaults.get(r.target) == r.variant else ("", "star")
        body.append([star, r.target, r.variant, info.precision if info else "—",
                     _in(info.size, size) if info and info.size else "—", _parity_cell(report, r),
                     _in(r.stats.p50, call), _in(r.stats.p50 / r.batch, item), _in(r.cold_start_ms, cold),
                     f"threads {r.threads}, batch {r.batch}"])
    legend = ("★ marks the default variant on that target, the one <code>edgeship.load</code> picks."
              if report.defaults else "No default variant: " + ("a raw .onnx file has one model." if report.kind == "onnx"
                                                                else "this report names none."))
    return (f'<section id="summary"><h2>Summary</h2><div class="scroll">{_table(head, body, "summary", left={0, 1, 2, 3, 5, 9})}'
            f'</div><p class="meta">{legend} Each row shows its fastest configuration per item; the latency table '
            "below has every configuration.</p></section>")


def _parity(report: ProfileReport, export: dict | None) -> str:
    """Parity in every report: the export's checks, the bundle's record, or why there is none."""
    if export is not None and export.get("parity") is not None:
        body = _table(["runner", "variant", "output", "max abs", "cosine", "result"],
                      [[r["runner"], r["variant"], r["output"], f"{r.get('max_abs', float('nan')):.2e}",
                        f"{r.get('cosine', float('nan')):.6f}", ("pass", "ok") if r["passed"] else ("FAIL", "bad")]
                       for r in export["parity"]], "parity", left=3)
        what = "Each shipped variant against the eager PyTorch reference, worst over the golden samples."
    elif report.variant_info:
        targets = sorted({t for v in report.variant_info.values() for t in v.passed})
        body = _table(["variant", "precision", *targets, "max abs", "min cosine"],
                      [[v.name, v.precision, *(_passed(v.passed.get(t)) for t in targets),
                        f"{v.max_abs:.2e}" if v.max_abs is not None else "—",
                        f"{v.min_cosine:.6f}" if v.min_cosine is not None else "—"]
                       for v in report.variant_info.values()], "parity", left=2)
        what = ("As the bundle's manifest records it from the export: each variant against the eager PyTorch "
                "reference, worst over outputs and golden samples. Not re-run for this report; "
                "<code>edgeship check</code> re-runs the golden comparison.")
    elif report.kind == "onnx":
        body, what = "", (f"No parity record: {escape(report.source)} is a raw .onnx file, which carries no reference "
                          "outputs, so nothing here shows that it computes what the original model did. "
                          "<code>edgeship export</code> makes a bundle with a parity record.")
    else:
        body, what = "", "No parity record was given to this report."
    return f'<section id="parity"><h2>Parity</h2><p class="meta">{what}</p>{body}</section>'


def _passed(ok: bool | None) -> tuple[str, str]:
    return ("—", "") if ok is None else ("pass", "ok") if ok else ("FAIL", "bad")


def _latency_table(report: ProfileReport) -> str:
    """Every configuration's statistics; the time columns share p50's unit, named in the header."""
    results = report.results
    eager = any(r.variant == "torch-eager" for r in results)
    u = time_unit(r.stats.p50 for r in results)
    cold = time_unit(r.cold_start_ms for r in results)
    item = time_unit(r.stats.p50 / r.batch for r in results)
    holds = report.settings.get("rss_holds") or "the whole process"
    head = ["configuration", "calls", f"cold start ({cold[0]})",
            *(f"{k} ({u[0]})" for k in ("mean", "std", "min", "p50")), f"p50 / item ({item[0]})",
            *(f"{k} ({u[0]})" for k in ("p90", "p95", "p99", "max")), "items/s", f"peak RSS (MiB; {holds})"]
    head += ["vs eager"] if eager else []
    rows = []
    for r in results:
        s = r.stats
        row = [r.label, s.count, _in(r.cold_start_ms, cold), *(_in(v, u) for v in (s.mean, s.std, s.min, s.p50)),
               _in(s.p50 / r.batch, item), *(_in(v, u) for v in (s.p90, s.p95, s.p99, s.max)),
               f"{r.throughput:,.0f}", f"{r.peak_rss_mb:,.0f}" if math.isfinite(r.peak_rss_mb) else RSS_NOT_MEASURED]
        if eager:
            sp = report.speedup(r)
            row.append(f"{sp:.2f}×" if sp else "—")
        rows.append(row)
    providers = {f"{r.target}/{r.variant}": " + ".join(r.providers) + (" with IO binding" if r.io_binding else "")
                 for r in results}
    used = escape("; ".join(f"{k}: {v}" for k, v in providers.items()))
    rss = (f"Peak RSS is the resident memory of this whole process while the configuration ran, which held: "
           f"{escape(holds)}.")
    return (f'<div class="scroll">{_table(head, rows, "latency", wrap={len(head) - 1 - eager})}</div>'
            f'<p class="meta">p50 / item = p50 per call ÷ batch. {rss}</p><p class="meta">providers: {used}</p>')


def _comparison(comparison: Comparison) -> str:
    u = time_unit([d.current_ms for d in comparison.rows] + [d.baseline_ms for d in comparison.rows])
    rows = []
    for d in comparison.rows:
        klass = {"ok": "ok", "regressed": "bad"}.get(d.status, "warn")
        change = f"{d.change:+.1%}" if d.change is not None else "—"
        rows.append([d.label, _in(d.baseline_ms, u), _in(d.current_ms, u), change, (d.status, klass)])
    return (f"<h2>Against baseline</h2><p class=\"meta\">{escape(comparison.baseline)}, allowed p50 regression "
            f"{comparison.max_regression:.0%}</p>"
            + _table(["configuration", f"baseline p50 ({u[0]})", f"p50 ({u[0]})", "change", "result"], rows, "comparison"))


def _per_op(report: ProfileReport) -> str:
    parts = []
    for r in report.results:
        p = r.per_op
        if p is None:
            continue
        parts.append(f"<h3>{escape(r.label)}</h3><p class=\"meta\">{p.runs} profiled runs; "
                     f"{format_ms(p.total_us / 1e3)} per inference = {escape(KERNEL_TIME)}</p>")
        ou = time_unit(o.us / 1e3 for o in p.op_types)
        parts.append(_table(["op type", f"time / inference ({ou[0]})", "calls", "share"],
                            [[o.op_type, _in(o.us / 1e3, ou), f"{o.calls:g}", f"{o.share:.1%}"] for o in p.op_types],
                            "per-op"))
        nu = time_unit(n.us / 1e3 for n in p.nodes)
        parts.append(_table(["node", "op type", "provider", f"time / inference ({nu[0]})", "share"],
                            [[n.name, n.op_type, n.provider.removesuffix("ExecutionProvider"), _in(n.us / 1e3, nu),
                              f"{n.share:.1%}"] for n in p.nodes], "per-op per-node", left=3))
    if not parts:
        return ""
    return ('<section id="per-op"><h2>Per-op breakdown (onnxruntime profiler)</h2><p class="meta">Top op types '
            "and nodes by kernel time, from a separate profiling session of each configuration.</p>"
            + "".join(parts) + "</section>")


def _export(export: dict) -> str:
    stages = _table(["stage", "status", "seconds", "detail"],
                    [[s["name"], (s["status"], "ok" if s["status"] == "ok" else "warn"), f"{s['seconds']:.2f}",
                      s["detail"][:140]] for s in export.get("stages", [])], "stages", left={0, 1, 3})
    return f'<section id="export"><h2>Export</h2>{stages}</section>'


def _charts(report: ProfileReport) -> str:
    dots = ("" if all(r.latencies_ms is None or len(r.latencies_ms) <= _DOTS for r in report.results)
            else f" Rows with more than {_DOTS} calls show {_DOTS} of them, sampled evenly.")
    return ("<figure>" + distribution_svg(report.results) + "<figcaption>Latency of every timed call per configuration: "
            "dots are calls, the box spans p25–p75, whiskers p1–p99, the dark bar is p50. Calls slower than the axis "
            f"shows are not drawn: a red ▸ at the row's end counts them and gives the slowest.{dots}</figcaption></figure>"
            '<div class="charts"><figure>' + p50_svg(report.results) + "<figcaption>p50 latency per call by thread "
            "count, per target, variant and batch.</figcaption></figure><figure>" + p50_svg(report.results, per_item=True)
            + "<figcaption>p50 latency per item (per call ÷ batch): what a larger batch saves per "
            "input.</figcaption></figure></div>")


def render_html(report: ProfileReport, comparison: Comparison | None = None, export: dict | None = None) -> str:
    """The whole page as a string.

    Args:
        report: the profile; a bundle's carries its variants' precision, size and parity, and defaults.
        comparison: the baseline comparison, when there is one.
        export: from ``edgeship export --profile``: ``stages`` and ``parity`` summary rows.
    """
    h = report.host
    s = report.settings
    runs = f"{s['iterations']} timed calls" if s.get("iterations") else f"{s.get('duration')} s of calls"
    parts = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>edgeship report: {escape(report.name)}</title>'
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(report.name)}</h1>",
        f'<p class="meta">{escape(report.source)} ({escape(report.kind)}), {escape(report.created_at)}</p>',
        f'<p class="meta">{escape(str(h.get("cpu") or h.get("machine")))}, {escape(str(h.get("cpus")))} CPUs, onnxruntime '
        f'{escape(str(h.get("onnxruntime")))}; {escape(str(s.get("warmup")))} warm-up and {escape(runs)} per configuration</p>',
        _summary(report),
        _export(export) if export else "",
        _parity(report, export),
        '<section id="profile"><h2>Latency</h2>',
        _latency_table(report),
        _charts(report),
        "</section>",
        _comparison(comparison) if comparison is not None else "",
        _per_op(report),
        "".join(f'<p class="meta">note: {escape(n)}</p>' for n in report.notes),
        "</body></html>\n",
    ]
    return "\n".join(p for p in parts if p)


def write_html(path: str | os.PathLike, report: ProfileReport, comparison: Comparison | None = None,
               export: dict | None = None) -> Path:
    """Write :func:`render_html`'s page to ``path``.

    Raises:
        EdgeshipError: the file cannot be written.
    """
    from edgeship.errors import EdgeshipError

    path = Path(path)
    try:
        path.write_text(render_html(report, comparison, export), encoding="utf-8")
    except OSError as e:
        raise EdgeshipError(f"cannot write {path}: {e}") from e
    return path
