"""Interrupted writes: a killed writer or an OSError mid-package leaves the previous bundle intact
and, after the next run, no temporary behind; folder and zip bundles alike."""

import errno
import os
import shutil
import signal
import subprocess
import time
import zipfile

import pytest
from conftest import arch
from hostile_helpers import PY, assert_untouched, bundle_files, bundle_manifest, python_env, snapshot, temps_beside

import edgeship.bundle.write as B
from edgeship.bundle import open_bundle, write_bundle
from edgeship.errors import BundleError


@pytest.fixture(params=["folder", "zip"])
def old_bundle(request, mlp_bundle, tmp_path):
    """A previous bundle at the output path (written by write_bundle), and the files to write anew."""
    out = tmp_path / ("b.edgeship.zip" if request.param == "zip" else "b.edgeship")
    files = bundle_files(mlp_bundle)
    write_bundle(out, files, bundle_manifest(mlp_bundle, "old"))
    return out, files


KILL_SCRIPT = r"""
import json, shutil, sys, time, zipfile
from pathlib import Path
import edgeship.bundle.write as B

out, src, ready = map(Path, sys.argv[1:4])
files = {p.relative_to(src).as_posix(): p for p in sorted(src.rglob("*")) if p.is_file() and p.name != "manifest.json"}
calls = []

def stall():
    calls.append(1)
    if len(calls) == 2:  # one file is written, the rest are not
        ready.touch()
        time.sleep(120)

def wrap(real):
    def f(*a, **k):
        r = real(*a, **k)
        stall()
        return r
    return f

shutil.copyfile = wrap(shutil.copyfile)
zipfile.ZipFile.write = wrap(zipfile.ZipFile.write)
manifest = json.loads((src / "manifest.json").read_text())
manifest = {k: v for k, v in manifest.items() if k not in ("schema_version", "files")}
B.write_bundle(out, files, {**manifest, "name": "new"})
"""


def test_killed_writer_leaves_old_bundle_and_next_run_cleans_up(old_bundle, mlp_bundle, tmp_path):
    out, files = old_bundle
    before = snapshot(out)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([PY, "-c", KILL_SCRIPT, str(out), str(mlp_bundle), str(ready)], env=python_env(),
                            stderr=subprocess.PIPE)
    while not ready.exists():  # no wall-clock bound: the writer either gets there or ends
        assert proc.poll() is None, "the writer ended before the middle of the write: " + proc.stderr.read().decode()
        time.sleep(0.02)
    assert temps_beside(out), "the writer should be mid-write, with its temporary beside the bundle"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert snapshot(out) == before
    assert open_bundle(out).manifest["name"] == "old"
    write_bundle(out, files, bundle_manifest(mlp_bundle, "next"))  # the next run removes the dead writer's temporary
    assert not temps_beside(out)
    assert open_bundle(out).manifest["name"] == "next"


def _fail_on_call(n, real):
    calls = []

    def f(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **k)

    return f


@pytest.mark.parametrize("where", ["copy", "fsync", "rename"])
def test_enospc_mid_write_leaves_old_bundle(old_bundle, monkeypatch, where):
    out, files = old_bundle
    before = snapshot(out)
    if where == "copy":
        monkeypatch.setattr(shutil, "copyfile", _fail_on_call(2, shutil.copyfile))
        monkeypatch.setattr(zipfile.ZipFile, "write", _fail_on_call(2, zipfile.ZipFile.write))
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", _fail_on_call(1, os.fsync))
    else:
        monkeypatch.setattr(B, "_exchange", lambda a, b: False)  # no renameat2: the two-rename fallback
        monkeypatch.setattr(os, "rename", _fail_on_call(2, os.rename))  # fails putting the new tree in place
        monkeypatch.setattr(os, "replace", _fail_on_call(1, os.replace))
    with pytest.raises(BundleError, match=r"writing the bundle .* failed: .*No space left on device.*previous contents are unchanged"):
        write_bundle(out, files, {"name": "new"})
    assert_untouched(out, before)


def test_enospc_during_export_exit_2_old_bundle_intact(files, tmp_path, cli, monkeypatch):
    out = tmp_path / "mlp.edgeship"
    args = ["export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--input", "x:1x10", "-o", out,
            "--exporter", "torchscript", "--no-torchscript"]
    assert cli(*args)[0] == 0
    before = snapshot(out)
    monkeypatch.setattr(shutil, "copyfile", _fail_on_call(2, shutil.copyfile))
    code, msg = cli(*args)
    assert code == 2 and "No space left on device" in msg and "Traceback" not in msg
    assert_untouched(out, before)


def test_fallback_swap_without_renameat2_replaces_cleanly(old_bundle, mlp_bundle, monkeypatch):
    out, files = old_bundle
    monkeypatch.setattr(B, "_exchange", lambda a, b: False)
    write_bundle(out, files, bundle_manifest(mlp_bundle, "new"))
    assert open_bundle(out).manifest["name"] == "new" and not temps_beside(out)


def _dead_pid() -> int:
    p = subprocess.Popen([PY, "-c", "pass"])
    p.wait()
    return p.pid


def test_writer_killed_inside_fallback_swap_gets_old_bundle_back(mlp_bundle, tmp_path):
    """Killed between 'move old aside' and 'move new in': the output path is briefly empty."""
    out = tmp_path / "b.edgeship"
    pid = _dead_pid()
    aside = tmp_path / f".b.edgeship.tmp-{pid}-abc-old"
    half = tmp_path / f".b.edgeship.tmp-{pid}-abc"
    shutil.copytree(mlp_bundle, aside)
    half.mkdir()
    (half / "partial.bin").write_bytes(b"x")
    before = snapshot(aside)
    B._clean_stale_temps(out)
    assert snapshot(out) == before and not temps_beside(out)


def test_live_writers_temporaries_are_left_alone(old_bundle):
    out, files = old_bundle
    mine = out.parent / f".{out.name}.tmp-{os.getpid()}-busy"
    mine.mkdir()
    odd = [out.parent / f".{out.name}.tmp-{n}-x" for n in ("²", "99999999999999999999", "abc")]
    for p in odd:
        p.mkdir()
    write_bundle(out, files, {"name": "new"})
    assert mine.exists() and all(p.exists() for p in odd)


@pytest.mark.parametrize("make", ["plain zip", "symlink", "file for folder"])
def test_output_that_is_not_a_bundle_is_never_replaced(mlp_bundle, tmp_path, make):
    if make == "plain zip":
        out = tmp_path / "precious.zip"
        with zipfile.ZipFile(out, "w") as z:
            z.writestr("thesis.tex", "do not delete")
    elif make == "symlink":
        target = tmp_path / "real.edgeship"
        shutil.copytree(mlp_bundle, target)
        out = tmp_path / "link.edgeship"
        os.symlink(target, out)
    else:
        out = tmp_path / "b.edgeship"
        write_bundle(tmp_path / "b.edgeship.zip", bundle_files(mlp_bundle), {"name": "z"})
        os.rename(tmp_path / "b.edgeship.zip", out)  # a zipped bundle where a folder bundle is asked for
    before = snapshot(out)
    with pytest.raises(BundleError, match="exists and is not an edgeship .*bundle; refusing to replace it"):
        write_bundle(out, bundle_files(mlp_bundle), {"name": "new"})
    assert_untouched(out, before)
