"""Issue 20, item 19: inputs are told apart by what they hold, not by their names, and a module
name given to ``--arch`` finds the installed package before the current directory."""

import logging
import shutil
import sys
import uuid
from pathlib import Path

import pytest
from conftest import MODELS_PY
from hostile_helpers import zip_tree

from edgeship.config import LoadOptions
from edgeship.exporters.usercode import build_arch, import_callable


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
    code, msg = cli("inspect", bundle, "--json", "-")
    assert code == 0 and '"kind": "bundle"' in msg, msg
    code, msg = cli("inspect", model, "--json", "-")
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


@pytest.fixture
def shadowed(tmp_path, monkeypatch):
    """A module installed (on sys.path) and a file of the same name in the current directory."""
    name = f"shadow_{uuid.uuid4().hex[:8]}"
    site, here = tmp_path / "site", tmp_path / "work"
    site.mkdir()
    here.mkdir()
    body = MODELS_PY.read_text()
    (site / f"{name}.py").write_text(body + "\nWHERE = 'installed'\n")
    marker = tmp_path / "cwd-module-ran"
    (here / f"{name}.py").write_text(body + f"\nWHERE = 'cwd'\nopen({str(marker)!r}, 'w').close()\n")
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    monkeypatch.chdir(here)
    yield name, marker
    sys.modules.pop(name, None)
    for key in [k for k in sys.modules if k.startswith("edgeship_user_")]:
        sys.modules.pop(key, None)


def test_an_installed_module_wins_over_the_current_directory_and_a_warning_says_so(shadowed, caplog):
    """Before the fix the current directory went first on sys.path: its file ran instead."""
    name, marker = shadowed
    with caplog.at_level(logging.WARNING, logger="edgeship.exporters.usercode"):
        build_arch(LoadOptions(arch=f"{name}:MLP"))
    assert sys.modules[name].WHERE == "installed"
    assert not marker.exists(), "the current directory's module ran"
    assert f"{name}.py in the current directory" in caplog.text and "pass its path" in caplog.text
    assert sys.path.index(str(Path.cwd())) > sys.path.index(str(marker.parent / "site"))


def test_a_path_names_the_file_in_the_current_directory(shadowed):
    name, marker = shadowed
    fn = import_callable(f"./{name}.py:MLP", "--arch")
    assert sys.modules[fn.__module__].WHERE == "cwd" and marker.exists()


def test_a_module_only_in_the_current_directory_is_still_found(tmp_path, monkeypatch):
    name = f"local_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{name}.py").write_text(MODELS_PY.read_text())
    try:
        assert build_arch(LoadOptions(arch=f"{name}:MLP")) is not None
    finally:
        sys.modules.pop(name, None)
