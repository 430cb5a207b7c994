"""Writing a bundle atomically.

The tree is built in a temporary sibling, fsynced, manifest.json written last, and renamed into
place (an atomic exchange where Linux offers it), so the output path holds the old complete
bundle or the new one, never a mix. A bundle that is replaced keeps its permissions (a read-only
bundle stays read-only, each file keeping the mode of the file it replaces); a new one takes the
umask, like any file the user creates.

Temporaries are ``.NAME.tmp-PID-RANDOM`` (and ``...-old``, the old bundle moved aside where there
is no atomic exchange), each created exclusively (``mkdtemp``/``mkstemp``, ``mkdir``) by the writer
that uses it. The output's folder may be shared (a sticky ``/tmp``), so a temporary found there is
judged stale only when it is named that way, is owned by the current user (never a link) and its
PID is not a live process of the current user; only then is it removed, and only such a ``-old``
folder that is a complete bundle is put back where the output is missing (a writer killed between
its two renames). Another user's temporary is never touched, let alone renamed into place.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from edgeship import jsonout, schemas
from edgeship.bundle.layout import MANIFEST, check_relpath, sha256_file
from edgeship.bundle.manifest import parse_manifest
from edgeship.errors import BundleError


def write_bundle(out: Path, files: dict[str, Path], manifest: dict) -> Path:
    """Write ``files`` (bundle-relative path -> source file) and ``manifest`` to ``out`` atomically.

    ``out`` ending in ``.zip`` gives a zipped bundle. The manifest gains ``schema`` and
    ``schema_version`` (:func:`edgeship.schemas.header`: this edgeship's, whatever ``manifest``
    says) and ``files`` (sha256 and size of each file).

    Raises:
        BundleError: ``out`` exists and is not a bundle, or the write failed.
    """
    out = Path(out)
    entries = {}
    for rel, src in sorted(files.items()):
        check_relpath(rel)
        entries[rel] = {"sha256": sha256_file(src), "size": Path(src).stat().st_size}
    head = schemas.header("manifest")
    full = {**head, **{k: v for k, v in manifest.items() if k not in head}, "files": entries}
    data = jsonout.dumps(full, indent=2).encode()
    zipped = out.name.endswith(".zip")
    if (out.exists() or out.is_symlink()) and not _is_bundle(out, zipped):
        raise BundleError(
            f"output path {out} exists and is not an edgeship {'zipped ' if zipped else ''}bundle; refusing to "
            "replace it (only an output whose manifest.json parses as an edgeship manifest of a known schema "
            "is replaced). Choose another --output or remove it."
        )
    existed = out.exists() or out.is_symlink()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_temps(out)
        existed = out.exists() or out.is_symlink()  # a killed writer's old bundle may be back
        if zipped:
            _write_zip(out, files, data)
        else:
            _write_dir(out, files, data)
    except OSError as e:
        after = "the previous contents are unchanged" if existed else f"nothing was written to {out}"
        raise BundleError(f"writing the bundle {out} failed: {e}; {after}.") from e
    return out


def _is_bundle(path: Path, zipped: bool) -> bool:
    """Whether ``path`` may be replaced: a bundle of the kind being written, whose manifest.json
    parses as an edgeship manifest of a known schema (or an empty folder). A web app or browser
    extension that merely has a manifest.json is not one."""
    from edgeship.bundle.limits import MAX_MANIFEST_BYTES, open_regular, read_at_most, read_member

    if path.is_symlink():
        return False
    try:
        if not zipped:
            if not path.is_dir():
                return False
            if not any(path.iterdir()):
                return True
            # opened once, not following a link, not blocking: a FIFO or /dev/zero link swapped in is refused
            with open_regular(path / MANIFEST, str(path), BundleError, nofollow=True) as f:
                data = read_at_most(f, MAX_MANIFEST_BYTES)
            if len(data) > MAX_MANIFEST_BYTES:
                return False
        else:
            with open_regular(path, str(path), BundleError, nofollow=True) as f, zipfile.ZipFile(f) as z:
                data = read_member(z, z.getinfo(MANIFEST), MAX_MANIFEST_BYTES, str(path), BundleError)
        parse_manifest(data, path)
    except (BundleError, KeyError, zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError):
        return False
    return True


def _temp_prefix(out: Path) -> str:
    return f".{out.name}.tmp-"


_TEMP_TAIL = re.compile(r"([0-9]{1,9})-[A-Za-z0-9_]+(-old)?")  # after the prefix: PID-RANDOM[-old]


def _clean_stale_temps(out: Path) -> None:
    """Remove this user's temporary siblings whose writer is gone (see the module's docstring).

    A writer killed inside the non-atomic fallback swap (``out`` moved aside to ``...-old``, new
    tree not yet in place) leaves no ``out``: its old bundle is moved back rather than deleted.
    """
    prefix = _temp_prefix(out)
    uid = _uid()
    # not glob(prefix + "*"): the bundle's own name may hold glob syntax ("model[v2]", "a**b")
    siblings = [p for p in out.parent.iterdir() if p.name.startswith(prefix)] if out.parent.is_dir() else []
    for p in sorted(siblings, key=lambda p: not p.name.endswith("-old")):
        m = _TEMP_TAIL.fullmatch(p.name[len(prefix):])
        if m is None:
            continue
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if (uid is not None and st.st_uid != uid) or stat.S_ISLNK(st.st_mode) or _writer_alive(int(m.group(1))):
            continue  # another user's, a link (never made by a writer), or a live writer's
        if stat.S_ISDIR(st.st_mode):
            if m.group(2) and not out.exists() and not out.is_symlink() and _is_bundle(p, zipped=False):
                os.rename(p, out)
            else:
                _rmtree(p)
        else:
            p.unlink(missing_ok=True)


def _uid() -> int | None:
    """The current user's id; None on Windows (no uids: ``%TEMP%`` is the user's own there)."""
    getuid = getattr(os, "getuid", None)
    return getuid() if getuid is not None else None


def _writer_alive(pid: int) -> bool:
    """Whether ``pid`` may be a live writer of this user's. Windows: always True, since
    ``os.kill(pid, 0)`` is no probe there (0 is CTRL_C_EVENT, sent to a console process group; any
    other signal ends the process), so a killed writer's temporaries stay until removed by hand.
    A live process of another user is not this user's writer (root can signal anyone, so its
    owner is read from ``/proc`` where there is one)."""
    if sys.platform == "win32" or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: the pid was reused
    except OSError:
        return True
    try:
        return os.stat(f"/proc/{pid}").st_uid == _uid()
    except OSError:
        return True


def _rmtree(path: Path) -> None:
    """Remove a tree of ours, read-only folders included (a replaced read-only bundle)."""
    def writable(func: Callable, p: str, exc: BaseException) -> None:
        parent = os.path.dirname(p)
        try:
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | stat.S_IWUSR | stat.S_IXUSR)
            func(p)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=writable)
    else:
        shutil.rmtree(path, onerror=lambda f, p, e: writable(f, p, e[1]))


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable. Skipped on Windows, which cannot open a folder as a file
    (and where NTFS journals the rename itself)."""
    if sys.platform == "win32":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (read without changing it where /proc says it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_dir(out: Path, files: dict[str, Path], manifest: bytes) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out) + f"{os.getpid()}-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a bundle is shared like any folder
    try:
        for rel, src in files.items():
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            with open(dst, "rb+") as f:
                os.fsync(f.fileno())
        _fsync_write(tmp / MANIFEST, manifest)  # last: a tree without it is never a bundle
        replaced = out.exists()
        if replaced:
            _keep_modes(out, tmp, [*files, MANIFEST])
        for d in {(tmp / rel).parent for rel in files} | {tmp}:
            _fsync_dir(d)
        if replaced:
            if _exchange(tmp, out):
                _rmtree(tmp)  # tmp now holds the old bundle
            else:  # no renameat2 here: two renames, undone if the second fails
                old = tmp.with_name(tmp.name + "-old")
                if sys.platform != "win32":
                    os.mkdir(old, 0o700)  # ours, made exclusively: never a name someone planted first
                os.rename(out, old)  # replaces the empty folder just made (POSIX)
                try:
                    os.rename(tmp, out)
                except OSError:
                    os.rename(old, out)
                    raise
                _rmtree(old)
        else:
            os.rename(tmp, out)
        _fsync_dir(out.parent)
    finally:
        if tmp.exists():
            _rmtree(tmp)


def _keep_modes(old: Path, new: Path, rels: list[str]) -> None:
    """Give the tree ``new`` the permissions of the bundle ``old`` it replaces: each file and
    folder the mode of its namesake in ``old`` (links ignored), folders last, the root at the end."""
    folders = {new}
    for rel in rels:
        parent = Path(rel).parent
        while parent != Path("."):
            folders.add(new / parent)
            parent = parent.parent
        _copy_mode(old / rel, new / rel, stat.S_ISREG)
    for d in sorted(folders, key=lambda d: -len(d.parts)):
        _copy_mode(old / d.relative_to(new), d, stat.S_ISDIR)


def _copy_mode(src: Path, dst: Path, kind: Callable[[int], bool]) -> None:
    try:
        st = os.lstat(src)
    except OSError:
        return
    if kind(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode) & 0o777)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):  # Linux only (and ctypes.CDLL(None) fails on Windows)
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _write_zip(out: Path, files: dict[str, Path], manifest: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(out) + f"{os.getpid()}-", dir=out.parent)
    mode = 0o666 & ~_umask()  # mkstemp makes it 0600
    if out.is_file():  # a replaced bundle keeps its permissions
        mode = stat.S_IMODE(out.stat().st_mode) & 0o777
    fchmod = getattr(os, "fchmod", None)  # Windows has it from Python 3.13 on
    if fchmod is not None:
        fchmod(fd, mode)
    os.close(fd)
    if fchmod is None:
        os.chmod(tmp, mode)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for rel, src in sorted(files.items()):
                z.write(src, rel)
            z.writestr(MANIFEST, manifest)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
