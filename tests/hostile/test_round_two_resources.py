"""Hostile inputs, round two (issue 10, items 5-7): bounded memory, sizes checked before allocating,
non-regular files refused. Peak memory is measured in a child process running the CLI."""

import io
import os
import zipfile

import numpy as np
import pytest
from conftest import arch
from hostile_helpers import assert_untouched, cli_peak, resign, snapshot, zip_tree

import edgeship
from edgeship.bundle import MANIFEST, open_bundle
from edgeship.errors import BundleError, SpecError

MIB = 1 << 20
BOMB_MIB = 512  # what an unbounded reader would allocate (at least)
HEADROOM_MIB = 150  # allowed above the same command's peak on a small, valid input


def _zeros_npz(path, key: str, mib: int):
    """An .npz whose one member is ``mib`` MiB of float32 zeros, deflated (about 1000x smaller)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (mib * MIB // 4,)})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z, \
            z.open(key + ".npy", "w", force_zip64=True) as f:
        f.write(header.getvalue())
        chunk = bytes(MIB)
        for _ in range(mib):
            f.write(chunk)
    return path


# ----------------------------------------------------------------------------- item 5


def test_golden_npz_of_compressed_zeros_is_refused_in_small_memory(bundle_copy, mlp_bundle, tmp_path):
    _zeros_npz(bundle_copy / "golden" / "inputs.npz", "0/x", BOMB_MIB)
    resign(bundle_copy, "golden/inputs.npz")
    bundle = zip_tree(bundle_copy, tmp_path / "bomb.edgeship.zip")
    before = snapshot(bundle)
    code, out, peak = cli_peak("check", bundle)
    assert code == 2 and "golden/inputs.npz" in out and "decompression bomb" in out and "Traceback" not in out, out
    assert snapshot(bundle) == before
    _, _, baseline = cli_peak("check", zip_tree(mlp_bundle, tmp_path / "ok.edgeship.zip"))
    print(f"golden bomb: peak RSS {peak} MiB, a valid check {baseline} MiB")
    assert 0 < peak < baseline + HEADROOM_MIB, f"peak RSS {peak} MiB vs {baseline} MiB"


def test_golden_npz_over_the_array_budget_is_refused(bundle_copy, mlp_bundle, monkeypatch):
    monkeypatch.setenv("EDGESHIP_MAX_ARRAY_MB", "1")
    np.savez(bundle_copy / "golden" / "inputs.npz", **{"0/x": np.random.default_rng(0).random((2 * MIB // 4,), np.float32)})
    resign(bundle_copy, "golden/inputs.npz")
    with pytest.raises(BundleError, match="over the 1 MiB limit .*EDGESHIP_MAX_ARRAY_MB"):
        edgeship.check(bundle_copy)


def test_padded_zip_manifest_and_inflating_members_are_refused(bundle_copy, tmp_path):
    bundle = zip_tree(bundle_copy, tmp_path / "b.edgeship.zip")
    with zipfile.ZipFile(bundle, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", b"{" + b" " * (64 * MIB) + b"}")  # a second, padded manifest.json
    with pytest.raises(BundleError, match="twice|over 16 MiB|decompression bomb"):
        open_bundle(bundle)
    padded = tmp_path / "padded.edgeship.zip"
    with zipfile.ZipFile(padded, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(MANIFEST, (bundle_copy / MANIFEST).read_bytes() + b" " * (64 * MIB))
    with pytest.raises(BundleError, match="declares .* bytes; at most|decompression bomb"):
        open_bundle(padded)


def _understate(zip_path, member: str, declared: int) -> None:
    """Patch a zip member's uncompressed size, in its local header and the central directory, to
    ``declared`` bytes: its deflate stream still inflates to the real size (the crafted bomb)."""
    import struct

    data = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(zip_path) as z:
        info = z.getinfo(member)
    assert info.file_size < 2**32 and info.compress_size < 2**32  # no zip64 extra to patch
    struct.pack_into("<I", data, info.header_offset + 22, declared)  # local file header
    name = member.encode()
    central = data.rfind(b"PK\x01\x02")
    while not (struct.unpack_from("<H", data, central + 28)[0] == len(name) and data[central + 46:central + 46 + len(name)] == name):
        central = data.rfind(b"PK\x01\x02", 0, central)
        assert central >= 0, f"{member} not in the central directory"
    struct.pack_into("<I", data, central + 24, declared)  # central directory entry
    zip_path.write_bytes(bytes(data))


def test_a_member_inflating_past_its_declared_size_is_read_no_further(bundle_copy, mlp_bundle, tmp_path):
    """report.json's headers say 16 bytes; its stream inflates to 512 MiB of zeros (zipfile.read
    inflates up to 2 GiB at once before cutting to the declared size). The manifest is re-signed
    for those 16 bytes. Reading stops at the declared size, in 1 MiB steps: small memory."""
    bundle = zip_tree(bundle_copy, tmp_path / "b.edgeship.zip")
    with zipfile.ZipFile(bundle) as z:
        names = [i.filename for i in z.infolist()]
    inflating = tmp_path / "inflating.edgeship.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(inflating, "w", compression=zipfile.ZIP_DEFLATED) as z:
        manifest = __import__("json").loads(src.read(MANIFEST))
        manifest["files"]["report.json"] = {"sha256": __import__("hashlib").sha256(bytes(16)).hexdigest(), "size": 16}
        for name in names:
            if name == "report.json":
                with z.open(name, "w") as f:
                    for _ in range(BOMB_MIB):
                        f.write(bytes(MIB))
            elif name != MANIFEST:
                z.writestr(name, src.read(name))
        z.writestr(MANIFEST, __import__("json").dumps(manifest))
    _understate(inflating, "report.json", 16)
    with zipfile.ZipFile(inflating) as z:
        assert z.getinfo("report.json").file_size == 16
    code, out, peak = cli_peak("check", inflating)
    _, _, baseline = cli_peak("check", zip_tree(mlp_bundle, tmp_path / "ok.edgeship.zip"))
    print(f"inflating member: exit {code}, peak RSS {peak} MiB, a valid check {baseline} MiB: {out[-300:]}")
    assert code in (0, 2) and "Traceback" not in out, out  # read as 16 bytes (or refused): never inflated whole
    assert 0 < peak < baseline + HEADROOM_MIB, f"peak RSS {peak} MiB vs {baseline} MiB"


def test_npy_header_declaring_1e12_elements_is_refused_before_allocating(mlp_bundle, tmp_path, cli):
    huge = tmp_path / "x.npy"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    huge.write_bytes(header.getvalue() + bytes(64))
    code, msg = cli("run", mlp_bundle, "--input", f"x={huge}", "-o", tmp_path / "y.npz")
    assert code == 2 and "header declares 4000000000000 bytes" in msg, msg
    assert not (tmp_path / "y.npz").exists()


# ----------------------------------------------------------------------------- item 6


@pytest.mark.parametrize("shape, match", [
    ("1000000x1000000", "elements, over the"),
    ("x".join(["1"] * 70), "more than 32 axes"),
    ("99999999999999999999", "elements, over the"),
])
def test_input_sizes_are_refused_before_allocating(files, tmp_path, cli, shape, match):
    out = tmp_path / "b.edgeship"
    code, msg = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--input", f"x:{shape}", "-o", out)
    assert code == 2 and match in msg and "Traceback" not in msg, msg
    assert_untouched(out, {})


def test_threads_batch_and_duration_are_bounded(mlp_bundle, cli):
    with pytest.raises(SpecError, match="threads=1000000: use a whole number"):
        edgeship.load(mlp_bundle, threads=10**6)
    for args, match in ((("--threads", "1000000"), "--threads 1000000"), (("--batch", "100000000"), "--batch 100000000"),
                        (("--duration", "inf"), "--duration inf"), (("--duration", "nan"), "--duration nan")):
        code, msg = cli("profile", mlp_bundle, *args)
        assert code == 2 and match in msg and "Traceback" not in msg, msg


# ----------------------------------------------------------------------------- item 7


@pytest.mark.parametrize("command", ["inspect", "profile", "compare"])
def test_fifo_and_dev_zero_are_refused_without_blocking(tmp_path, files, command):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    peaks = {}
    for path in (fifo, "/dev/zero", files["dir"] / "mlp.onnx"):
        args = (files["dir"] / "mlp.onnx", path) if command == "compare" else (path,)
        code, out, peaks[str(path)] = cli_peak(command, *args, timeout=60)
        if path != files["dir"] / "mlp.onnx":
            assert code == 2 and "not a regular file" in out and "Traceback" not in out, out
    assert peaks["/dev/zero"] < peaks[str(files["dir"] / "mlp.onnx")] + HEADROOM_MIB, peaks
