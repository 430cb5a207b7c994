"""report.html: the summary on top, parity in every report, one unit per column, clipped calls
counted, per-item latency, the RSS label, escaping; read as HTML here and, where Chromium is
installed, as the DOM a real browser builds from the file."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_profiler import FakeClock, _onnx

import edgeship.profiling.profiler as profiler
from edgeship.config import ProfileConfig
from edgeship.profiling.charts import number, size_unit, time_unit
from edgeship.profiling.harness import Harness
from edgeship.profiling.html import render_html, write_html
from edgeship.profiling.profiler import ProfileReport, profile, rss_holds

UNITS = ("µs", "ms", "s")
STALL_MS = 48.0  # one call in 200 of the two-thread configurations; p99 stays at the usual speed
TIME_COLUMN = re.compile(r"\((µs|ms|s)\)$")


class _Dom(HTMLParser):
    """Tags, ids, attribute URLs, the clipped markers' counts and every table's header and cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.urls: list[str] = []
        self.clipped: list[int] = []
        self.tables: dict[str, tuple[list[str], list[list[str]]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._section: str | None = None
        self.section_text: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "section":
            self._section = a.get("id")
            self.section_text[self._section or ""] = ""
        self.urls += [v for k, v in attrs if k in ("src", "href", "xlink:href", "action", "srcset") and v]
        if tag == "g" and "clipped" in (a.get("class") or "").split():
            self.clipped.append(int(a["data-clipped"]))
        if tag == "table":
            self._table = a.get("class") or ""
            self.tables[self._table] = ([], [])
        elif tag == "tr" and self._table is not None:
            self.tables[self._table][1].append([])
        elif tag in ("th", "td") and self._table is not None:
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._section is not None:
            self.section_text[self._section] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None and self._table is not None:
            head, rows = self.tables[self._table]
            (head if tag == "th" else rows[-1]).append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            head, rows = self.tables[self._table or ""]
            self.tables[self._table or ""] = (head, [r for r in rows if r])
            self._table = None
        elif tag == "section":
            self._section = None


def _parse(text: str) -> _Dom:
    dom = _Dom()
    dom.feed(text)
    return dom


def _stalling_runner(clock: FakeClock, open_ms: float = 2.5):
    """Stands in for ort_harness: a call takes 0.9 ms on one thread, 3.5 ms on two, and every 200th
    call on two threads stalls for STALL_MS (one per configuration at 200 calls); all on ``clock``."""
    def harness(model, target, providers, threads, feeds, profile_prefix=None):
        clock.advance(open_ms)
        usual = 0.9 if threads == 1 else 3.5
        pattern = itertools.cycle([usual] * 199 + [STALL_MS if threads == 2 else usual])

        def call() -> None:
            clock.advance(next(pattern))

        return Harness(call, (), ("FakeExecutionProvider",))
    return harness


def _profile(mlp_bundle, monkeypatch) -> ProfileReport:
    """The MLP bundle profiled on a fake clock: threads 1 and 2, batch 1 and 4, 200 calls each, the
    two-thread calls mixing 3.5 ms with one 48 ms stall; exact figures whatever the machine does.
    Cold starts come from fake children (child n: n + 1.25 ms); the host has 2 usable cores."""
    clock = FakeClock()
    monkeypatch.setattr(profiler, "clock", clock)
    monkeypatch.setattr(profiler, "ort_harness", _stalling_runner(clock))
    r = profile(mlp_bundle, ProfileConfig(threads=(1, 2), batches=(1, 4), warmup=0, iterations=200))
    return replace(r, host={**r.host, "usable_cpus": 2})  # what a candidate without its own threads runs at


@pytest.fixture
def report(mlp_bundle, monkeypatch, children) -> ProfileReport:
    return _profile(mlp_bundle, monkeypatch)


def _check_page(dom: _Dom, text: str) -> None:
    """What every bundle report must show, whether read from the file or from a browser's DOM."""
    assert "script" not in dom.tags and not dom.urls
    assert not re.search(r"https?://", text)  # no URL at all, fetched or not
    assert {"summary", "parity", "profile", "chart-distribution", "chart-p50", "chart-p50-item"} <= dom.ids

    head, rows = dom.tables["summary"]
    assert head[:3] == ["default", "target", "variant"] and "parity" in head
    assert any(h.startswith("p50 / call (") for h in head) and any(h.startswith("p50 / item (") for h in head)
    assert "cold start, fresh process (ms)" in head and any(h.startswith("size (") for h in head)
    by_variant = {r[2]: r for r in rows}
    assert by_variant["fp32"][0] == "★" and by_variant["int8_dynamic"][0] == ""  # fp32 is the CPU default
    assert by_variant["fp32"][head.index("parity")] == "pass" and by_variant["fp32"][3] == "fp32"

    head, rows = dom.tables["latency"]
    times = [i for i, h in enumerate(head) if TIME_COLUMN.search(h)]
    assert len(times) == 10  # cold start, mean, std, min, p50, p50 / item, p90, p95, p99, max
    for i in times:  # a unit in the header, bare numbers below it
        assert all(re.fullmatch(r"[\d,]+(\.\d+)?", r[i]) for r in rows), (head[i], [r[i] for r in rows])
    p50 = head.index("p50 (ms)")
    assert head[p50 + 1] == "p50 / item (µs)"  # per item beside per call, in the unit its median reads best in
    cells = {r[0]: r for r in rows}
    assert cells["cpu/fp32 threads=1 batch=1"][p50] == "0.900" and cells["cpu/fp32 threads=2 batch=4"][p50] == "3.50"
    assert cells["cpu/fp32 threads=1 batch=4"][p50 + 1] == "225" and cells["cpu/fp32 threads=2 batch=1"][p50 + 1] == "3,500"
    assert cells["cpu/fp32 threads=2 batch=1"][head.index("max (ms)")] == "48.0"
    assert "peak RSS (MiB; onnxruntime session" in head[-1]

    assert dom.clipped == [1, 1, 1, 1]  # each two-thread row: its one stall, counted at the axis end
    assert text.count("1 beyond, max 48.0 ms") == 4
    assert "As the bundle's manifest records it" in dom.section_text["parity"]
    head, rows = dom.tables["parity"]
    assert head[:3] == ["variant", "precision", "cpu"] and {r[0]: r[2] for r in rows} == {"fp32": "pass",
                                                                                           "int8_dynamic": "pass"}


# ----------------------------------------------------------------------------- the page, read as HTML
def test_bundle_report_structure(report, tmp_path):
    text = write_html(tmp_path / "r.html", report).read_text(encoding="utf-8")
    _check_page(_parse(text), text)


def test_report_json_carries_the_bundle_record(report):
    d = report.to_dict()
    assert d["defaults"] == {"cpu": "fp32"} and set(d["variants"]) == {"fp32", "int8_dynamic"}
    assert d["variants"]["fp32"]["parity"]["passed"] == {"cpu": True} and d["variants"]["fp32"]["size"] > 0
    assert d["settings"]["rss_holds"].startswith("onnxruntime session")


def test_onnx_report_says_it_has_no_parity_record(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(profiler, "clock", clock)
    monkeypatch.setattr(profiler, "ort_harness", _stalling_runner(clock))
    r = profile(_onnx(tmp_path, ["N", 4]), ProfileConfig(threads=(1,), warmup=0, iterations=20))
    dom = _parse(render_html(r))
    assert "parity" in dom.ids and "No parity record" in dom.section_text["parity"]
    assert "raw .onnx file" in dom.section_text["parity"]
    head, rows = dom.tables["summary"]
    assert rows[0][0] == "" and rows[0][head.index("parity")] == "no record"
    assert not dom.clipped  # nothing stalls on one thread: no marker


def test_rss_column_says_what_the_process_held():
    assert rss_holds({}) == "onnxruntime session"
    assert rss_holds({"torch": object()}) == "onnxruntime session; this process also holds torch"


def test_bundle_names_are_escaped(report):
    evil = '<img src=x onerror="alert(1)">'
    info = report.variant_info["fp32"]
    crafted = replace(report, name=evil, variant_info={evil: replace(info, name=evil, precision=evil)},
                      defaults={"cpu": evil}, results=tuple(replace(r, variant=evil) for r in report.results))
    text = render_html(crafted)
    dom = _parse(text)
    assert "img" not in dom.tags and "<img" not in text and "&lt;img src=x" in text
    assert dom.tables["summary"][1][0][0] == "★"  # the crafted name still matches its default


def test_units_and_numbers():
    assert time_unit([0.952, 3.47]) == ("ms", 1.0)  # one unit for 952 µs beside 3.47 ms
    assert time_unit([0.004, 0.006]) == ("µs", 1e-3) and time_unit([1500.0]) == ("s", 1e3)
    assert time_unit([None, float("nan")]) == ("ms", 1.0)
    assert size_unit([6000, 4200]) == ("KiB", 1024) and size_unit([]) == ("B", 1)
    assert [number(v) for v in (0.952, 3.47, 48.0, 1240.0, 0.0, 0.000123)] == ["0.952", "3.47", "48.0", "1,240", "0",
                                                                                "0.000123"]
    assert number(None) == number(float("nan")) == "—" and number(4.4e-16) == "0"  # the std of identical calls


# ----------------------------------------------------------------------------- the page, in a browser
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run")


def test_bundle_report_in_headless_chromium(report, tmp_path):
    """The DOM Chromium builds from the file: parsed by a browser, not by our own parser alone."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (apt-get install chromium to run this check)")
    page = write_html(tmp_path / "report.html", report)
    p = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                        page.as_uri()], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "<body" in p.stdout, p.stderr[-2000:]
    _check_page(_parse(p.stdout), p.stdout)


def test_candidates_table_lists_them_in_load_order(report, tmp_path):
    """The bundle's candidates per target, the default first and starred, as edgeship.load tries them."""
    cands = report.candidates["cpu"]
    assert cands and cands[0].variant == "fp32"  # the MLP bundle records its candidates; fp32 is the default
    text = write_html(tmp_path / "r.html", report).read_text(encoding="utf-8")
    head, rows = _parse(text).tables["candidates"]
    assert head[:4] == ["default", "target", "candidate", "runtime"]
    assert any(h.startswith("p50 at selection (") for h in head) and "cold start, fresh process, this run (ms)" in head
    assert [r[2] for r in rows] == [c.describe() for c in cands]
    assert [r[0] for r in rows] == ["★"] + [""] * (len(cands) - 1)
    assert rows[0][head.index("cold start, fresh process, this run (ms)")] == "3.25"  # fp32, 2 threads, batch 1
    assert report.to_dict()["candidates"]["cpu"] == [c.to_dict() for c in cands]


def _candidate_cells(report: ProfileReport) -> dict[str, str]:
    head, rows = _parse(render_html(report)).tables["candidates"]
    col = head.index("cold start, fresh process, this run (ms)")
    return {c.id: row[col] for c, row in zip(report.candidates["cpu"], rows)}


def _latency_cells(report: ProfileReport) -> dict[str, str]:
    head, rows = _parse(render_html(report)).tables["latency"]
    return {r[0]: r[head.index("cold start, fresh process (ms)")] for r in rows}


def test_candidates_show_only_the_cold_start_of_their_own_configuration(report):
    """A candidate's cell holds the figure of the row with its runtime, variant, options and threads
    (at its smallest batch): not that of another candidate of the same variant, never a guess."""
    rows = _latency_cells(report)
    assert rows == {"cpu/fp32 threads=1 batch=1": "1.25", "cpu/fp32 threads=1 batch=4": "2.25",
                    "cpu/fp32 threads=2 batch=1": "3.25", "cpu/fp32 threads=2 batch=4": "4.25",
                    "cpu/int8_dynamic threads=1 batch=1": "5.25", "cpu/int8_dynamic threads=1 batch=4": "6.25",
                    "cpu/int8_dynamic threads=2 batch=1": "7.25", "cpu/int8_dynamic threads=2 batch=4": "8.25"}
    cells = _candidate_cells(report)
    want = {"fp32": "3.25", "fp32+threads=1": "1.25", "int8_dynamic": "7.25", "int8_dynamic+threads=1": "5.25"}
    for cid, cell in cells.items():  # spinning=off, opt_level=extended, OpenVINO: this run never ran them
        assert cell == want.get(cid, "—"), (cid, cell)
    assert {"fp32", "fp32+spinning=off", "int8_dynamic"} <= set(cells)  # what the MLP bundle records
    section = _parse(render_html(report)).section_text["candidates"]
    assert "shows a cold start only where this run profiled that very configuration" in section


def test_a_row_whose_child_failed_fills_no_candidate(mlp_bundle, monkeypatch, children):
    children.fail[2] = "crash"  # fp32, 2 threads, batch 1: the plain fp32 candidate's configuration
    report = _profile(mlp_bundle, monkeypatch)
    assert _latency_cells(report)["cpu/fp32 threads=2 batch=1"] == "—"
    cells = _candidate_cells(report)
    assert cells["fp32"] == "—" and cells["fp32+threads=1"] == "1.25"  # not batch 4's 4.25, not another's figure
    head, rows = _parse(render_html(report)).tables["summary"]
    at, cold = head.index("measured at"), head.index("cold start, fresh process (ms)")
    assert {(r[2], r[at], r[cold]) for r in rows} == {("fp32", "threads 1, batch 4", "2.25"),  # that row's own figure
                                                       ("int8_dynamic", "threads 1, batch 4", "6.25")}


def test_without_cold_starts_the_report_says_so(mlp_bundle, monkeypatch, children):
    clock = FakeClock()
    monkeypatch.setattr(profiler, "clock", clock)
    monkeypatch.setattr(profiler, "ort_harness", _stalling_runner(clock))
    report = profile(mlp_bundle, ProfileConfig(threads=(1,), warmup=0, iterations=20, cold_start="off"))
    assert set(_latency_cells(report).values()) == {"—"} and set(_candidate_cells(report).values()) == {"—"}
    assert "Cold start was not measured in this run" in render_html(report) and children.requests == []
