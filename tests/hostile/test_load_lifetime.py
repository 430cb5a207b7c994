"""Issue 20, item 19: what ``edgeship.load`` takes and keeps: buffers of any kind, nothing of the zip
once the model is open, nothing of the session once closed, and no more threads than cores."""

import gc
import sys
import weakref

import numpy as np
import pytest
from hostile_helpers import edit_manifest, zip_tree

import edgeship
from edgeship.errors import BundleError, InferenceError, SpecError
from edgeship.host import usable_cpus
from edgeship.runtimes.openvino import installed as openvino_installed

X = np.ones((2, 10), np.float32)


@pytest.fixture
def zipped(mlp_bundle, tmp_path) -> bytes:
    return zip_tree(mlp_bundle, tmp_path / "mlp.edgeship.zip").read_bytes()


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_load_takes_any_buffer(zipped, mlp_bundle, kind):
    """Before the fix bytearray and memoryview raised a raw TypeError."""
    expected = edgeship.load(mlp_bundle, variant="fp32")(X)
    np.testing.assert_array_equal(edgeship.load(kind(zipped), variant="fp32")(X), expected)


def test_a_buffer_changed_after_load_began_is_not_what_runs(zipped, mlp_bundle):
    buf = bytearray(zipped)
    m = edgeship.load(buf, variant="fp32")
    buf[:] = bytes(len(buf))  # the caller reuses its buffer: the model was read from a copy
    np.testing.assert_array_equal(m(X), edgeship.load(mlp_bundle, variant="fp32")(X))


@pytest.mark.parametrize("bad", [123, None, 1.5, ["a.zip"]])
def test_load_of_something_else_says_what_it_takes(bad):
    with pytest.raises(BundleError, match="a bundle is a path .* or the bytes of a zipped bundle, not"):
        edgeship.load(bad)


def test_the_model_does_not_keep_the_zip_bytes(zipped):
    """Before the fix the Model kept the zip (and so the caller's bytes) alive through its reader."""
    gc.collect()
    before = sys.getrefcount(zipped)
    m = edgeship.load(zipped, variant="fp32")
    gc.collect()
    assert sys.getrefcount(zipped) == before
    assert m.manifest["name"] and m(X).shape == (2, 4)
    with pytest.raises(BundleError, match="was closed after it was read"):
        m.bundle.read(m.manifest["variants"]["fp32"]["file"])


def test_close_frees_the_session_and_the_closed_model_refuses(mlp_bundle):
    """Before the fix the native session lived on (held by the call path) and the model still answered."""
    m = edgeship.load(mlp_bundle, variant="fp32")
    native = weakref.ref(m.session._sess)
    m.close()
    gc.collect()
    assert native() is None
    for call in (lambda: m(X), lambda: m({"x": X}), lambda: m.run({"x": X}), lambda: m.run_bound({"x": X}, device="cpu")):
        with pytest.raises(InferenceError, match="closed"):
            call()
    m.close()  # twice is fine


@pytest.mark.skipif(not openvino_installed(), reason="openvino is not installed")
def test_a_closed_openvino_model_refuses(mlp_bundle):
    m = edgeship.load(mlp_bundle, variant="fp32", runtime="openvino")
    m.close()
    with pytest.raises(InferenceError, match="closed"):
        m(X)


def _intra_threads(m) -> int:
    if m.runtime == "openvino":
        return int(m.session.get_property("INFERENCE_NUM_THREADS"))
    return m.session.get_session_options().intra_op_num_threads


RUNTIMES = ["onnxruntime"] + (["openvino"] if openvino_installed() else [])


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_threads_asked_for_are_capped_at_the_usable_cores(mlp_bundle, runtime):
    """Before the fix load(threads=1024) started 1026 onnxruntime threads on a 2-core host."""
    m = edgeship.load(mlp_bundle, variant="fp32", runtime=runtime, threads=1024)
    assert _intra_threads(m) == usable_cpus()
    assert m(X).shape == (2, 4)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_threads_a_manifest_asks_for_are_capped_at_the_usable_cores(bundle_copy, runtime):
    edit_manifest(bundle_copy, candidates={"cpu": [{"id": "greedy", "runtime": runtime, "variant": "fp32", "precision": "fp32",
                                                    "options": {"threads": 1024}, "requires": {"runtime": runtime}}]})
    model = edgeship.load(bundle_copy)
    assert model.candidate.id == "greedy" and _intra_threads(model) == usable_cpus()


def test_inter_op_threads_are_checked_and_capped(mlp_bundle):
    m = edgeship.load(mlp_bundle, variant="fp32", inter_op_threads=1024)
    assert m.session.get_session_options().inter_op_num_threads == usable_cpus()
    for bad in ("4", -1, 10**6, True):
        with pytest.raises(SpecError, match=r"inter_op_threads=.*: use a whole number"):
            edgeship.load(mlp_bundle, variant="fp32", inter_op_threads=bad)
