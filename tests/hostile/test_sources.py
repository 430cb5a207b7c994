"""Issue 20, item 19: inputs are told apart by what they hold, not by their names."""

import shutil

import pytest
from hostile_helpers import zip_tree


@pytest.fixture
def disguised(mlp_bundle, files, tmp_path):
    """A zipped bundle named like anything but a zip, and an ONNX model named like a zip."""
    bundle = zip_tree(mlp_bundle, tmp_path / "release-2026.bin")
    onnx_as_zip = tmp_path / "model.zip"
    shutil.copyfile(files["dir"] / "mlp.onnx", onnx_as_zip)
    return bundle, onnx_as_zip


def test_inspect_tells_bundles_and_models_apart_by_content(cli, disguised):
    """Before the fix the bundle was read as an ONNX model and the model as a zip (both exit 2)."""
    bundle, model = disguised
    code, msg = cli("inspect", bundle, "--json")
    assert code == 0 and '"kind": "bundle"' in msg, msg
    code, msg = cli("inspect", model, "--json")
    assert code == 0 and '"kind": "onnx"' in msg, msg


def test_compare_tells_bundles_and_models_apart_by_content(cli, disguised, mlp_bundle):
    bundle, model = disguised
    code, msg = cli("compare", bundle, mlp_bundle)
    assert code == 0, msg
    code, msg = cli("compare", model, bundle)  # they run (their output names differ: parity says so, exit 1)
    assert code in (0, 1) and "release-2026.bin:fp32" in msg and "Traceback" not in msg, msg


def test_inspect_and_compare_refuse_a_fifo_without_reading_it(cli, tmp_path, mlp_bundle):
    import os

    fifo = tmp_path / "model.zip"
    os.mkfifo(fifo)
    for args in (("inspect", fifo), ("compare", fifo, mlp_bundle), ("compare", mlp_bundle, fifo)):
        code, msg = cli(*args)
        assert code == 2 and "not a regular file" in msg, (args, msg)
