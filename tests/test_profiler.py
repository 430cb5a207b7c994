"""The latency profiler: stats, the timing loop, per-op aggregation, batch feeds, report files,
the baseline gate (exit 1 on a regression) and its error paths. Cold start in a fresh process per
configuration is in test_coldstart.py."""

import csv
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser

import numpy as np
import onnxruntime as ort
import pytest

import edgeship.profiling.profiler as profiler
from edgeship.bundle import open_bundle
from edgeship.config import ProfileConfig
from edgeship.errors import ModelLoadError, RegressionError, SpecError, TargetUnavailableError
from edgeship.profiling.harness import Harness
from edgeship.profiling.idle import cores_busy, other_threads_cpu, wait_idle
from edgeship.profiling.memory import PeakRss
from edgeship.profiling.opprofile import aggregate_ort_profile
from edgeship.profiling.profiler import compare, parse_percent, profile
from edgeship.profiling.source import batch_feeds, open_source
from edgeship.profiling.stats import Stats
from edgeship.profiling.timing import time_calls
from edgeship.runtimes.ort import bind_io

FAST_ONNX = {"warmup": 2, "iterations": 20, "cold_start": "off"}  # cold start: tests/test_coldstart.py
FAST = {**FAST_ONNX, "variants": ("fp32",)}  # the MLP bundle also has int8_dynamic


def _onnx(tmp_path, shape, name="m.onnx"):
    """A one-Relu ONNX model with input x of ``shape`` (ints fixed, strings symbolic)."""
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    save(m, str(tmp_path / name))
    return tmp_path / name


class FakeClock:
    """A nanosecond clock that moves only when told to: reading it takes no time, so every
    figure measured on it is exact whatever else the machine is doing."""

    def __init__(self):
        self.ns = 0

    def __call__(self) -> int:
        return self.ns

    def advance(self, ms: float) -> None:
        self.ns += round(ms * 1e6)


@pytest.fixture
def clock(monkeypatch):
    """A FakeClock installed as the profiler's clock (cold start and timing loop)."""
    c = FakeClock()
    monkeypatch.setattr(profiler, "clock", c)
    return c


def _fake_runner(clock: FakeClock, delays: dict, open_ms: float = 0.0, first_ms: float | None = None):
    """Stands in for ort_harness: opening takes ``open_ms``, the first call ``first_ms`` (default:
    like the others) and each other call ``delays[threads]`` ms on ``clock`` (a runner of known speed)."""
    def harness(model, target, providers, threads, feeds, profile_prefix=None):
        clock.advance(open_ms)
        n = itertools.count()

        def call(ms):
            clock.advance(first_ms if first_ms is not None and next(n) == 0 else ms)

        return Harness(call, (delays[threads],), ("FakeExecutionProvider",))
    return harness


# ----------------------------------------------------------------------------- stats and timing
def test_stats_match_numpy():
    a = np.array([5.0, 1.0, 2.0, 2.0, 3.0, 8.0, 1.5, 2.5, 4.0, 100.0])
    s = Stats.of(a)
    assert s.count == 10 and s.min == 1.0 and s.max == 100.0
    assert s.mean == pytest.approx(a.mean()) and s.std == pytest.approx(a.std(ddof=1))
    for q, v in zip((50, 90, 95, 99), (s.p50, s.p90, s.p95, s.p99)):
        assert v == pytest.approx(np.percentile(a, q))
    assert Stats.of([3.0]).std == 0.0


def test_timing_loop_on_known_call_times():
    clock = FakeClock()
    pattern = [1.0] * 9 + [5.0]  # ms: nine 1 ms calls, then one 5 ms call, over and over
    durations = itertools.cycle(pattern)
    seen = []

    def call(tag):
        seen.append(tag)
        clock.advance(next(durations))

    ns = time_calls(call, ("x",), warmup=3, iterations=20, clock=clock)
    assert seen == ["x"] * 23 and ns.dtype == np.int64
    assert (ns / 1e6).tolist() == [pattern[i % 10] for i in range(3, 23)]  # the warm-up calls are not timed
    s = Stats.of(ns / 1e6)
    assert (s.count, s.min, s.p50, s.max) == (20, 1.0, 1.0, 5.0)
    assert s.mean == pytest.approx(1.4) and s.p99 == pytest.approx(5.0)  # (18 × 1 + 2 × 5) / 20
    assert s.p90 == pytest.approx(1.4)  # between the 18th (1 ms) and 19th (5 ms) of 20


def test_wait_idle_returns_once_the_process_stops_using_the_cpu():
    """A fake clock: a spinning pool uses one core (1 s of CPU per second) for 33 ms, then nothing."""
    now = [0.0]

    def cpu():
        return min(now[0], 0.033)

    def sleep(s):
        now[0] += s

    waited = wait_idle(max_s=0.2, poll_s=0.002, clock=lambda: now[0], cpu=cpu, sleep=sleep)
    assert 0.033 <= waited <= 0.037
    now[0] = 0.0
    assert wait_idle(max_s=0.02, poll_s=0.002, clock=lambda: now[0], cpu=lambda: now[0], sleep=sleep) == pytest.approx(0.02)
    now[0] = 0.0
    assert wait_idle(clock=lambda: now[0], cpu=lambda: 0.0, sleep=sleep) == pytest.approx(0.01)  # idle: one poll


def test_cores_busy_says_whether_other_threads_used_a_fifth_of_a_core():
    now = [0.0]
    used = [0.0]
    rate = [0.0]  # CPU seconds the other threads use per second

    def sleep(s):
        now[0] += s
        used[0] += s * rate[0]

    for rate[0], busy in ((1.0, True), (0.25, True), (0.1, False), (0.0, False)):
        assert cores_busy(cpu=lambda: used[0], clock=lambda: now[0], sleep=sleep) is busy


def test_other_threads_cpu_sees_a_busy_thread_exactly_and_not_the_caller():
    cpu = other_threads_cpu()
    if cpu is None:
        pytest.skip("no per-thread CPU clocks on this platform (wait_idle polls the process's CPU time)")
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    worker = threading.Thread(target=spin)
    before = cpu()
    worker.start()
    try:
        time.sleep(0.05)
        during = cpu()
    finally:
        stop.set()
        worker.join()
    assert during - before > 0.005  # the spinning thread's CPU, read while it still runs
    # the caller's own CPU is not counted: a fresh process with no other thread (numpy's OpenBLAS
    # would start one, which spins for ~0.1 s after the import)
    code = ("import time; from edgeship.profiling.idle import other_threads_cpu; "
            "cpu = other_threads_cpu(); a = cpu(); t = time.thread_time()\n"
            "while time.thread_time() - t < 0.05: pass\nprint(cpu() - a)")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert float(out) < 0.01


def test_timing_loop_duration_mode():
    clock = FakeClock()
    ns = time_calls(clock.advance, (2.0,), warmup=2, iterations=None, duration=0.06, clock=clock)
    assert ns.tolist() == [2_000_000] * 30  # 60 ms of calls; the deadline starts after the warm-up
    ns = time_calls(clock.advance, (7.0,), warmup=0, iterations=None, duration=0.02, clock=clock)
    assert ns.tolist() == [7_000_000] * 3  # the call that crosses the deadline is the last one
    ns = time_calls(clock.advance, (50.0,), warmup=0, iterations=None, duration=0.001, clock=clock)
    assert ns.tolist() == [50_000_000]  # at least one call
    ns = time_calls(clock.advance, (0.001,), warmup=0, iterations=None, duration=0.005, clock=clock)
    assert ns.size == 5000 and (ns == 1000).all()  # past the first 4096-slot buffer


def test_timing_loop_reads_the_real_clock_by_default():
    ns = time_calls(lambda: None, (), warmup=0, iterations=3)
    assert ns.shape == (3,) and (ns >= 0).all()  # shapes only: no test asserts a real duration


def test_profile_reports_the_fake_runners_latency(mlp_bundle, monkeypatch, clock, children):
    monkeypatch.setattr(profiler, "ort_harness", _fake_runner(clock, {1: 2.0, 2: 4.0}, open_ms=3.0, first_ms=9.0))
    r = profile(mlp_bundle, ProfileConfig(threads=(1, 2), batches=(1, 4), **{**FAST, "cold_start": "fresh"}))
    assert [x.key for x in r.results] == [("cpu", "fp32", 1, 1), ("cpu", "fp32", 1, 4), ("cpu", "fp32", 2, 1),
                                          ("cpu", "fp32", 2, 4)]
    for x in r.results:
        want = 2.0 if x.threads == 1 else 4.0
        assert x.latencies_ms.tolist() == [want] * 20  # neither the first call nor the warm-up is in them
        assert (x.stats.count, x.stats.min, x.stats.p50, x.stats.p99, x.stats.max) == (20, want, want, want, want)
        assert x.stats.mean == pytest.approx(want) and x.stats.std == 0.0
        n = r.results.index(x)  # the open (3 ms) and first call (9 ms) in this process are not the cold start
        assert (x.session_ms, x.first_run_ms, x.cold_start_ms) == (n + 1.0, 0.25, n + 1.25)
        assert x.throughput == pytest.approx(x.batch * 1e3 / x.stats.p50)  # p50: one stall does not drag it
        assert x.providers == ("FakeExecutionProvider",)


def test_peak_rss_is_per_configuration(mlp_bundle, monkeypatch):
    if PeakRss().scope != "configuration":
        pytest.skip("this OS cannot reset the peak RSS")
    sizes = iter([96, 0])

    def harness(model, target, providers, threads, feeds, profile_prefix=None):
        block = np.ones(next(sizes) * 2**20 // 8)  # touched pages count in RSS
        return Harness(lambda: None, (), close=lambda: block.resize(0, refcheck=False))

    monkeypatch.setattr(profiler, "ort_harness", harness)
    big, small = profile(mlp_bundle, ProfileConfig(threads=(1, 2), **FAST)).results
    assert big.rss_growth_mb >= 80 and small.rss_growth_mb < 40


def test_without_resource_and_proc_peak_rss_is_not_measured(mlp_bundle, monkeypatch, tmp_path):
    """Windows: no ``resource`` module and no /proc. Profiling still works; RSS says so."""
    import builtins
    import math

    from edgeship.profiling.html import write_html
    from edgeship.profiling.memory import RSS_NOT_MEASURED

    real_import = builtins.__import__

    def no_resource(name, *args, **kwargs):
        if name == "resource":
            raise ImportError("No module named 'resource'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_resource)
    monkeypatch.setattr(PeakRss, "_reset", staticmethod(lambda: False))
    monkeypatch.setattr(PeakRss, "_status", staticmethod(lambda key: None))
    monkeypatch.setattr(profiler, "ort_harness", _fake_runner(FakeClock(), {1: 0.1}))
    r = profile(mlp_bundle, ProfileConfig(threads=(1,), **FAST))
    assert r.settings["rss_scope"] == "unmeasured" and any(RSS_NOT_MEASURED in n for n in r.notes)
    assert math.isnan(r.results[0].peak_rss_mb) and r.results[0].to_dict()["peak_rss_mb"] is None
    monkeypatch.setattr(builtins, "__import__", real_import)
    assert RSS_NOT_MEASURED in write_html(tmp_path / "r.html", r).read_text()


# ----------------------------------------------------------------------------- real runs
def test_profile_bundle_per_op(mlp_bundle):
    r = profile(mlp_bundle, ProfileConfig(threads=(1,), per_op=True, per_op_runs=7, **FAST))
    (x,) = r.results
    assert x.runtime == "onnxruntime" and x.providers == ("CPUExecutionProvider",) and not x.io_binding
    assert x.batch == 1 and 0 < x.stats.min <= x.stats.p50 <= x.stats.p99 <= x.stats.max
    assert x.peak_rss_mb > 10 and r.settings["rss_scope"] in ("configuration", "process")
    p = x.per_op
    assert p.runs == 7 and p.total_us > 0
    assert {o.op_type for o in p.op_types} <= {"Gemm", "FusedGemm", "Relu", "MatMul", "Add"}
    assert all(n.calls == 1.0 for n in p.nodes)  # warm-up runs excluded
    assert sum(n.share for n in p.nodes) == pytest.approx(1.0)
    assert sum(o.us for o in p.op_types) == pytest.approx(p.total_us)
    assert [o.us for o in p.op_types] == sorted((o.us for o in p.op_types), reverse=True)


def test_aggregate_real_ort_profile(files, tmp_path):
    from edgeship.runtimes.ort import session_options

    s = ort.InferenceSession(str(files["dir"] / "mlp.onnx"), session_options(1, profile_prefix=str(tmp_path / "p")),
                             providers=["CPUExecutionProvider"])
    for _ in range(3 + 5):
        s.run(None, {"x": files["x"]})
    events = json.loads(open(s.end_profiling()).read())
    p = aggregate_ort_profile(events, skip_runs=3, top=2)
    kernel = [e for e in events if e["cat"] == "Node" and e["name"].endswith("_kernel_time")]
    assert p.runs == 5 and len(p.nodes) == 2  # top=2 of the MLP's nodes
    assert all(n.calls == 1.0 and n.provider == "CPUExecutionProvider" for n in p.nodes)
    assert p.total_us <= sum(e["dur"] for e in kernel) / 5  # warm-up runs (the slow first one) left out
    assert p.nodes[0].us >= p.nodes[1].us and {n.name for n in p.nodes} <= {e["name"][:-12] for e in kernel}


def test_aggregate_synthetic_profile_exactly():
    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(name, op, ts, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op, "provider": "CPUExecutionProvider"}}

    events = [run(0, 100), node("a", "Conv", 1, 90),                      # warm-up run: skipped
              run(200, 100), node("a", "Conv", 201, 30), node("b", "Relu", 240, 10),
              {"cat": "Node", "name": "a_fence_before", "ts": 200, "dur": 5, "args": {"op_name": "Conv"}},
              run(400, 100), node("a", "Conv", 401, 50), node("b", "Relu", 460, 10), node("c", "Conv", 470, 20),
              node("z", "Conv", 550, 7)]                                       # between runs: ignored
    p = aggregate_ort_profile(events, skip_runs=1)
    assert p.runs == 2 and p.total_us == 60.0  # a (30 + 50) / 2, b 10, c 20 / 2
    assert [(o.op_type, o.us, o.calls) for o in p.op_types] == [("Conv", 50.0, 1.5), ("Relu", 10.0, 1.0)]
    assert [(n.name, n.us) for n in p.nodes] == [("a", 40.0), ("b", 10.0), ("c", 10.0)]
    assert p.op_types[0].share == pytest.approx(50 / 60)

    # 20 runs, one of them stalled: the fastest and slowest 10% of runs are trimmed per node
    events = []
    for i in range(20):
        events += [run(i * 100, 90), node("a", "Conv", i * 100 + 1, 1000 if i == 7 else 30 + i % 2)]
    p = aggregate_ort_profile(events)
    assert p.runs == 20 and p.nodes[0].us == pytest.approx(30.5)  # mean of the middle 16 runs


def test_compare_torch_rows(mlp_bundle, files):
    from conftest import arch

    from edgeship.config import LoadOptions

    with pytest.raises(ModelLoadError, match="records --arch .* not used automatically"):
        profile(mlp_bundle, ProfileConfig(threads=(1,), compare_torch=files["dir"] / "mlp_state.pt", **FAST))
    safe = profile(mlp_bundle, ProfileConfig(threads=(1,), compare_torch=files["dir"] / "mlp_state.pt",
                                             load=LoadOptions(arch=arch("MLP")), **FAST))
    assert {x.variant for x in safe.results} == {"fp32", "torch-eager"}  # the bundle's TorchScript is code: not run
    assert any("--run-bundled-torchscript" in n for n in safe.notes)
    r = profile(mlp_bundle, ProfileConfig(threads=(1,), compare_torch=files["dir"] / "mlp_state.pt",
                                          load=LoadOptions(arch=arch("MLP")), run_bundled_torchscript=True, **FAST))
    rows = {x.variant: x for x in r.results}
    assert set(rows) == {"fp32", "torch-eager", "torchscript"}
    assert rows["torch-eager"].runtime == rows["torchscript"].runtime == "torch"
    assert r.speedup(rows["fp32"]) == pytest.approx(rows["torch-eager"].stats.p50 / rows["fp32"].stats.p50)
    assert r.speedup(rows["torch-eager"]) is None


def test_profiler_is_torch_free(mlp_bundle):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] in ('torch', 'onnx'): raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import edgeship\n"
        "from edgeship.config import ProfileConfig\n"
        f"r = edgeship.profile({str(mlp_bundle)!r}, ProfileConfig(iterations=5, per_op=True))\n"
        "assert r.results[0].stats.p50 > 0 and 'torch' not in sys.modules\n"
        "assert r.settings['rss_holds'] == 'onnxruntime session'\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


# ----------------------------------------------------------------------------- inputs
def test_batch_feeds_repeat_golden_sample(mlp_bundle):
    src = open_source(mlp_bundle)
    x0 = src.sample["x"]
    feeds = batch_feeds(src, 3)
    assert feeds["x"].shape == (3, 10) and feeds["x"].flags.c_contiguous
    assert all(np.array_equal(feeds["x"][i], x0[i % x0.shape[0]]) for i in range(3))


def test_onnx_source_symbolic_axes(tmp_path):
    src = open_source(_onnx(tmp_path, ["N", "seq", 4]))
    assert src.kind == "onnx" and src.variants == ("onnx",)
    assert batch_feeds(src, 5)["x"].shape == (5, 1, 4)  # axis 0 is the batch; other symbols take 1
    r = profile(src, ProfileConfig(batches=(2,), **FAST_ONNX))
    assert r.results[0].key == ("cpu", "onnx", r.results[0].threads, 2)


def test_fixed_batch_axis(tmp_path):
    path = _onnx(tmp_path, [2, 4])
    assert profile(path, ProfileConfig(**FAST_ONNX)).results[0].batch == 2  # the fixed size by default
    with pytest.raises(SpecError, match=r"fixed batch axis \(x: float32\[2, 4\]\), so --batch 8 cannot run.*--batch 2"):
        profile(path, ProfileConfig(batches=(8,), **FAST_ONNX))


def test_io_binding_matches_session_run(files):
    s = ort.InferenceSession(str(files["dir"] / "mlp.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    binding, keep = bind_io(s, {"x": files["x"]}, names, device="cpu")
    s.run_with_iobinding(binding)
    assert np.array_equal(binding.copy_outputs_to_cpu()[0], s.run(names, {"x": files["x"]})[0])


@pytest.mark.cuda
def test_cuda_uses_io_binding(mlp_bundle):
    (x,) = profile(mlp_bundle, ProfileConfig(targets=("cuda",), per_op=True, **FAST)).results
    assert x.io_binding and x.providers[0] == "CUDAExecutionProvider" and x.stats.p50 > 0
    assert any(n.provider == "CUDAExecutionProvider" for n in x.per_op.nodes)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("cfg, match", [
    ({"iterations": 5, "duration": 1.0}, "--iterations and --duration exclude each other"),
    ({"threads": (0,)}, "--threads 0"),
    ({"batches": (-1,)}, "--batch -1"),
    ({"duration": 0.0}, "--duration 0.0"),
    ({"variants": ("int8",)}, "variant.*int8 not in mlp; it has fp32"),
    ({"cold_start": "warm"}, "--cold-start warm: use one of fresh, off"),
])
def test_bad_settings(mlp_bundle, cfg, match):
    with pytest.raises(SpecError, match=match):
        profile(mlp_bundle, ProfileConfig(**cfg))


def test_bad_sources_and_targets(mlp_bundle, files, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        profile(tmp_path / "nope.edgeship")
    (tmp_path / "junk.bin").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="neither a bundle nor an ONNX model"):
        profile(tmp_path / "junk.bin")
    with pytest.raises(ModelLoadError, match="--compare-torch .* is an ONNX model"):
        profile(mlp_bundle, ProfileConfig(compare_torch=files["dir"] / "mlp.onnx", **FAST))


@pytest.mark.no_cuda
def test_cuda_target_without_cuda_says_what_to_install(mlp_bundle):
    with pytest.raises(TargetUnavailableError, match="requested target cuda.*install onnxruntime-gpu"):
        profile(mlp_bundle, ProfileConfig(targets=("cuda",)))


def test_baseline_errors(mlp_bundle, tmp_path, monkeypatch, clock):
    monkeypatch.setattr(profiler, "ort_harness", _fake_runner(clock, {1: 1.0}))
    r = profile(mlp_bundle, ProfileConfig(threads=(1,), **FAST))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SpecError, match="not a profile JSON"):
        compare(r, tmp_path / "bad.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"results": [{"target": "cuda", "variant": "fp32", "threads": 8, "batch": 1, "stats": {"p50": 1.0}}]}))
    with pytest.raises(SpecError, match="shares no configuration with this run.*cuda/fp32 threads=8 batch=1"):
        compare(r, other)
    assert parse_percent("10%") == pytest.approx(0.1) and parse_percent("2.5") == pytest.approx(0.025)
    with pytest.raises(SpecError, match="give a percentage such as 10%"):
        parse_percent("ten")


# ----------------------------------------------------------------------------- CLI and files
class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.ids, self.classes, self.urls = [], set(), [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        self.classes += (a.get("class") or "").split()
        self.urls += [v for k, v in attrs if k in ("src", "href", "xlink:href", "action") and v]


def test_cli_writes_json_csv_html(cli, mlp_bundle, tmp_path, children):
    j, c, h = tmp_path / "p.json", tmp_path / "p.csv", tmp_path / "report.html"
    code, out = cli("profile", mlp_bundle, "--variant", "fp32", "--threads", "1,2", "--batch", "1,3", "-n", "25", "--warmup", "2",
                    "--per-op", "--json", j, "--csv", c, "--html", h)
    assert code == 0, out
    assert "Latency: mlp" in out and "Per op: cpu/fp32 threads=2 batch=3" in out
    data = json.loads(j.read_text())
    assert data["schema"] == "edgeship.profile/1" and data["settings"]["iterations"] == 25
    keys = [(r["target"], r["variant"], r["threads"], r["batch"]) for r in data["results"]]
    assert keys == [("cpu", "fp32", 1, 1), ("cpu", "fp32", 1, 3), ("cpu", "fp32", 2, 1), ("cpu", "fp32", 2, 3)]
    first = data["results"][0]
    assert set(first["stats"]) == {"count", "mean", "std", "min", "p50", "p90", "p95", "p99", "max"}
    assert first["peak_rss_mb"] > 0 and first["per_op"]["op_types"]
    assert [r["cold_start_ms"] for r in data["results"]] == [1.25, 2.25, 3.25, 4.25]  # each from its own child
    assert data["settings"]["cold_start"] == "fresh"
    with np.load(tmp_path / data["latencies"]) as lat:
        assert len(lat.files) == 4 and all(lat[k].shape == (25,) for k in lat.files)
    rows = list(csv.DictReader(c.open()))
    assert len(rows) == 4 and rows[1]["batch"] == "3"
    assert float(rows[1]["p50_ms"]) == pytest.approx(data["results"][1]["stats"]["p50"], rel=1e-5)
    assert all(len(row[k].split("e")[0].replace(".", "").lstrip("0")) <= 6 for row in rows
               for k in ("mean_ms", "std_ms", "p50_ms"))  # 6 significant digits, not 17

    text = h.read_text()
    page = _Page()
    page.feed(text)
    assert page.tags.count("svg") == 3 and {"summary", "parity", "chart-distribution", "chart-p50", "chart-p50-item",
                                            "per-op"} <= page.ids
    assert page.tags.count("circle") >= 4 * 25 and page.tags.count("rect") >= 4  # every call a dot, a bar per config
    assert "per-op" in page.classes and "latency" in page.classes
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert not page.urls and "http://" not in text and "https://" not in text  # nothing fetched from anywhere


def test_cli_baseline_gate_catches_a_slowed_configuration(cli, mlp_bundle, tmp_path, monkeypatch, clock):
    delays = {1: 5.0, 2: 5.0}
    monkeypatch.setattr(profiler, "ort_harness", _fake_runner(clock, delays))
    base = tmp_path / "base.json"
    args = ("profile", mlp_bundle, "--variant", "fp32", "--threads", "1,2", "-n", "15", "--warmup", "1", "--cold-start", "off")
    assert cli(*args, "--json", base)[0] == 0

    code, out = cli(*args, "--baseline", base, "--max-regression", "20%")
    assert code == 0, out
    assert "baseline passed" in out

    delays[1] = 10.0  # the one-thread configuration is now twice as slow
    code, out = cli(*args, "--baseline", base, "--max-regression", "20%", "--json", tmp_path / "now.json")
    assert code == 1, out
    assert "REGRESSED" in out and "Traceback" not in out
    msg = out[out.index("error:"):]
    assert "in 1 configuration(s)" in msg and "threads=2" not in msg
    m = re.search(r"cpu/fp32 threads=1 batch=1: ([\d.]+) ms vs baseline ([\d.]+) ms \(\+(\d+\.\d)%\)", msg)
    assert m and (float(m.group(1)), float(m.group(2)), m.group(3)) == (10.0, 5.0, "100.0")
    now = json.loads((tmp_path / "now.json").read_text())  # written before the gate failed
    assert now["comparison"]["passed"] is False


def test_cli_baseline_reports_unmatched_configurations(cli, mlp_bundle, tmp_path, monkeypatch, clock, children):
    monkeypatch.setattr(profiler, "ort_harness", _fake_runner(clock, {1: 1.0, 2: 1.0, 3: 1.0}))
    base = tmp_path / "base.json"
    assert cli("profile", mlp_bundle, "--variant", "fp32", "--threads", "1,2", "-n", "10", "--json", base)[0] == 0
    code, out = cli("profile", mlp_bundle, "--variant", "fp32", "--threads", "1,3", "-n", "10",
        "--baseline", base, "--max-regression", "50")
    assert code == 0, out
    assert "1 configuration(s) in the baseline but not measured now: cpu/fp32 threads=2 batch=1" in out
    assert "1 configuration(s) measured now but not in the baseline: cpu/fp32 threads=3 batch=1" in out


def test_cli_usage_errors_exit_2(cli, mlp_bundle):
    code, out = cli("profile", mlp_bundle, "--threads", "one")
    assert code == 2 and "--threads takes whole numbers" in out
    code, out = cli("profile", mlp_bundle, "--iterations", "5", "--duration", "1")
    assert code == 2 and "exclude each other" in out and "Traceback" not in out
    code, out = cli("profile", mlp_bundle, "--max-regression", "lots")
    assert code == 2 and "percentage" in out


def test_regression_error_is_a_failed_gate():
    assert RegressionError.exit_code == 1


# ----------------------------------------------------------------------------- export --profile
def test_export_profile_puts_report_html_in_the_bundle(files, tmp_path):
    from conftest import arch

    from edgeship.config import ExportConfig, LoadOptions
    from edgeship.pipeline import export

    out = tmp_path / "p.edgeship"
    res = export(ExportConfig(model=files["dir"] / "mlp_state.pt", output=out, inputs=("x:1x10",), dynamic_batch=True,
                              load=LoadOptions(arch=arch("MLP")), exporter="torchscript", torchscript=False, profile=True))
    assert [s.name for s in res.stages][-2:] == ["profile", "package"] and res.stages[-2].status == "ok"
    b = open_bundle(out)  # verifies every sha256, refuses unlisted files
    assert {"report.html", "report.json"} <= set(b.files)
    report = json.loads(b.read("report.json"))
    assert report["profile"]["results"][0]["variant"] == "fp32" and report["profile"]["results"][0]["per_op"]
    # the export does not start a process per variant: its report says cold start was not measured
    assert report["profile"]["settings"]["cold_start"] == "off"
    assert all(r["cold_start_ms"] is None for r in report["profile"]["results"])
    assert "Cold start was not measured in this run: `edgeship profile` measures it" in b.read("report.html").decode()
    page = _Page()
    page.feed(b.read("report.html").decode())
    assert {"summary", "export", "parity", "chart-distribution", "chart-p50", "chart-p50-item", "per-op"} <= page.ids
    text = b.read("report.html").decode()
    assert "★" in text and "this process also holds torch" in text  # export imported torch: the RSS says so


def test_export_without_profile_has_no_profile_stage(mlp_bundle):
    b = open_bundle(mlp_bundle)
    assert "report.html" not in b.files
    assert "profile" not in [s["name"] for s in json.loads(b.read("report.json"))["stages"]]


def test_help_lists_the_options(cli):
    code, out = cli("profile", "--help")
    assert code == 0
    for opt in ("--target", "--variant", "--threads", "--batch", "--warmup", "--iterations", "--duration", "--per-op",
                "--json", "--csv", "--html", "--baseline", "--max-regression", "--compare-torch", "--cold-start"):
        assert opt in out, opt
    assert "--profile" in cli("export", "--help")[1]


def test_candidates_are_profiled_as_recorded_with_runtime_and_options_per_row(cli, bundle_copy, tmp_path, monkeypatch,
                                                                               children):
    """--candidates: one row per manifest candidate (the default first), its runtime, its options
    applied to the session it times, and shown in the table, JSON, CSV and report.html."""
    import edgeship.runtimes.ort as ort_mod
    from edgeship.bundle.manifest import candidates_of
    from edgeship.host import usable_cpus

    m = json.loads((bundle_copy / "manifest.json").read_text())
    if not any(c["runtime"] == "openvino" for c in m["candidates"]["cpu"]):  # exported without the extra
        m["candidates"]["cpu"].append({"id": "fp32@openvino", "runtime": "openvino", "variant": "fp32", "precision": "fp32"})
        (bundle_copy / "manifest.json").write_text(json.dumps(m))
    monkeypatch.setattr("edgeship.runtimes.registry.installed", lambda r: r == "onnxruntime")  # as without the extra
    asked = []
    real = ort_mod.session_options
    monkeypatch.setattr(ort_mod, "session_options", lambda *a, **k: asked.append((a, k)) or real(*a, **k))
    expected = [c for c in candidates_of(m)["cpu"] if c.runtime == "onnxruntime"]

    report = profile(bundle_copy, ProfileConfig(candidates=True, runtimes=("onnxruntime", "openvino"), warmup=1, iterations=3))
    assert [r.variant for r in report.results] == [c.id for c in expected]
    for r, c in zip(report.results, expected):
        assert r.runtime == "onnxruntime" and r.options == c.options
        assert r.threads == (c.options.get("threads") or usable_cpus())
    spin = next(r for r in report.results if r.options.get("spinning") is False)
    assert spin.options_text == "spinning=off"
    assert any(k.get("spinning") is False for _, k in asked)  # the session it timed had spinning off
    # each row's cold-start child opened that very candidate: its options and threads
    assert [(q.params["options"], q.params["threads"]) for q in children.requests] == [
        (c.options, r.threads) for r, c in zip(report.results, expected)]
    assert [r.cold_start_ms for r in report.results] == [n + 1.25 for n in range(len(expected))]
    assert any("fp32@openvino left out: openvino is not installed" in n for n in report.notes), report.notes

    j, c, h = tmp_path / "p.json", tmp_path / "p.csv", tmp_path / "p.html"
    code, out = cli("profile", bundle_copy, "--candidates", "-n", "3", "--warmup", "1", "--json", j, "--csv", c, "--html", h)
    assert code == 0, out
    assert "runtime" in out and "options" in out and "spinning=off" in out
    assert [r["options"] for r in json.loads(j.read_text())["results"]] == [c.options for c in expected]
    assert "spinning=off" in [row["options"] for row in csv.DictReader(c.open())]
    page = h.read_text()
    assert "<th class=\"l\">options</th>" in page and "spinning=off" in page


def test_candidates_skip_openvino_bf16_on_a_cpu_without_it(bundle_copy, monkeypatch, children):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["candidates"]["cpu"] = [c for c in m["candidates"]["cpu"] if c["runtime"] == "onnxruntime"][:1] + [
        {"id": "fp32@openvino-bf16", "runtime": "openvino", "variant": "fp32", "precision": "bf16"}]
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    monkeypatch.setattr("edgeship.runtimes.registry.installed", lambda r: True)
    monkeypatch.setenv("EDGESHIP_CPU_MASK", "avx512_bf16,amx_bf16")
    report = profile(bundle_copy, ProfileConfig(candidates=True, runtimes=("onnxruntime", "openvino"), warmup=1, iterations=2))
    assert [r.variant for r in report.results] == [m["candidates"]["cpu"][0]["id"]]
    assert any("fp32@openvino-bf16 left out: it needs a CPU with avx512_bf16 or amx_bf16; this one has none" in n
               for n in report.notes)


def test_candidates_errors(mlp_bundle, tmp_path):
    with pytest.raises(SpecError, match="--threads does not apply with --candidates"):
        profile(mlp_bundle, ProfileConfig(candidates=True, threads=(1,), iterations=2))
    with pytest.raises(SpecError, match="lists no candidates .an .onnx file"):
        profile(_onnx(tmp_path, [1, 4]), ProfileConfig(candidates=True, iterations=2))
    with pytest.raises(SpecError, match="no candidate for cpu among variants nope|not in"):
        profile(mlp_bundle, ProfileConfig(candidates=True, variants=("nope",), iterations=2))
