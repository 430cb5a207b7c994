"""Issue 20, item 19: a zipped bundle may not inflate to many times its size across many members,
and its members may not share bytes; both are refused before a byte is hashed."""

import io
import zipfile

import pytest
from bundle_zips import listed, manifest_and_files, overlapping, resigned_zip, zip_bytes

import edgeship
import edgeship.bundle.limits as limits
from edgeship.bundle import MANIFEST, open_bundle
from edgeship.bundle.limits import MAX_RATIO, RATIO_FLOOR
from edgeship.errors import BundleError


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
    manifest, files = manifest_and_files(bundle_copy)
    extra = {f"pad/{i}.bin": bytes(RATIO_FLOOR) for i in range(100)}
    data = resigned_zip(manifest, files, extra, {n: zipfile.ZIP_BZIP2 for n in extra})
    assert sum(len(d) for d in extra.values()) > MAX_RATIO * len(data) + RATIO_FLOOR
    path = tmp_path / "bomb.edgeship.zip"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(BundleError, match=r"declare \d+ bytes in all from a \d+-byte zip .*decompression bomb"):
            open_bundle(source)
    with pytest.raises(BundleError, match="decompression bomb"):
        edgeship.load(path)
    assert inflated[0] <= len(listed(manifest, extra)) * 4  # the manifest at most, never the members


def test_a_real_zipped_bundle_is_within_the_bound(bundle_copy, tmp_path):
    manifest, files = manifest_and_files(bundle_copy)
    data = zip_bytes({**files, MANIFEST: (bundle_copy / MANIFEST).read_bytes()},
                     {n: zipfile.ZIP_DEFLATED for n in files})
    assert open_bundle(data).manifest["name"] == manifest["name"]


def test_overlapping_members_are_refused(bundle_copy, tmp_path):
    manifest, files = manifest_and_files(bundle_copy)
    data = overlapping(files, manifest)
    with zipfile.ZipFile(io.BytesIO(data)) as z:  # zipfile of this Python reads both
        assert len(z.read("ov/a.bin")) > z.getinfo("ov/b.bin").file_size
    path = tmp_path / "overlap.edgeship.zip"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(BundleError, match="'ov/a.bin' overlaps the next member"):
            open_bundle(source)


def test_a_member_without_its_local_header_is_corrupt(bundle_copy):
    manifest, files = manifest_and_files(bundle_copy)
    data = bytearray(zip_bytes({**files, MANIFEST: (bundle_copy / MANIFEST).read_bytes()}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        second = z.infolist()[1].header_offset
    data[second:second + 4] = b"XX\x03\x04"
    with pytest.raises(BundleError, match="has no local header"):
        open_bundle(bytes(data))
