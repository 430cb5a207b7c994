"""Loading model files by content: every format, and the errors users hit."""

import os

import pytest
import torch
from conftest import arch

from edgeship.errors import ModelLoadError, UnsafeModelError
from edgeship.exporters.loading import (
    EXPORTED_PROGRAM,
    ONNX,
    PICKLED_MODULE,
    STATE_DICT,
    TORCHSCRIPT,
    LoadOptions,
    load_model,
)


def _same(loaded, files):
    x = torch.from_numpy(files["x"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), files["module"](x))


@pytest.mark.parametrize("name, fmt, opts", [
    ("mlp_ts.pt", TORCHSCRIPT, LoadOptions()),
    ("mlp_ep.pt2", EXPORTED_PROGRAM, LoadOptions()),
    ("mlp_state.pt", STATE_DICT, LoadOptions(arch=arch("MLP"))),
    ("mlp_ckpt.pt", STATE_DICT, LoadOptions(arch=arch("MLP"))),
])
def test_each_format_loads_by_content(files, tmp_path, name, fmt, opts):
    renamed = tmp_path / "model.bin"  # the extension never matters
    renamed.write_bytes((files["dir"] / name).read_bytes())
    loaded = load_model(renamed, opts)
    assert loaded.format == fmt
    _same(loaded, files)


def test_onnx_file_is_recognised(files):
    loaded = load_model(files["dir"] / "mlp.onnx")
    assert loaded.format == ONNX and loaded.module is None


def test_pickled_module_refused_without_trust(files):
    with pytest.raises(UnsafeModelError, match="--trust-pickle") as e:
        load_model(files["dir"] / "mlp_pickled.pt")
    assert "state_dict" in str(e.value) and "--arch" in str(e.value)


def test_pickled_module_loads_with_trust(files):
    loaded = load_model(files["dir"] / "mlp_pickled.pt", LoadOptions(trust_pickle=True, imports=("models",)))
    assert loaded.format == PICKLED_MODULE
    assert any("trust-pickle" in n for n in loaded.notes)
    _same(loaded, files)


def test_pickle_that_would_run_code_never_runs_it(tmp_path):
    sentinel = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    path = tmp_path / "evil.pt"
    torch.save({"weights": Evil()}, path)
    with pytest.raises(UnsafeModelError, match="refused"):
        load_model(path, LoadOptions(arch=arch("MLP")))
    assert not sentinel.exists()


def test_train_mode_module_is_put_in_eval_and_noted(tmp_path):
    import models

    m = models.trained(models.MobileNetish()).train()
    torch.jit.save(torch.jit.script(m), tmp_path / "ts.pt")
    loaded = load_model(tmp_path / "ts.pt")
    assert not loaded.module.training
    assert any("eval mode forced" in n for n in loaded.notes)


@pytest.mark.parametrize("content, match", [
    (b"", "empty"),
    (os.urandom(256), "cannot recognise the format"),
    (b"PK\x03\x04" + os.urandom(64), "truncated or corrupt"),
])
def test_unreadable_files(tmp_path, content, match):
    p = tmp_path / "model.pt"
    p.write_bytes(content)
    with pytest.raises(ModelLoadError, match=match):
        load_model(p)


def test_truncated_torchscript(files, tmp_path):
    data = (files["dir"] / "mlp_ts.pt").read_bytes()
    p = tmp_path / "cut.pt"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(p)


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_model(tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_state_dict_without_arch_asks_for_it(files):
    with pytest.raises(ModelLoadError, match="--arch module:factory"):
        load_model(files["dir"] / "mlp_state.pt")


def test_state_dict_that_does_not_fit_lists_the_mismatches(files):
    opts = LoadOptions(arch=arch("MLP"), arch_kwargs={"d_hidden": 8})
    with pytest.raises(ModelLoadError, match=r"shape mismatch: net.0.weight: file \(16, 10\) vs model \(8, 10\)"):
        load_model(files["dir"] / "mlp_state.pt", opts)
    with pytest.raises(ModelLoadError, match="missing in file: .*stem"):
        load_model(files["dir"] / "mlp_state.pt", LoadOptions(arch=arch("ResNetish")))


@pytest.mark.parametrize("spec, match", [
    ("nocolon", "not of the form module:factory"),
    ("no_such_module_xyz:Net", "could not import no_such_module_xyz"),
    (f"{arch('NoSuchClass')}", "has no callable 'NoSuchClass'"),
])
def test_bad_arch(files, spec, match):
    with pytest.raises(ModelLoadError, match=match):
        load_model(files["dir"] / "mlp_state.pt", LoadOptions(arch=spec))
