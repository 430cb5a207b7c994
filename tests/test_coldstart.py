"""Cold start in a fresh process per configuration (edgeship.profiling.coldstart): each row's figure
comes from its own child, a child that fails gives None ("—", null, an empty CSV cell) and never
another row's figure, the request a child gets is that row's configuration, and one real child."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FakeChildren
from test_profiler import FAST, FakeClock, _fake_runner

import edgeship.profiling.coldstart as coldstart
import edgeship.profiling.profiler as profiler
from edgeship.config import LoadOptions, ProfileConfig
from edgeship.profiling import harness
from edgeship.profiling.coldstart import ColdStart, Request
from edgeship.profiling.html import render_html
from edgeship.profiling.profiler import profile, write_csv
from edgeship.profiling.source import open_source

FRESH = {**FAST, "cold_start": "fresh"}
REASONS = {"crash": "its process was killed by signal SIGSEGV",
           "timeout": "its process did not finish within 60 s and was stopped",
           "error": "its process exited with status 1: ModelLoadError: cannot open the model",
           "garbage": "its process printed no result"}


@pytest.fixture
def fake_runner(monkeypatch):
    """The timed configurations run on a fake clock: only the children's figures are cold starts."""
    clock = FakeClock()
    monkeypatch.setattr(profiler, "clock", clock)
    monkeypatch.setattr(profiler, "ort_harness", _fake_runner(clock, {1: 1.0, 2: 2.0}, open_ms=3.0, first_ms=9.0))
    return clock


# ----------------------------------------------------------------------------- the request
def test_request_round_trips_the_model_and_feeds():
    feeds = {"file": np.arange(6, dtype=np.float32).reshape(2, 3), "a/b.1": np.array([[1, 2]], dtype=np.int64),
             "mask": np.array([True, False])}  # names numpy's savez would choke on
    for model in (b"\x00model bytes\n\xff", "relative/model.onnx"):
        req = coldstart.decode(Request.ort(model, "cpu", ["CPUExecutionProvider"], 3, feeds, {"spinning": False}).encode())
        assert req.runtime == "onnxruntime" and req.params == {"target": "cpu", "providers": ["CPUExecutionProvider"],
                                                               "threads": 3, "options": {"spinning": False}}
        assert req.model == (model if isinstance(model, bytes) else os.path.abspath(model))
        assert list(req.feeds) == list(feeds)
        for k, a in feeds.items():
            assert req.feeds[k].dtype == a.dtype and np.array_equal(req.feeds[k], a)
    with pytest.raises(ValueError, match="not a cold-start request"):
        coldstart.decode(b'{"runtime": "tensorflow"}\n')


# ----------------------------------------------------------------------------- each row, its own child
def test_each_configuration_gets_the_figures_of_its_own_child(mlp_bundle, fake_runner, children):
    src = open_source(mlp_bundle)
    r = profile(mlp_bundle, ProfileConfig(**{**FRESH, "variants": ("int8_dynamic", "fp32")}, threads=(2, 1), batches=(4, 1)))
    assert len(r.results) == len(children.requests) == 8
    for n, (x, q) in enumerate(zip(r.results, children.requests)):
        # the child was asked for exactly this configuration: runtime, model, target, threads, batch, options
        assert q.runtime == x.runtime == "onnxruntime" and q.model == src.model(x.variant)
        assert (q.params["target"], q.params["threads"], q.params["options"]) == (x.target, x.threads, {})
        assert q.params["providers"] == ["CPUExecutionProvider"] and q.feeds["x"].shape[0] == x.batch
        # and the row has that child's figures, not this process's open (3 ms) + first call (9 ms)
        assert (x.session_ms, x.first_run_ms, x.cold_start_ms) == (n + 1.0, 0.25, n + 1.25)
        assert x.to_dict()["cold_start_ms"] == n + 1.25
    assert all(a[0] == sys.executable and a[1] == "-c" for a in children.argv)
    assert r.settings["cold_start"] == "fresh"
    assert r.notes[0].startswith("cold start = session creation + first call, each configuration in a Python process")
    assert "importing onnxruntime there took 44 ms, median" in r.notes[0]  # 40 + n over 8 children: 43.5 → 44


@pytest.mark.parametrize("how", sorted(REASONS))
def test_a_failed_child_leaves_its_row_unmeasured(mlp_bundle, fake_runner, children, tmp_path, how):
    children.fail[1] = how
    r = profile(mlp_bundle, ProfileConfig(threads=(1,), batches=(1, 2, 4), **FRESH))
    first, failed, last = r.results
    assert (first.cold_start_ms, last.cold_start_ms) == (1.25, 3.25)  # the third row keeps its own child's 3.25
    assert failed.cold_start_ms is None and failed.session_ms is None and failed.first_run_ms is None
    assert f"cpu/fp32 threads=1 batch=2: cold start not measured: {REASONS[how]}" in r.notes
    d = failed.to_dict()
    assert d["cold_start_ms"] is None and d["session_ms"] is None and d["first_run_ms"] is None
    rows = list(csv.DictReader(write_csv(r, tmp_path / "p.csv").open()))
    assert [row["cold_start_ms"] for row in rows] == ["1.25", "", "3.25"] and rows[1]["session_ms"] == ""
    assert ">—</td>" in render_html(r)


def test_measure_says_why_a_child_gave_nothing(monkeypatch):
    req = Request.ort(b"m", "cpu", ["CPUExecutionProvider"], 1, {"x": np.zeros((1, 2), np.float32)})
    for how in sorted(REASONS):
        fake = FakeChildren()
        fake.fail[0] = how
        monkeypatch.setattr(coldstart, "spawn", fake)
        assert coldstart.measure(req, 60.0) == ColdStart(reason=REASONS[how])

    def replies(out: bytes, rc: int = 0):
        return lambda argv, data, t: subprocess.CompletedProcess(argv, rc, out, b"")

    bad = [b"edgeship-cold-start {\"session_ms\": -1, \"first_run_ms\": 0, \"import_ms\": 0}",
           b"edgeship-cold-start {\"session_ms\": 1}", b"edgeship-cold-start [1, 2]", b"edgeship-cold-start NaN"]
    for out in bad:
        monkeypatch.setattr(coldstart, "spawn", replies(out))
        got = coldstart.measure(req)
        assert got.cold_start_ms is None and got.reason == f"its process printed an unusable result: {out.decode()}"

    def cannot_start(argv, data, t):
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    monkeypatch.setattr(coldstart, "spawn", cannot_start)
    assert coldstart.measure(req).reason.startswith("its process could not start: [Errno 2]")
    monkeypatch.setattr(coldstart, "spawn", replies(b'edgeship-cold-start {"session_ms": 2, "first_run_ms": 0.5, '
                                                    b'"import_ms": 90}\n'))
    assert coldstart.measure(req) == ColdStart(2.0, 0.5, 90.0) and coldstart.measure(req).cold_start_ms == 2.5


def test_a_childs_time_limit_follows_its_configuration(mlp_bundle, monkeypatch, children):
    clock = FakeClock()
    monkeypatch.setattr(profiler, "clock", clock)
    opens = iter([3.0, 10_000.0])  # ms to open each configuration in this process
    monkeypatch.setattr(profiler, "ort_harness", lambda *a, **k: _fake_runner(clock, {1: 1.0, 2: 1.0}, next(opens))(*a, **k))
    profile(mlp_bundle, ProfileConfig(threads=(1, 2), **FRESH))
    assert children.timeouts == [60.0, pytest.approx(20 * 10.001)]  # at least a minute, 20× a slow open


def test_off_starts_no_child(mlp_bundle, fake_runner, children):
    r = profile(mlp_bundle, ProfileConfig(threads=(1, 2), **FAST))
    assert children.requests == [] and all(x.cold_start_ms is None for x in r.results)
    assert r.settings["cold_start"] == "off" and r.notes[0].startswith("cold start not measured in this run")


def test_cli_cold_start_flag_table_json_csv_html(cli, mlp_bundle, tmp_path, fake_runner, children):
    children.fail[0] = "crash"
    j, c, h = tmp_path / "p.json", tmp_path / "p.csv", tmp_path / "p.html"
    code, out = cli("profile", mlp_bundle, "--variant", "fp32", "--threads", "1,2", "-n", "5", "--json", j, "--csv", c,
                    "--html", h)
    assert code == 0, out
    assert "cold ms = session + first call in a fresh process" in out
    assert "│ cpu/fp32 │ onnxruntime │ 1 │ 1 │ — │" in out and "│ cpu/fp32 │ onnxruntime │ 2 │ 1 │ 2.2 │" in out  # child 1: 2.25
    assert "cpu/fp32 threads=1 batch=1: cold start not measured: its process was killed by signal SIGSEGV" in out
    assert [r["cold_start_ms"] for r in json.loads(j.read_text())["results"]] == [None, 2.25]
    assert [r["cold_start_ms"] for r in csv.DictReader(c.open())] == ["", "2.25"]
    assert "cold start, fresh process (ms)" in h.read_text()

    children.requests.clear()
    code, out = cli("profile", mlp_bundle, "--variant", "fp32", "-n", "5", "--cold-start", "off", "--json", j)
    assert code == 0 and children.requests == [] and "cold start not measured" in out
    assert json.loads(j.read_text())["results"][0]["cold_start_ms"] is None
    code, out = cli("profile", mlp_bundle, "--cold-start", "warm")
    assert code == 2 and "--cold-start warm: use one of fresh, off" in out and "Traceback" not in out


def test_torch_rows_get_a_child_of_their_own(mlp_bundle, files, children):
    from conftest import arch

    r = profile(mlp_bundle, ProfileConfig(threads=(1,), compare_torch=files["dir"] / "mlp_state.pt",
                                          load=LoadOptions(arch=arch("MLP")), run_bundled_torchscript=True, **FRESH))
    q = {x.variant: children.requests[i] for i, x in enumerate(r.results)}
    assert [x.cold_start_ms for x in r.results] == [1.25, 2.25, 3.25]
    assert q["torch-eager"].runtime == "torch" and q["torch-eager"].model is None
    assert q["torch-eager"].params["path"] == str(files["dir"] / "mlp_state.pt")
    assert q["torch-eager"].params["load"]["arch"] == arch("MLP") and q["torch-eager"].params["threads"] == 1
    assert q["torchscript"].model == open_source(mlp_bundle).torchscript()


# ----------------------------------------------------------------------------- the child itself
def test_the_child_opens_the_configuration_it_is_given(mlp_bundle, files, monkeypatch):
    """:func:`coldstart.child`, run in this process: the harness gets the request's arguments."""
    from conftest import arch

    src = open_source(mlp_bundle)
    feeds = {"x": files["x"]}
    seen = []
    real = harness.ort_harness
    monkeypatch.setattr(harness, "ort_harness", lambda *a, **k: seen.append((a, k)) or real(*a, **k))
    got = coldstart.child(Request.ort(src.model("fp32"), "cpu", ["CPUExecutionProvider"], 1, feeds,
                                      {"spinning": False, "opt_level": "extended"}).encode())
    (args, kwargs), = seen
    assert args[:4] == (src.model("fp32"), "cpu", ["CPUExecutionProvider"], 1) and np.array_equal(args[4]["x"], files["x"])
    assert kwargs == {"options": {"spinning": False, "opt_level": "extended"}}
    assert set(got) == {"session_ms", "first_run_ms", "import_ms"} and all(v >= 0 for v in got.values())
    eager = coldstart.child(Request.torch(1, feeds, ["x"], path=files["dir"] / "mlp_state.pt",
                                          load=LoadOptions(arch=arch("MLP"))).encode())
    script = coldstart.child(Request.torch(1, feeds, ["x"], torchscript=(files["dir"] / "mlp_ts.pt").read_bytes()).encode())
    assert all(v >= 0 for v in (*eager.values(), *script.values()))


def test_a_real_child_process_measures_a_positive_cold_start(mlp_bundle):
    """End to end: real child processes (one that works, one given bytes that are not a model)."""
    r = profile(mlp_bundle, ProfileConfig(variants=("fp32",), threads=(1,), warmup=0, iterations=2))
    (x,) = r.results
    assert x.session_ms > 0 and x.first_run_ms > 0 and x.cold_start_ms == x.session_ms + x.first_run_ms
    assert "importing onnxruntime there took" in r.notes[0] and not any("not measured" in n for n in r.notes)
    feeds = {"x": np.zeros((1, 10), np.float32)}
    bad = coldstart.measure(Request.ort(b"not a model", "cpu", ["CPUExecutionProvider"], 1, feeds))
    assert bad.cold_start_ms is None, bad
    assert bad.reason.startswith("its process exited with status 1: UnsafeModelError: onnxruntime cannot open"), bad


def test_spawn_copes_with_a_child_that_stops_reading_or_hangs():
    """The real spawn (not replaced here): a child that exits without reading its 32 MiB of stdin is an exit status,
    not a broken pipe here; one that runs past its time limit is stopped (the limit is no claim
    about speed: 2 s against a child that sleeps for 10 minutes)."""
    py = [sys.executable, "-c"]
    p = coldstart.spawn([*py, "import sys; print('bye'); sys.exit(3)"], [b"x" * (32 << 20), b"y"], 60.0)
    assert p.returncode == 3 and p.stdout.strip() == b"bye"
    p = coldstart.spawn([*py, "import sys; print(len(sys.stdin.buffer.read()))"], [b"ab", b"\n", b"cd"], 60.0)
    assert p.returncode == 0 and p.stdout.strip() == b"5"
    with pytest.raises(subprocess.TimeoutExpired):
        coldstart.spawn([*py, "import time; time.sleep(600)"], [b""], 2.0)
