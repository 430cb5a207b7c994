"""The bundle: layout, manifest, checksums, atomic writes, zip, verification.

A bundle is a directory ``NAME.edgeship/`` or the same tree zipped as ``NAME.edgeship.zip``::

    manifest.json        schema_version, io spec, variants, defaults, files (sha256, size), ...
    models/fp32.onnx     one ONNX file per variant
    torchscript/model.pt when that stage ran
    golden/inputs.npz    golden inputs and the eager outputs for them,
    golden/outputs.npz   so any machine can re-check parity with onnxruntime alone
    report.json          stage timings, parity tables (and latency, with export --profile)
    report.html          with export --profile: the same for people, with latency charts

Writing builds the tree in a temporary sibling, fsyncs it, writes manifest.json last and
renames it into place (an atomic exchange where Linux offers it), so the output path holds
the old complete bundle or the new one, never a mix. Reading verifies every sha256 and
refuses unlisted, missing, linked or escaping paths before anything else opens a file.
Checksums detect corruption and accidental edits; they are not signatures (see README).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import lzma
import math
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from edgeship.errors import BundleError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
SUFFIX = ".edgeship"
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def check_relpath(rel: str) -> str:
    """Refuse absolute, empty, backslashed, ``.``/``..`` or control-character paths inside a bundle.

    An accepted path names exactly one file below the bundle root, written one way only.
    """
    if not isinstance(rel, str) or not rel or PurePosixPath(rel).is_absolute() or "\\" in rel \
            or any(part in ("..", ".", "") for part in rel.split("/")) or rel.startswith("~") \
            or (len(rel) > 1 and rel[1] == ":") or any(ord(c) < 32 or ord(c) == 127 for c in rel):
        raise BundleError(
            f"bundle path {rel!r} escapes the bundle or is not a plain relative path (absolute, '..', "
            "'.', empty part or control character); the bundle was tampered with."
        )
    return rel


# ----------------------------------------------------------------------------- writing


def write_bundle(out: Path, files: dict[str, Path], manifest: dict) -> Path:
    """Write ``files`` (bundle-relative path -> source file) and ``manifest`` to ``out`` atomically.

    ``out`` ending in ``.zip`` gives a zipped bundle. The manifest gains ``schema_version`` and
    ``files`` (sha256 and size of each file).

    Raises:
        BundleError: ``out`` exists and is not a bundle, or the write failed.
    """
    out = Path(out)
    entries = {}
    for rel, src in sorted(files.items()):
        check_relpath(rel)
        entries[rel] = {"sha256": sha256_file(src), "size": Path(src).stat().st_size}
    full = {"schema_version": SCHEMA_VERSION, **manifest, "files": entries}
    data = json.dumps(full, indent=2, sort_keys=False, default=str).encode()
    zipped = out.name.endswith(".zip")
    if (out.exists() or out.is_symlink()) and not _is_bundle(out, zipped):
        raise BundleError(
            f"output path {out} exists and is not an edgeship {'zipped ' if zipped else ''}bundle; refusing "
            "to replace it. Choose another --output or remove it."
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
    """Whether ``path`` may be replaced: a bundle of the kind being written (or an empty folder)."""
    if path.is_symlink():
        return False
    if not zipped:
        return path.is_dir() and ((path / MANIFEST).is_file() or not any(path.iterdir()))
    try:
        with zipfile.ZipFile(path) as z:
            return MANIFEST in z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


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
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_dir(out: Path, files: dict[str, Path], manifest: bytes) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out) + f"{os.getpid()}-", dir=out.parent))
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
    os.close(fd)
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


# ----------------------------------------------------------------------------- reading


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


def open_bundle(path: str | os.PathLike) -> Bundle:
    """Open and fully verify a bundle: manifest, schema, paths, links, sizes and every sha256.

    Raises:
        BundleError: anything missing, extra, linked, escaping, unknown or not matching.
    """
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


def parse_manifest(data: bytes, where: Path) -> dict:
    """Parse manifest.json and check the schema of every field the readers use.

    Raises:
        BundleError: not JSON, an unknown schema version, or a field of the wrong shape.
    """
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BundleError(f"bundle {where}: manifest.json is not valid JSON ({str(e)[:200]}); the bundle is corrupt.") from e
    if not isinstance(manifest, dict):
        raise BundleError(f"bundle {where}: manifest.json is not a JSON object.")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"bundle {where}: schema_version {version!r} is not supported (this edgeship reads "
            f"{SCHEMA_VERSION}); upgrade edgeship or re-export the bundle."
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"bundle {where}: manifest.json lists no files.")
    for rel, meta in files.items():
        check_relpath(rel)
        if rel == MANIFEST or not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) \
                or not isinstance(meta.get("size"), int):
            raise BundleError(f"bundle {where}: manifest entry {rel!r} is malformed.")
    _check_fields(manifest, where)
    return manifest


def _check_fields(m: dict, where: Path) -> None:
    """The io, variants, defaults and golden fields, as the runtime and ``check`` read them."""
    from edgeship.errors import SpecError
    from edgeship.spec import IOSpec

    def bad(what: str):
        raise BundleError(f"bundle {where}: manifest.json {what}; the bundle is corrupt or was edited.")

    def listed(rel, what: str) -> None:
        if not isinstance(rel, str) or rel not in m["files"]:
            bad(f"{what} names {rel!r}, which is not among its listed files")

    io = m.get("io")
    if not isinstance(io, dict) or not all(isinstance(io.get(k), list) for k in ("inputs", "outputs")) \
            or not all(isinstance(t, dict) for k in ("inputs", "outputs") for t in io[k]):
        bad("has no valid 'io' (inputs and outputs lists)")
    try:
        IOSpec.from_dict(io)
    except SpecError as e:
        bad(f"'io' is malformed: {e}")
    variants = m.get("variants")
    if not isinstance(variants, dict) or not variants:
        bad("lists no variants")
    for name, v in variants.items():
        if not isinstance(v, dict):
            bad(f"variant {name!r} is not an object")
        listed(v.get("file"), f"variant {name!r}")
        if not isinstance(v.get("precision", "fp32"), str):
            bad(f"variant {name!r} has a malformed precision")
        tol = v.get("tolerance") or {}  # output -> {criterion: number}
        if not isinstance(tol, dict) or not all(
                isinstance(per, dict) and all(
                    x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x))
                    for x in per.values())
                for per in tol.values()):
            bad(f"variant {name!r} has a malformed tolerance")
    defaults = m.get("defaults") or {}
    if not isinstance(defaults, dict) or not all(isinstance(v, str) and v in variants for v in defaults.values()):
        bad("'defaults' names a variant it does not have")
    golden = m.get("golden")
    if not isinstance(golden, dict):
        bad("has no 'golden' section")
    listed(golden.get("inputs"), "golden inputs")
    listed(golden.get("outputs"), "golden outputs")
    samples = golden.get("samples", [])
    if not isinstance(samples, list) or not all(
            isinstance(x, dict) and isinstance(x.get("label", ""), str) and isinstance(x.get("sizes", {}), dict)
            for x in samples):
        bad("has malformed golden samples")
    if not isinstance(m.get("name", ""), str):
        bad("has a name that is not a string")


def _open_dir(path: Path) -> Bundle:
    mpath = path / MANIFEST
    if mpath.is_symlink() or not mpath.is_file():
        raise BundleError(f"{path} has no manifest.json; it is not a complete edgeship bundle.")
    try:
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


def _open_zip(path: Path) -> Bundle:
    try:
        z = zipfile.ZipFile(path)
        infos = z.infolist()
    except _ZIP_ERRORS as e:
        raise BundleError(f"{path} is not a readable zip bundle: {e}") from e
    names = set()
    for info in infos:
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

    def reader(rel: str) -> bytes:
        try:
            return z.read(rel)
        except _ZIP_ERRORS as e:  # CRC errors are BadZipFile
            raise BundleError(f"bundle {path}: {rel} cannot be read ({e}); the zip is corrupt.") from e

    manifest = parse_manifest(reader(MANIFEST), path)
    _compare_listing(path, manifest, names - {MANIFEST})
    for rel, meta in manifest["files"].items():
        if z.getinfo(rel).file_size != meta["size"] or sha256_bytes(reader(rel)) != meta["sha256"]:
            raise BundleError(
                f"bundle {path}: {rel} does not match its sha256/size in manifest.json; the bundle "
                "is corrupt or was modified. Re-export it or fetch a clean copy."
            )
    return Bundle(path, manifest, reader)
