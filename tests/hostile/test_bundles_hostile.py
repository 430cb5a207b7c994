"""Damaged and hostile bundles, folder and zip: refused by edgeship.load and edgeship check (exit 2).

Cases that break verification (bytes, listing, links, paths, schema) are refused before
onnxruntime opens anything; edits that keep every checksum valid (the manifest is not signed)
are caught when the manifest disagrees with the verified model or golden files.
Test_bundle_runtime.py covers the folder basics (flipped byte, missing, extra, ../, absolute,
symlinked file, not JSON, schema 99, zip slip); this adds the rest and the zip forms.
"""

import io
import json
import os
import shutil

import numpy as np
import pytest
from bundle_zips import ZIP_CASES
from hostile_helpers import OrtSpy, edit_manifest, evil_payload, resign, sentinel, snapshot  # noqa: F401

import edgeship
from edgeship.bundle import MANIFEST, open_bundle
from edgeship.errors import BundleError, EdgeshipError


def _flip(path, offset=-100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _hardlink(b):
    os.link(b / "report.json", b.parent / "report-elsewhere.json")


def _symlinked_folder(b):
    shutil.move(b / "golden", b.parent / "golden-elsewhere")
    os.symlink(b.parent / "golden-elsewhere", b / "golden")


def _manifest(b, fn):
    m = json.loads((b / MANIFEST).read_text())
    fn(m)
    (b / MANIFEST).write_text(json.dumps(m))


def _deep_json(b):
    (b / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)


def _drop(key):
    return lambda b: _manifest(b, lambda m: m.pop(key))


# name -> (damage, message); all refused by verification, before onnxruntime opens anything
BEFORE_ORT = {
    "hardlink": (_hardlink, "hard-linked"),
    "symlinked folder": (_symlinked_folder, "symbolic link"),
    "fifo": (lambda b: os.mkfifo(b / "pipe"), "not a regular file"),
    "sha edited": (lambda b: _manifest(b, lambda m: m["files"]["report.json"].update(sha256="0" * 64)), "does not match its sha256"),
    "size edited": (lambda b: _manifest(b, lambda m: m["files"]["report.json"].update(size=1)), "does not match its sha256/size"),
    "dot path": (lambda b: _manifest(b, lambda m: m["files"].update({"models/./fp32.onnx": m["files"]["models/fp32.onnx"]})),
                 "not a plain relative path"),
    "manifest lists itself": (lambda b: _manifest(b, lambda m: m["files"].update({MANIFEST: {"sha256": "0", "size": 1}})), "malformed"),
    "no io": (_drop("io"), "has no valid 'io'"),
    "no variants": (_drop("variants"), "lists no variants"),
    "no golden": (_drop("golden"), "has no 'golden' section"),
    "io not a list": (lambda b: _manifest(b, lambda m: m["io"].update(inputs="x")), "has no valid 'io'"),
    "bad dtype in io": (lambda b: _manifest(b, lambda m: m["io"]["inputs"][0].update(dtype="complex7")), "unsupported dtype"),
    "variant names unlisted file": (lambda b: _manifest(b, lambda m: m["variants"]["fp32"].update(file="models/evil.onnx")),
                                    "'models/evil.onnx', which is not among its listed files"),
    "variant file escapes": (lambda b: _manifest(b, lambda m: m["variants"]["fp32"].update(file="../../etc/passwd")),
                             "not among its listed files"),
    "default names missing variant": (lambda b: _manifest(b, lambda m: m["defaults"].update(cpu="int8")), "'defaults' names a variant"),
    "tolerance is text": (lambda b: _manifest(b, lambda m: m["variants"]["fp32"].update(tolerance={"atol": "big"})), "malformed tolerance"),
    "tolerance is NaN": (lambda b: _manifest(b, lambda m: m["variants"]["fp32"].update(tolerance={"atol": float("nan")})),
                         "malformed tolerance"),
    "samples malformed": (lambda b: _manifest(b, lambda m: m["golden"].update(samples=[1, 2])), "malformed golden samples"),
    "deeply nested json": (_deep_json, "not valid JSON"),
    "manifest is a list": (lambda b: (b / MANIFEST).write_text("[]"), "not a JSON object"),
    "schema as string": (lambda b: _manifest(b, lambda m: m.update(schema_version="1")), "schema_version '1' is not supported"),
}


@pytest.mark.parametrize("case", list(BEFORE_ORT))
def test_broken_bundle_refused_before_onnxruntime(bundle_copy, cli, monkeypatch, case):
    damage, match = BEFORE_ORT[case]
    damage(bundle_copy)
    before = snapshot(bundle_copy)
    spy = OrtSpy(monkeypatch)
    with pytest.raises(BundleError, match=match):
        edgeship.load(bundle_copy)
    code, msg = cli("check", bundle_copy)
    assert code == 2 and "Traceback" not in msg, msg
    assert spy.calls == []
    assert snapshot(bundle_copy) == before


# edits that keep every checksum right: caught when the manifest meets the verified files
CONSISTENT_EDITS = {
    "io dtype edited": (lambda b: _manifest(b, lambda m: m["io"]["inputs"][0].update(dtype="float64")),
                        "does not match manifest.json's io spec .*input 'x' is float32 in the model, float64 in the spec"),
    "io rank edited": (lambda b: _manifest(b, lambda m: m["io"]["inputs"][0].update(shape=["batch", 10, 1])),
                       "input 'x' has shape"),
    "io names edited": (lambda b: _manifest(b, lambda m: m["io"]["inputs"][0].update(name="y")), r"inputs are \['x'\] in the model"),
    "variant is the golden npz": (lambda b: _manifest(b, lambda m: m["variants"]["fp32"].update(file="golden/inputs.npz")),
                                  "onnxruntime cannot open golden/inputs.npz"),
    "onnx bytes edited and resigned": (lambda b: (_truncate(b / "models" / "fp32.onnx"), resign(b, "models/fp32.onnx")),
                                       "onnxruntime cannot open models/fp32.onnx"),
}


@pytest.mark.parametrize("case", list(CONSISTENT_EDITS))
def test_consistent_edits_are_caught_with_a_bundle_error(bundle_copy, cli, case):
    damage, match = CONSISTENT_EDITS[case]
    damage(bundle_copy)
    with pytest.raises(BundleError, match=match):
        edgeship.load(bundle_copy)
    code, msg = cli("check", bundle_copy)
    assert code == 2 and "Traceback" not in msg, msg


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_golden_npz_with_a_pickle_is_refused_without_running_it(bundle_copy, cli, sentinel):  # noqa: F811
    obj = np.empty(1, dtype=object)
    obj[0] = evil_payload(sentinel)
    (bundle_copy / "golden" / "inputs.npz").write_bytes(_npz_bytes(**{"0/x": obj}))
    resign(bundle_copy, "golden/inputs.npz")
    with pytest.raises(BundleError, match="golden/inputs.npz is not a readable .npz.*allow_pickle"):
        edgeship.check(bundle_copy)
    code, msg = cli("check", bundle_copy)
    assert code == 2


@pytest.mark.parametrize("arrays, match", [
    ({"0/x": np.zeros((1, 10), np.float64)}, r"golden sample 0 does not fit the bundle's inputs: input 'x' expects dtype float32"),
    ({"0/z": np.zeros((1, 10), np.float32)}, r"golden sample 0 does not fit .*\(missing x; unexpected z\)"),
    ({"0/x": np.zeros((1, 3), np.float32)}, r"expects shape \[batch, 10\], got \[1, 3\]"),
])
def test_golden_inputs_that_do_not_fit_are_a_bundle_error(bundle_copy, cli, arrays, match):
    (bundle_copy / "golden" / "inputs.npz").write_bytes(_npz_bytes(**arrays))
    (bundle_copy / "golden" / "outputs.npz").write_bytes(_npz_bytes(**{"0/output": np.zeros((1, 4), np.float32)}))
    resign(bundle_copy, "golden/inputs.npz")
    resign(bundle_copy, "golden/outputs.npz")
    with pytest.raises(BundleError, match=match):
        edgeship.check(bundle_copy)
    assert cli("check", bundle_copy)[0] == 2


def test_recorded_arch_is_never_run_by_check_against(bundle_copy, files, cli, sentinel):  # noqa: F811
    edit_manifest(bundle_copy, source={"arch": "os:system", "arch_kwargs": {"command": f"touch {sentinel}"}})
    code, msg = cli("check", bundle_copy, "--against", files["dir"] / "mlp_state.pt")
    assert code == 2
    assert "The bundle records --arch 'os:system'" in msg and "not trusted to name code to run" in msg


# ----------------------------------------------------------------------------- zipped bundles


# what the Python loader says of each zip of bundle_zips.ZIP_CASES
ZIP_REFUSALS = {
    "flipped byte": r"corrupt|does not match",
    "truncated": "not a readable zip bundle",
    "missing file": "listed files are missing: report.json",
    "extra file": "not listed in manifest.json: notes.txt",
    "zip slip": "escapes the bundle",
    "absolute entry": "escapes the bundle",
    "symlink entry": "symbolic link",
    "duplicate entry": "appears twice",
    "manifest not json": "not valid JSON",
    "unknown schema": "schema_version 2 is not supported",
    "no manifest": "no manifest.json",
    "encrypted entries": "cannot be read",
    "unknown compression": "cannot be read|not a readable zip",
}


@pytest.mark.parametrize("case", list(ZIP_CASES))
def test_broken_zip_bundle_refused_before_onnxruntime(mlp_bundle, tmp_path, cli, monkeypatch, case):
    match = ZIP_REFUSALS[case]
    z = tmp_path / "b.edgeship.zip"
    ZIP_CASES[case](mlp_bundle, z)
    before = snapshot(z)
    spy = OrtSpy(monkeypatch)
    with pytest.raises(BundleError, match=match):
        open_bundle(z)
    with pytest.raises(EdgeshipError, match=match):
        edgeship.load(z)
    code, msg = cli("check", z)
    assert code == 2 and "Traceback" not in msg, msg
    assert spy.calls == []
    assert snapshot(z) == before


def test_bundle_path_that_is_a_pipe_does_not_block(tmp_path, cli):
    fifo = tmp_path / "b.edgeship.zip"
    os.mkfifo(fifo)
    with pytest.raises(BundleError, match="not a folder or a regular file"):
        edgeship.load(fifo)
    assert cli("check", fifo)[0] == 2


def test_linked_bundle_root_and_manifest_are_refused(mlp_bundle, tmp_path):
    link = tmp_path / "link.edgeship"
    os.symlink(mlp_bundle, link)
    with pytest.raises(BundleError, match="is a symbolic link; pass the bundle itself"):
        edgeship.load(link)
    b = shutil.copytree(mlp_bundle, tmp_path / "b.edgeship")
    shutil.move(b / MANIFEST, tmp_path / "manifest-elsewhere.json")
    os.symlink(tmp_path / "manifest-elsewhere.json", b / MANIFEST)
    with pytest.raises(BundleError, match="has no manifest.json"):
        edgeship.load(b)
