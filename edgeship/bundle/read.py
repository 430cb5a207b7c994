"""Reading a bundle: every file verified before anything else opens it.

Reading refuses unlisted, missing, linked or escaping paths and checks every sha256 and size;
:meth:`Bundle.read` checks the sha256 of the bytes it returns once more.

A file may be swapped while the bundle is read (a FIFO, a link to ``/dev/zero``, another file), so
nothing is read by a path that was checked earlier: a zipped bundle is opened once (without
following a link, without blocking) and every member is read from that open file; a folder's
files are opened the same way (``O_NOFOLLOW``, non-blocking, regular files only) each time, read
no further than the size the manifest gives, and :meth:`Bundle.read` takes only the very file
(device and inode) that was verified. A zip's members may not overlap, and all of them together
may not inflate to more than :data:`~edgeship.bundle.limits.MAX_RATIO` times the zip's size.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import IO

from edgeship.bundle.layout import MANIFEST, check_relpath, sha256_bytes
from edgeship.bundle.limits import (
    MAX_MANIFEST_BYTES,
    check_members,
    check_ratio,
    iter_member,
    open_regular,
    read_at_most,
    read_member,
    sha256_at_most,
)
from edgeship.bundle.manifest import parse_manifest
from edgeship.errors import BundleError, EdgeshipError
from edgeship.fileio import read_bounded


class Bundle:
    """A verified bundle (directory or zip). Construct with :func:`open_bundle`.

    :meth:`close` (or leaving a ``with`` block) lets go of the zip (its file, or the bytes it was
    read from); the manifest and path stay, :meth:`read` then refuses."""

    def __init__(self, path: Path, manifest: dict, reader, closer=None):
        self.path = path
        self.manifest = manifest
        self._reader = reader
        self._closer = closer

    @property
    def files(self) -> dict:
        return self.manifest["files"]

    def read(self, rel: str) -> bytes:
        """The bytes of a listed file, checked against the manifest's sha256 once more."""
        if rel not in self.files:
            raise BundleError(f"bundle {self.path} does not list {rel!r}; it lists {', '.join(self.files)}.")
        if self._reader is None:
            raise BundleError(f"bundle {self.path} was closed after it was read; open it again to read {rel}.")
        data = self._reader(rel)
        if sha256_bytes(data) != self.files[rel]["sha256"]:
            raise BundleError(
                f"bundle {self.path}: {rel} does not match its sha256 in manifest.json; the bundle "
                "is corrupt or was modified. Re-export it or fetch a clean copy."
            )
        return data

    def close(self) -> None:
        """Let go of what the files are read from (a zip's open file or bytes); idempotent."""
        closer, self._reader, self._closer = self._closer, None, None
        if closer is not None:
            closer()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def identity(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    """What changes when a writer replaces a bundle: the inode of the folder (or zip) and of its
    manifest.json, and the manifest's size and mtime; None when absent."""
    p = Path(path)
    try:
        st = os.stat(p)
        mst = os.stat(p / MANIFEST) if stat.S_ISDIR(st.st_mode) else st
    except OSError:
        return None
    return st.st_ino, mst.st_ino, mst.st_size, mst.st_mtime_ns


IN_MEMORY = Path("<bundle bytes>")


def open_bundle(path: str | os.PathLike | bytes | bytearray | memoryview) -> Bundle:
    """Open and fully verify a bundle: manifest, schema, paths, links, sizes and every sha256.
    ``path`` may also be the bytes of a zipped bundle already in memory (an app resource; ``bytes``,
    ``bytearray`` or ``memoryview``, copied once so a later change to the buffer cannot reach what
    was verified): they are read through the same zip reader and checks, with no temporary file.

    Raises:
        BundleError: anything missing, extra, linked, escaping, unknown or not matching.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        import io

        data = bytes(path)
        return _open_zip(IN_MEMORY, io.BytesIO(data), len(data))
    if not isinstance(path, (str, os.PathLike)):
        raise BundleError(f"a bundle is a path (NAME.edgeship folder or .zip file) or the bytes of a zipped bundle, "
                          f"not {type(path).__name__}.")
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"bundle {path} does not exist; pass the NAME.edgeship folder or NAME.edgeship.zip file.")
    if path.is_symlink():
        raise BundleError(f"bundle {path} is a symbolic link; pass the bundle itself.")
    if path.is_dir():
        return _open_dir(path)
    if not path.is_file():
        raise BundleError(f"bundle {path} is not a folder or a regular file (a device, pipe or socket).")
    f = open_regular(path, f"bundle {path}", BundleError, nofollow=True)  # once, and checked again: the zip is read from it
    try:
        head = f.read(2)
        is_zip = head == b"PK" or zipfile.is_zipfile(f)
        f.seek(0)
        if is_zip:
            return _open_zip(path, f, os.fstat(f.fileno()).st_size)
    except OSError as e:
        f.close()
        raise BundleError(f"bundle {path} cannot be read ({e}).") from e
    except BaseException:
        f.close()
        raise
    f.close()
    raise BundleError(f"{path} is neither a bundle folder nor a zipped bundle.")


def is_bundle(path: str | os.PathLike, error: type[EdgeshipError] = BundleError) -> bool:
    """Whether ``path`` is a bundle (a folder, or a zip by its content, whatever its name) rather
    than a model file; opened without blocking, so a FIFO or device is refused, never read.

    Raises:
        error: it does not exist, or is not a folder or regular file.
    """
    p = Path(path)
    if not p.exists():
        raise error(f"{p} does not exist; pass a bundle (NAME.edgeship folder or .zip) or an .onnx file.")
    if p.is_dir():
        return True
    with open_regular(p, "model source", error) as f:
        return zipfile.is_zipfile(f)


def _open_dir(path: Path) -> Bundle:
    mpath = path / MANIFEST
    if mpath.is_symlink() or not mpath.is_file():
        raise BundleError(f"{path} has no manifest.json; it is not a complete edgeship bundle.")
    data = read_bounded(mpath, f"bundle {path}: manifest.json", BundleError, MAX_MANIFEST_BYTES,
                        "No manifest is that large; the bundle is corrupt or was edited.", nofollow=True)
    manifest = parse_manifest(data, path)
    found = set()

    def walk_error(e: OSError):
        raise BundleError(f"bundle {path}: cannot list {e.filename} ({e.strerror}).") from e

    for root, dirs, names in os.walk(path, onerror=walk_error, followlinks=False):
        for n in dirs + names:
            full = Path(root) / n
            st = os.lstat(full)
            rel = full.relative_to(path).as_posix()
            if stat.S_ISLNK(st.st_mode):
                raise BundleError(f"bundle {path}: {rel} is a symbolic link; bundles hold plain files only.")
            if stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    raise BundleError(f"bundle {path}: {rel} is hard-linked elsewhere; bundles hold plain files only.")
                found.add(rel)
            elif not stat.S_ISDIR(st.st_mode):
                raise BundleError(f"bundle {path}: {rel} is not a regular file.")
    _compare_listing(path, manifest, found - {MANIFEST})
    verified: dict[str, tuple[int, int]] = {}  # rel -> (device, inode) of the file whose bytes were hashed
    for rel, meta in manifest["files"].items():
        with _open_listed(path, rel, meta["size"]) as f:
            try:
                digest, count = sha256_at_most(f, meta["size"])
            except OSError as e:
                raise BundleError(f"bundle {path}: {rel} cannot be read ({e}).") from e
            st = os.fstat(f.fileno())
        if count != meta["size"] or digest != meta["sha256"]:
            raise BundleError(
                f"bundle {path}: {rel} does not match its sha256/size in manifest.json; the bundle "
                "is corrupt or was modified. Re-export it or fetch a clean copy."
            )
        verified[rel] = (st.st_dev, st.st_ino)

    def reader(rel: str) -> bytes:
        size = manifest["files"][rel]["size"]
        with _open_listed(path, rel, size) as f:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) != verified[rel]:
                raise BundleError(f"bundle {path}: {rel} was replaced after the bundle was verified; refused. "
                                  "Load the bundle again once nothing writes to it.")
            try:
                data = read_at_most(f, size)
            except OSError as e:
                raise BundleError(f"bundle {path}: {rel} cannot be read ({e}).") from e
        if len(data) != size:
            raise BundleError(f"bundle {path}: {rel} changed size after the bundle was verified; refused.")
        return data

    return Bundle(path, manifest, reader)


def _open_listed(path: Path, rel: str, size: int) -> IO[bytes]:
    """A listed file of a folder bundle opened for reading: not through a link, not blocking, a
    regular file with one link and the manifest's size.

    Raises:
        BundleError: a link, a FIFO, device or folder, a hard link, or another size.
    """
    f = open_regular(path / rel, f"bundle {path}: {rel}", BundleError, nofollow=True)
    st = os.fstat(f.fileno())
    if st.st_nlink > 1:
        f.close()
        raise BundleError(f"bundle {path}: {rel} is hard-linked elsewhere; bundles hold plain files only.")
    if st.st_size != size:
        f.close()
        raise BundleError(f"bundle {path}: {rel} does not match its sha256/size in manifest.json ({st.st_size} bytes, "
                          f"not {size}); the bundle is corrupt or was modified. Re-export it or fetch a clean copy.")
    return f


def _compare_listing(path: Path, manifest: dict, found: set) -> None:
    listed = set(manifest["files"])
    if listed - found:
        raise BundleError(f"bundle {path}: listed files are missing: {', '.join(sorted(listed - found))}.")
    if found - listed:
        raise BundleError(
            f"bundle {path}: files not listed in manifest.json: {', '.join(sorted(found - listed))}; "
            "refusing a bundle with unlisted content."
        )


# what zipfile raises on damaged archives: bad headers and CRCs, corrupt deflate/bzip2/lzma
# streams, encrypted entries (RuntimeError), unknown compression methods, truncation
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError, ValueError,
               RuntimeError, NotImplementedError, UnicodeDecodeError)


def _open_zip(path: Path, source: IO[bytes], size: int) -> Bundle:
    """``source``: the zip, opened once (a file, or bytes in memory) and ``size`` bytes long; every
    member is read from it, and :meth:`Bundle.close` closes it."""
    try:
        z = zipfile.ZipFile(source)
        infos = z.infolist()
    except _ZIP_ERRORS as e:
        source.close()
        raise BundleError(f"{path} is not a readable zip bundle: {e}") from e

    def close() -> None:
        z.close()
        source.close()

    try:
        return _verify_zip(path, z, infos, source, size, close)
    except BaseException:
        close()
        raise


def _verify_zip(path: Path, z: zipfile.ZipFile, infos: list[zipfile.ZipInfo], source: IO[bytes], size: int,
                close) -> Bundle:
    names = set()
    for info in infos:
        if info.orig_filename != info.filename:  # zipfile cuts a name at its first NUL
            raise BundleError(f"bundle {path}: a zip member name holds a NUL byte ({info.orig_filename!r}); refused.")
        is_dir = info.filename.endswith("/")  # not ZipInfo.is_dir(): it fails on an empty name
        check_relpath(info.filename[:-1] if is_dir else info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BundleError(f"bundle {path}: {info.filename} is a symbolic link; bundles hold plain files only.")
        if info.filename in names:
            raise BundleError(f"bundle {path}: {info.filename} appears twice in the zip.")
        if not is_dir:
            names.add(info.filename)
    if MANIFEST not in names:
        raise BundleError(f"{path} has no manifest.json; it is not a complete edgeship bundle.")
    try:
        check_members(z, source, size, f"bundle {path}", BundleError)
    except _ZIP_ERRORS as e:
        raise BundleError(f"bundle {path}: the zip cannot be read ({e}); it is corrupt.") from e

    def read(rel: str, limit: int) -> bytes:
        try:  # in chunks: zipfile.read() would inflate a whole bomb before truncating it
            return read_member(z, z.getinfo(rel), limit, f"bundle {path}", BundleError)
        except _ZIP_ERRORS as e:  # CRC errors are BadZipFile
            raise BundleError(f"bundle {path}: {rel} cannot be read ({e}); the zip is corrupt.") from e

    manifest = parse_manifest(read(MANIFEST, MAX_MANIFEST_BYTES), path)
    _compare_listing(path, manifest, names - {MANIFEST})
    for rel, meta in manifest["files"].items():
        info = z.getinfo(rel)
        if info.file_size != meta["size"] or _zip_sha256(z, info, path) != meta["sha256"]:
            raise BundleError(
                f"bundle {path}: {rel} does not match its sha256/size in manifest.json; the bundle "
                "is corrupt or was modified. Re-export it or fetch a clean copy."
            )
    return Bundle(path, manifest, lambda rel: read(rel, manifest["files"][rel]["size"]), close)


def _zip_sha256(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> str:
    """The sha256 of a member, streamed (never more than its declared size)."""
    h = hashlib.sha256()
    try:
        check_ratio(info, f"bundle {path}", BundleError)
        for chunk in iter_member(z, info):
            h.update(chunk)
    except _ZIP_ERRORS as e:
        raise BundleError(f"bundle {path}: {info.filename} cannot be read ({e}); the zip is corrupt.") from e
    return h.hexdigest()
