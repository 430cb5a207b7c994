"""``Model.close()`` lets go of everything the Model held: the runtime's session and, for a zipped
bundle, the zip's open file (it stayed open until the Model was garbage-collected). The manifest
stays available; reading the bundle's files then refuses."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from bundle_zips import zip_tree

import edgeship
from edgeship.errors import BundleError, InferenceError


def _open_fds_of(path: Path) -> int:
    """How many of this process's file descriptors point at ``path``."""
    target = os.path.realpath(path)
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:  # the descriptor listdir itself used, closed since
            pass
    return n


def _runtimes() -> list[str]:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return ["onnxruntime"]
    return ["onnxruntime", "openvino"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors through /proc")
@pytest.mark.parametrize("runtime", _runtimes())
def test_closing_a_model_closes_its_zipped_bundle(mlp_bundle, tmp_path, runtime):
    path = zip_tree(mlp_bundle, tmp_path / "mlp.edgeship.zip")
    m = edgeship.load(path, runtime=runtime)
    assert m(np.ones((2, 10), np.float32)).shape == (2, 4)
    assert _open_fds_of(path) == 1  # the Model holds the zip open while it runs
    m.close()
    assert _open_fds_of(path) == 0
    assert m.manifest["io"] and m.bundle.manifest is m.manifest and "Model" in repr(m)
    with pytest.raises(BundleError, match="was closed after it was read"):
        m.bundle.read("models/fp32.onnx")
    with pytest.raises(InferenceError, match="was closed"):
        m(np.ones((2, 10), np.float32))
    m.close()  # twice: nothing more to close
    assert _open_fds_of(path) == 0


def test_closing_a_model_of_a_folder_bundle_and_leaving_a_with_block(mlp_bundle):
    with edgeship.load(mlp_bundle) as m:
        assert m(np.ones((1, 10), np.float32)).shape == (1, 4)
    assert m.manifest["name"]
    with pytest.raises(BundleError, match="was closed after it was read"):
        m.bundle.read("models/fp32.onnx")
