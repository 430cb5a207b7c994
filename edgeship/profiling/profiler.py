"""The latency profiler: ``edgeship profile BUNDLE|model.onnx``. Torch-free unless asked to compare.

    import edgeship
    from edgeship.config import ProfileConfig
    report = edgeship.profile("model.edgeship", ProfileConfig(threads=(1, 2), batches=(1, 8)))
    compare(report, "baseline.json", max_regression=0.10).check()   # RegressionError: exit 1

For each target × variant × threads × batch it opens a fresh onnxruntime session and times
each call (``edgeship.profiling.timing`` describes the loop: feeds built once, ``perf_counter_ns``
around the call only, IO binding on CUDA) and reports mean, std, min, p50, p90, p95, p99, max,
throughput (batch ÷ p50 latency, items/s) and the peak RSS of the process while that configuration ran.

Cold start (``cold_start_ms`` = ``session_ms`` + ``first_run_ms``: session creation + first call)
is measured in a fresh process per configuration (:mod:`edgeship.profiling.coldstart`; Python's
start-up and the runtime's import excluded), so every configuration pays the runtime's one-time
process start-up alike, whatever ran before it. Timed in this process, the first configuration
would pay it and the others not. ``cold_start="off"`` skips it; a child that fails or times out
leaves that configuration's cold start None (null in JSON, empty in CSV, "—" in tables).

Inputs: the bundle's golden sample 0 (``golden/inputs.npz``, keys ``0/<input>``), repeated
along the batch axis to each ``--batch`` size; other symbolic axes keep sample 0's sizes. The
batch axis is the axis named ``batch``, else axis 0 when it is symbolic. A raw .onnx file gets
seeded random inputs with every other symbolic axis at 1. A model whose batch axis is fixed
can only be profiled at that size (``SpecError`` otherwise).

``--per-op`` opens one more session per configuration with onnxruntime's profiler on (never the
timed one: profiling slows every node) and aggregates its JSON by op type and node.
``--compare-torch model.pt`` adds eager PyTorch (and the bundle's TorchScript) rows on the CPU.

No deadline: the cold-start children are bounded, the calls timed in this process are not (a
bundle whose graph never finishes, such as a Loop of 2^62 iterations, keeps ``profile`` running).
Profile bundles you trust (``check --timeout`` passes them), or run it under ``timeout``.
"""

from __future__ import annotations

import datetime as dt
import gc
import io
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from edgeship.bundle.manifest import Candidate, VariantResult
from edgeship.bundle.manifest import options_text as manifest_options_text
from edgeship.config import ProfileConfig
from edgeship.errors import SpecError
from edgeship.host import usable_cpus
from edgeship.profiling import coldstart
from edgeship.profiling.baseline import Comparison, compare, config_label, parse_percent
from edgeship.profiling.harness import openvino_harness, ort_harness, torch_harness
from edgeship.profiling.memory import RSS_NOT_MEASURED, PeakRss
from edgeship.profiling.opprofile import OpProfile, ort_op_profile
from edgeship.profiling.output import CSV_FIELDS, latencies_path, write_csv, write_json
from edgeship.profiling.source import Source, batch_feeds, natural_batch, open_source
from edgeship.profiling.stats import Stats
from edgeship.profiling.timing import time_calls
from edgeship.runtimes.ort import MAX_THREADS

log = logging.getLogger(__name__)
# the writers live in edgeship.profiling.output; re-exported here for callers of the old names
__all__ = ["CSV_FIELDS", "Comparison", "ConfigResult", "ProfileReport", "Source", "compare", "latencies_path",
           "open_source", "parse_percent", "profile", "write_csv", "write_json"]

DEFAULT_ITERATIONS = 200
SCHEMA = "edgeship.profile/1"
# The clock every measurement in this process reads (integer ns): the timing loop, and the open +
# first call that sets a cold-start child's time limit. A hook for tests, which put a fake clock
# here to get exact figures; nothing else replaces it. (A cold-start child reads perf_counter_ns.)
clock: Callable[[], int] = time.perf_counter_ns


@dataclass(frozen=True)
class ConfigResult:
    """One configuration's measurements; times in milliseconds."""

    runtime: str  # onnxruntime | openvino | torch
    target: str
    variant: str  # a bundle variant or candidate id, "onnx" for an .onnx file, torch-eager or torchscript
    threads: int
    batch: int
    providers: tuple[str, ...]
    io_binding: bool
    cold_start_ms: float | None  # session_ms + first_run_ms, in a fresh process; None: not measured
    session_ms: float | None
    first_run_ms: float | None
    stats: Stats
    throughput: float  # items/s = batch / p50 latency (one stall does not drag it down)
    peak_rss_mb: float
    rss_growth_mb: float  # peak minus the RSS just before the session was created
    per_op: OpProfile | None = None
    latencies_ms: np.ndarray | None = field(default=None, repr=False, compare=False)
    options: dict = field(default_factory=dict, hash=False)  # a candidate's runtime options (spinning, opt_level, ...)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.target, self.variant, self.threads, self.batch)

    @property
    def label(self) -> str:
        return config_label(*self.key)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("runtime", "target", "variant", "threads", "batch")}
        d.update(providers=list(self.providers), io_binding=self.io_binding, cold_start_ms=self.cold_start_ms,
                 session_ms=self.session_ms, first_run_ms=self.first_run_ms, stats=self.stats.to_dict(),
                 throughput=self.throughput, peak_rss_mb=_finite(self.peak_rss_mb), rss_growth_mb=_finite(self.rss_growth_mb),
                 per_op=self.per_op.to_dict() if self.per_op else None, options=dict(self.options))
        return d

    @property
    def options_text(self) -> str:
        """``spinning=off opt_level=extended``: the options beyond threads, in words ("" for none)."""
        return options_text(self.options)


@dataclass(frozen=True)
class ProfileReport:
    """Everything one ``profile`` run measured."""

    name: str
    source: str
    kind: str  # bundle | onnx | export
    settings: dict
    host: dict
    created_at: str
    results: tuple[ConfigResult, ...]
    notes: tuple[str, ...] = ()
    variant_info: dict[str, VariantResult] = field(default_factory=dict)  # a bundle's precision, size, parity
    defaults: dict[str, str] = field(default_factory=dict)  # a bundle's default variant per target
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)  # a bundle's candidates, default first

    def speedup(self, r: ConfigResult) -> float | None:
        """Eager PyTorch p50 ÷ this row's p50 at the same threads and batch (None without eager rows)."""
        eager = next((e for e in self.results if e.variant == "torch-eager" and (e.threads, e.batch) == (r.threads, r.batch)), None)
        return None if eager is None or eager is r else eager.stats.p50 / r.stats.p50

    def to_dict(self) -> dict:
        variants = {n: {k: v.to_dict()[k] for k in ("precision", "size", "parity")} for n, v in self.variant_info.items()}
        return {"schema": SCHEMA, "name": self.name, "source": self.source, "kind": self.kind,
                "created_at": self.created_at, "settings": self.settings, "host": self.host,
                "notes": list(self.notes), "defaults": dict(self.defaults), "variants": variants,
                "candidates": {t: [c.to_dict() for c in cs] for t, cs in self.candidates.items()},
                "results": [r.to_dict() for r in self.results]}


# ----------------------------------------------------------------------------- profile
@dataclass(frozen=True)
class _Item:
    runtime: str
    target: str
    variant: str
    threads: int
    batch: int
    open: Callable  # () -> Harness
    ops: Callable | None = None  # () -> OpProfile
    options: dict = field(default_factory=dict, hash=False)
    cold: coldstart.Request | None = None  # the same configuration, for a fresh process

    @property
    def label(self) -> str:
        return config_label(self.target, self.variant, self.threads, self.batch)


MAX_BATCH = 1 << 16
COLD_START = ("fresh", "off")
MAX_DURATION_S = 24 * 3600.0


def _check(cfg: ProfileConfig) -> None:
    if cfg.iterations is not None and cfg.duration is not None:
        raise SpecError("--iterations and --duration exclude each other; pass one of them.")
    bad = [f"--threads {t}" for t in cfg.threads if t is not None and not 1 <= t <= MAX_THREADS]
    bad += [f"--batch {b}" for b in cfg.batches if b is not None and not 1 <= b <= MAX_BATCH]
    if cfg.warmup < 0:
        bad.append(f"--warmup {cfg.warmup}")
    if cfg.iterations is not None and cfg.iterations < 1:
        bad.append(f"--iterations {cfg.iterations}")
    if cfg.duration is not None and not 0 < cfg.duration <= MAX_DURATION_S:
        bad.append(f"--duration {cfg.duration}")
    if bad:
        raise SpecError(f"{', '.join(bad)}: use positive counts (--warmup may be 0; --threads at most {MAX_THREADS}, "
                        f"--batch at most {MAX_BATCH}) and a duration above 0 s and at most {MAX_DURATION_S} s.")
    if cfg.candidates and tuple(cfg.threads) != (None,):
        raise SpecError("--threads does not apply with --candidates: each candidate runs at the thread count it "
                        "records (or one per core); drop --threads, or profile variants without --candidates.")
    if cfg.cold_start not in COLD_START:
        raise SpecError(f"--cold-start {cfg.cold_start}: use one of {', '.join(COLD_START)}.")
    if not cfg.targets or not cfg.threads or not cfg.batches:
        raise SpecError("nothing to profile: give at least one --target, --threads and --batch value.")


def _targets(requested: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    from edgeship.runtimes.ort import providers_for, resolve_targets

    return [(t, providers_for(t)) for t in resolve_targets(requested)]


def profile(source: str | os.PathLike[str] | Source, config: ProfileConfig = ProfileConfig(),
            progress: Callable[[int, int, str], None] | None = None) -> ProfileReport:
    """Profile a bundle or .onnx file over every configuration of ``config``.

    ``progress(done, total, label)`` is called before each configuration and once at the end.

    Raises:
        SpecError: bad settings, an unknown variant, or a --batch a fixed batch axis cannot take.
        TargetUnavailableError: a target's execution provider is not installed.
        BundleError, ModelLoadError: the source is corrupt or not a model.
    """
    _check(config)
    web = WEB in config.targets
    page = _web_page(config) if web else None  # no browser: refused before any work
    src = source if isinstance(source, Source) else open_source(source)
    targets = _targets(tuple(t for t in config.targets if t != WEB)) if config.targets != (WEB,) else []
    variants = list(dict.fromkeys(config.variants)) or list(src.variants)
    unknown = [v for v in variants if v not in src.variants]
    if unknown:
        raise SpecError(f"variant(s) {', '.join(unknown)} not in {src.name}; it has {', '.join(src.variants)}.")
    threads = list(dict.fromkeys(t or usable_cpus() for t in config.threads))
    batches = list(dict.fromkeys(natural_batch(src.spec, src.sample) if b is None else b for b in config.batches))
    feeds = {b: batch_feeds(src, b) for b in batches}
    ops_runs, ops_warm = config.per_op_runs, min(config.warmup, 5)
    plan: list[_Item] = []
    notes: list[str] = []
    models = {v: src.model(v) for v in variants}  # read and verified once, whatever the targets
    if config.candidates:
        plan, skipped = _candidate_items(src, variants, models, targets, batches, feeds, config)
        notes += skipped
    else:
        for target, providers in targets:
            for v in variants:
                model = models[v]
                if target == "mobile" and _format(src, v, model) != "ort":  # the mobile target runs the .ort files
                    continue
                plan += [_Item("onnxruntime", target, v, t, b, partial(ort_harness, model, target, providers, t, feeds[b]),
                               partial(ort_op_profile, model, target, providers, t, feeds[b], ops_warm, ops_runs, config.top),
                               cold=coldstart.Request.ort(model, target, providers, t, feeds[b]))
                         for t in threads for b in batches]
        if "openvino" in config.runtimes:
            plan += _openvino_items(src, [v for v in variants if _format(src, v, models[v]) == "onnx"], models,
                                    [t for t, _ in targets], threads, batches, feeds)
        if "onnxruntime" not in config.runtimes:
            plan = [i for i in plan if i.runtime != "onnxruntime"]
    if config.compare_torch is not None:
        plan += _torch_items(src, config, threads, batches, feeds)
        if any(t != "cpu" for t, _ in targets):
            notes.append("PyTorch rows run on the CPU")
        if src.torchscript is not None and not config.run_bundled_torchscript:
            notes.append("the bundle's TorchScript was not timed: TorchScript is code, and a bundle is not trusted "
                         "to name code to run; pass --run-bundled-torchscript for a bundle you trust")
    rss = PeakRss()
    if rss.scope == "process":
        notes.append("peak RSS is the process's lifetime peak (this OS cannot reset it per configuration)")
    elif rss.scope == "unmeasured":
        notes.append(f"peak RSS {RSS_NOT_MEASURED} (no /proc and no resource module)")
    iterations = None if config.duration is not None else (config.iterations or DEFAULT_ITERATIONS)
    results = []
    colds = coldstart.Children(config.cold_start)
    total = len(plan) + (len(variants) * len(batches) if web else 0)
    for i, item in enumerate(plan):
        if progress:
            progress(i, total, item.label)
        r, opened_s = _measure(item, config, iterations, rss)
        if config.cold_start == "fresh":  # its own child's figures, or None: never another row's
            got = colds.measure(item.cold, item.label, item.runtime, opened_s)
            r = replace(r, cold_start_ms=got.cold_start_ms, session_ms=got.session_ms, first_run_ms=got.first_run_ms)
        results.append(r)
    if page is not None:
        web_rows, web_notes = _web_results(page, variants, models, src.spec, batches, feeds, config, iterations,
                                           lambda i, label: progress(len(plan) + i, total, label) if progress else None)
        results += web_rows
        notes += web_notes
    if progress:
        progress(total, total, "done")
    notes[:0] = colds.notes()
    settings = {"warmup": config.warmup, "iterations": iterations, "duration": config.duration,
                "per_op": config.per_op, "per_op_runs": config.per_op_runs if config.per_op else None,
                "rss_scope": rss.scope, "rss_holds": rss_holds(sys.modules), "cold_start": config.cold_start}
    return ProfileReport(src.name, src.path, src.kind, settings, host_info(),
                         dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), tuple(results), tuple(notes),
                         dict(src.variant_info), dict(src.defaults), dict(src.candidates))


WEB = "web"  # onnxruntime-web in a headless Chromium (edgeship.runtimes.web)


def _web_page(config: ProfileConfig):
    from edgeship.runtimes.web import WebPage

    return WebPage(config.browser)


def _web_results(page, variants: list[str], models: dict, spec, batches, feeds, config: ProfileConfig,
                 iterations: int | None, progress: Callable[[int, str], None]) -> tuple[list[ConfigResult], list[str]]:
    """Each variant × batch in onnxruntime-web (wasm) in one headless Chromium page, timed in the page
    (performance.now() around each awaited session.run: in-browser time, without the trip from Python);
    ``session_ms``: creating the session in the page, timed from Python. Cold start and memory are
    not measured there (None)."""
    from edgeship.runtimes.web import WebRunner

    n = iterations or DEFAULT_ITERATIONS  # the page counts calls; --duration is not applied there
    rows: list[ConfigResult] = []
    unmeasured: dict[str, str] = {}  # variant -> why onnxruntime-web did not run it (as check says it)
    with page:
        for i, (v, b) in enumerate((v, b) for v in variants for b in batches):
            progress(i, config_label(WEB, v, page.info.threads or 1, b))
            if v in unmeasured:
                continue
            with WebRunner(spec, models[v] if isinstance(models[v], bytes) else Path(models[v]).read_bytes(), "wasm",
                           page=page) as runner:
                try:
                    ms = np.asarray(runner.time_in_page(feeds[b], config.warmup, n), dtype=np.float64)
                except RuntimeError as e:  # it did not open or run there (an operator onnxruntime-web lacks)
                    unmeasured[v] = str(e)
                    continue
                stats = Stats.of(ms)
                threads = page.info.threads or 1
                rows.append(ConfigResult(runner.runtime, WEB, v, threads, b, ("wasm",), False, None,
                                         (runner.load_s or 0.0) * 1e3, None, stats,
                                         b * 1e3 / stats.p50 if stats.p50 > 0 else float("inf"), math.nan, math.nan,
                                         None, ms))
        what = page.info.describe("wasm")
    notes = [f"web rows: {what}; latency measured inside the page with performance.now() around each session.run "
             "(in-browser time, not counting the trip from Python); session_ms is the session's creation in the page; "
             "cold start and memory not measured in the browser"
             + (f"; --duration does not apply there: {n} calls" if config.duration is not None else "")
             + ("; --threads does not apply there (onnxruntime-web picks its thread count)"
                if tuple(config.threads) != (None,) else "")]
    notes += [f"web/{v}: not measured ({why})" for v, why in unmeasured.items()]
    return rows, notes


def rss_holds(modules: Mapping[str, object]) -> str:
    """What the process held while peak RSS was measured, for the report's RSS column.

    Peak RSS is the whole process's: under ``edgeship export --profile`` (or ``--compare-torch``)
    torch is imported too, and its hundreds of MiB are in every figure.

    Args:
        modules: the process's imported modules (``sys.modules``); read, never imported from.

    Returns:
        "onnxruntime session", or that plus "; this process also holds torch".
    """
    held = "onnxruntime session"
    return f"{held}; this process also holds torch" if "torch" in modules else held


def _finite(v: float) -> float | None:
    """NaN (not measured) as None in JSON."""
    return v if math.isfinite(v) else None


def _measure(item: _Item, cfg: ProfileConfig, iterations: int | None, rss: PeakRss) -> tuple[ConfigResult, float]:
    """The configuration timed in this process, its cold start left unmeasured (None), and the
    seconds its open + first call took here (what sets a cold-start child's time limit only:
    in this process it depends on what ran before, so it is not reported)."""
    gc.collect()
    rss.reset()
    before = rss.current_mb()
    h, open_ns, first_ns = coldstart.time_open(item.open, clock)
    try:
        ns = time_calls(h.call, h.args, cfg.warmup, iterations, cfg.duration, clock=clock)
        peak = rss.peak_mb()
    finally:
        h.close()
    ops = item.ops() if cfg.per_op and item.ops is not None else None
    ms = ns / 1e6
    stats = Stats.of(ms)
    return ConfigResult(item.runtime, item.target, item.variant, item.threads, item.batch, tuple(h.providers),
                        h.io_binding, None, None, None, stats,
                        item.batch * 1e3 / stats.p50 if stats.p50 > 0 else float("inf"), peak,
                        max(peak - before, 0.0) if math.isfinite(peak - before) else math.nan, ops, ms,
                        dict(item.options)), (open_ns + first_ns) / 1e9


def _format(src: Source, variant: str, model: object) -> str:
    """A variant's model format: ``ort`` (ONNX Runtime Mobile's, ``export --target mobile``) or ``onnx``."""
    from edgeship.runtimes.ort_format import is_ort_format

    info = src.variant_info.get(variant)
    if info is not None:
        return info.format
    return "ort" if (is_ort_format(model) if isinstance(model, bytes) else str(model).endswith(".ort")) else "onnx"


def _openvino_items(src: Source, variants: list[str], models: dict, targets: list[str], threads, batches,
                    feeds) -> list[_Item]:
    """OpenVINO rows (cpu target only): the OpenVINO candidates the export would consider for each
    variant (:func:`edgeship.runtimes.registry.candidate_configs`: fp32 at f32 and, where the CPU
    has it, bf16; the static-int8 QDQ file), named like them (``fp32@openvino-bf16``)."""
    from edgeship.runtimes.registry import OPENVINO, candidate_configs, installed

    if not installed(OPENVINO):
        raise SpecError("--runtime openvino: openvino is not installed here; pip install 'edgeship[openvino]'.")
    if "cpu" not in targets:
        return []
    info = src.variant_info
    configs = candidate_configs({v: info[v].precision if v in info else "fp32" for v in variants}, "cpu",
                                runtimes=(OPENVINO,))
    return [_Item("openvino", "cpu", c.id, t, b, partial(openvino_harness, models[c.variant], c.precision, t, feeds[b]),
                  cold=coldstart.Request.openvino(models[c.variant], c.precision, t, feeds[b]))
            for c in configs for t in threads for b in batches]


def _candidate_items(src: Source, variants: list[str], models: dict, targets: list[tuple[str, list[str]]], batches,
                     feeds, cfg: ProfileConfig) -> tuple[list[_Item], list[str]]:
    """``--candidates``: each of the bundle's candidates per target as recorded (runtime, precision,
    options; its own threads, else one per core), rows named by candidate id, in the manifest's
    order (the default first). Candidates of runtimes not installed here are left out with a note.

    Raises:
        SpecError: the source lists no candidates (an .onnx file, a bundle from before candidates).
    """
    from edgeship.bundle.choose import why_not_here

    if not src.candidates:
        why = "an .onnx file has one model" if src.kind == "onnx" else "a bundle exported before candidates"
        raise SpecError(f"--candidates: {src.name} lists no candidates ({why}); profile its variants with --variant "
                        "and --runtime instead.")
    items: list[_Item] = []
    skipped: list[str] = []
    ops_warm = min(cfg.warmup, 5)
    for target, providers in targets:
        for c in src.candidates.get(target, []):
            if c.variant not in variants:
                continue
            if c.runtime not in cfg.runtimes:
                skipped.append(f"{target}: candidate {c.id} left out: --runtime {','.join(cfg.runtimes)}")
                continue
            unmet = why_not_here(c, target)
            if unmet is not None:
                skipped.append(f"{target}: candidate {c.id} left out: {unmet}")
                continue
            t = candidate_threads(c)
            model = models[c.variant]
            for b in batches:
                if c.runtime == "openvino":
                    items.append(_Item("openvino", target, c.id, t, b,
                                       partial(openvino_harness, model, c.precision, t, feeds[b]), options=dict(c.options),
                                       cold=coldstart.Request.openvino(model, c.precision, t, feeds[b])))
                else:
                    items.append(_Item("onnxruntime", target, c.id, t, b,
                                       partial(ort_harness, model, target, providers, t, feeds[b], options=c.options),
                                       partial(ort_op_profile, model, target, providers, t, feeds[b], ops_warm,
                                               cfg.per_op_runs, cfg.top, options=c.options),
                                       options=dict(c.options),
                                       cold=coldstart.Request.ort(model, target, providers, t, feeds[b], c.options)))
    if not items and not skipped:
        raise SpecError(f"--candidates: {src.name} has no candidate for {', '.join(t for t, _ in targets)}"
                        + (f" among variants {', '.join(variants)}" if cfg.variants else "") + ".")
    return items, skipped


def candidate_threads(c: Candidate, usable: int | None = None) -> int:
    """The thread count a candidate is profiled at: its own (resolved for a host with ``usable``
    cores, default this one), else one per core."""
    from edgeship.host import resolve_threads

    return resolve_threads(c.options["threads"], usable) if c.options.get("threads") is not None else (usable or usable_cpus())


def options_text(options: dict) -> str:
    """A row's runtime options beyond threads, ``spinning=off opt_level=extended``."""
    return manifest_options_text(options, leave_out=("threads",))


def _torch_items(src: Source, cfg: ProfileConfig, threads, batches, feeds) -> list[_Item]:
    import torch  # imported before any configuration is timed here (a cold-start child imports it apart)

    from edgeship.exporters.loading import load_reference

    if cfg.compare_torch is None:
        return []
    path = Path(cfg.compare_torch)
    # every loading error surfaces before any timing; the bundle's recorded --arch is never used
    load_reference(path, cfg.load, src.recorded, "--compare-torch")
    loaders = {"torch-eager": lambda: load_reference(path, cfg.load, src.recorded, "--compare-torch")}
    if src.torchscript is not None and cfg.run_bundled_torchscript:
        data = src.torchscript()
        loaders["torchscript"] = lambda: torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    names = src.spec.input_names
    colds = {"torch-eager": partial(coldstart.Request.torch, path=path, load=cfg.load, recorded=src.recorded)}
    if "torchscript" in loaders:
        colds["torchscript"] = partial(coldstart.Request.torch, torchscript=data)
    return [_Item("torch", "cpu", v, t, b, partial(torch_harness, load, t, feeds[b], names),
                  cold=colds[v](t, feeds[b], names))
            for v, load in loaders.items() for t in threads for b in batches]


def host_info() -> dict:
    import onnxruntime as ort

    from edgeship.host import host_info as machine
    from edgeship.runtimes.ort import available_providers

    return {**machine(), "onnxruntime": ort.__version__, "providers": available_providers()}
