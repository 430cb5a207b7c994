"""The export's work folder in ``$TMPDIR``, and the removal of ones a killed export left behind.

Each export works in ``edgeship-work-PID-XXXX`` and holds an exclusive ``flock`` on the
``.lock`` file inside it for as long as it runs. A killed process drops its lock, so the next
export removes every work folder of the current user whose lock it can take. Locks, not pids,
decide: a pid from another container sharing ``/tmp`` could look dead while it runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

PREFIX = "edgeship-work-"
LOCK = ".lock"


@contextlib.contextmanager
def work_folder() -> Iterator[Path]:
    """A fresh, locked work folder, removed afterwards; stale ones are removed first."""
    remove_stale(Path(tempfile.gettempdir()))
    work = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    fd = os.open(work / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield work
    finally:
        os.close(fd)
        shutil.rmtree(work, ignore_errors=True)


def remove_stale(tmp: Path) -> list[Path]:
    """Remove this user's work folders whose owner no longer holds their lock; returns them."""
    removed = []
    for p in tmp.glob(PREFIX + "*"):
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if not p.is_dir() or p.is_symlink() or st.st_uid != os.getuid():
            continue
        try:
            fd = os.open(p / LOCK, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue  # a folder still being created, or not ours to judge
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live export holds it
        finally:
            os.close(fd)
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed
