"""One Model called from many threads at once, on every runtime (the Model's thread-safety promise)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import edgeship

THREADS, CALLS = 8, 25


def _openvino(precision: str) -> None:
    pytest.importorskip("openvino")
    from edgeship.runtimes import openvino as ov_runtime

    if precision == "bf16" and not ov_runtime.has_bf16():
        pytest.skip("no native bf16 on this CPU")


def _load(bundle, runtime: str, precision: str) -> edgeship.Model:
    """The bundle's fp32 file on ``runtime`` at ``precision``: OpenVINO's bf16 run of it is the
    bundle's ``fp32@openvino-bf16`` candidate, which ``load`` takes only where it leads."""
    if runtime != "openvino":
        return edgeship.load(bundle, runtime="onnxruntime", variant="fp32")
    _openvino(precision)
    m = edgeship.load(bundle, runtime="openvino", variant="fp32")
    if precision == "bf16":
        from edgeship.bundle.manifest import candidates_of
        from edgeship.runtimes.openvino import OpenVINORunner

        c = next(c for c in candidates_of(m.manifest)["cpu"] if c.runtime == "openvino" and c.precision == "bf16")
        runner = OpenVINORunner(m.spec, m.bundle.read("models/fp32.onnx"), precision="bf16")
        m.close()
        m = edgeship.Model(m.bundle, m.spec, c.variant, "cpu", runner, candidate=c)
    assert m.precision == precision
    return m


def _inputs() -> list[np.ndarray]:
    """One input per thread, each unlike the others (values and batch size), so that a thread
    given another thread's result, or a result computed from two threads' inputs, shows."""
    rng = np.random.default_rng(18)
    return [(rng.standard_normal((k % 3 + 1, 10)) * (k + 1)).astype(np.float32) for k in range(THREADS)]


def _hammer(m: edgeship.Model, xs: list[np.ndarray]) -> tuple[list[list[np.ndarray]], list[BaseException]]:
    """THREADS threads start together and each calls ``m`` CALLS times on its own input."""
    start = threading.Barrier(THREADS)
    results: list[list[np.ndarray]] = [[] for _ in xs]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        start.wait(timeout=60)
        for _ in range(CALLS):
            try:
                results[k].append(m(xs[k]))
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported by the test
                errors.append(e)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread is still running after 120 s"
    return results, errors


@pytest.mark.parametrize("runtime, precision", [("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")])
def test_eight_threads_on_one_model_give_the_single_threaded_results(mlp_bundle, runtime, precision):
    m = _load(mlp_bundle, runtime, precision)
    assert m.runtime == runtime
    _same_as_one_thread(m)
    m.close()


def _same_as_one_thread(m) -> None:
    """THREADS threads, CALLS calls each, on one Model give bit-identical results to single-threaded calls."""
    xs = _inputs()
    want = [m(x) for x in xs]
    for x, w in zip(xs, want):  # the runtime is deterministic for one input on one thread: bit-identical
        np.testing.assert_array_equal(m(x), w)
    results, errors = _hammer(m, xs)
    wrong = sum(not np.array_equal(y, want[k]) for k, ys in enumerate(results) for y in ys)
    assert not errors and not wrong, (f"{len(errors)} of {THREADS * CALLS} calls failed and {wrong} results differ "
                                      f"from the single-threaded ones; the first error: {errors[:1]!r}")
    assert [len(ys) for ys in results] == [CALLS] * THREADS


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_result_is_the_callers_own_array(mlp_bundle, runtime):
    """The next call on the same thread (which reuses the runtime's request and its buffers) leaves
    what an earlier call returned as it was."""
    m = _load(mlp_bundle, runtime, "fp32")
    x = _inputs()[0]
    y = m(x)
    kept = y.copy()
    for k in range(3):
        m(x * (k + 2))
        m({"x": -x})
    np.testing.assert_array_equal(y, kept)
    assert not np.shares_memory(y, m(x))
    m.close()


@pytest.fixture(scope="module")
def mobile_mlp(files, tmp_path_factory):
    """The MLP exported with --target mobile: fp32, int8_dynamic and their ORT-format twins."""
    from test_mobile import _export

    d = tmp_path_factory.mktemp("threads-mobile")
    return _export(files["dir"] / "mlp_state.pt", d / "mlp.edgeship", ("x:2x10",), "MLP", ("dynamic",), dynamic_batch=True)


@pytest.mark.parametrize("variant", ["fp32_ort", "int8_dynamic_ort"])
def test_eight_threads_on_an_ort_format_twin_give_the_single_threaded_results(mobile_mlp, variant):
    """ONNX Runtime Mobile's .ort files, opened by load from their bytes: the same promise."""
    m = edgeship.load(mobile_mlp, variant=variant)
    assert m.variant == variant and m.bundle.read(m.manifest["variants"][variant]["file"])[4:8] == b"ORTM"
    _same_as_one_thread(m)
    xs = _inputs()
    y = m(xs[0])
    kept = y.copy()
    m(xs[1])
    m({"x": -xs[0]})
    np.testing.assert_array_equal(y, kept)  # the caller's own array: later calls leave it as it was
    assert not np.shares_memory(y, m(xs[0]))
    m.close()
