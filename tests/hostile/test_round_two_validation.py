"""Hostile inputs, round two (issue 10, items 8-15): validation gaps, exit codes, disk, races, runtime errors."""

import errno
import fcntl
import json
import os
import zipfile

import numpy as np
import pytest
from conftest import arch
from hostile_helpers import assert_untouched, snapshot, zip_tree

import edgeship
from edgeship.bundle import MANIFEST, open_bundle
from edgeship.errors import BundleError, InferenceError, SpecError
from edgeship.spec import check_name


def _export(cli, files, out, *args):
    return cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--quantize", "fp32", "--no-torchscript",
               "-o", out, *args)


# ----------------------------------------------------------------------------- items 8-10


@pytest.mark.parametrize("args, match", [
    (("--input", "x:1x10", "--atol", "nan"), "--atol nan: must be a finite number"),
    (("--input", "x:1x10", "--rtol", "nan"), "--rtol nan: must be a finite number"),
    (("--input", "x:1x10", "--atol", "-1"), "--atol -1.0: must be a finite number"),
    (("--input", "x:1x10", "--opset", "0"), "--opset 0: use an ONNX opset from 7"),
    (("--input", "x:1x10", "--calibration-method", "bogus"), "--calibration-method 'bogus'"),
    (("--input", "x\n:1x10"), "input name 'x\\n' is not valid"),
], ids=["atol nan", "rtol nan", "atol -1", "opset 0", "calibration method", "name with newline"])
def test_bad_export_options_are_usage_errors(files, tmp_path, cli, args, match):
    out = tmp_path / "b.edgeship"
    code, msg = _export(cli, files, out, *args)
    assert code == 2 and match in msg and "Traceback" not in msg, msg
    assert_untouched(out, {})


def test_example_inputs_with_an_empty_axis_are_refused(files, tmp_path, cli):
    npz = tmp_path / "ex.npz"
    np.savez(npz, x=np.zeros((0, 10), np.float32))
    out = tmp_path / "b.edgeship"
    code, msg = _export(cli, files, out, "--example-inputs", npz)
    assert code == 2 and "axis of size 0" in msg and "parity would prove nothing" in msg, msg
    assert_untouched(out, {})


def test_names_are_matched_in_full():
    for bad in ("x\n", "x\n\n", "ok\nevil"):
        with pytest.raises(SpecError, match="is not valid"):
            check_name(bad)


# ----------------------------------------------------------------------------- item 11


def test_duplicate_manifest_keys_and_bool_sizes_are_refused(bundle_copy):
    raw = (bundle_copy / MANIFEST).read_text()
    (bundle_copy / MANIFEST).write_text('{"schema_version": 99, ' + raw.lstrip()[1:])
    with pytest.raises(BundleError, match="'schema_version' appears twice"):
        open_bundle(bundle_copy)
    m = json.loads(raw)
    m["files"]["report.json"]["size"] = True
    (bundle_copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="manifest entry 'report.json' is malformed"):
        open_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["report.json\x00evil", "report\u202enosj.json", "golden/\u200binputs.npz"],
                         ids=["NUL", "bidi override", "zero-width space"])
def test_zip_member_names_with_nul_or_format_characters_are_refused(mlp_bundle, tmp_path, name):
    bundle = zip_tree(mlp_bundle, tmp_path / "b.edgeship.zip")
    placeholder = name.replace("\x00", "Z")  # zipfile cuts names at NUL when writing: patch the bytes
    with zipfile.ZipFile(bundle, "a") as z:
        z.writestr(zipfile.ZipInfo(placeholder), b"{}")
    bundle.write_bytes(bundle.read_bytes().replace(placeholder.encode(), name.encode()))
    with pytest.raises(BundleError, match="NUL byte|not a plain relative path"):
        open_bundle(bundle)


# ----------------------------------------------------------------------------- item 12


def test_known_tracebacks_are_usage_errors(bundle_copy, mlp_bundle, files, tmp_path, cli):
    np.save(tmp_path / "x.npy", files["x"])
    for args, match in (
        (("check", mlp_bundle, "--junit", tmp_path / "missing" / "x.xml"), "--junit"),
        (("run", mlp_bundle, "--input", f"x={tmp_path / 'x.npy'}", "-o", tmp_path / "missing" / "y.npz"), "--output"),
    ):
        code, msg = cli(*args)
        assert code == 2 and match in msg and "Traceback" not in msg and "this is a bug" not in msg, (args, msg)
    assert not (tmp_path / "missing").exists()
    with zipfile.ZipFile(bundle_copy / "golden" / "inputs.npz", "w") as z:
        z.writestr("0/x.npy", b"not an array")
    from hostile_helpers import resign

    resign(bundle_copy, "golden/inputs.npz")
    code, msg = cli("profile", bundle_copy, "-n", "1")
    assert code == 2 and "golden/inputs.npz" in msg and "not a numpy array" in msg, msg
    calib = tmp_path / "calib.npz"
    with zipfile.ZipFile(calib, "w") as z:
        z.writestr("x", b"raw bytes")
    out = tmp_path / "b.edgeship"
    code, msg = _export(cli, files, out, "--input", "x:1x10", "--quantize", "static", "--calibration", calib)
    assert code == 2 and "--calibration" in msg and "not a numpy array" in msg, msg
    assert_untouched(out, {})


def test_full_disk_in_the_work_folder_is_an_error_not_a_traceback(files, tmp_path, cli, monkeypatch):
    import edgeship.pipeline.package as package

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(package, "save_samples", full)
    out = tmp_path / "b.edgeship"
    code, msg = _export(cli, files, out, "--input", "x:1x10")
    assert code == 2 and "No space left on device while writing in the work folder" in msg and "TMPDIR" in msg, msg
    assert "Traceback" not in msg
    assert_untouched(out, {})


# ----------------------------------------------------------------------------- item 13


def test_stale_work_folders_are_removed_live_ones_kept(tmp_path, monkeypatch):
    from edgeship.pipeline.workdir import LOCK, PREFIX, work_folder

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    stale, live = tmp_path / f"{PREFIX}999999-dead", tmp_path / f"{PREFIX}1-live"
    for d in (stale, live):
        d.mkdir()
        (d / LOCK).touch()
        (d / "model.onnx").write_bytes(b"x" * 1000)
    fd = os.open(live / LOCK, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as the running export that owns it
    try:
        with work_folder() as work:
            assert work.parent == tmp_path and (work / LOCK).exists()
            assert not stale.exists() and live.exists()
        assert not work.exists()
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- item 14


def test_folder_bundle_replaced_while_loading_is_read_again(mlp_bundle, tmp_path, monkeypatch):
    from edgeship.bundle import read as read_module
    from edgeship.bundle import write_bundle

    out = tmp_path / "b.edgeship"
    manifest = json.loads((mlp_bundle / MANIFEST).read_text())
    files = {rel: mlp_bundle / rel for rel in manifest["files"]}
    write_bundle(out, files, {k: v for k, v in manifest.items() if k != "files"})
    (tmp_path / "report.json").write_text('{"a new": "report"}')
    new_files = {**files, "report.json": tmp_path / "report.json"}
    real, replaced = read_module.sha256_at_most, []

    def replace_once(f, limit):  # an export replaces the bundle right after its manifest was read
        if not replaced:
            replaced.append(f)
            write_bundle(out, new_files, {**{k: v for k, v in manifest.items() if k != "files"}, "name": "new"})
        return real(f, limit)

    monkeypatch.setattr(read_module, "sha256_at_most", replace_once)
    m = edgeship.load(out)
    assert replaced and m.manifest["name"] == "new"
    assert m(np.zeros((1, 10), np.float32)).shape[0] == 1


# ----------------------------------------------------------------------------- item 15


def test_onnxruntime_run_errors_are_wrapped_naming_the_input_sizes(mlp_bundle, monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    m = edgeship.load(mlp_bundle)
    before = snapshot(mlp_bundle)

    def fail(*a, **k):
        raise RuntimeException("Failed to allocate memory for requested buffer of size 4000000000000")

    monkeypatch.setattr(m, "_run_checked", fail)
    x = np.zeros((2, 10), np.float32)
    for call in (lambda: m(x), lambda: m({"x": x}), lambda: m.run({"x": x})):
        with pytest.raises(InferenceError, match=r"onnxruntime failed to run .* on inputs x: float32\[2, 10\].*allocate"):
            call()
    assert snapshot(mlp_bundle) == before
