"""report.html: a self-contained page (no scripts, no network, no CDN) with inline SVG charts.

Sections, top to bottom: a summary (one row per target × variant: the default ★, precision, size,
parity, p50 per call and per item, cold start), the candidates (each with the cold start of that
very configuration where this run profiled it, "—" where it did not), the export's stages (when
written by ``edgeship export --profile``), parity (the export's checks, the bundle's recorded
parity, or a line saying a raw .onnx file has none), the latency table, a latency distribution per
configuration (box from p25 to p75, whiskers p1 to p99, the median as a bar, calls as dots, calls
beyond the axis counted at its end), p50 per call and per item by threads and batch (grouped bars),
the baseline comparison when there is one, and onnxruntime's per-op breakdown.

Every table column shows one unit, named in its header; every chart axis one unit, named in its
title. Cold start is the fresh-process figure (:mod:`edgeship.profiling.coldstart`): a row shows
only the one its own configuration measured, "—" for none. Everything from a bundle (names,
precisions) is escaped. SVG is written here, in Python.
"""

from __future__ import annotations

import math
import os
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from edgeship.profiling.charts import DOTS, distribution_svg, in_unit, p50_svg, size_unit, time_unit
from edgeship.profiling.coldstart import EXCLUDED, MEASURED_BY
from edgeship.profiling.memory import RSS_NOT_MEASURED
from edgeship.profiling.opprofile import KERNEL_TIME
from edgeship.profiling.stats import format_ms

if TYPE_CHECKING:
    from edgeship.bundle.manifest import Candidate
    from edgeship.profiling.baseline import Comparison
    from edgeship.profiling.profiler import ConfigResult, ProfileReport

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
    cand = next((c for c in report.candidates.get(r.target, []) if c.id == r.variant), None)
    if cand is not None and cand.variant != r.variant:  # a candidate row: its own parity (precision, runtime)
        return ("pass", "ok") if cand.passed else ("FAIL", "bad")
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
            f"p50 / item ({item[0]})", f"{COLD} ({cold[0]})", "measured at"]
    body = []
    for r, info in zip(rows, infos):
        star = ("★", "star") if report.defaults.get(r.target) == r.variant else ("", "star")
        body.append([star, r.target, r.variant, info.precision if info else "—",
                     in_unit(info.size, size) if info and info.size else "—", _parity_cell(report, r),
                     in_unit(r.stats.p50, call), in_unit(r.stats.p50 / r.batch, item), in_unit(r.cold_start_ms, cold),
                     f"threads {r.threads}, batch {r.batch}"])
    legend = ("★ marks the default variant on that target, the one <code>edgeship.load</code> picks."
              if report.defaults else "No default variant: " + ("a raw .onnx file has one model." if report.kind == "onnx"
                                                                else "this report names none."))
    return (f'<section id="summary"><h2>Summary</h2><div class="scroll">{_table(head, body, "summary", left={0, 1, 2, 3, 5, 9})}'
            f'</div><p class="meta">{legend} Each row shows its fastest configuration per item; the latency table '
            f"below has every configuration. {_cold_legend(report)}</p></section>")


COLD = "cold start, fresh process"


def _cold_legend(report: ProfileReport) -> str:
    """What the cold-start column holds."""
    if report.settings.get("cold_start") != "fresh":
        return f"Cold start was not measured in this run: {escape(MEASURED_BY)}."
    return (f"Cold start: session creation + first call, each configuration in a Python process of its own "
            f"({EXCLUDED}); — where it was not measured (see the notes).")


def _config_key(target: str, runtime: str, model: str, precision: str | None, options: dict,
                threads: int) -> tuple:
    """What makes two rows the same configuration: target, runtime, model file, precision (a
    runtime's own; onnxruntime's is the file's), options beyond threads, and threads."""
    from edgeship.profiling.profiler import options_text

    return (target, runtime, model, precision if runtime != "onnxruntime" else None, options_text(options), threads)


def candidate_colds(report: ProfileReport) -> dict[tuple[str, str], float | None]:
    """Per ``(target, candidate id)``, the cold start this run measured for that very configuration
    (same target, runtime, model file, precision, options and threads), at the smallest batch it
    profiled; a candidate this run did not profile, or whose child measured nothing, is absent or
    None, never given another configuration's figure."""
    from edgeship.errors import SpecError
    from edgeship.profiling.profiler import candidate_threads

    by_id = {(t, c.id): c for t, cs in report.candidates.items() for c in cs}
    measured: dict[tuple, ConfigResult] = {}
    for r in report.results:
        c = by_id.get((r.target, r.variant))  # a row named by candidate id (--candidates, OpenVINO rows)
        model, precision = (c.variant, c.precision) if c is not None else (r.variant, None)
        key = _config_key(r.target, r.runtime, model, precision, r.options, r.threads)
        if key not in measured or r.batch < measured[key].batch:
            measured[key] = r
    usable = report.host.get("usable_cpus")
    out: dict[tuple[str, str], float | None] = {}
    for t, cs in report.candidates.items():
        for c in cs:
            try:
                threads = candidate_threads(c, usable if isinstance(usable, int) and usable > 0 else None)
            except SpecError:  # a threads value this host cannot resolve: not the configuration of any row
                continue
            row = measured.get(_config_key(t, c.runtime, c.variant, c.precision, c.options, threads))
            if row is not None:
                out[(t, c.id)] = row.cold_start_ms
    return out


def _candidates(report: ProfileReport) -> str:
    """Per target, every candidate that passed parity at selection, in the order ``edgeship.load``
    tries them (the default first): runtime, options, precision, size, parity, p50 at selection,
    and the cold start this run measured for that very configuration (:func:`candidate_colds`)."""
    if not report.candidates:
        return ""
    cold_of = candidate_colds(report)
    rows: list[tuple[str, int, Candidate]] = [(t, i, c) for t, cs in report.candidates.items() for i, c in enumerate(cs)]
    size = size_unit(v.size for v in report.variant_info.values() if v.size)
    p50 = time_unit(c.p50_ms for _, _, c in rows)
    colds = [cold_of.get((t, c.id)) for t, _, c in rows]
    cold = time_unit(colds)
    head = ["default", "target", "candidate", "runtime", "precision", f"size ({size[0]})", "parity",
            f"p50 at selection ({p50[0]})", f"{COLD}, this run ({cold[0]})"]
    body = []
    for (t, i, c), cs in zip(rows, colds):
        info = report.variant_info.get(c.variant)
        parity = ("pass", "pass") if c.passed else ("FAIL", "fail")
        if c.min_cosine is not None:
            parity = (f"{parity[0]} (cos {c.min_cosine:.6f})", parity[1])
        body.append([("★", "star") if i == 0 else ("", "star"), t, c.describe(), c.runtime, c.precision,
                     in_unit(info.size, size) if info and info.size else "—", parity, in_unit(c.p50_ms, p50),
                     in_unit(cs, cold) if cs is not None else "—"])
    return (f'<section id="candidates"><h2>Candidates</h2><div class="scroll">'
            f'{_table(head, body, "candidates", left={0, 1, 2, 3, 4, 6})}</div><p class="meta">In the order '
            "<code>edgeship.load</code> tries them on each target (★ the default; a candidate whose runtime is "
            "not installed is skipped). p50 was measured at selection; <code>edgeship tune</code> re-measures "
            "on the device. A candidate shows a cold start only where this run profiled that very configuration "
            "(runtime, variant, options and threads; its smallest batch), — otherwise.</p></section>")


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
    head = ["configuration", "runtime", "options", "calls", f"{COLD} ({cold[0]})",
            *(f"{k} ({u[0]})" for k in ("mean", "std", "min", "p50")), f"p50 / item ({item[0]})",
            *(f"{k} ({u[0]})" for k in ("p90", "p95", "p99", "max")), "items/s", f"peak RSS (MiB; {holds})"]
    head += ["vs eager"] if eager else []
    rows = []
    for r in results:
        s = r.stats
        row = [r.label, r.runtime, r.options_text or "—", s.count, in_unit(r.cold_start_ms, cold),
               *(in_unit(v, u) for v in (s.mean, s.std, s.min, s.p50)),
               in_unit(s.p50 / r.batch, item), *(in_unit(v, u) for v in (s.p90, s.p95, s.p99, s.max)),
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
    return (f'<div class="scroll">{_table(head, rows, "latency", left=3, wrap={len(head) - 1 - eager})}</div>'
            f'<p class="meta">p50 / item = p50 per call ÷ batch. {_cold_legend(report)} {rss}</p>'
            f'<p class="meta">providers: {used}</p>')


def _comparison(comparison: Comparison) -> str:
    u = time_unit([d.current_ms for d in comparison.rows] + [d.baseline_ms for d in comparison.rows])
    rows = []
    for d in comparison.rows:
        klass = {"ok": "ok", "regressed": "bad"}.get(d.status, "warn")
        change = f"{d.change:+.1%}" if d.change is not None else "—"
        rows.append([d.label, in_unit(d.baseline_ms, u), in_unit(d.current_ms, u), change, (d.status, klass)])
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
                            [[o.op_type, in_unit(o.us / 1e3, ou), f"{o.calls:g}", f"{o.share:.1%}"] for o in p.op_types],
                            "per-op"))
        nu = time_unit(n.us / 1e3 for n in p.nodes)
        parts.append(_table(["node", "op type", "provider", f"time / inference ({nu[0]})", "share"],
                            [[n.name, n.op_type, n.provider.removesuffix("ExecutionProvider"), in_unit(n.us / 1e3, nu),
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
    dots = ("" if all(r.latencies_ms is None or len(r.latencies_ms) <= DOTS for r in report.results)
            else f" Rows with more than {DOTS} calls show {DOTS} of them, sampled evenly.")
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
        _candidates(report),
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
