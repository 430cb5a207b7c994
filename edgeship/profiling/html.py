"""report.html: a self-contained page (no scripts, no network, no CDN) with inline SVG charts.

Sections: the export (stages and parity, when written by ``edgeship export --profile``), the
latency table, a latency distribution per configuration (box from p25 to p75, whiskers p1 to p99,
the median as a bar, every call as a dot), p50 by threads and batch (grouped bars), the baseline
comparison when there is one, and onnxruntime's per-op breakdown. SVG is written here, in Python.
"""

from __future__ import annotations

import math
import os
from html import escape
from pathlib import Path

import numpy as np

from edgeship.profiling.timing import KERNEL_TIME, RSS_NOT_MEASURED, format_ms

_PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#a463f2", "#97bbf5", "#9c6b4e")
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2329;margin:24px auto;max-width:1240px;padding:0 16px}
.scroll{overflow-x:auto}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde1e6;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#5c6670;margin:2px 0}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e6e9ed;padding:3px 8px;font-size:13px;text-align:right;white-space:nowrap}
th{background:#f4f6f8;font-weight:600}td.l,th.l{text-align:left}
.ok{color:#1a7f37}.bad{color:#cf222e;font-weight:600}.warn{color:#9a6700}
figure{margin:12px 0 20px}figcaption{color:#5c6670;font-size:13px}svg text{font:12px system-ui,sans-serif;fill:#1d2329}
svg .axis{stroke:#8c959f;stroke-width:1}svg .grid{stroke:#e6e9ed;stroke-width:1}
"""


def _table(head: list[str], rows: list[list], cls: str = "", left: int | set = 1) -> str:
    """An HTML table; ``left``: the first N columns, or a set of column indices, align left."""
    lefts = set(range(left)) if isinstance(left, int) else left
    th = "".join(f'<th class="l">{escape(h)}</th>' if i in lefts else f"<th>{escape(h)}</th>" for i, h in enumerate(head))
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            text, klass = c if isinstance(c, tuple) else (c, "")
            klass = " ".join(k for k in ("l" if i in lefts else "", klass) if k)
            cells.append(f'<td class="{klass}">{escape(str(text))}</td>' if klass else f"<td>{escape(str(text))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# ----------------------------------------------------------------------------- scales
def _nice(span: float) -> float:
    """A round step (1, 2 or 5 × 10^k) that cuts ``span`` into at most 6 intervals."""
    exp = math.floor(math.log10(span)) if span > 0 else 0
    for m in (1, 2, 5, 10):
        if span / (m * 10**exp) <= 6:
            return m * 10**exp
    return 10 ** (exp + 1)


def _linear(hi: float, p0: float, p1: float):
    """A linear scale from 0 to a round number above ``hi``, mapped onto [p0, p1]; (f, ticks)."""
    step = _nice(max(hi, 1e-9) * 1.05)
    top = step * math.ceil(max(hi, 1e-9) * 1.05 / step)
    return (lambda v: p0 + v / top * (p1 - p0)), [i * step for i in range(int(round(top / step)) + 1)]


def _scale(lo: float, hi: float, p0: float, p1: float):
    """Log when the values span more than 20×, else linear from 0; returns (f, ticks, is_log)."""
    lo, hi = max(lo, 1e-6), max(hi, lo * 1.01, 1e-6)
    if hi / lo <= 20:
        return (*_linear(hi, p0, p1), False)
    a, b = math.log10(lo) - 0.05, math.log10(hi) + 0.05
    ticks = [m * 10**e for e in range(math.floor(a), math.ceil(b) + 1) for m in (1, 2, 5) if a <= math.log10(m * 10**e) <= b]
    return (lambda v: p0 + (math.log10(max(v, 1e-9)) - a) / (b - a) * (p1 - p0)), ticks, True


def distribution_svg(results) -> str:
    """One row per configuration: dots for calls, box p25–p75, whiskers p1–p99, bar at p50."""
    rows = [r for r in results if r.latencies_ms is not None and len(r.latencies_ms)]
    if not rows:
        return ""
    left, right, top, row_h = 300, 880, 24, 30
    height = top + row_h * len(rows) + 40
    qs = {id(r): np.percentile(r.latencies_ms, [1, 25, 50, 75, 99]) for r in rows}
    lo = min(float(np.min(r.latencies_ms)) for r in rows)
    hi = max(float(qs[id(r)][4]) for r in rows)
    x, ticks, log = _scale(lo, hi, left, right)
    rng = np.random.default_rng(0)
    out = [f'<svg id="chart-distribution" viewBox="0 0 900 {height}" width="900" height="{height}" role="img" '
           'aria-label="latency distribution per configuration">']
    for t in ticks:
        out.append(f'<line class="grid" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 6}" y2="{height - 34}"/>'
                   f'<text x="{x(t):.1f}" y="{height - 18}" text-anchor="middle">{escape(format_ms(t))}</text>')
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        p1, p25, p50, p75, p99 = qs[id(r)]
        color = _PALETTE[i % len(_PALETTE)]
        out.append(f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">{escape(r.label)}</text>')
        a = np.asarray(r.latencies_ms)
        pts = a if a.size <= 300 else a[np.linspace(0, a.size - 1, 300).astype(int)]
        shown = np.minimum(pts, p99 * 1.5)
        jitter = rng.uniform(-row_h * 0.32, row_h * 0.32, size=shown.size)
        out.append(f'<g fill="{color}" fill-opacity="0.28">' + "".join(
            f'<circle cx="{x(v):.1f}" cy="{y + j:.1f}" r="1.6"/>' for v, j in zip(shown, jitter)) + "</g>")
        out.append(f'<line class="axis" x1="{x(p1):.1f}" x2="{x(p99):.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<rect x="{x(p25):.1f}" y="{y - 8:.1f}" width="{max(x(p75) - x(p25), 1):.1f}" height="16" '
                   f'fill="{color}" fill-opacity="0.35" stroke="{color}"/>'
                   f'<line x1="{x(p50):.1f}" x2="{x(p50):.1f}" y1="{y - 10:.1f}" y2="{y + 10:.1f}" stroke="#1d2329" stroke-width="2.5">'
                   f"<title>{escape(r.label)}: p50 {format_ms(r.stats.p50)}, p99 {format_ms(r.stats.p99)}</title></line>")
    out.append(f'<text x="{(left + right) / 2}" y="{height - 2}" text-anchor="middle">latency per call '
               f'({"log scale" if log else "linear scale"})</text></svg>')
    return "".join(out)


def p50_svg(results) -> str:
    """Grouped bars: p50 per (target/variant, batch) group, one bar per thread count."""
    if not results:
        return ""
    threads = sorted({r.threads for r in results})
    groups: dict[tuple, dict] = {}
    for r in results:
        groups.setdefault((r.target, r.variant, r.batch), {})[r.threads] = r
    left, top, plot_h, bar_w, gap = 70, 30, 240, 22, 26
    group_w = max(len(threads) * bar_w, 7 * max(len(f"{t}/{v}") for t, v, _ in groups))  # room for the label
    width = max(600, left + len(groups) * (group_w + gap) + 40)
    height = top + plot_h + 70
    y, ticks = _linear(max(r.stats.p50 for r in results), top + plot_h, top)
    out = [f'<svg id="chart-p50" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           'aria-label="p50 by threads and batch">']
    for t in ticks:
        out.append(f'<line class="grid" x1="{left}" x2="{width - 20}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>'
                   f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{escape(format_ms(t))}</text>')
    x = left + gap / 2
    for (target, variant, batch), by_t in groups.items():
        x0 = x + (group_w - len(threads) * bar_w) / 2
        for k, t in enumerate(threads):
            r = by_t.get(t)
            if r is not None:
                h = top + plot_h - y(r.stats.p50)
                out.append(f'<rect x="{x0 + k * bar_w:.1f}" y="{y(r.stats.p50):.1f}" width="{bar_w - 3}" height="{max(h, 0.5):.1f}" '
                           f'fill="{_PALETTE[k % len(_PALETTE)]}"><title>{escape(r.label)}: p50 {format_ms(r.stats.p50)}</title></rect>')
        mid = x + group_w / 2
        out.append(f'<text x="{mid:.1f}" y="{top + plot_h + 16}" text-anchor="middle">batch {batch}</text>'
                   f'<text x="{mid:.1f}" y="{top + plot_h + 31}" text-anchor="middle">{escape(f"{target}/{variant}")}</text>')
        x += group_w + gap
    out.append(f'<line class="axis" x1="{left}" x2="{width - 20}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    for k, t in enumerate(threads):
        out.append(f'<rect x="{left + k * 110}" y="{height - 22}" width="12" height="12" fill="{_PALETTE[k % len(_PALETTE)]}"/>'
                   f'<text x="{left + k * 110 + 17}" y="{height - 12}">threads {t}</text>')
    out.append(f'<text x="{left}" y="{top - 12}">p50 latency</text></svg>')
    return "".join(out)


# ----------------------------------------------------------------------------- sections
def _latency_table(report) -> str:
    eager = any(r.variant == "torch-eager" for r in report.results)
    head = ["configuration", "calls", "cold start", "mean", "std", "min", "p50", "p90", "p95", "p99", "max",
            "items/s", "peak RSS"] + (["vs eager"] if eager else [])
    rows = []
    for r in report.results:
        s = r.stats
        row = [r.label, s.count, format_ms(r.cold_start_ms),
               *(format_ms(v) for v in (s.mean, s.std, s.min, s.p50, s.p90, s.p95, s.p99, s.max)),
               f"{r.throughput:,.0f}", f"{r.peak_rss_mb:.0f} MiB" if math.isfinite(r.peak_rss_mb) else RSS_NOT_MEASURED]
        if eager:
            sp = report.speedup(r)
            row.append(f"{sp:.2f}×" if sp else "—")
        rows.append(row)
    providers = {f"{r.target}/{r.variant}": " + ".join(r.providers) + (" with IO binding" if r.io_binding else "")
                 for r in report.results}
    used = escape("; ".join(f"{k}: {v}" for k, v in providers.items()))
    return f'<div class="scroll">{_table(head, rows, "latency")}</div><p class="meta">providers: {used}</p>'


def _comparison(comparison) -> str:
    rows = []
    for d in comparison.rows:
        klass = {"ok": "ok", "regressed": "bad"}.get(d.status, "warn")
        change = f"{d.change:+.1%}" if d.change is not None else "—"
        rows.append([d.label, format_ms(d.baseline_ms), format_ms(d.current_ms), change, (d.status, klass)])
    return (f"<h2>Against baseline</h2><p class=\"meta\">{escape(comparison.baseline)}, allowed p50 regression "
            f"{comparison.max_regression:.0%}</p>" + _table(["configuration", "baseline p50", "p50", "change", "result"],
                                                            rows, "comparison"))


def _per_op(report) -> str:
    parts = []
    for r in report.results:
        p = r.per_op
        if p is None:
            continue
        parts.append(f"<h3>{escape(r.label)}</h3><p class=\"meta\">{p.runs} profiled runs; "
                     f"{format_ms(p.total_us / 1e3)} per inference = {escape(KERNEL_TIME)}</p>")
        parts.append(_table(["op type", "time / inference", "calls", "share"],
                            [[o.op_type, format_ms(o.us / 1e3), f"{o.calls:g}", f"{o.share:.1%}"] for o in p.op_types], "per-op"))
        parts.append(_table(["node", "op type", "provider", "time / inference", "share"],
                            [[n.name, n.op_type, n.provider.removesuffix("ExecutionProvider"), format_ms(n.us / 1e3),
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
    parity = _table(["runner", "variant", "output", "max abs", "cosine", "result"],
                    [[r["runner"], r["variant"], r["output"], f"{r.get('max_abs', float('nan')):.2e}",
                      f"{r.get('cosine', float('nan')):.6f}", ("pass", "ok") if r["passed"] else ("FAIL", "bad")]
                     for r in export.get("parity", [])], "parity", left=3)
    return f'<section id="export"><h2>Export</h2>{stages}<h3>Parity vs eager reference</h3>{parity}</section>'


def render_html(report, comparison=None, export: dict | None = None) -> str:
    """The whole page as a string; ``export`` holds ``stages`` and ``parity`` summary rows."""
    h = report.host
    s = report.settings
    runs = f"{s['iterations']} timed calls" if s.get("iterations") else f"{s.get('duration')} s of calls"
    parts = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>edgeship report: {escape(report.name)}</title>'
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(report.name)}</h1>",
        f'<p class="meta">{escape(report.source)} ({escape(report.kind)}), {escape(report.created_at)}</p>',
        f'<p class="meta">{escape(str(h.get("cpu") or h.get("machine")))}, {h.get("cpus")} CPUs, onnxruntime '
        f'{escape(str(h.get("onnxruntime")))}; {s.get("warmup")} warm-up and {runs} per configuration</p>',
        _export(export) if export else "",
        '<section id="profile"><h2>Latency</h2>',
        _latency_table(report),
        '<figure>' + distribution_svg(report.results) + "<figcaption>Latency of every timed call per configuration: "
        "dots are calls, the box spans p25–p75, whiskers p1–p99, the dark bar is p50.</figcaption></figure>",
        '<figure>' + p50_svg(report.results) + "<figcaption>p50 latency by thread count, per target, variant and "
        "batch.</figcaption></figure>",
        "</section>",
        _comparison(comparison) if comparison is not None else "",
        _per_op(report),
        "".join(f'<p class="meta">note: {escape(n)}</p>' for n in report.notes),
        "</body></html>\n",
    ]
    return "\n".join(p for p in parts if p)


def write_html(path: str | os.PathLike, report, comparison=None, export: dict | None = None) -> Path:
    from edgeship.errors import EdgeshipError

    path = Path(path)
    try:
        path.write_text(render_html(report, comparison, export), encoding="utf-8")
    except OSError as e:
        raise EdgeshipError(f"cannot write {path}: {e}") from e
    return path
