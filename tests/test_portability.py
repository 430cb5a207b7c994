"""Windows and macOS, simulated on Linux: export, load, check, profile, tune, compare and inspect
must not need anything POSIX-only or Linux-only.

The suite runs on Linux only; nothing here runs on Windows or macOS. What a test changes, and for whom:

- edgeship is imported afresh inside the simulation (every ``edgeship.*`` module is dropped from
  ``sys.modules`` and put back afterwards), so module-level imports run again under it.
- Imports made by an edgeship module (``builtins.__import__`` is wrapped and looks at the importing
  module's name; torch, onnxruntime and filelock keep their own platform dispatch, which their own
  CI tests, e.g. filelock's LockFileEx on Windows):
  - win32: ``fcntl``, ``resource``, ``pwd``, ``grp``, ``termios`` ... raise ImportError;
  - ``sys`` is a view whose ``platform`` is ``"win32"`` or ``"darwin"`` (the real ``sys.platform``
    stays, so torch and the standard library behave as on Linux);
  - ``os`` is a view without what that OS lacks (win32: ``getuid``, ``sched_getaffinity``,
    ``fchmod`` (Python < 3.13), ``O_NOFOLLOW``, ``O_NONBLOCK``, ``fork`` ...; darwin:
    ``sched_getaffinity``, ``pipe2`` ...), and on win32 with Windows' behaviour where it differs:
    ``os.open`` of a folder raises PermissionError, a read-only ``os.open`` without ``O_BINARY`` is
    recorded as a violation (Windows would give a text-mode descriptor), ``os.rename`` onto an
    existing path raises FileExistsError, ``os.kill`` is a violation (it ends the process there);
  - ``time`` without ``clock_gettime*``/``pthread_getcpuclockid`` (win32; darwin: without
    ``pthread_getcpuclockid``), ``ctypes.CDLL(None)`` raising TypeError (win32).
- For every module, ``/proc`` and ``/sys`` do not exist: ``open``/``io.open`` (so ``Path.read_text``)
  and ``os.open``/``listdir``/``scandir``/``stat``/``lstat`` raise FileNotFoundError on them.

Not simulated: Windows paths (drive letters, backslashes: bundle paths are checked by
bundle/layout.py), files that cannot be deleted while open, the real LockFileEx.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import importlib
import io
import json
import os
import pkgutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
MLP_ARCH = f"{TESTS / 'models.py'}:MLP"
PLATFORMS = ("win32", "darwin")

_WINDOWS_LACKS = {"fcntl", "resource", "pwd", "grp", "termios", "tty", "pty", "posix", "syslog", "crypt", "nis", "spwd"}
BLOCKED = {"win32": _WINDOWS_LACKS, "darwin": set()}
OS_MISSING = {
    "win32": {"getuid", "geteuid", "getgid", "getegid", "getgroups", "getpgid", "getpgrp", "setsid", "killpg", "fork",
              "forkpty", "sched_getaffinity", "sched_setaffinity", "sched_getcpu", "fchmod", "fchown", "lchown",
              "chown", "getloadavg", "sysconf", "statvfs", "fstatvfs", "uname", "sync", "mkfifo", "pipe2",
              "posix_fadvise", "posix_fallocate", "memfd_create", "O_NOFOLLOW", "O_NONBLOCK", "O_DIRECTORY",
              "O_CLOEXEC", "O_SYNC", "O_DSYNC", "O_TMPFILE", "O_PATH", "O_DIRECT", "O_NOCTTY"},
    "darwin": {"sched_getaffinity", "sched_setaffinity", "sched_getcpu", "pipe2", "memfd_create", "posix_fadvise",
               "posix_fallocate", "O_TMPFILE", "O_PATH", "O_DIRECT"},
}
TIME_MISSING = {
    "win32": {"clock_gettime", "clock_gettime_ns", "clock_settime", "clock_settime_ns", "clock_getres",
              "pthread_getcpuclockid", "tzset"},
    "darwin": {"pthread_getcpuclockid"},
}
O_BINARY = 1 << 30  # the view's os.O_BINARY (Windows' is 0x8000, a real flag on Linux); stripped before the real os.open
NO_FS = ("/proc", "/sys")


def _ours(globals_: object) -> bool:
    name = globals_.get("__name__", "") if isinstance(globals_, dict) else ""
    return name == "edgeship" or name.startswith("edgeship.")


class _View:
    """A module as an edgeship module sees it on the simulated OS: attributes in ``missing`` do not
    exist, those in ``changed`` are replaced, everything else is the real module's, read live."""

    def __init__(self, real, plat: str, changed: dict, missing: set):
        object.__setattr__(self, "_view", (real, plat, changed, missing))

    def __getattr__(self, name: str):
        real, plat, changed, missing = object.__getattribute__(self, "_view")
        if name in missing:
            raise AttributeError(f"module {real.__name__!r} has no attribute {name!r} (on simulated {plat})")
        if name in changed:
            return changed[name]
        return getattr(real, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(object.__getattribute__(self, "_view")[0], name, value)


def _no_fs(path) -> bool:
    if isinstance(path, int):
        return False
    try:
        p = os.fsdecode(os.fspath(path))
    except TypeError:
        return False
    return any(p == root or p.startswith(root + "/") for root in NO_FS)


class Simulation:
    """The changes listed in the module docstring, installed with ``monkeypatch``."""

    def __init__(self, plat: str, monkeypatch: pytest.MonkeyPatch):
        self.plat = plat
        self.violations: list[str] = []
        self.blocked: list[str] = []  # imports refused (a guarded import that falls back is fine)
        self._install_no_fs(monkeypatch)
        views = {"sys": _View(sys, plat, {"platform": plat}, set()), "os": self._os_view(),
                 "time": _View(time, plat, {}, {n for n in dir(time) if n in TIME_MISSING[plat]
                                                 or (plat == "win32" and n.startswith("CLOCK_"))})}
        if plat == "win32":
            import ctypes

            def cdll(name, *a, **k):
                if name is None:
                    raise TypeError("argument of type 'NoneType' is not iterable (ctypes.CDLL(None) on Windows)")
                return ctypes.CDLL(name, *a, **k)

            views["ctypes"] = _View(ctypes, plat, {"CDLL": cdll}, set())
        real_import = builtins.__import__

        def sim_import(name, globals=None, locals=None, fromlist=(), level=0):
            if level == 0 and _ours(globals):
                top = name.partition(".")[0]
                if top in BLOCKED[plat]:
                    self.blocked.append(f"{globals.get('__name__')}: import {name}")
                    raise ImportError(f"No module named {name!r} (simulated {plat})", name=name)
                if top in views and (name == top or not fromlist):
                    return views[top]
            return real_import(name, globals, locals, fromlist, level)

        monkeypatch.setattr(builtins, "__import__", sim_import)

    def _install_no_fs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        def absent(real):
            def f(path=".", *a, **k):
                if _no_fs(path):
                    raise FileNotFoundError(errno.ENOENT, f"No such file or directory (simulated {self.plat})", str(path))
                return real(path, *a, **k)
            return f

        real_open = io.open
        monkeypatch.setattr(builtins, "open", absent(real_open))
        monkeypatch.setattr(io, "open", absent(real_open))
        for name in ("open", "listdir", "scandir", "stat", "lstat"):
            monkeypatch.setattr(os, name, absent(getattr(os, name)))

    def _os_view(self) -> _View:
        changed: dict = {}
        if self.plat == "win32":
            def open_(path, flags, mode=0o777, *, dir_fd=None):
                if os.path.isdir(path):
                    raise PermissionError(errno.EACCES, "Permission denied (a folder cannot be opened on Windows)", str(path))
                if flags & os.O_ACCMODE == os.O_RDONLY and not flags & O_BINARY:
                    self.violations.append(f"os.open({path!s}) for reading without O_BINARY: a text-mode descriptor on Windows")
                return os.open(path, flags & ~O_BINARY, mode)

            def rename(src, dst, *a, **k):
                if os.path.lexists(dst):
                    raise FileExistsError(errno.EEXIST, "Cannot create a file when that file already exists", str(dst))
                return os.rename(src, dst, *a, **k)

            def replace(src, dst, *a, **k):
                if os.path.isdir(dst):
                    raise PermissionError(errno.EACCES, "Access is denied (os.replace onto a folder on Windows)", str(dst))
                return os.replace(src, dst, *a, **k)

            def kill(pid, sig):
                self.violations.append(f"os.kill({pid}, {sig}): on Windows this sends CTRL_C_EVENT or ends the process")
                raise OSError(errno.EINVAL, "simulated Windows: os.kill is not a probe")

            changed = {"name": "nt", "O_BINARY": O_BINARY, "open": open_, "rename": rename, "replace": replace, "kill": kill}
        return _View(os, self.plat, changed, OS_MISSING[self.plat])


@contextlib.contextmanager
def fresh_edgeship():
    """Import edgeship anew inside the block, then put the original modules back."""
    def ours() -> list[str]:
        return [n for n in sys.modules if n == "edgeship" or n.startswith("edgeship.")]

    saved = {n: sys.modules[n] for n in ours()}
    for n in saved:
        del sys.modules[n]
    try:
        yield
    finally:
        for n in ours():
            del sys.modules[n]
        sys.modules.update(saved)


@pytest.fixture(params=PLATFORMS)
def simulated(request, monkeypatch, tmp_path):
    """A simulated Windows or macOS host, with edgeship imported afresh under it and a private
    temporary folder (for the export's work folders)."""
    import filelock  # noqa: F401 - imported as on Linux: on Windows it takes LockFileEx itself

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    with fresh_edgeship():
        sim = Simulation(request.param, monkeypatch)
        yield sim
        monkeypatch.undo()  # before the originals come back
    assert not sim.violations, sim.violations


def run_cli(capsys, *args) -> tuple[int, str]:
    from edgeship.cli import main

    old = sys.argv
    sys.argv = ["edgeship", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())


def test_every_module_imports_without_posix_only_modules():
    """Every edgeship module imports on simulated Windows (no fcntl, resource, ...), except for a
    missing optional dependency (OpenVINO)."""
    with pytest.MonkeyPatch.context() as mp, fresh_edgeship():
        sim = Simulation("win32", mp)
        import edgeship

        failed = {}
        for info in pkgutil.walk_packages(edgeship.__path__, "edgeship."):
            if info.name.endswith(".__main__"):  # runs the CLI
                continue
            try:
                importlib.import_module(info.name)
            except ImportError as e:
                if e.name in BLOCKED["win32"]:
                    failed[info.name] = str(e)
        mp.undo()
    assert not failed, f"module-level imports of POSIX-only modules: {failed}"
    assert not sim.violations, sim.violations


def test_export_load_check_profile_tune_compare_inspect(simulated, files, tmp_path, capsys):
    import torch

    plat, tmp = simulated.plat, Path(tempfile.gettempdir())
    dead = 4194305  # above Linux's largest pid_max (2**22): no process has it
    stale_work = tmp / f"edgeship-work-{dead}-killed"  # a killed export's, lock not held: removed
    stale_work.mkdir()
    (stale_work / ".lock").touch()
    out = tmp_path / "mlp.edgeship"
    stale_temp = tmp_path / f".mlp.edgeship.tmp-{dead}-abcd"  # a killed bundle writer's
    stale_temp.mkdir()
    code, msg = run_cli(capsys, "export", files["dir"] / "mlp_state.pt", "--arch", MLP_ARCH, "--input", "x:1x10",
                        "--dynamic-batch", "--exporter", "torchscript", "--no-torchscript", "--quantize", "fp32",
                        "-o", out)
    assert code == 0, msg
    assert not stale_work.exists()
    assert not list(tmp.glob("edgeship-work-*")), "the export's own work folder is left"
    # Windows has no safe pid probe: a killed writer's temporaries stay there (bundle/write.py)
    assert stale_temp.exists() == (plat == "win32")

    import edgeship

    x = files["x"]
    m = edgeship.load(out)
    y = m(x)
    y = y[0] if isinstance(y, (list, tuple)) else y
    with torch.no_grad():
        ref = files["module"](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-3)

    code, msg = run_cli(capsys, "check", out, "-q")
    assert code == 0 and "check passed" in msg, msg

    code, msg = run_cli(capsys, "profile", out, "-n", "5", "--warmup", "1", "--json", tmp_path / "p.json")
    assert code == 0, msg
    prof = json.loads((tmp_path / "p.json").read_text())
    rss = [r["peak_rss_mb"] for r in prof["results"]]
    assert rss and all(r["stats"]["count"] == 5 for r in prof["results"])
    if plat == "win32":  # no /proc and no resource module: not measured, and said so
        assert all(v is None for v in rss) and any("peak RSS" in n for n in prof["notes"]), prof["notes"]
    else:  # ru_maxrss (read as bytes on macOS, so tiny here, where Linux gives kB)
        assert all(isinstance(v, (int, float)) and v > 0 for v in rss), rss

    code, msg = run_cli(capsys, "tune", out, "-o", tmp_path / "tuned.edgeship")
    assert code == 0, msg
    code, msg = run_cli(capsys, "compare", out, tmp_path / "tuned.edgeship")
    assert code == 0 and "compare passed" in msg, msg
    code, msg = run_cli(capsys, "inspect", out, "-q")
    assert code == 0 and "variants: fp32" in msg, msg
    code, msg = run_cli(capsys, "inspect", files["dir"] / "mlp.onnx", "-q")  # read through limits.open_regular
    assert code == 0, msg


def test_host_facts_without_proc(simulated):
    from edgeship.host import host_info, usable_cpus

    info = host_info()
    assert info["cpu_flags"] == []  # no /proc/cpuinfo: no flags claimed
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("zipped", [False, True])
def test_bundle_written_and_replaced(simulated, mlp_bundle, tmp_path, zipped):
    """write.py's Linux-only parts (renameat2, folder fsync, fchmod, the pid probe) stay off Windows
    and macOS, and a bundle still replaces an older one there."""
    from edgeship.bundle import write_bundle
    from edgeship.bundle.read import open_bundle

    manifest = json.loads((mlp_bundle / "manifest.json").read_text())
    files = {rel: mlp_bundle / rel for rel in manifest["files"]}
    meta = {k: v for k, v in manifest.items() if k != "files"}
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / ("b.edgeship.zip" if zipped else "b.edgeship")
    write_bundle(out, files, {**meta, "name": "first"})
    write_bundle(out, files, {**meta, "name": "second"})
    assert open_bundle(out).manifest["name"] == "second"
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_stale_work_folders_judged_by_their_lock(simulated):
    """A killed export's work folder is removed, a live one stays; on Windows, which has no
    os.getuid, by the lock alone."""
    from filelock import lock_descriptor

    from edgeship.pipeline.workdir import LOCK, PREFIX, remove_stale, work_folder

    tmp = Path(tempfile.gettempdir())
    stale, live = tmp / f"{PREFIX}999999-dead", tmp / f"{PREFIX}1-live"
    for d in (stale, live):
        d.mkdir()
        (d / LOCK).touch()
    fd = os.open(live / LOCK, os.O_RDWR)
    try:
        assert lock_descriptor(fd, blocking=False)  # as the running export that owns it
        with work_folder() as work:
            assert (work / LOCK).exists() and not stale.exists() and live.exists()
            assert remove_stale(tmp) == []  # neither this export's folder nor the live one
        assert not work.exists()
    finally:
        os.close(fd)
    assert remove_stale(tmp) == [live]


def test_work_folder_taken_as_stale_while_being_created_is_replaced(monkeypatch, tmp_path):
    """Another export may take the lock of a folder in the instant between its .lock's creation and
    its locking: the creator then makes a new folder instead of working in a removed one."""
    from edgeship.pipeline import workdir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real, raced = workdir.lock_descriptor, []

    def racing(fd, **kw):
        if kw.get("blocking") and not raced:
            raced.append(workdir.remove_stale(tmp_path))  # the other export, right before this one locks
        return real(fd, **kw)

    monkeypatch.setattr(workdir, "lock_descriptor", racing)
    with workdir.work_folder() as work:
        assert len(raced) == 1 and len(raced[0]) == 1 and raced[0][0] != work
        assert (work / workdir.LOCK).exists()
        assert workdir.remove_stale(tmp_path) == []


def test_filesystem_without_locks(monkeypatch, tmp_path):
    """Where locking fails with ENOSYS (no lock primitive, some network filesystems), an export
    still runs, and no work folder is removed: none can be judged."""
    from edgeship.pipeline import workdir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    other = tmp_path / f"{workdir.PREFIX}1-other"
    other.mkdir()
    (other / workdir.LOCK).touch()

    def no_locks(fd, **kw):
        raise OSError(errno.ENOSYS, "fcntl is unavailable")

    monkeypatch.setattr(workdir, "lock_descriptor", no_locks)
    with workdir.work_folder() as work:
        assert work.is_dir() and other.exists()
    assert not work.exists() and other.exists()
