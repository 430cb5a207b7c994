"""Version floors: torch < 2.6 or onnx < 1.21 (or either missing) is refused before it is used."""

import re
from importlib import metadata

import pytest
from conftest import arch
from hostile_helpers import assert_untouched

from edgeship.config import LoadOptions
from edgeship.errors import ModelLoadError
from edgeship.exporters import floors
from edgeship.exporters.loading import load_model


def _pretend(monkeypatch, **versions):
    real = metadata.version

    def version(pkg):
        if pkg in versions:
            if versions[pkg] is None:
                raise metadata.PackageNotFoundError(pkg)
            return versions[pkg]
        return real(pkg)

    monkeypatch.setattr(floors.metadata, "version", version)


@pytest.mark.parametrize("have, ok", [("2.6.0", True), ("2.13.0+cpu", True), ("10.0", True), ("2.5.1+cu121", False),
                                      ("1.13.1", False), ("nightly", False)])
def test_torch_floor(monkeypatch, have, ok):
    _pretend(monkeypatch, torch=have)
    if ok:
        floors.require("torch")
    else:
        upgrade = r"pip install 'torch>=2\.13' \(the oldest edgeship is tested with\)"
        with pytest.raises(ModelLoadError, match=rf"torch {re.escape(have)} is below 2\.6.*weights_only.*{upgrade}"):
            floors.require("torch")


def test_old_torch_refused_before_loading_exit_2(monkeypatch, files, tmp_path, cli):
    _pretend(monkeypatch, torch="2.5.1")
    import torch

    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran below the floor"))
    with pytest.raises(ModelLoadError, match=r"torch 2\.5\.1 is below 2\.6"):
        load_model(files["dir"] / "mlp_state.pt", LoadOptions(arch=arch("MLP")))
    out = tmp_path / "b.edgeship"
    code, msg = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--input", "x:1x10", "-o", out)
    assert code == 2 and "torch 2.5.1 is below 2.6" in msg and "Traceback" not in msg
    assert_untouched(out, {})


def test_old_onnx_refused_for_onnx_inputs_and_exports(monkeypatch, files, tmp_path, cli):
    _pretend(monkeypatch, onnx="1.20.1")
    with pytest.raises(ModelLoadError, match=r"onnx 1\.20\.1 is below 1\.21.*external-data"):
        load_model(files["dir"] / "mlp.onnx")
    out = tmp_path / "b.edgeship"
    code, msg = cli("export", files["dir"] / "mlp_ts.pt", "--input", "x:1x10", "-o", out)
    assert code == 2 and "onnx 1.20.1 is below 1.21" in msg
    assert_untouched(out, {})


def test_missing_export_extra_says_how_to_install(monkeypatch, files):
    _pretend(monkeypatch, onnx=None)
    with pytest.raises(ModelLoadError, match=r"onnx is not installed.*pip install 'edgeship\[export\]'"):
        load_model(files["dir"] / "mlp.onnx")


def test_runtime_side_has_no_floor(monkeypatch, mlp_bundle, files):
    """edgeship.load and check need neither torch nor onnx: an old or absent one does not matter."""
    import edgeship

    _pretend(monkeypatch, torch=None, onnx="1.0")
    assert edgeship.load(mlp_bundle)(files["x"]).shape == (2, 4)
    assert edgeship.check(mlp_bundle).passed
