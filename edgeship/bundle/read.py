"""Reading a bundle: every file verified before anything else opens it.

Reading refuses unlisted, missing, linked or escaping paths and checks every sha256 and size;
:meth:`Bundle.read` checks the sha256 of the bytes it returns once more.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Any

from edgeship.bundle.layout import MANIFEST, check_relpath, sha256_bytes, sha256_file
from edgeship.bundle.limits import MAX_MANIFEST_BYTES, check_ratio, iter_member, read_member
from edgeship.bundle.manifest import parse_manifest
from edgeship.errors import BundleError


class Bundle:
    """A verified bundle (directory or zip). Construct with :func:`open_bundle`."""

    def __init__(self, path: Path, manifest: dict, reader):
        self.path = path
        self.manifest = manifest
        self._reader = reader

    @property
    def files(self) -> dict:
        return self.manifest["files"]

    def read(self, rel: str) -> bytes:
        """The bytes of a listed file, checked against the manifest's sha256 once more."""
        if rel not in self.files:
            raise BundleError(f"bundle {self.path} does not list {rel!r}; it lists {', '.join(self.files)}.")
        data = self._reader(rel)
        if sha256_bytes(data) != self.files[rel]["sha256"]:
            raise BundleError(
                f"bundle {self.path}: {rel} does not match its sha256 in manifest.json; the bundle "
                "is corrupt or was modified. Re-export it or fetch a clean copy."
            )
        return data


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


def open_bundle(path: str | os.PathLike | bytes) -> Bundle:
    """Open and fully verify a bundle: manifest, schema, paths, links, sizes and every sha256.
    ``path`` may also be the bytes of a zipped bundle already in memory (an app resource): they
    are read through the same zip reader and checks, with no temporary file.

    Raises:
        BundleError: anything missing, extra, linked, escaping, unknown or not matching.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        import io

        return _open_zip(IN_MEMORY, io.BytesIO(bytes(path)))
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist; pass the NAME.edgeship folder or NAME.edgeship.zip file.")
    if path.is_symlink():
        raise BundleError(f"bundle {path} is a symbolic link; pass the bundle itself.")
    if path.is_dir():
        return _open_dir(path)
    if not path.is_file():
        raise BundleError(f"bundle {path} is not a folder or a regular file (a device, pipe or socket).")
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as e:
        raise BundleError(f"bundle {path} cannot be read ({e}).") from e
    if head == b"PK" or zipfile.is_zipfile(path):
        return _open_zip(path)
    raise BundleError(f"{path} is neither a bundle folder nor a zipped bundle.")


def _open_dir(path: Path) -> Bundle:
    mpath = path / MANIFEST
    if mpath.is_symlink() or not mpath.is_file():
        raise BundleError(f"{path} has no manifest.json; it is not a complete edgeship bundle.")
    try:
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"bundle {path}: manifest.json is over {MAX_MANIFEST_BYTES >> 20} MiB; refused unread.")
        data = mpath.read_bytes()
    except OSError as e:
        raise BundleError(f"bundle {path}: manifest.json cannot be read ({e}).") from e
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
    for rel, meta in manifest["files"].items():
        f = path / rel
        try:
            same = f.stat().st_size == meta["size"] and sha256_file(f) == meta["sha256"]
        except OSError as e:
            raise BundleError(f"bundle {path}: {rel} cannot be read ({e}).") from e
        if not same:
            raise BundleError(
                f"bundle {path}: {rel} does not match its sha256/size in manifest.json; the bundle "
                "is corrupt or was modified. Re-export it or fetch a clean copy."
            )

    def reader(rel: str) -> bytes:
        try:
            return (path / rel).read_bytes()
        except OSError as e:
            raise BundleError(f"bundle {path}: {rel} cannot be read ({e}).") from e

    return Bundle(path, manifest, reader)


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


def _open_zip(path: Path, source: Any = None) -> Bundle:
    """``source``: a file object holding the zip (bytes in memory); else the file at ``path``."""
    try:
        z = zipfile.ZipFile(source if source is not None else path)
        infos = z.infolist()
    except _ZIP_ERRORS as e:
        raise BundleError(f"{path} is not a readable zip bundle: {e}") from e
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
    return Bundle(path, manifest, lambda rel: read(rel, manifest["files"][rel]["size"]))


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
