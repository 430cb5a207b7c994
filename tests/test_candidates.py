"""Candidates (runtime, variant, precision, options): the manifest's shape, selection, load's choice, tune.

No test here asserts a measured duration: the timings that decide are fakes.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import fake_p50s

import edgeship
from edgeship.bundle.manifest import Candidate, candidates_of
from edgeship.errors import BundleError, SpecError, TargetUnavailableError
from edgeship.host import usable_cpus
from edgeship.pipeline import select
from edgeship.profiling import interleave


def edit_manifest(bundle, **changes) -> dict:
    m = json.loads((bundle / "manifest.json").read_text())
    m.update(changes)
    (bundle / "manifest.json").write_text(json.dumps(m))
    return m


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def test_candidate_round_trips_and_tolerates_odd_informational_fields():
    c = Candidate("fp32+threads=1", "onnxruntime", "fp32", "fp32", {"threads": 1}, 1.5, True, 1e-7, 0.9999)
    assert Candidate.from_dict(c.to_dict()) == c
    odd = Candidate.from_dict({"id": "x", "runtime": "openvino", "variant": "fp32", "p50_ms": "fast",
                               "parity": ["?"], "options": "no"})
    assert odd.p50_ms is None and odd.options == {} and odd.passed and odd.min_cosine is None
    assert c.describe() == "fp32 on onnxruntime (threads=1)"


def test_the_export_records_ordered_candidates_and_the_default_leads(mlp_bundle):
    m = _manifest(mlp_bundle)
    cands = candidates_of(m)["cpu"]
    assert cands[0].id == "fp32" and m["defaults"]["cpu"] == "fp32"  # the fixture's fake timings favour fp32
    assert {c.runtime for c in cands} <= {"onnxruntime", "openvino"}
    assert any(c.options.get("spinning") is False for c in cands)  # session options are candidates too
    assert all(c.passed and c.min_cosine is not None for c in cands)
    rest = [c.p50_ms for c in cands[1:]]
    assert rest == sorted(rest)


@pytest.mark.parametrize("entry, match", [
    ({"id": "a", "runtime": "tensorflow", "variant": "fp32"}, "unknown runtime 'tensorflow'"),
    ({"id": "a", "runtime": "onnxruntime", "variant": "fp64"}, "names variant 'fp64', which it does not have"),
    ({"id": "a", "runtime": "onnxruntime", "variant": "fp32", "options": {"threads": 0}}, "threads=0"),
    ({"id": "a", "runtime": "onnxruntime", "variant": "fp32", "options": {"threads": 10**9}}, "threads="),
    ({"id": "a", "runtime": "onnxruntime", "variant": "fp32", "options": {"spinning": "yes"}}, "spinning="),
    ({"id": "a", "runtime": "onnxruntime", "variant": "fp32", "options": {"opt_level": "O9"}}, "opt_level="),
    ({"id": "a", "runtime": "onnxruntime", "variant": "fp32", "options": {"session.x": 1}}, "unknown onnxruntime option"),
    ({"id": "a", "runtime": "openvino", "variant": "fp32", "options": {"threads": True}}, "OpenVINO threads"),
    ({"id": "a", "runtime": "openvino", "variant": "fp32", "options": {"cache_dir": "/home/user/.ssh"}},
     "names a cache folder; a bundle may not choose where files are written"),
    ({"id": "a", "runtime": "onnxruntime", "variant": "fp32", "p50_ms": float("nan")}, "malformed p50_ms"),
    ({"id": "a", "runtime": "onnxruntime", "variant": "fp32", "p50_ms": "1"}, "malformed p50_ms"),
    ({"id": 3, "runtime": "onnxruntime", "variant": "fp32"}, "malformed candidate"),
    ("fp32", "candidates for 'cpu' are not a list"),
])
def test_crafted_candidates_are_refused(bundle_copy, entry, match):
    edit_manifest(bundle_copy, candidates={"cpu": entry if isinstance(entry, str) else [entry]})
    with pytest.raises(BundleError, match=match):
        edgeship.load(bundle_copy)


def test_a_repeated_candidate_is_refused(bundle_copy):
    c = {"id": "fp32", "runtime": "onnxruntime", "variant": "fp32"}
    edit_manifest(bundle_copy, candidates={"cpu": [c, c]})
    with pytest.raises(BundleError, match="lists candidate 'fp32' twice"):
        edgeship.load(bundle_copy)


def test_a_bundle_without_candidates_loads_by_its_defaults(bundle_copy):
    m = _manifest(bundle_copy)
    m.pop("candidates")
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    model = edgeship.load(bundle_copy)
    assert model.variant == m["defaults"]["cpu"] and model.runtime == "onnxruntime"
    # what runs is still named: the default variant on onnxruntime's defaults
    assert model.candidate.id == m["defaults"]["cpu"] and model.candidate.plain and model.skipped == ()


def test_load_takes_the_candidates_options_and_threads_win(bundle_copy):
    edit_manifest(bundle_copy, candidates={"cpu": [{"id": "t1", "runtime": "onnxruntime", "variant": "fp32",
                                                     "options": {"threads": 1, "spinning": False}}]})
    m = edgeship.load(bundle_copy)
    assert m.candidate.id == "t1" and m.session.get_session_options().intra_op_num_threads == 1
    assert m.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert edgeship.load(bundle_copy, threads=2).session.get_session_options().intra_op_num_threads == 2


def test_load_skips_a_candidate_whose_runtime_is_not_installed(bundle_copy, monkeypatch):
    edit_manifest(bundle_copy, candidates={"cpu": [
        {"id": "fp32@openvino", "runtime": "openvino", "variant": "fp32"},
        {"id": "fp32", "runtime": "onnxruntime", "variant": "fp32"}]})
    monkeypatch.setattr("edgeship.runtimes.registry.installed", lambda r: r == "onnxruntime")
    monkeypatch.setattr("edgeship.bundle.choose.installed", lambda r: r == "onnxruntime")
    m = edgeship.load(bundle_copy)
    assert m.runtime == "onnxruntime" and m.candidate.id == "fp32"
    assert m.skipped == ("fp32@openvino: openvino is not installed here (pip install 'edgeship[openvino]')",)
    with pytest.raises(TargetUnavailableError, match="openvino is not installed"):
        edgeship.load(bundle_copy, runtime="openvino")
    with pytest.raises(SpecError, match="unknown runtime 'tflite'"):
        edgeship.load(bundle_copy, runtime="tflite")


def test_usable_cpus_respects_a_cgroup_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == usable_cpus(tmp_path / "absent") >= 1


def _c(id_, ms, precision="fp32", runtime="onnxruntime", options=None):
    return Candidate(id_, runtime, id_.split("+")[0].split("@")[0], precision, options or ({} if "+" not in id_ else {"threads": 1}), ms)


def test_rank_needs_a_clear_win_over_plain_fp32_and_accuracy_evidence():
    assert [c.id for c in select.rank([_c("fp32", 1.0), _c("fp32+threads=1", 0.97)])][0] == "fp32"  # within 5%
    assert [c.id for c in select.rank([_c("fp32", 1.0), _c("fp32@openvino-bf16", 0.5, "bf16", "openvino")])][0] \
        == "fp32@openvino-bf16"
    tie = [_c("fp32", 1.0), _c("int8_dynamic", 0.80, "int8"), _c("fp32@openvino-bf16", 0.79, "bf16", "openvino"),
           _c("int8_dynamic+threads=1", 0.785, "int8")]
    assert select.rank(tie)[0].id == "int8_dynamic"  # within 3% of the fastest: onnxruntime, fewest options
    clear = [_c("fp32", 1.0), _c("int8_dynamic", 0.80, "int8"), _c("fp32@openvino-bf16", 0.70, "bf16", "openvino")]
    assert select.rank(clear)[0].id == "fp32@openvino-bf16"
    vacuous = select.rank([_c("fp32", 1.0), _c("fp32@openvino-bf16", 0.5, "bf16", "openvino"), _c("fp32+threads=1", 0.9)], True)
    assert vacuous[0].id == "fp32+threads=1"  # only fp32-precision candidates may lead


class _FakeRunner:
    def __init__(self, name, runtime="?", log=None):
        self.name = name
        self.runtime = runtime
        self.log = [] if log is None else log
        self.open = False

    def timing_call(self, feeds):
        if not self.open:
            self.log.append(f"open {self.name}")
            self.open = True
        return (lambda name: None), (self.name,)

    def close(self):
        if self.open:
            self.log.append(f"close {self.name}")
        self.open = False


def test_quick_p50s_stops_timing_a_clearly_slower_candidate_but_keeps_the_reference(monkeypatch):
    ms = {"fast": 1.0, "close": 1.1, "mid": 1.3, "slow": 3.0, "ref": 2.0}
    timed = dict.fromkeys(ms, 0)

    def fake_time_calls(call, args, **kw):
        (name,) = args
        timed[name] += 1
        return np.array([ms[name] * 1e6] * kw["iterations"])

    monkeypatch.setattr("edgeship.profiling.interleave.time_calls", fake_time_calls)
    p50 = interleave.quick_p50s({n: _FakeRunner(n) for n in ms}, {}, rounds=5, keep="ref", settle=lambda: None).p50
    assert p50 == pytest.approx(ms)
    # one sizing call each, then one block per round: "slow" (3x) stops after one round, "mid" (1.3x)
    # after two, "close" (1.1x) and the reference "ref" go on; the last round would time only what
    # can still end within LAST_MARGIN (1.08x) of "fast": nothing, so there is none
    assert timed == {"fast": 5, "close": 5, "mid": 3, "slow": 2, "ref": 5}


def _per_block(figures):
    """A fake time_calls giving each runner's blocks the figures listed (ms), one per call of it;
    the first call of each (sizing its block) gets the first figure too. Returns it and the blocks timed."""
    timed = {n: 0 for n in figures}

    def fake_time_calls(call, args, **kw):
        (name,) = args
        seq = figures[name]
        ms = seq[max(0, timed[name] - 1) % len(seq)]
        timed[name] += 1
        return np.array([ms * 1e6] * kw["iterations"])

    return fake_time_calls, timed


def test_quick_p50s_last_round_times_only_what_can_still_tie_or_overtake(monkeypatch):
    """Before the last of three rounds each figure can only move within its two blocks: a runner
    whose fastest block is more than LAST_MARGIN (NEAR_TIE x MIN_SPEEDUP) over the best's slowest
    cannot tie with it nor, as the fp32 reference, stop it being the default: it is not timed again."""
    figures = {"best": [1.0, 1.02, 1.0], "tie": [1.06, 1.07, 1.03], "far": [1.16, 1.15, 1.15],
               "ref": [1.2, 1.25, 1.2]}
    fake, timed = _per_block(figures)
    monkeypatch.setattr("edgeship.profiling.interleave.time_calls", fake)
    p50 = interleave.quick_p50s({n: _FakeRunner(n) for n in figures}, {}, rounds=3, keep="ref", settle=lambda: None).p50
    assert {n: k - 1 for n, k in timed.items()} == {"best": 3, "tie": 3, "far": 2, "ref": 2}
    assert p50 == pytest.approx({"best": 1.0, "tie": 1.06, "far": 1.155, "ref": 1.225})
    # a burst in one block of the best widens its range: then more may still win, and go on
    figures["best"] = [1.0, 1.1, 1.0]
    fake, timed = _per_block(figures)
    monkeypatch.setattr("edgeship.profiling.interleave.time_calls", fake)
    interleave.quick_p50s({n: _FakeRunner(n) for n in figures}, {}, rounds=3, keep="ref", settle=lambda: None)
    assert {n: k - 1 for n, k in timed.items()} == {"best": 3, "tie": 3, "far": 3, "ref": 2}
    # the reference within reach of the best goes on too (the 5% rule needs its figure)
    figures = {"best": [1.0, 1.02], "ref": [1.08, 1.1]}
    fake, timed = _per_block(figures)
    monkeypatch.setattr("edgeship.profiling.interleave.time_calls", fake)
    interleave.quick_p50s({n: _FakeRunner(n) for n in figures}, {}, rounds=3, keep="ref", settle=lambda: None)
    assert timed == {"best": 4, "ref": 4}


def test_quick_p50s_sizes_blocks_and_stops_when_one_candidate_is_left(monkeypatch):
    ms = {"fast": 0.5, "slow": 5.0}
    sizes = {n: [] for n in ms}
    warm = {n: [] for n in ms}

    def fake_time_calls(call, args, **kw):
        (name,) = args
        sizes[name].append(kw["iterations"])
        warm[name].append(kw["warmup"])
        return np.array([ms[name] * 1e6] * kw["iterations"])

    monkeypatch.setattr("edgeship.profiling.interleave.time_calls", fake_time_calls)
    interleave.quick_p50s({n: _FakeRunner(n) for n in ms}, {}, rounds=5, block_s=0.01, settle=lambda: None)
    assert sizes["fast"] == [interleave.MIN_CALLS, 20]  # 10 ms of 0.5 ms calls; alone after one round
    # WARM_S (6 ms, 12 calls) of untimed calls, at least 2, of which the 2 + MIN_CALLS sizing calls are some
    assert warm == {"fast": [2, 12 - 2 - interleave.MIN_CALLS], "slow": [2, 2]}
    assert sizes["slow"] == [interleave.MIN_CALLS, interleave.MIN_CALLS]  # never fewer than MIN_CALLS


def test_quick_p50s_waits_after_a_spinning_session_before_another_runs(monkeypatch):
    """onnxruntime's idle threads spin after a run: the next block of another session must not
    share the cores with them; after a session that does not spin, nothing waits."""
    seq = []
    sized = set()

    def fake_time_calls(call, args, **kw):
        if args[0] in sized:  # a block, not the first call that sizes them
            seq.append(args[0])
        sized.add(args[0])
        return np.array([1e6] * kw["iterations"])

    monkeypatch.setattr("edgeship.profiling.interleave.time_calls", fake_time_calls)
    monkeypatch.setattr("edgeship.profiling.interleave.usable_cpus", lambda: 2)
    spins = {"a": True, "b": False, "c": True, "d": False, "one": False}
    runners = {n: _FakeRunner(n) for n in spins}
    for n, r in runners.items():
        r.spins_when_idle, r.one_core = spins[n], n == "one"
    pause = "pause"
    interleave.quick_p50s(runners, {}, rounds=6, settle=lambda: seq.append(pause))
    blocks = [x for x in seq if x != pause]
    assert len(blocks) == 6 * 5 and all(blocks.count(n) == 6 for n in spins)
    assert seq[0] == "one" or seq[0] == pause  # whatever ran before (parity checks) may still spin
    spinner = ""  # a session whose threads may still spin
    for x in seq:
        if x == pause:
            assert spinner is not None, "a pause with nothing spinning"
            spinner = None
        elif x != "one":  # a one-thread runner needs no pause: the spinning thread has the other core
            assert spinner in (None, x), f"{x} ran while {spinner!r} may still spin"
            spinner = x if spins[x] else spinner
    # the one-thread runner filled some of the waits: it ran right after a spinning one
    assert any(x in ("a", "c") and y == "one" for x, y in zip(seq, seq[1:]))


def test_tune_restores_the_fastest_after_a_forced_bad_choice(bundle_copy, tmp_path, monkeypatch, cli):
    from edgeship.parity.check import check
    from edgeship.pipeline import tune as tune_mod

    m = _manifest(bundle_copy)
    cands = m["candidates"]["cpu"]
    slowest = [c for c in cands if c["variant"] != "fp32"][-1]
    m["candidates"]["cpu"] = [slowest] + [c for c in cands if c is not slowest]
    m["defaults"]["cpu"] = slowest["variant"]
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    assert edgeship.load(bundle_copy).candidate.id == slowest["id"]
    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0 if n == "fp32" else 2.0))
    before = (bundle_copy / "manifest.json").read_bytes()
    out = tmp_path / "tuned.edgeship"
    code, text = cli("tune", bundle_copy, "-o", out)
    assert code == 0, text
    assert (bundle_copy / "manifest.json").read_bytes() == before  # -o leaves the original alone
    assert "the default is now fp32 on onnxruntime" in text and "2.00× faster than the previous default" in text
    tuned = _manifest(out)
    assert tuned["defaults"]["cpu"] == "fp32" and tuned["candidates"]["cpu"][0]["id"] == "fp32"
    assert tuned["tuned"]["host"]["cpu_flags"] == edgeship.host.host_info()["cpu_flags"]
    assert tuned["tuned"]["previous_defaults"]["cpu"] == slowest["variant"]
    assert edgeship.load(out).candidate.id == "fp32"
    assert check(out).passed
    # in place: the bundle itself is rewritten, and still verifies
    result = tune_mod.tune(bundle_copy)
    assert result.after["cpu"][0].id == "fp32" and edgeship.load(bundle_copy).variant == "fp32"


def test_tune_refuses_a_tampered_bundle(bundle_copy, tmp_path):
    from edgeship.pipeline.tune import tune

    m = _manifest(bundle_copy)
    with open(bundle_copy / m["variants"]["fp32"]["file"], "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError):
        tune(bundle_copy, tmp_path / "out.edgeship")
    assert not (tmp_path / "out.edgeship").exists()


def test_tune_on_a_zip_writes_a_zip(bundle_copy, tmp_path, monkeypatch):
    from edgeship.pipeline.tune import tune

    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0 if n == "fp32" else 2.0))
    shutil.make_archive(str(tmp_path / "b.edgeship"), "zip", bundle_copy)
    r = tune(tmp_path / "b.edgeship.zip", tmp_path / "t.edgeship.zip")
    assert r.bundle.name == "t.edgeship.zip" and edgeship.load(r.bundle).variant == "fp32"


def test_load_says_once_that_the_bundle_was_tuned_on_a_cpu_with_other_flags(bundle_copy, caplog):
    import edgeship.bundle.choose as model_mod

    ours = edgeship.host.host_info()["cpu_flags"]
    if not ours:
        pytest.skip("this platform reports no CPU flags")
    theirs = [f for f in ours if f != ours[0]] + ["amx_fake"]
    edit_manifest(bundle_copy, tuned={"at": "2026-01-01T00:00:00+00:00", "host": {"cpu_flags": theirs}})
    model_mod._said.clear()
    with caplog.at_level("WARNING", logger="edgeship.bundle.choose"):
        edgeship.load(bundle_copy).close()
        edgeship.load(bundle_copy).close()
    said = [r.getMessage() for r in caplog.records if "tuned on a CPU with other flags" in r.getMessage()]
    assert len(said) == 1, said
    assert f"+{ours[0]}" in said[0] and "-amx_fake" in said[0] and "run `edgeship tune` on this machine" in said[0]

    edit_manifest(bundle_copy, tuned={"at": "2026-01-01T00:00:00+00:00", "host": {"cpu_flags": list(ours)}})
    model_mod._said.clear()
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgeship.bundle.choose"):
        edgeship.load(bundle_copy).close()
    assert not [r for r in caplog.records if "other flags" in r.getMessage()]


def test_which_onnxruntime_sessions_spin_when_idle(monkeypatch):
    from edgeship.runtimes.ort import OrtRunner
    from edgeship.spec import IOSpec

    monkeypatch.setattr("edgeship.host.usable_cpus", lambda: 4)
    spec = IOSpec((), ())
    assert OrtRunner(spec, b"", runtime_options={}).spins_when_idle
    assert not OrtRunner(spec, b"", runtime_options={"threads": 1}).spins_when_idle
    assert OrtRunner(spec, b"", runtime_options={"threads": 1}).one_core and OrtRunner(spec, b"", threads=1).one_core
    assert not OrtRunner(spec, b"").one_core and not OrtRunner(spec, b"", options=object()).one_core
    assert not OrtRunner(spec, b"", threads=1).spins_when_idle
    assert not OrtRunner(spec, b"", runtime_options={"spinning": False}).spins_when_idle
    assert OrtRunner(spec, b"", options=object()).spins_when_idle  # a caller's SessionOptions: onnxruntime's default
    monkeypatch.setattr("edgeship.host.usable_cpus", lambda: 1)
    assert not OrtRunner(spec, b"").spins_when_idle  # one core: no pool to spin


def test_quick_p50s_prepares_runners_while_a_spinning_one_holds_the_cores(monkeypatch):
    """Runners that do not spin are opened (and parity-checked) during the waits after a spinning
    one while it still spins, else just before their first block; one that cannot be used is left out."""
    seq = []
    sized = set()

    def fake_time_calls(call, args, **kw):
        if args[0] in sized:
            seq.append(args[0])
        sized.add(args[0])
        return np.array([1e6] * kw["iterations"])

    monkeypatch.setattr("edgeship.profiling.interleave.time_calls", fake_time_calls)
    monkeypatch.setattr("edgeship.profiling.interleave.usable_cpus", lambda: 2)
    runners = {n: _FakeRunner(n) for n in ("s1", "s2", "p1", "p2", "bad")}
    for n, r in runners.items():
        r.spins_when_idle, r.one_core = n.startswith("s"), False
    spinning_polls = [True, True, False]  # the pool spins for two polls, then stops

    def prepare(n):
        def f():
            seq.append(f"open {n}")
            return n != "bad"
        return f

    def settle():
        seq.append("pause")

    p50 = interleave.quick_p50s(runners, {}, rounds=1, settle=settle, prepare={n: prepare(n) for n in ("p1", "p2", "bad")},
                            busy=lambda: bool(spinning_polls) and spinning_polls.pop(0)).p50
    assert set(p50) == {"s1", "s2", "p1", "p2"}  # "bad" left out, the rest measured
    opened = [x for x in seq if x.startswith("open")]
    assert sorted(opened) == ["open bad", "open p1", "open p2"]
    first_block = next(i for i, x in enumerate(seq) if x in runners)
    # the runners given ready go first in the first round; two were opened in the first wait (while
    # busy), the third just before its own block
    assert seq[first_block] in ("s1", "s2") and seq.index(opened[1]) < first_block < seq.index(opened[2])
    for n in ("p1", "p2"):
        assert seq.index(f"open {n}") < seq.index(n)


def test_quick_p50s_closes_a_spinning_session_that_reopens_quickly_instead_of_waiting(monkeypatch):
    """Closing an onnxruntime session ends its spinning threads at once: where it reopens faster
    than REOPEN_MAX_S, that replaces the wait; it reopens before its next block; a runner no longer
    timed is closed."""
    log = []

    def fake_time_calls(call, args, **kw):
        log.append(args[0])
        return np.array([{"a": 1.0, "b": 1.01, "slow": 9.0}[args[0]] * 1e6] * kw["iterations"])

    monkeypatch.setattr("edgeship.profiling.interleave.time_calls", fake_time_calls)
    monkeypatch.setattr("edgeship.profiling.interleave.usable_cpus", lambda: 2)
    runners = {n: _FakeRunner(n, log=log) for n in ("a", "b", "slow")}
    for r in runners.values():
        r.spins_when_idle, r.one_core, r.load_s = True, False, 0.002
    interleave.quick_p50s(runners, {}, rounds=3, settle=lambda: log.append("pause"))
    assert "pause" not in log[1:]  # only before the very first block (whatever ran before may spin)
    for i, x in enumerate(log):
        if x in runners and i and log[i - 1] in runners and log[i - 1] != x:
            raise AssertionError(f"{x} timed right after {log[i - 1]}, which was still open: {log}")
    assert log.count("a") == log.count("b") == 1 + 3  # sizing, then a block per round
    assert log.count("open a") >= 2  # closed after a block, reopened for the next
    assert "slow" not in log[log.index("close slow"):]  # dropped after the first round: closed, never reopened
    # a session that takes long to open is left open and waited for instead
    log.clear()
    for r in runners.values():
        r.load_s, r.open = 0.5, False
    interleave.quick_p50s(runners, {}, rounds=3, settle=lambda: log.append("pause"))
    assert log.count("open a") == 1 and log.count("pause") >= 3


def test_quick_p50s_closes_and_reopens_real_onnxruntime_sessions(mlp_bundle, monkeypatch):
    """The real thing: two onnxruntime sessions taken in turns are closed after their blocks and
    reopened for the next (REOPEN_MAX_S raised so that it does not depend on how fast they open);
    each comes back measured, and a reopened session still gives the bundle's outputs."""
    from edgeship.bundle.golden import read_bundle_npz
    from edgeship.bundle.read import open_bundle
    from edgeship.runtimes.ort import OrtRunner
    from edgeship.spec import IOSpec

    b = open_bundle(mlp_bundle)
    spec = IOSpec.from_dict(b.manifest["io"])
    feeds = read_bundle_npz(b, "golden/inputs.npz")[0]
    want = read_bundle_npz(b, "golden/outputs.npz")[0]
    runners = {n: OrtRunner(spec, mlp_bundle / b.manifest["variants"][n]["file"], target="cpu", threads=2).load()
               for n in ("fp32", "int8_dynamic")}
    opened = dict.fromkeys(runners, 0)
    for n, r in runners.items():
        load = r._load

        def counted(n=n, load=load):
            opened[n] += 1
            load()
        r._load = counted
    monkeypatch.setattr(interleave, "REOPEN_MAX_S", 10.0)
    monkeypatch.setattr("edgeship.profiling.interleave.usable_cpus", lambda: 2)
    try:
        pauses = []
        p50 = interleave.quick_p50s(runners, feeds, rounds=3, settle=lambda: pauses.append(1)).p50
        assert len(pauses) <= 1  # only before the first block (whatever ran before may spin), never between
        assert set(p50) == set(runners) and all(0 < v < 1000 for v in p50.values())
        assert sum(opened.values()) >= 1  # closed after a block, reopened for its next one
        np.testing.assert_allclose(runners["fp32"].infer(feeds)["output"], want["output"], rtol=1e-4, atol=1e-5)
    finally:
        for r in runners.values():
            r.close()
