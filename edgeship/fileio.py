"""Opening files that a user or an attacker named: never blocking on a FIFO or a device, never
reading more than a bound. The lowest room, so every reader (a bundle, a Hugging Face folder, a
baseline, ``--inputs``) uses the same two steps; :mod:`edgeship.bundle.limits` builds on them."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO

from edgeship.errors import EdgeshipError


def open_regular(path: Path, what: str, error: type[EdgeshipError], *, nofollow: bool = False) -> IO[bytes]:
    """Open ``path`` for reading if it is a regular file; never blocks on a FIFO or device.

    Args:
        nofollow: refuse a symbolic link as the last part of ``path`` (``O_NOFOLLOW``: the check and
            the open are one step, so no link can be swapped in between).

    Raises:
        error: missing, unreadable, a symbolic link (with ``nofollow``), or not a regular file (a
            FIFO, device, socket or folder).
    """
    # O_BINARY: on Windows os.open gives a text-mode descriptor otherwise (CRLF folded, ^Z read as EOF)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if nofollow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        if nofollow and not hasattr(os, "O_NOFOLLOW") and os.path.islink(path):  # Windows: checked first
            raise OSError(errno.ELOOP, "is a symbolic link")
        fd = os.open(path, flags)
    except OSError as e:
        if nofollow and e.errno == errno.ELOOP:
            raise error(f"{what}: {path} is a symbolic link; a plain file was expected here.") from e
        raise error(f"{what}: cannot read it ({path}: {e.strerror or e}).") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"{what}: {path} is not a regular file (a folder, device, pipe or socket); pass a file.")
    return os.fdopen(fd, "rb")


def read_at_most(f: IO[bytes], limit: int) -> bytes:
    """Up to ``limit`` + 1 bytes of ``f`` (one more than allowed, so a caller sees a file that holds
    more than it should without reading all of it)."""
    return f.read(limit + 1)


def read_bounded(path: Path, what: str, error: type[EdgeshipError], limit: int, hint: str, *,
                 nofollow: bool = False) -> bytes:
    """The bytes of the regular file ``path`` (:func:`open_regular`, with its ``nofollow``), read no
    further than ``limit``.

    Raises:
        error: not a regular file, unreadable, or holding more than ``limit`` bytes (refused unread
            past one byte over; the message ends with ``hint``, what to pass instead).
    """
    with open_regular(path, what, error, nofollow=nofollow) as f:
        try:
            raw = read_at_most(f, limit)
        except OSError as e:
            raise error(f"{what}: cannot read it ({path}: {e.strerror or e}).") from e
    if len(raw) > limit:
        raise error(f"{what}: {path} is over {limit >> 20} MiB; refused unread. {hint}")
    return raw
