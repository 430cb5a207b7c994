"""The export's work folder in the temporary directory, and the removal of ones a killed export left behind.

Each export works in ``edgeship-work-PID-XXXX`` and holds an exclusive lock on the ``.lock`` file
inside it for as long as it runs: ``filelock.lock_descriptor``, the primitive ``filelock.FileLock``
uses (``flock`` on POSIX, ``LockFileEx`` on Windows), which the OS drops when the process dies. So
the next export removes every work folder of the current user whose lock it can take. Locks, not
pids, decide: a pid from another container sharing ``/tmp`` could look dead while it runs.

The current user's folders: those whose owner is ``os.getuid()``. Windows has no uids (``st_uid``
is 0 there), and its temporary folder (``%TEMP%``) is the user's own, so there every work folder
in it is judged, by its lock alone. On a filesystem without locks (locking fails with ENOSYS,
ENOLCK or EOPNOTSUPP, as on some network mounts) an export runs unlocked and removes nothing: a
folder whose lock cannot be taken is never removed.

Room: onnxruntime (writing its optimised model) and torch (a TorchScript archive) abort the
process on a full disk, or fail with "Protobuf serialization failed". So each large write in the
work folder is preceded by :func:`ensure_room`, which refuses it (``DiskFullError``, exit 2) when
the folder's filesystem has less free space than the write's estimate plus 10% and
:data:`HEADROOM`; the work folder is then removed as usual.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from filelock import lock_descriptor

from edgeship.errors import DiskFullError

PREFIX = "edgeship-work-"
LOCK = ".lock"
_OPEN = os.O_RDWR | getattr(os, "O_BINARY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX only; the folder itself is checked for links first
_NO_LOCKS = {getattr(errno, n) for n in ("ENOSYS", "ENOLCK", "EOPNOTSUPP", "ENOTSUP") if hasattr(errno, n)}
_ATTEMPTS = 5
_FULL = {errno.ENOSPC, errno.EDQUOT}
HEADROOM = 1 << 20  # on top of a write's estimate: file-system blocks, protobuf framing, small files


@contextlib.contextmanager
def work_folder() -> Iterator[Path]:
    """A fresh, locked work folder, removed afterwards; stale ones are removed first.

    Raises:
        DiskFullError: the temporary folder has no room for it (or refuses new files).
    """
    remove_stale(Path(tempfile.gettempdir()))
    try:
        work, fd = _locked_folder()
    except OSError as e:
        if e.errno not in _FULL:
            raise
        raise DiskFullError(f"disk full in TMPDIR ({tempfile.gettempdir()}): cannot create a work folder there "
                            f"({e.strerror}); free space there or point TMPDIR at a folder with room.") from e
    try:
        yield work
    finally:
        os.close(fd)  # drops the lock
        shutil.rmtree(work, ignore_errors=True)


def ensure_room(folder: Path, needed: int, what: str, after: str = "") -> None:
    """Refuse to write about ``needed`` bytes (``what``) in ``folder`` when its filesystem has less
    free space than that plus 10% and :data:`HEADROOM`; ``after`` ends the message (what was left).

    Raises:
        DiskFullError: "disk full in TMPDIR (N free, M needed)".
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # no answer (an exotic filesystem): the write itself will tell
    need = int(needed) + int(needed) // 10 + HEADROOM
    if free < need:
        raise DiskFullError(
            f"disk full in TMPDIR ({_size(free)} free, {_size(need)} needed) in {folder}, to write {what}; free space "
            f"there or point TMPDIR at a folder with room (edgeship checks before each large write, as onnxruntime "
            f"and torch abort on a full disk)." + (f" {after}" if after else ""))


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def _locked_folder() -> tuple[Path, int]:
    """A new work folder and the open descriptor of the lock it holds on its ``.lock``.

    Another export's :func:`remove_stale` can take the lock in the instant between the file's
    creation and its locking here; it removes the folder while holding the lock, so this process
    gets the lock only afterwards, finds that its ``.lock`` is gone, and makes a new folder.
    """
    for _ in range(_ATTEMPTS):
        work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        fd = os.open(work / LOCK, _OPEN | os.O_CREAT, 0o600)
        try:
            _lock(fd)
            if os.path.samestat(os.fstat(fd), os.stat(work / LOCK)):
                return work, fd
        except FileNotFoundError:
            pass  # removed as stale meanwhile
        except BaseException:
            os.close(fd)
            shutil.rmtree(work, ignore_errors=True)
            raise
        os.close(fd)
        shutil.rmtree(work, ignore_errors=True)
    raise OSError(errno.EAGAIN, f"no work folder in {tempfile.gettempdir()} kept its lock after {_ATTEMPTS} attempts "
                  "(other exports kept removing them)")


def _lock(fd: int) -> bool:
    """Take the lock on ``fd``, waiting while a remover holds it; False where the filesystem has no locks."""
    try:
        return lock_descriptor(fd, blocking=True, poll_interval=0.01)
    except OSError as e:
        if e.errno in _NO_LOCKS:
            return False
        raise


def remove_stale(tmp: Path) -> list[Path]:
    """Remove this user's work folders whose owner no longer holds their lock; returns them."""
    getuid = getattr(os, "getuid", None)  # none on Windows: see the module's docstring
    uid = getuid() if getuid is not None else None
    removed = []
    for p in tmp.glob(PREFIX + "*"):
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or (uid is not None and st.st_uid != uid):
            continue  # a link, a file, or another user's
        try:
            fd = os.open(p / LOCK, _OPEN | _NOFOLLOW)
        except OSError:
            continue  # a folder still being created, or not ours to judge
        try:
            try:
                if not lock_descriptor(fd, blocking=False):
                    continue  # a live export holds it
            except OSError:
                continue  # no locks here: nothing can be judged
            # removed while the lock is held, so an export that created this folder an instant ago
            # gets its lock only once it is gone (and then makes another: see _locked_folder)
            shutil.rmtree(p, ignore_errors=True)
        finally:
            os.close(fd)
        if os.path.lexists(p):  # Windows: a file cannot be deleted while open, so .lock is removed now
            with contextlib.suppress(OSError):
                (p / LOCK).unlink()
                p.rmdir()
        if not os.path.lexists(p):
            removed.append(p)
    return removed
