"""Console rendering for the CLI (rich). The only place that prints."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgeship.spec import format_shape

_MARK = {"ok": ("✓", "green"), "skipped": ("–", "yellow"), "failed": ("✗", "red")}


class StageProgress:
    """A live status line per stage, then one line with its time and detail."""

    def __init__(self, console: Console):
        self.console = console
        self._status = None

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
        mark, style = _MARK.get(result.status, ("?", "white"))
        line = Text.assemble((f"{mark} ", style), (f"{name:<12}", "bold"), f"{result.seconds:7.2f}s  ")
        line.append(result.detail if result.status != "failed" or name == "torchscript" else "failed",
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


def parity_table(console: Console, report, failures_only: bool = False) -> None:
    rows = report.summary()
    if failures_only:
        rows = [r for r in rows if not r["passed"]]
    if not rows:
        return
    t = Table(title="Parity vs eager reference", title_justify="left")
    for col in ("runner", "variant", "output", "max abs", "max rel", "cosine", "SNR dB", "top-1", "result"):
        t.add_column(col, justify="right" if col not in ("runner", "variant", "output", "result") else "left")
    failed = []
    for r in rows:
        result = Text("pass", "green") if r["passed"] else Text(f"FAIL ({len(failed) + 1})", "red")
        if r.get("nonfinite_ref"):
            result.append(f" ({r['nonfinite_ref']} NaN/Inf)", "yellow")
        if not r["passed"]:
            failed.append(r)
        t.add_row(Text(r["runner"]), Text(r["variant"]), Text(r["output"]), _fmt(r.get("max_abs")), _fmt(r.get("max_rel")),
                  _fmt(r.get("cosine")), _fmt(r.get("snr_db")), _fmt(r.get("top1")), result)
    console.print(t)
    for i, r in enumerate(failed, 1):
        console.print(Text.assemble((f"({i}) ", "red"), f"{r['runner']} {r['variant']} {r['output']}: {r['reason']}"))


def notes(console: Console, items) -> None:
    for n in items:
        console.print(Text.assemble(("note: ", "yellow"), n))


def inspection(console: Console, info: dict) -> None:
    console.print(Text.assemble(("", ""), (f"{info['path']}", "bold"), f"  ({info['kind']}, {info['size_mb']:.2f} MB)"))
    io = Table(title="Inputs and outputs", title_justify="left")
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            io.add_row(kind[:-1], Text(t["name"]), t["dtype"], Text(format_shape(t["shape"])))
    console.print(io)
    for name, v in info.get("variants", {}).items():
        default = [t for t, d in info.get("defaults", {}).items() if d == name]
        console.print(Text(f"variant {name}: {v.get('precision')}, {v.get('size', 0) / 1e6:.2f} MB, "
                           f"opset {v.get('opset')}" + (f", default for {', '.join(default)}" if default else "")))
        if v.get("ops"):
            ops = sorted(v["ops"].items(), key=lambda kv: -kv[1])
            console.print(Text("  ops: " + ", ".join(f"{k}×{n}" for k, n in ops)))
    if info.get("torchscript"):
        console.print(Text(f"torchscript: {info['torchscript']}"))
    if info.get("created_at"):
        tools = ", ".join(f"{k} {v}" for k, v in (info.get("tools") or {}).items())
        console.print(Text(f"created {info['created_at']} with {tools}"))


def outputs(console: Console, model, outs: dict, saved) -> None:
    t = Table(title=Text(f"{model.bundle.manifest.get('name')} ({model.variant}, {model.target})"),
              title_justify="left")
    for col in ("output", "dtype", "shape", "min", "max", "mean"):
        t.add_column(col)
    for k, a in outs.items():
        f = a.astype("float64") if a.size else a
        t.add_row(Text(k), str(a.dtype), Text(format_shape(a.shape)), *((_fmt(float(f.min())), _fmt(float(f.max())),
                  _fmt(float(f.mean()))) if a.size else ("—",) * 3))
    console.print(t)
    if saved:
        console.print(Text(f"saved to {saved}"))
