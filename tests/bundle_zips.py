"""Zipped bundles, plain and hostile, crafted with Python's zipfile: shared by the tests
(tests/hostile/test_bundles_hostile.py, test_zip_limits.py, test_model_close.py and others) and by
js/test/fixtures.py, which builds the same hostile zips for the JavaScript loader's tests.
Plain functions, no pytest: fixtures.py imports this module outside pytest (with tests/ on sys.path,
as pytest puts it for tests/conftest.py)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Callable

from edgeship.bundle import MANIFEST

DATE = (2026, 1, 1, 0, 0, 0)
SYMLINK = 0o120777 << 16  # external_attr of a symbolic link


def zip_tree(src: Path, dst: Path) -> Path:
    """Zip a bundle folder as a bundle writer would."""
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(src).as_posix())
    return dst


def zip_with(src: Path, dst: Path, replace=None, extra=(), drop=()) -> Path:
    """Zip ``src`` with entries replaced (``{name: bytes}``), added (``(name, bytes, external_attr)``)
    or dropped (names)."""
    replace = replace or {}
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src).as_posix()
            if p.is_file() and rel not in drop:
                info = zipfile.ZipInfo(rel)
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, replace.get(rel, p.read_bytes()))
        for name, data, attr in extra:
            info = zipfile.ZipInfo(name)
            info.external_attr = attr
            z.writestr(info, data)
    return dst


def flip_member(zpath: Path) -> Path:
    """Flip a byte inside the compressed data of the largest member."""
    with zipfile.ZipFile(zpath) as z:
        info = max(z.infolist(), key=lambda i: i.compress_size)
    data = bytearray(zpath.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    zpath.write_bytes(bytes(data))
    return zpath


def patch_headers(zpath: Path, method=None, flags=None) -> Path:
    """Rewrite the compression method or OR in general-purpose flags (bit 0: encrypted) in every
    local and central header, as a hostile zip writer could."""
    data = bytearray(zpath.read_bytes())
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        i = data.find(sig)
        while i >= 0:
            if method is not None:
                data[i + method_at:i + method_at + 2] = method.to_bytes(2, "little")
            if flags is not None:
                data[i + flag_at] |= flags
            i = data.find(sig, i + 4)
    zpath.write_bytes(bytes(data))
    return zpath


def schema_bumped(src: Path) -> bytes:
    """``src``'s manifest with a schema_version no loader supports."""
    return json.dumps({**json.loads((src / MANIFEST).read_text()), "schema_version": 2}).encode()


# name -> make(bundle folder, zip path): a damaged or crafted zip of the bundle at that path
ZIP_CASES: dict[str, Callable[[Path, Path], object]] = {
    "flipped byte": lambda s, d: flip_member(zip_tree(s, d)),
    "truncated": lambda s, d: d.write_bytes(zip_tree(s, d).read_bytes()[:-300]),
    "missing file": lambda s, d: zip_with(s, d, drop={"report.json"}),
    "extra file": lambda s, d: zip_with(s, d, extra=[("notes.txt", b"x", 0)]),
    "zip slip": lambda s, d: zip_with(s, d, extra=[("../../evil.sh", b"x", 0)]),
    "absolute entry": lambda s, d: zip_with(s, d, extra=[("/etc/cron.d/x", b"x", 0)]),
    "symlink entry": lambda s, d: zip_with(s, d, extra=[("link", b"/etc/passwd", SYMLINK)]),
    "duplicate entry": lambda s, d: zip_with(s, d, extra=[("report.json", b"{}", 0)]),
    "manifest not json": lambda s, d: zip_with(s, d, replace={MANIFEST: b"\xff{oops"}),
    "unknown schema": lambda s, d: zip_with(s, d, replace={MANIFEST: schema_bumped(s)}),
    "no manifest": lambda s, d: zip_with(s, d, drop={MANIFEST}),
    "encrypted entries": lambda s, d: patch_headers(zip_tree(s, d), flags=0x1),
    "unknown compression": lambda s, d: patch_headers(zip_tree(s, d), method=99),
}


# ----------------------------------------------------------------------------- zips built in memory


def zip_bytes(files: dict[str, bytes], methods: dict[str, int] | None = None) -> bytes:
    """A zip of ``files`` in that order, with a fixed date; stored unless ``methods`` names another."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, DATE), data, compress_type=(methods or {}).get(name, zipfile.ZIP_STORED))
    return buf.getvalue()


def manifest_and_files(bundle: Path) -> tuple[dict, dict[str, bytes]]:
    """A folder bundle's manifest, and the bytes of each file it lists by relative path."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    return manifest, {rel: (bundle / rel).read_bytes() for rel in manifest["files"]}


def listed(manifest: dict, extra: dict[str, bytes]) -> bytes:
    """The manifest with ``extra`` listed and signed, as an attacker who re-signs would."""
    m = dict(manifest, files=dict(manifest["files"]))
    for rel, data in extra.items():
        m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return json.dumps(m).encode()


def resigned_zip(manifest: dict, files: dict[str, bytes], extra: dict[str, bytes],
                 methods: dict[str, int] | None = None) -> bytes:
    """A zip of the bundle's ``files`` and ``extra``, with a manifest that lists and signs ``extra`` too."""
    return zip_bytes({**files, **extra, MANIFEST: listed(manifest, extra)}, methods)


def overlapping(files: dict[str, bytes], manifest: dict) -> bytes:
    """A zip whose member ``ov/a.bin`` (stored) runs on over the header and data of ``ov/b.bin``:
    the two share bytes, and both are listed with matching sha256s."""
    b_data = b"B" * 64
    first = {**files, "ov/a.bin": b"A" * 16, "ov/b.bin": b_data}
    probe = zip_bytes({**first, MANIFEST: b"{}"})
    with zipfile.ZipFile(io.BytesIO(probe)) as z:
        a, b = z.getinfo("ov/a.bin"), z.getinfo("ov/b.bin")
    a_start = a.header_offset + 30 + len(a.filename)
    b_end = b.header_offset + 30 + len(b.filename) + len(b_data)
    a_data = probe[a_start:b_end]  # a's own bytes, b's local header, b's bytes
    data = bytearray(zip_bytes({**first, MANIFEST: listed(manifest, {"ov/a.bin": a_data, "ov/b.bin": b_data})}))
    assert data[a_start:b_end] == a_data  # everything before the manifest is written the same way
    cd = 0
    while True:  # a's central-directory record: patch its CRC and sizes to cover b
        cd = data.index(b"PK\x01\x02", cd)
        name_len = struct.unpack_from("<H", data, cd + 28)[0]
        if data[cd + 46:cd + 46 + name_len] == b"ov/a.bin":
            struct.pack_into("<3L", data, cd + 16, zlib.crc32(a_data), len(a_data), len(a_data))
            return bytes(data)
        cd += 4
