"""Console rendering for the CLI (rich): tables, progress lines, notes. Commands print through
these helpers; the library itself never prints (it logs).

Every value that comes from a bundle, a model or the user (names, ids, precisions, messages) is
printed as text: through :func:`safe` (a ``rich.text.Text``, so no markup is read in it, with its
control characters escaped by :func:`edgeship.cli.app.visible`)."""

from __future__ import annotations

import math
import os

import numpy as np
from rich.console import Console
from rich.progress import TaskID
from rich.status import Status
from rich.table import Table
from rich.text import Text

from edgeship.bundle.golden import legend
from edgeship.bundle.manifest import Candidate, VariantResult, options_text
from edgeship.cli.app import visible
from edgeship.profiling.opprofile import KERNEL_TIME
from edgeship.profiling.stats import format_ms
from edgeship.spec import format_shape


def safe(value: object, style: str = "") -> Text:
    """``value`` as plain text: rich markup in it is not read, control characters are escaped."""
    return Text(visible(value), style)


_MARK = {"ok": ("✓", "green"), "warning": ("!", "yellow"), "skipped": ("–", "yellow"), "failed": ("✗", "red")}


class StageProgress:
    """A live status line per stage, then one line with its time and detail."""

    def __init__(self, console: Console, hide: tuple[str, ...] = ()):
        self.console = console
        self.hide = hide  # stages not shown (quantize: its temporary bundle's torchscript, select, package)
        self._status: Status | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._status:
            self._status.stop()

    def __call__(self, event: str, name: str, result=None) -> None:
        if event == "start":
            self._status = self.console.status(f"{name}…")
            self._status.start()
            return
        if self._status:
            self._status.stop()
            self._status = None
        if name in self.hide and result.status != "failed":
            return
        mark, style = _MARK.get(result.status, ("?", "white"))
        line = Text.assemble((f"{mark} ", style), (f"{name:<12}", "bold"), f"{result.seconds:7.2f}s  ")
        line.append(visible(result.detail) if result.status != "failed" or name == "torchscript" else "failed",
                    style="dim" if result.status == "ok" else style)
        self.console.print(line)


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.2e}" if (v != 0 and abs(v) < 1e-3) else f"{v:.4f}".rstrip("0").rstrip(".") if v < 1e4 else f"{v:.3g}"
    return str(v)


def _exact(v) -> str:
    """Like _fmt, but a value that rounds to 1 without being 1 keeps its digits (0.9999999, not 1)."""
    if isinstance(v, float) and math.isfinite(v) and v != round(v, 4):
        return f"{v:.10g}"
    return _fmt(v)


def parity_table(console: Console, report, failures_only: bool = False, title: str = "Parity vs eager reference") -> None:
    rows = report.summary()
    if failures_only:
        rows = [r for r in rows if not r["passed"]]
    if not rows:
        return
    t = Table(title=safe(title), title_justify="left")
    named = any(r.get("candidate") for r in rows)  # check names the bundle candidate each row ran
    for col in ("candidate",) * named + ("runner", "variant", "output", "max abs", "max rel", "cosine", "SNR dB", "top-1", "result"):
        t.add_column(col, justify="right" if col not in ("candidate", "runner", "variant", "output", "result") else "left")
    failed: list[dict] = []
    for r in rows:
        result = safe("pass", "green") if r["passed"] else safe(f"FAIL ({len(failed) + 1})", "red")
        if r.get("nonfinite_ref"):
            result.append(f" ({r['nonfinite_ref']} NaN/Inf)", "yellow")
        if not r["passed"]:
            failed.append(r)
        close = _fmt if r["passed"] else _exact  # a failing row shows enough digits to see why it failed
        t.add_row(*[safe(r.get("candidate") or "—")] * named, safe(r["runner"]), safe(r["variant"]), safe(r["output"]),
                  _fmt(r.get("max_abs")), _fmt(r.get("max_rel")), close(r.get("cosine")), _fmt(r.get("snr_db")),
                  close(r.get("top1")), result)
    console.print(t)
    for i, r in enumerate(failed, 1):
        who = f"candidate {r['candidate']} ({r['runner']})" if r.get("candidate") else f"{r['runner']} {r['variant']}"
        console.print(Text.assemble((f"({i}) ", "red"), visible(f"{who} {r['output']}: {r['reason']}")))
    if failed:
        labels = [c.sample for c in report.checks if not c.passed]
        console.print(Text.assemble(("samples: ", "dim"), visible(legend(labels))))
    from edgeship.parity.localize import describe

    for variant, where in (report.divergence or {}).items():
        if where:
            console.print(Text.assemble(("where: ", "yellow"), visible(f"{variant}: {describe(where)}")))
    for warning in report.vacuous.values():
        console.print(Text.assemble(("warning: ", "bold yellow"), visible(warning)))
    for cid, why in (report.skipped or {}).items():
        console.print(Text.assemble(("not checked: ", "yellow"), visible(f"candidate {cid}: {why}")))
    for name, what in (getattr(report, "runners", None) or {}).items():
        console.print(Text.assemble(("runner: ", "dim"), visible(f"{name}: {what}")))
    generation_table(console, rows)


def generation_table(console: Console, rows: list[dict]) -> None:
    """A decoder bundle's generation rows: teacher-forced agreement and log-prob delta (quantized
    variants: the generation gate), free-running token agreement (fp32)."""
    rows = [r for r in rows if "agreement" in r or "token_agreement" in r]
    if not rows:
        return
    t = Table(title="Generation (golden prompts)", title_justify="left")
    for col in ("runner", "variant", "teacher-forced agreement", "mean Δlog p", "max Δlog p", "greedy tokens kept", "result"):
        t.add_column(col, justify="left" if col in ("runner", "variant", "result") else "right")
    for r in rows:
        t.add_row(safe(r["runner"]), safe(r["variant"]), _fmt(r.get("agreement")), _fmt(r.get("logprob_delta")),
                  _fmt(r.get("max_logprob_delta")), _fmt(r.get("token_agreement")),
                  safe("pass", "green") if r["passed"] else safe("FAIL", "red"))
    console.print(t)


def tolerance_table(console: Console, report) -> None:
    """The effective tolerances, per variant and output, as applied."""
    rows = [(v, o, tol) for v, per in (report.tolerances or {}).items() for o, tol in per.items()]
    if not rows:
        return
    line = "; ".join(f"{v}/{o}: " + ", ".join(f"{k}={val:.10g}" for k, val in tol.items()) for v, o, tol in rows)
    console.print(safe(f"tolerances: {line}", "dim"))


def variant_table(console: Console, variants: dict[str, VariantResult], defaults: dict[str, str]) -> None:
    """Variant × target: size, parity, p50 at selection, the default marked."""
    if not variants:
        return
    targets = sorted({t for v in variants.values() for t in v.passed})
    t = Table(title="Variants", title_justify="left")
    t.add_column("variant")
    t.add_column("precision")
    t.add_column("size MB", justify="right")
    for target in targets:
        t.add_column(f"{target} parity")
        t.add_column(f"{target} p50 ms", justify="right")
    for name, v in variants.items():
        row: list[Text | str] = [safe(name), safe(v.precision), f"{v.size / 1e6:.3f}"]
        for target in targets:
            ok = v.passed.get(target)
            row.append(safe("—", "dim") if ok is None else safe("pass", "green") if ok else safe("FAIL", "red"))  # —: not run there
            ms = v.latency_ms.get(target)
            mark = " ★" if defaults.get(target) == name else ""
            row.append(safe(("—" if ms is None else f"{ms:.3g}") + mark, "bold" if mark else ""))
        t.add_row(*row)
    console.print(t)
    if any(defaults.get(target) in variants for target in targets):
        console.print(safe("★ default for the target (fastest variant that passes parity"
                           + ("; mobile: the smallest, see docs/mobile.md" if "mobile" in targets else "") + ")", "dim"))


def candidates_table(console: Console, candidates: dict[str, list[Candidate]]) -> None:
    """Per target, the candidates in the manifest's order (the default first, ★): runtime,
    variant, precision, options, p50 and parity figures."""
    _wide(console)
    for target, cands in candidates.items():
        if not cands:
            continue
        t = Table(title=f"Candidates on {target} (default first)", title_justify="left")
        for col in ("candidate", "runtime", "variant", "precision", "options"):
            t.add_column(col)
        t.add_column("p50 ms", justify="right")
        t.add_column("min cosine", justify="right")
        t.add_column("max abs", justify="right")
        t.add_column("needs")
        for i, c in enumerate(cands):
            opts = options_text(c.options) or "defaults"
            needs = " ".join(["|".join(c.requires.get("cpu_any") or [])] + list(c.requires.get("providers") or [])).strip()
            t.add_row(safe(c.id + (" ★" if i == 0 else ""), "bold" if i == 0 else ""), safe(c.runtime), safe(c.variant),
                      safe(c.precision),
                      safe(opts), "not here" if c.unmeasured else "—" if c.p50_ms is None else f"{c.p50_ms:.3g}",
                      _fmt(c.min_cosine), _fmt(c.max_abs), safe(needs or "—"))
        console.print(t)


def notes(console: Console, items) -> None:
    for n in items:
        console.print(Text.assemble(("note: ", "yellow"), visible(n)))


def inspection(console: Console, info: dict) -> None:
    console.print(Text.assemble(("", ""), (visible(info["path"]), "bold"), f"  ({info['kind']}, {info['size_mb']:.2f} MB)"))
    io = Table(title="Inputs and outputs", title_justify="left")
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            io.add_row(kind[:-1], safe(t["name"]), safe(t["dtype"]), safe(format_shape(t["shape"])))
    console.print(io)
    for name, v in info.get("variants", {}).items():
        default = [t for t, d in info.get("defaults", {}).items() if d == name]
        fmt = f", ORT format (from {v.get('source')})" if v.get("format") == "ort" else ""
        console.print(safe(f"variant {name}: {v.get('precision')}{fmt}, {(v.get('size') or 0) / 1e6:.2f} MB, "
                           f"opset {v.get('opset')}" + (f", default for {', '.join(default)}" if default else "")))
        if v.get("ops"):
            ops = sorted(v["ops"].items(), key=lambda kv: -kv[1])
            console.print(safe("  ops: " + ", ".join(f"{k}×{n}" for k, n in ops)))
    task = info.get("task")
    if task:
        parts = [f"task: {task['name']}" + (f" (labels {', '.join(task['labels'][:8])}"
                                             f"{', ...' if len(task['labels']) > 8 else ''})" if task.get("labels") else "")]
        if task.get("tokenizer"):
            parts.append(f"text through {task['tokenizer']}" + (f", max_length {task['max_length']}" if task.get("max_length") else ""))
        if task.get("image"):
            parts.append(f"images {task['image']} (HxWxC)")
        if task.get("graph"):
            parts.append(f"generate on the {task['graph']} graph" + (f", context {task['context_length']}"
                                                                      if task.get("context_length") else ""))
        console.print(safe("; ".join(parts)))
    mobile = info.get("mobile")
    if mobile:
        by = mobile.get("written_by") or {}
        console.print(safe(f"mobile: {mobile.get('operators_config')} lists {len(mobile.get('operators') or [])} operators "
                           "for a reduced onnxruntime build (build.py --include_ops_by_config); ORT format "
                           f"{by.get('ort_format_version', '?')} written by onnxruntime {by.get('onnxruntime', '?')}: the app's "
                           "onnxruntime must be that version or newer"))
    if info.get("torchscript"):
        console.print(safe(f"torchscript: {info['torchscript']}"))
    if info.get("created_at"):
        tools = ", ".join(f"{k} {v}" for k, v in (info.get("tools") or {}).items())
        console.print(safe(f"created {info['created_at']} with {tools}"))


def inspection_line(info: dict) -> str:
    """``inspect -q``: one line."""
    variants = ", ".join(f"{n} ({v.get('precision')})" for n, v in info.get("variants", {}).items())
    return f"{info['path']}: {info['kind']}, {info['size_mb']:.2f} MB, variants: {variants}"


def outputs(console: Console, title: str, outs: dict) -> None:
    """``edgeship run``'s outputs: dtype, shape, min, max, mean of each."""
    t = Table(title=safe(title), title_justify="left")
    for col in ("output", "dtype", "shape", "min", "max", "mean"):
        t.add_column(col)
    for k, a in outs.items():
        a = np.asarray(a)
        numbers = a.size and a.dtype.kind in "biuf"  # a string or object output has no min, max or mean
        f = a.astype("float64") if numbers else a
        t.add_row(safe(k), safe(a.dtype), safe(format_shape(a.shape)), *((_fmt(float(f.min())), _fmt(float(f.max())),
                  _fmt(float(f.mean()))) if numbers else ("—",) * 3))
    console.print(t)


# ----------------------------------------------------------------------------- profile
class ProfileProgress:
    """A progress bar over the profiler's configurations (``progress(done, total, label)``)."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("[bold]profile[/]"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("{task.description}", markup=False), console=console, transient=True)
        self._task: TaskID | None = None

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc):
        self._progress.stop()

    def __call__(self, done: int, total: int, label: str) -> None:
        if self._task is None:
            self._task = self._progress.add_task(visible(label), total=total)
        self._progress.update(self._task, completed=done, description=visible(label) if done < total else "")


def _rate(v: float) -> str:
    return f"{v:,.0f}" if v < 1e4 else f"{v / 1e3:.0f}k" if v < 1e6 else f"{v / 1e6:.2f}M"


def _wide(console: Console) -> None:
    """In a log (no terminal, no COLUMNS), room for a wide table's every column rather than cut ones."""
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, 160)


def profile_table(console: Console, report) -> None:
    _wide(console)
    eager = any(r.variant == "torch-eager" for r in report.results)
    s = report.settings
    runs = f"{s['iterations']} calls" if s.get("iterations") else f"{s.get('duration')} s"
    micro = max((r.stats.p99 for r in report.results), default=0) < 1  # one unit per table: µs or ms
    unit, scale, fmt = ("µs", 1e3, "{:,.1f}") if micro else ("ms", 1.0, "{:,.2f}")
    cold = ("cold ms = session + first call in a fresh process" if s.get("cold_start") == "fresh"
            else "cold start not measured")
    t = Table(title=safe(f"Latency: {report.name} ({s.get('warmup')} warm-up, {runs} per configuration; latency in {unit}; "
                         f"{cold})"), title_justify="left")
    options = any(r.options_text for r in report.results)
    cols = ["target/variant", "runtime", *(["options"] if options else []), "threads", "batch", "cold ms", "mean", "p50",
            "p90", "p99", "std", "items/s", "RSS MiB"]
    for col in cols + (["vs eager"] if eager else []):
        t.add_column(col, justify="left" if col in ("target/variant", "runtime", "options") else "right", no_wrap=True)
    for r in report.results:
        st = r.stats
        row: list[Text | str] = [safe(f"{r.target}/{r.variant}" + (" (IO binding)" if r.io_binding else "")), safe(r.runtime),
                                 *([safe(r.options_text or "—")] if options else []), str(r.threads), str(r.batch),
               "—" if r.cold_start_ms is None else f"{r.cold_start_ms:,.1f}",
               *(fmt.format(v * scale) for v in (st.mean, st.p50, st.p90, st.p99, st.std)),
               _rate(r.throughput), f"{r.peak_rss_mb:,.0f}" if math.isfinite(r.peak_rss_mb) else "n/a"]
        if eager:
            sp = report.speedup(r)
            row.append(f"{sp:.2f}×" if sp else "—")
        t.add_row(*row)
    console.print(t)
    for r in report.results:
        if r.per_op is None or not r.per_op.op_types:
            continue
        p = r.per_op
        ops = Table(title=safe(f"Per op: {r.label} ({p.runs} profiled runs; {format_ms(p.total_us / 1e3)} per inference "
                               f"= {KERNEL_TIME})"), title_justify="left")
        for col in ("op type", "time", "calls", "share", "top nodes (op type)", "time ", "share "):
            ops.add_column(col, justify="left" if col in ("op type", "top nodes (op type)") else "right")
        for i in range(max(len(p.op_types), len(p.nodes))):
            o = p.op_types[i] if i < len(p.op_types) else None
            n = p.nodes[i] if i < len(p.nodes) else None
            ops.add_row(*((safe(o.op_type), format_ms(o.us / 1e3), f"{o.calls:g}", f"{o.share:.1%}") if o else ("",) * 4),
                        *((safe(f"{n.name} ({n.op_type})"), format_ms(n.us / 1e3), f"{n.share:.1%}") if n else ("",) * 3))
        console.print(ops)
    notes(console, report.notes)


def comparison_table(console: Console, comparison) -> None:
    t = Table(title=safe(f"p50 against baseline {comparison.baseline} (allowed regression {comparison.max_regression:.0%})"),
              title_justify="left")
    for col in ("configuration", "baseline p50", "p50", "change", "result"):
        t.add_column(col, justify="left" if col in ("configuration", "result") else "right")
    style = {"ok": "green", "regressed": "red"}
    for d in comparison.rows:
        t.add_row(safe(d.label), format_ms(d.baseline_ms), format_ms(d.current_ms),
                  f"{d.change:+.1%}" if d.change is not None else "—",
                  safe(d.status.upper() if d.status == "regressed" else d.status, style.get(d.status, "yellow")))
    console.print(t)
