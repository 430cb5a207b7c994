"""Issue 20 item 11: a TMPDIR without room for the export's large writes (onnxruntime's optimised
model, torch's TorchScript archive: they abort the process or fail with a protobuf message) is
refused before each write with "disk full in TMPDIR (N free, M needed)", exit 2, nothing left
behind; item 16: the same for tune, whose copy of the bundle is a locked work folder that a later
run removes when tune was killed."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import namedtuple
from pathlib import Path

import pytest
from conftest import arch, fake_p50s
from hostile_helpers import snapshot

from edgeship.pipeline import workdir

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch):
    """A TMPDIR of the test's own, so what an export leaves there can be listed."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    yield tmp
    tempfile.tempdir = None


def _free(monkeypatch, free_of):
    """Pretend the filesystem of TMPDIR has ``free_of(path)`` bytes free."""
    real = shutil.disk_usage

    def usage(path):
        u = real(path)
        return Usage(u.total, u.used, free_of(Path(path)))

    monkeypatch.setattr(workdir.shutil, "disk_usage", usage)


def _export(cli, files, out, *extra):
    return cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--input", "x:1x10",
               "--exporter", "torchscript", "-o", out, *extra)


@pytest.mark.parametrize("free", [4 << 10, 20 << 10])
def test_export_with_a_full_tmpdir_is_refused_before_writing(files, tmp_path, tmpdir_env, cli, monkeypatch, free):
    _free(monkeypatch, lambda p: free)
    out = tmp_path / "b.edgeship"
    code, msg = _export(cli, files, out)
    assert code == 2, msg
    assert "disk full in TMPDIR" in msg and f"{free >> 10}.0 KiB free" in msg and "needed" in msg, msg
    assert "Traceback" not in msg and not out.exists()
    assert not list(tmpdir_env.iterdir()), "the export left its work behind"


def test_room_for_the_first_writes_but_not_the_optimised_model(files, tmp_path, tmpdir_env, cli, monkeypatch):
    """Free space that runs out mid-export: the stage that would not fit is the one refused."""
    writes = []
    real = workdir.ensure_room

    def counting(folder, needed, what, after=""):
        writes.append(what)
        if "optimised" in what:
            _free(monkeypatch, lambda p: 8 << 10)
        return real(folder, needed, what, after)

    monkeypatch.setattr(workdir, "ensure_room", counting)
    out = tmp_path / "b.edgeship"
    code, msg = _export(cli, files, out)
    assert code == 2 and "disk full in TMPDIR" in msg and "optimised" in msg, msg
    assert not out.exists() and not list(tmpdir_env.iterdir())


def test_ensure_room_message(monkeypatch):
    from edgeship.errors import DiskFullError

    _free(monkeypatch, lambda p: 4096)
    with pytest.raises(DiskFullError, match=r"disk full in TMPDIR \(4.0 KiB free, .* needed\) .*to write the x"):
        workdir.ensure_room(Path(tempfile.gettempdir()), 1 << 20, "the x")
    _free(monkeypatch, lambda p: 1 << 30)
    workdir.ensure_room(Path(tempfile.gettempdir()), 1 << 20, "the x")


def test_work_folder_that_cannot_be_made_is_exit_2(files, tmp_path, tmpdir_env, cli, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(workdir.tempfile, "mkdtemp", full)
    code, msg = _export(cli, files, tmp_path / "b.edgeship")
    assert code == 2 and "TMPDIR" in msg and "Traceback" not in msg, msg


# ----------------------------------------------------------------------------- tune
def test_tune_with_a_full_tmpdir_is_exit_2_and_leaves_the_bundle(bundle_copy, tmpdir_env, cli, monkeypatch):
    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0))
    before = snapshot(bundle_copy)
    _free(monkeypatch, lambda p: 4 << 10)
    code, msg = cli("tune", bundle_copy)
    assert code == 2 and "disk full in TMPDIR" in msg, msg
    assert snapshot(bundle_copy) == before and not list(tmpdir_env.iterdir())


def test_tune_when_tmpdir_fills_up_while_copying_is_exit_2(bundle_copy, tmpdir_env, cli, monkeypatch):
    monkeypatch.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0))
    before = snapshot(bundle_copy)

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    code, msg = cli("tune", bundle_copy)
    assert code == 2 and "No space left on device" in msg and "Traceback" not in msg, msg
    assert snapshot(bundle_copy) == before and not list(tmpdir_env.iterdir())


KILLED_TUNE = r"""
import os, signal, sys
import edgeship.pipeline.tune as T
from edgeship.profiling import interleave
sys.path.insert(0, sys.argv[2])
from conftest import fake_p50s
interleave.quick_p50s = fake_p50s(lambda n: 1.0)
def killed(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
T.write_bundle = killed
T.tune(sys.argv[1])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_tunes_copy_is_removed_by_the_next_run(bundle_copy, tmpdir_env):
    env = {**os.environ, "TMPDIR": str(tmpdir_env)}
    tests = Path(__file__).resolve().parents[1]
    p = subprocess.run([sys.executable, "-c", KILLED_TUNE, str(bundle_copy), str(tests)], env=env,
                       capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    left = list(tmpdir_env.iterdir())
    assert left, "tune's copy of the bundle should be in TMPDIR when it is killed"
    removed = workdir.remove_stale(tmpdir_env)  # what the next export or tune does first
    ours = [p for p in left if p.name.startswith(workdir.PREFIX)]
    assert ours and sorted(removed) == sorted(ours)


# ----------------------------------------------------------------------------- a real small TMPDIR
def _mount_tmpfs(path: Path, size: str) -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("size", ["4k", "16k"])
def test_a_real_4k_tmpdir(files, tmp_path, size):
    """The issue's own case (onnxruntime aborts with std::ios_failure at 4 KiB), in a process of its own."""
    tmp = tmp_path / "small"
    if not _mount_tmpfs(tmp, size):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    try:
        out = tmp_path / "b.edgeship"
        env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join(sys.path)}
        p = subprocess.run([sys.executable, "-m", "edgeship", "export", str(files["dir"] / "mlp_state.pt"), "--arch",
                            arch("MLP"), "--input", "x:1x10", "-o", str(out)], env=env, capture_output=True, text=True)
        msg = p.stdout + p.stderr
        assert p.returncode == 2, msg
        assert "disk full in TMPDIR" in msg and not out.exists()
        assert not [q for q in tmp.iterdir() if q.name.startswith("edgeship-")], list(tmp.iterdir())
    finally:
        subprocess.run(["umount", str(tmp)], capture_output=True)


# ----------------------------------------------------------------------------- other commands' TMPDIR use
def test_profile_per_op_with_a_full_tmpdir_is_exit_2(bundle_copy, tmpdir_env, cli, monkeypatch):
    """onnxruntime writes its per-op profile JSON in TMPDIR and, on a full disk, leaves it cut short."""
    import json

    import edgeship.profiling.opprofile as opprofile

    def cut_short(f):
        raise json.JSONDecodeError("Unterminated string starting at", "{", 1)

    monkeypatch.setattr(opprofile.json, "load", cut_short)
    monkeypatch.setattr(opprofile.shutil, "disk_usage", lambda p: Usage(1 << 20, (1 << 20) - 4096, 4096))
    code, msg = cli("profile", bundle_copy, "--per-op", "-n", "2", "--warmup", "0")
    assert code == 2 and "disk full in TMPDIR" in msg and "Traceback" not in msg, msg


def test_a_full_disk_anywhere_is_exit_2_not_a_bug(bundle_copy, cli, monkeypatch):
    """The last line of defence: an ENOSPC that no command expected (here: while printing the table)."""
    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/some/file")

    monkeypatch.setattr("edgeship.cli.render.parity_table", full)
    code, msg = cli("check", bundle_copy, "--table")
    assert code == 2 and "No space left on device" in msg and "/some/file" in msg and "Traceback" not in msg, msg
