"""Writing a bundle atomically.

The tree is built in a temporary sibling, fsynced, manifest.json written last, and renamed into
place (an atomic exchange where Linux offers it), so the output path holds the old complete
bundle or the new one, never a mix. Temporaries left by a killed writer are cleaned up by the
next write.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
import tempfile
import zipfile
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
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_temps(out)
        if zipped:
            _write_zip(out, files, data)
        else:
            _write_dir(out, files, data)
    except OSError as e:
        raise BundleError(f"writing the bundle {out} failed: {e}; the previous contents are unchanged.") from e
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


def _clean_stale_temps(out: Path) -> None:
    """Remove temporary siblings left by a killed writer (their pid is gone).

    A writer killed inside the non-atomic fallback swap (``out`` moved aside to ``...-old``, new
    tree not yet in place) leaves no ``out``: the old bundle is moved back rather than deleted.
    """
    for p in sorted(out.parent.glob(_temp_prefix(out) + "*"), key=lambda p: not p.name.endswith("-old")):
        pid = p.name[len(_temp_prefix(out)):].split("-")[0]
        if pid.isascii() and pid.isdigit() and len(pid) <= 9 and not _pid_alive(int(pid)):
            if p.name.endswith("-old") and not out.exists() and not out.is_symlink():
                os.rename(p, out)
            elif p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` may still run. Windows: always True, since ``os.kill(pid, 0)`` is no
    probe there (0 is CTRL_C_EVENT, sent to a console process group; any other signal ends the
    process), so a killed writer's temporaries stay until removed by hand."""
    if sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        for d in {(tmp / rel).parent for rel in files} | {tmp}:
            _fsync_dir(d)
        if out.exists():
            if _exchange(tmp, out):
                shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old bundle
            else:  # no renameat2 here: two renames, undone if the second fails
                old = tmp.with_name(tmp.name + "-old")
                os.rename(out, old)
                try:
                    os.rename(tmp, out)
                except OSError:
                    os.rename(old, out)
                    raise
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
        _fsync_dir(out.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
