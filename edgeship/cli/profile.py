"""``edgeship profile``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgeship.cli import options as opt
from edgeship.cli.app import app, console, one_stdout, setup_logging, to_stdout, write_file
from edgeship.config import LoadOptions


@app.command("profile")
@opt.with_load_options
def profile_command(
    source: Annotated[Path, typer.Argument(metavar="SOURCE", help="A bundle (folder or zip) or an .onnx file.")],
    target: opt.TargetOpt = ["cpu"],  # noqa: B006
    runtime: opt.RuntimeOpt = None,
    variant: Annotated[Optional[list[str]], typer.Option("--variant", metavar="TEXT", help="Variants, comma-separated (default: every variant of the bundle).")] = None,
    threads: Annotated[Optional[list[str]], typer.Option("--threads", metavar="TEXT", help="Intra-op thread counts, comma-separated, e.g. 1,2,4 (default: one per core).")] = None,
    batch: Annotated[Optional[list[str]], typer.Option("--batch", metavar="TEXT", help="Batch sizes, comma-separated, e.g. 1,8 (default: the golden sample's batch).")] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls before timing each configuration.")] = 10,
    iterations: Annotated[Optional[int], typer.Option("--iterations", "-n", help="Timed calls per configuration (default 200).")] = None,
    duration: Annotated[Optional[float], typer.Option("--duration", help="Seconds of timed calls per configuration, in place of --iterations.")] = None,
    per_op: Annotated[bool, typer.Option("--per-op", help="Also aggregate onnxruntime's profiler output: top op types and nodes by time.")] = False,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows in the per-op tables.")] = 10,
    cold_start: Annotated[str, typer.Option("--cold-start", metavar="fresh|off", help="Cold start (session creation + first call) of each configuration: fresh (default) measures it in a Python process of its own, so every configuration pays the runtime's one-time start-up alike (Python's start-up and the runtime's import not included; a few tenths of a second more per configuration); off skips it (shown as —).")] = "fresh",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON (every call's latency goes to an .npz beside it); usable as a --baseline later; - for stdout, without the .npz).")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Write one CSV row per configuration (- for stdout).")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained report.html with charts (- for stdout).")] = None,
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="A previous --json file: exit 1 when any configuration's p50 regressed by more than --max-regression.")] = None,
    max_regression: Annotated[str, typer.Option("--max-regression", help="Allowed p50 regression against --baseline, e.g. 10% (or 10).")] = "10%",
    compare_torch: Annotated[Optional[Path], typer.Option("--compare-torch", help="Add eager PyTorch rows for this model file (needs torch; pass --arch for a state_dict: the bundle's recorded one is quoted, never run).")] = None,
    candidates: Annotated[bool, typer.Option("--candidates", help="Profile the bundle's candidates as recorded (runtime, precision, options, threads; the default first) instead of variants × --threads. Every installed runtime unless --runtime.")] = False,
    run_bundled_torchscript: Annotated[bool, typer.Option("--run-bundled-torchscript", help="With --compare-torch, also time the bundle's torchscript/model.pt. TorchScript is code: only for bundles you trust.")] = False,
    browser: opt.BrowserOpt = None, quiet: opt.QuietOpt = False, verbose: opt.VerboseOpt = False,
    load: Optional[LoadOptions] = None,
) -> None:
    """Measure latency of a bundle or .onnx file per target × variant × threads × batch. Exit 1 on a regression against --baseline."""
    setup_logging(verbose, quiet)
    from edgeship.cli import render
    from edgeship.config import ProfileConfig
    from edgeship.profiling.profiler import compare, latencies_path, parse_percent, profile, write_csv, write_json

    limit = parse_percent(max_regression)
    if json_out is not None and str(json_out) != "-":
        latencies_path(json_out)  # a --json that the latencies .npz would overwrite: refused before any work
    every = ("onnxruntime", "openvino") if candidates and not runtime else None
    cfg = ProfileConfig(targets=tuple(opt.split(target)), runtimes=every or opt.runtimes(runtime), candidates=candidates, variants=tuple(opt.split(variant)), threads=opt.ints(threads, "--threads"),
                        batches=opt.ints(batch, "--batch"), warmup=warmup, iterations=iterations, duration=duration,
                        per_op=per_op, top=top, compare_torch=compare_torch, load=load,
                        run_bundled_torchscript=run_bundled_torchscript, cold_start=cold_start,
                        browser=str(browser) if browser else None)
    stderr = to_stdout(json_out, csv_out, html_out)
    one_stdout(json=json_out, csv=csv_out, html=html_out)
    out = console(stderr, quiet)
    with render.ProfileProgress(out) as progress:
        report = profile(source, cfg, progress)
    comparison = compare(report, baseline, limit) if baseline else None
    render.profile_table(out, report)
    if comparison is not None:
        render.comparison_table(out, comparison)
    if json_out:
        write_file(json_out, lambda p: write_json(report, p, comparison, arrays=str(json_out) != "-"), out, "--json")
    if csv_out:
        write_file(csv_out, lambda p: write_csv(report, p), out, "--csv")
    if html_out:
        from edgeship.profiling.html import write_html

        write_file(html_out, lambda p: write_html(p, report, comparison), out, "--html")
    if comparison is not None:
        comparison.check()  # RegressionError: exit 1, naming each configuration and both p50s
        console(stderr).print(f"baseline passed: {comparison.message()}", markup=False)
    elif quiet:
        best = min(report.results, key=lambda r: r.stats.p50, default=None)
        if best is not None:
            console(stderr).print(f"profiled {len(report.results)} configuration(s); fastest p50: {best.label} "
                                  f"{best.stats.p50:.4g} ms", markup=False)
