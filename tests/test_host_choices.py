"""A bundle built here runs elsewhere: what each candidate needs of a host, load's fallback, the
CPU mask, thread counts relative to the host, check checking what load runs, and the timing-noise
rule for lossy candidates. No test asserts a measured duration.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import edgeship
from edgeship.bundle.manifest import Candidate, candidates_of
from edgeship.errors import SpecError, TargetUnavailableError
from edgeship.host import cpu_flags, host_info, resolve_threads, usable_cpus
from edgeship.parity.check import check
from edgeship.pipeline.select import lossy_margin, rank
from edgeship.profiling.interleave import Timings
from edgeship.runtimes import openvino as ov_runtime
from edgeship.runtimes.registry import candidate_configs, requirements, unmet

BF16 = {"id": "fp32@openvino-bf16", "runtime": "openvino", "variant": "fp32", "precision": "bf16",
        "requires": {"runtime": "openvino", "cpu_any": ["avx512_bf16", "amx_bf16"]}}
OV = {"id": "fp32@openvino", "runtime": "openvino", "variant": "fp32", "precision": "fp32", "requires": {"runtime": "openvino"}}
PLAIN = {"id": "fp32", "runtime": "onnxruntime", "variant": "fp32", "precision": "fp32"}
MASK = "avx512_bf16,amx_bf16"
native_bf16 = pytest.mark.skipif(not (ov_runtime.installed() and ov_runtime.has_bf16()),
                                 reason="needs openvino and a CPU with native bf16")
openvino = pytest.mark.skipif(not ov_runtime.installed(), reason="openvino is not installed")


def _candidates(bundle, cands) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    m["candidates"] = {"cpu": cands}
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_the_cpu_mask_hides_flags_from_every_reader(monkeypatch):
    monkeypatch.delenv("EDGESHIP_CPU_MASK", raising=False)
    have = set(cpu_flags())
    monkeypatch.setenv("EDGESHIP_CPU_MASK", " AVX2 , avx512_bf16,,")
    assert set(cpu_flags()) == have - {"avx2", "avx512_bf16"}
    info = host_info()
    assert set(info["cpu_flags"]) == set(cpu_flags()) and info["cpu_mask"] == ["avx2", "avx512_bf16"]


def test_requirements_and_why_a_host_misses_them(monkeypatch):
    assert requirements("onnxruntime", "int8") == {"runtime": "onnxruntime"}
    assert requirements("onnxruntime", "fp16", "cuda") == {"runtime": "onnxruntime", "providers": ["CUDAExecutionProvider"]}
    assert requirements("openvino", "bf16")["cpu_any"] == ["avx512_bf16", "amx_bf16"]
    assert unmet({"runtime": "onnxruntime"}) is None
    assert "unknown to this edgeship" in unmet({"runtime": "tflite"})
    monkeypatch.setattr("edgeship.runtimes.registry.installed", lambda r: True)
    monkeypatch.setenv("EDGESHIP_CPU_MASK", MASK)
    assert unmet(BF16["requires"]) == ("it needs a CPU with avx512_bf16 or amx_bf16; this one has none "
                                       "(EDGESHIP_CPU_MASK hides amx_bf16, avx512_bf16)")
    monkeypatch.setattr("edgeship.runtimes.registry.cpu_flags", lambda: ["avx2", "amx_bf16"])
    monkeypatch.delenv("EDGESHIP_CPU_MASK")
    assert unmet(BF16["requires"]) is None  # any one of them is enough
    assert "install onnxruntime-gpu" in unmet({"runtime": "onnxruntime", "providers": ["CUDAExecutionProvider"]}) \
        or "CUDAExecutionProvider" in edgeship.runtimes.ort.available_providers()


@openvino
def test_the_export_records_what_each_candidate_needs(mlp_bundle):
    cands = candidates_of(json.loads((mlp_bundle / "manifest.json").read_text()))["cpu"]
    assert all(c.requires["runtime"] == c.runtime for c in cands)
    for c in cands:
        assert ("cpu_any" in c.requires) == (c.precision == "bf16")


@native_bf16
def test_load_skips_bf16_where_the_cpu_has_none_and_says_so(bundle_copy, monkeypatch, caplog):
    _candidates(bundle_copy, [BF16, OV, PLAIN])
    monkeypatch.delenv("EDGESHIP_CPU_MASK", raising=False)
    m = edgeship.load(bundle_copy)
    assert (m.candidate.id, m.precision, m.runtime) == ("fp32@openvino-bf16", "bf16", "openvino") and m.skipped == ()
    assert "precision=bf16" in repr(m) and "candidate=fp32@openvino-bf16" in repr(m)
    monkeypatch.setenv("EDGESHIP_CPU_MASK", MASK)
    with caplog.at_level(logging.WARNING):
        masked = edgeship.load(bundle_copy)
    assert (masked.candidate.id, masked.precision) == ("fp32@openvino", "fp32")
    assert masked.skipped == ("fp32@openvino-bf16: it needs a CPU with avx512_bf16 or amx_bf16; this one has none "
                              "(EDGESHIP_CPU_MASK hides amx_bf16, avx512_bf16)",)
    assert "running candidate fp32@openvino" in caplog.text and "skipped fp32@openvino-bf16" in caplog.text
    x = np.ones((2, 10), np.float32)
    np.testing.assert_allclose(masked(x), edgeship.load(bundle_copy, runtime="ort")(x), atol=1e-4)


def test_a_candidate_recorded_without_its_needs_is_still_judged_by_them(bundle_copy, monkeypatch):
    """A crafted (or old) manifest that leaves out cpu_any does not make bf16 load on a CPU without it."""
    monkeypatch.setattr("edgeship.runtimes.registry.installed", lambda r: True)
    monkeypatch.setenv("EDGESHIP_CPU_MASK", MASK)
    _candidates(bundle_copy, [{**BF16, "requires": {"runtime": "openvino"}}, PLAIN])
    m = edgeship.load(bundle_copy)
    assert m.candidate.id == "fp32" and "avx512_bf16 or amx_bf16" in m.skipped[0]


def test_load_falls_back_when_a_candidate_fails_to_open(bundle_copy, monkeypatch):
    def refuse(self):
        raise TargetUnavailableError("OpenVINO's CPU plugin is missing here")

    monkeypatch.setattr("edgeship.runtimes.registry.installed", lambda r: True)
    monkeypatch.setattr(ov_runtime.OpenVINORunner, "_load", refuse)
    _candidates(bundle_copy, [OV, {"id": "int8_dynamic", "runtime": "onnxruntime", "variant": "int8_dynamic",
                                   "precision": "int8"}])
    m = edgeship.load(bundle_copy)
    assert m.candidate.id == "int8_dynamic" and m.skipped == (
        "fp32@openvino: it did not open (OpenVINO's CPU plugin is missing here)",)
    # nothing listed opens: the fp32 variant on onnxruntime's defaults, which always runs
    _candidates(bundle_copy, [OV])
    m = edgeship.load(bundle_copy)
    assert (m.candidate.id, m.runtime, m.precision) == ("fp32", "onnxruntime", "fp32") and len(m.skipped) == 1
    # pinned to OpenVINO, nothing runs: the error names why
    with pytest.raises(TargetUnavailableError, match=r"no candidate for cpu runs on this host: fp32@openvino: it did not "
                                                     r"open \(OpenVINO's CPU plugin is missing here\)"):
        edgeship.load(bundle_copy, runtime="openvino", variant="fp32")


def test_thread_counts_are_relative_to_the_host_and_capped(bundle_copy):
    cores = usable_cpus()
    assert resolve_threads("cores/2", 32) == 16 and resolve_threads("cores/2", 4) == 2 and resolve_threads("cores/4", 2) == 1
    assert resolve_threads(16, 4) == 4 and resolve_threads(1, 4) == 1
    for bad in ("half", "cores/0", "cores/²", "cores/-2", "cores/1e3", "cores/" + "9" * 40, 0, True, 2.0, None):
        with pytest.raises(SpecError, match="cores/N"):
            resolve_threads(bad, 4)
    assert [c.options["threads"] for c in candidate_configs({"fp32": "fp32"}, "cpu", runtimes=("onnxruntime",), cores=32)
            if "threads" in c.options] == [1, "cores/2"]
    for stored, expected in (("cores/2", max(1, cores // 2)), (1024, cores)):
        _candidates(bundle_copy, [{**PLAIN, "id": "t", "options": {"threads": stored}}])
        m = edgeship.load(bundle_copy)
        assert m.session.get_session_options().intra_op_num_threads == expected


def test_a_lossy_candidate_must_beat_the_exact_one_by_more_than_the_noise():
    def c(i, ms, precision="fp32", runtime="onnxruntime", **o):
        return Candidate(i, runtime, i.split("+")[0].split("@")[0], precision, o, ms)

    exact, lossy = c("fp32", 1.0), c("int8_dynamic", 0.93, "int8")
    assert rank([exact, lossy], noise=0.01)[0].id == "int8_dynamic"  # 7.5% faster, noise 1%: margin 5%
    assert rank([exact, lossy], noise=0.10)[0].id == "fp32"  # the same gain, within 10% noise: fp32 stays
    assert rank([exact, c("int8_dynamic", 0.96, "int8")], noise=None)[0].id == "fp32"  # never under 5%
    # the best exact candidate is what a lossy one must beat, not only plain fp32
    fast_exact = c("fp32+threads=1", 0.9, threads=1)
    assert rank([exact, fast_exact, lossy], noise=0.0)[0].id == "fp32+threads=1"
    assert rank([exact, c("fp32@openvino-bf16", 0.5, "bf16", "openvino")], noise=0.2)[0].id == "fp32@openvino-bf16"
    assert lossy_margin(None) == lossy_margin(0.01) == 1.05 and lossy_margin(0.2) == 1.2


def test_timings_measure_their_own_noise():
    t = Timings({"a": (1.0, 1.1, 1.05), "b": (2.0, 2.0, 2.02), "c": (5.0,)})
    assert t.p50 == {"a": 1.05, "b": 2.0, "c": 5.0}
    assert 0.02 < t.noise() < 0.1  # "a" moved against "b"; "c" was timed once and has no spread
    # a slow round that hits every candidate alike cannot change which is faster: it is not noise
    assert Timings({"a": (1.0, 1.3, 1.0), "b": (2.0, 2.6, 2.0), "c": (0.5, 0.65)}).noise() == 0.0
    # blocks disturbed on their own are: the typical (median) candidate's 20% against the others
    assert Timings({"a": (1.0, 1.2, 1.0), "b": (2.0, 2.0, 2.4), "c": (0.5, 0.5, 0.5)}).noise() == pytest.approx(0.2, abs=0.01)
    assert Timings({"a": (1.0, 1.2, 1.0), "b": (2.0, 2.0, 2.0), "c": (0.5, 0.5, 0.5)}).noise() == 0.0  # one of three
    assert Timings({"a": (1.0,)}).noise() is None


def test_the_manifest_records_the_selections_noise(mlp_bundle):
    sel = json.loads((mlp_bundle / "manifest.json").read_text())["selection"]["cpu"]
    assert set(sel) == {"noise", "lossy_margin", "blocks", "method"} and sel["lossy_margin"] >= 1.05


@openvino
def test_check_checks_what_load_runs_here(bundle_copy, monkeypatch, cli, tmp_path):
    monkeypatch.delenv("EDGESHIP_CPU_MASK", raising=False)
    first = BF16 if ov_runtime.has_bf16() else OV
    _candidates(bundle_copy, [first, OV, PLAIN])
    assert edgeship.load(bundle_copy).candidate.id == first["id"]
    code, out = cli("check", bundle_copy, "--json", "-", "-q")
    assert code == 0, out
    rows = json.loads(out[:out.rindex("}") + 1])["summary"]
    assert [(r["candidate"], r["runner"]) for r in rows] == [(first["id"], "openvino-cpu"), ("fp32", "onnxruntime-cpu")]
    # on a host without bf16 check follows load to the next candidate
    monkeypatch.setenv("EDGESHIP_CPU_MASK", MASK)
    report = check(bundle_copy)
    assert [r["candidate"] for r in report.summary()] == ["fp32@openvino", "fp32"]
    # all: every candidate this host can run, and the ones it cannot named with why
    report = check(bundle_copy, candidates="all")
    names = [r["candidate"] for r in report.summary()]
    assert names[:2] == ["fp32@openvino", "fp32"] and "int8_dynamic" in names and "fp32@openvino-bf16" not in names
    if first is BF16:
        assert "avx512_bf16 or amx_bf16" in report.skipped["fp32@openvino-bf16"]
    with pytest.raises(SpecError, match="--candidates 'every'"):
        check(bundle_copy, candidates="every")


@openvino
def test_run_bound_is_onnxruntimes_and_says_so_on_openvino(mlp_bundle):
    m = edgeship.load(mlp_bundle, runtime="openvino")
    with pytest.raises(SpecError, match="run_bound is onnxruntime's IO binding; this Model runs candidate .* on openvino"):
        m.run_bound({"x": np.ones((1, 10), np.float32)})
    bound = edgeship.load(mlp_bundle, runtime="ort").run_bound({"x": np.ones((1, 10), np.float32)}, device="cpu")
    np.testing.assert_allclose(next(iter(bound.values())).numpy(), m(np.ones((1, 10), np.float32)), atol=1e-4)


@openvino
@pytest.mark.parametrize("edit, match", [
    (lambda io: io["inputs"][0].update(dtype="float64"), "input 'x' is float32 in the model, float64 in the spec"),
    (lambda io: io["inputs"][0].update(shape=["batch", 10, 1]), r"input 'x' has shape \[None, 10\] in the model"),
    (lambda io: io["inputs"][0].update(shape=["batch", 11]), r"input 'x' has shape \[None, 10\] in the model"),
    (lambda io: io["outputs"][0].update(dtype="int64"), "output '.*' is float32 in the model, int64 in the spec"),
])
def test_openvino_refuses_a_manifest_whose_io_disagrees_with_the_model(bundle_copy, edit, match):
    """OpenVINO checks the io spec as onnxruntime does, and load refuses such a bundle instead of
    falling back to whatever runtime checks least."""
    from edgeship.errors import BundleError

    m = json.loads((bundle_copy / "manifest.json").read_text())
    edit(m["io"])
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=match):
        edgeship.load(bundle_copy, runtime="openvino")
    with pytest.raises(BundleError, match="does not match manifest.json's io spec"):
        edgeship.load(bundle_copy)


def test_the_order_after_the_default_follows_the_same_rules():
    """load takes the next candidate when this host cannot run the first: that one must have won by
    the same rules, not merely be the next fastest (a lossy one 3% faster than exact fp32 is not)."""
    def c(i, ms, precision="fp32", runtime="onnxruntime", **o):
        return Candidate(i, runtime, i.split("+")[0].split("@")[0], precision, o, ms)

    bf16, int8, fp32 = c("fp32@openvino-bf16", 0.6, "bf16", "openvino"), c("int8_dynamic", 0.97, "int8"), c("fp32", 1.0)
    assert [x.id for x in rank([fp32, int8, bf16], noise=0.01)] == ["fp32@openvino-bf16", "fp32", "int8_dynamic"]
    assert [x.id for x in rank([fp32, c("int8_dynamic", 0.5, "int8"), bf16], noise=0.01)][:2] == \
        ["int8_dynamic", "fp32@openvino-bf16"]
    assert rank([]) == []


def test_check_all_names_a_candidate_that_does_not_open_here(bundle_copy, monkeypatch):
    def refuse(self):
        raise TargetUnavailableError("OpenVINO's CPU plugin is missing here")

    monkeypatch.setattr("edgeship.runtimes.registry.installed", lambda r: True)
    monkeypatch.setattr(ov_runtime.OpenVINORunner, "_load", refuse)
    _candidates(bundle_copy, [OV, PLAIN])
    report = check(bundle_copy, candidates="all")
    assert report.passed and [r["candidate"] for r in report.summary()] == ["fp32", "int8_dynamic"]
    assert report.skipped == {"fp32@openvino": "it did not open (OpenVINO's CPU plugin is missing here)"}


def test_tune_keeps_what_this_host_cannot_measure(bundle_copy, monkeypatch, cli):
    """A tune on a host without OpenVINO keeps the OpenVINO candidates, after the measured ones and
    marked as not measured here, so the bundle still offers them to hosts that have it."""
    from conftest import fake_p50s

    monkeypatch.setattr("edgeship.runtimes.registry.installed", lambda r: r == "onnxruntime")
    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0 if n == "fp32" else 2.0))
    _candidates(bundle_copy, [{**OV, "p50_ms": 0.5}, PLAIN])
    code, out = cli("tune", bundle_copy, "-q")
    assert code == 0, out
    assert "Candidates on" not in out and "timing noise" not in out  # -q: no table, no detail; what changed:
    assert "cpu: the default is now fp32 on onnxruntime" in out and "Tuned bundle" in out
    cands = candidates_of(json.loads((bundle_copy / "manifest.json").read_text()))["cpu"]
    assert cands[0].id == "fp32" and cands[-1].id == "fp32@openvino" and cands[-1].p50_ms == 0.5
    assert "openvino is not installed here" in cands[-1].unmeasured
    assert all(c.unmeasured is None for c in cands[:-1])
    monkeypatch.setattr("edgeship.runtimes.registry.installed", lambda r: True)
    assert edgeship.load(bundle_copy).candidate.id == "fp32"  # what was measured leads


def test_two_reports_on_stdout_are_refused_before_any_work(cli, bundle_copy):
    for args in (("check", bundle_copy, "--json", "-", "--junit", "-"),
                 ("profile", bundle_copy, "--json", "-", "--csv", "-", "--html", "-")):
        code, out = cli(*args)
        assert code == 2 and "(stdout), where they would run together" in out, out
    code, out = cli("check", "-h")
    assert code == 0 and "Usage:" in out
