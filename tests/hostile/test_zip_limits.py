"""Issue 20, item 19: a zipped bundle may not inflate to many times its size across many members,
and its members may not share bytes; both are refused before a byte is hashed."""

import hashlib
import io
import json
import struct
import zipfile
import zlib

import pytest

import edgeship
import edgeship.bundle.limits as limits
from edgeship.bundle import MANIFEST, open_bundle
from edgeship.bundle.limits import MAX_RATIO, RATIO_FLOOR
from edgeship.errors import BundleError

DATE = (2026, 1, 1, 0, 0, 0)


def _zip(files: dict[str, bytes], methods: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, DATE), data, compress_type=(methods or {}).get(name, zipfile.ZIP_STORED))
    return buf.getvalue()


def _bundle_files(bundle) -> tuple[dict, dict[str, bytes]]:
    manifest = json.loads((bundle / MANIFEST).read_text())
    return manifest, {rel: (bundle / rel).read_bytes() for rel in manifest["files"]}


def _listed(manifest: dict, extra: dict[str, bytes]) -> bytes:
    m = dict(manifest, files=dict(manifest["files"]))
    for rel, data in extra.items():
        m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return json.dumps(m).encode()


@pytest.fixture
def inflated(monkeypatch):
    """Counts the bytes the bundle reader inflates."""
    count = [0]
    real = limits.iter_member

    def counting(z, info):
        for chunk in real(z, info):
            count[0] += len(chunk)
            yield chunk

    monkeypatch.setattr(limits, "iter_member", counting)
    monkeypatch.setattr("edgeship.bundle.read.iter_member", counting)
    return count


def test_many_small_bzip2_members_are_refused_before_hashing(bundle_copy, tmp_path, inflated):
    """Each member is 1 MiB of zeros (under the per-member floor, ~50 bytes of bzip2), all listed in a
    re-signed manifest: before the fix the loader inflated and hashed ~2000x the zip's size."""
    manifest, files = _bundle_files(bundle_copy)
    extra = {f"pad/{i}.bin": bytes(RATIO_FLOOR) for i in range(100)}
    data = _zip({**files, **extra, MANIFEST: _listed(manifest, extra)}, {n: zipfile.ZIP_BZIP2 for n in extra})
    assert sum(len(d) for d in extra.values()) > MAX_RATIO * len(data) + RATIO_FLOOR
    path = tmp_path / "bomb.edgeship.zip"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(BundleError, match=r"declare \d+ bytes in all from a \d+-byte zip .*decompression bomb"):
            open_bundle(source)
    with pytest.raises(BundleError, match="decompression bomb"):
        edgeship.load(path)
    assert inflated[0] <= len(_listed(manifest, extra)) * 4  # the manifest at most, never the members


def test_a_real_zipped_bundle_is_within_the_bound(bundle_copy, tmp_path):
    manifest, files = _bundle_files(bundle_copy)
    data = _zip({**files, MANIFEST: (bundle_copy / MANIFEST).read_bytes()},
                {n: zipfile.ZIP_DEFLATED for n in files})
    assert open_bundle(data).manifest["name"] == manifest["name"]


def _overlapping(files: dict[str, bytes], manifest: dict) -> bytes:
    """A zip whose member ``ov/a.bin`` (stored) runs on over the header and data of ``ov/b.bin``:
    the two share bytes, and both are listed with matching sha256s."""
    b_data = b"B" * 64
    first = {**files, "ov/a.bin": b"A" * 16, "ov/b.bin": b_data}
    probe = _zip({**first, MANIFEST: b"{}"})
    with zipfile.ZipFile(io.BytesIO(probe)) as z:
        a, b = z.getinfo("ov/a.bin"), z.getinfo("ov/b.bin")
    a_start = a.header_offset + 30 + len(a.filename)
    b_end = b.header_offset + 30 + len(b.filename) + len(b_data)
    a_data = probe[a_start:b_end]  # a's own bytes, b's local header, b's bytes
    data = bytearray(_zip({**first, MANIFEST: _listed(manifest, {"ov/a.bin": a_data, "ov/b.bin": b_data})}))
    assert data[a_start:b_end] == a_data  # everything before the manifest is written the same way
    cd = 0
    while True:  # a's central-directory record: patch its CRC and sizes to cover b
        cd = data.index(b"PK\x01\x02", cd)
        name_len = struct.unpack_from("<H", data, cd + 28)[0]
        if data[cd + 46:cd + 46 + name_len] == b"ov/a.bin":
            struct.pack_into("<3L", data, cd + 16, zlib.crc32(a_data), len(a_data), len(a_data))
            return bytes(data)
        cd += 4


def test_overlapping_members_are_refused(bundle_copy, tmp_path):
    manifest, files = _bundle_files(bundle_copy)
    data = _overlapping(files, manifest)
    with zipfile.ZipFile(io.BytesIO(data)) as z:  # zipfile of this Python reads both
        assert len(z.read("ov/a.bin")) > z.getinfo("ov/b.bin").file_size
    path = tmp_path / "overlap.edgeship.zip"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(BundleError, match="'ov/a.bin' overlaps the next member"):
            open_bundle(source)


def test_a_member_without_its_local_header_is_corrupt(bundle_copy):
    manifest, files = _bundle_files(bundle_copy)
    data = bytearray(_zip({**files, MANIFEST: (bundle_copy / MANIFEST).read_bytes()}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        second = z.infolist()[1].header_offset
    data[second:second + 4] = b"XX\x03\x04"
    with pytest.raises(BundleError, match="has no local header"):
        open_bundle(bytes(data))
