"""Test bundles for the JavaScript loader's tests, built with the Python side (run by the tests).

    python js/test/fixtures.py OUT

writes OUT/simplenet.edgeship (``edgeship export`` of examples/simplenet, as ``make demo`` does),
OUT/simplenet.edgeship.zip (the same bundle zipped by ``edgeship export -o NAME.edgeship.zip``'s
writer) and OUT/zips/CASE.zip: the hostile zips of tests/hostile/test_bundles_hostile.py, made
with Python's zipfile. Prints OUT/index.json's path.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MANIFEST = "manifest.json"
SYMLINK = 0o120777 << 16


def zip_with(src: Path, dst: Path, replace=None, extra=(), drop=()) -> Path:
    """Zip ``src`` as the bundle writer does, with entries replaced, added or dropped."""
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
    """Rewrite the compression method or OR in flags in every local and central header."""
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


def external_data_bundle(bundle: Path, dst: Path) -> Path:
    """A copy of ``bundle`` whose fp32 model keeps a tensor in external data (``../../secret.bin``),
    re-signed as an attacker who edits a bundle would."""
    import hashlib

    import onnx

    shutil.copytree(bundle, dst)
    model = onnx.load(dst / "models" / "fp32.onnx")
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../secret.bin"
    data = model.SerializeToString()
    (dst / "models" / "fp32.onnx").write_bytes(data)
    manifest = json.loads((dst / MANIFEST).read_text())
    manifest["files"]["models/fp32.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (dst / MANIFEST).write_text(json.dumps(manifest))
    return dst


def raw_zip(files: dict[str, bytes], deflated=()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, (2026, 1, 1, 0, 0, 0)), data,
                       compress_type=zipfile.ZIP_DEFLATED if name in deflated else zipfile.ZIP_STORED)
    return buf.getvalue()


def listed(manifest: dict, extra: dict[str, bytes]) -> bytes:
    """The manifest with ``extra`` listed and signed, as an attacker who re-signs would."""
    m = dict(manifest, files=dict(manifest["files"]))
    for rel, data in extra.items():
        m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    return json.dumps(m).encode()


def bombs(bundle: Path, zips: Path) -> dict[str, str]:
    """The zips of tests/hostile/test_zip_limits.py, deflated (what the JS loader reads)."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    files = {rel: (bundle / rel).read_bytes() for rel in manifest["files"]}
    out = {}
    # 100 members of 1 MiB of zeros (each under the per-member floor), all listed: 200x over in all
    extra = {f"pad/{i}.bin": bytes(1 << 20) for i in range(100)}
    (zips / "many-small-members.zip").write_bytes(raw_zip({**files, **extra, MANIFEST: listed(manifest, extra)}, extra))
    out["many small members"] = str(zips / "many-small-members.zip")
    # one member of 4 MiB of zeros (~1000x), beside 256 KiB of random bytes so the total is in bounds
    extra = {"pad/zeros.bin": bytes(4 << 20), "pad/random.bin": random.Random(0).randbytes(256 << 10)}
    (zips / "one-member-bomb.zip").write_bytes(raw_zip({**files, **extra, MANIFEST: listed(manifest, extra)}, {"pad/zeros.bin"}))
    out["one member bomb"] = str(zips / "one-member-bomb.zip")
    # ov/a.bin (stored) runs on over the header and data of ov/b.bin: the two share bytes, both listed
    b_data = b"B" * 64
    first = {**files, "ov/a.bin": b"A" * 16, "ov/b.bin": b_data}
    probe = raw_zip({**first, MANIFEST: b"{}"})
    with zipfile.ZipFile(io.BytesIO(probe)) as z:
        a, b = z.getinfo("ov/a.bin"), z.getinfo("ov/b.bin")
    a_start = a.header_offset + 30 + len(a.filename)
    b_end = b.header_offset + 30 + len(b.filename) + len(b_data)
    a_data = probe[a_start:b_end]
    data = bytearray(raw_zip({**first, MANIFEST: listed(manifest, {"ov/a.bin": a_data, "ov/b.bin": b_data})}))
    cd = 0
    while True:  # a's central-directory record: its CRC and sizes patched to cover b
        cd = data.index(b"PK\x01\x02", cd)
        name_len = struct.unpack_from("<H", data, cd + 28)[0]
        if data[cd + 46:cd + 46 + name_len] == b"ov/a.bin":
            struct.pack_into("<3L", data, cd + 16, zlib.crc32(a_data), len(a_data), len(a_data))
            break
        cd += 4
    (zips / "overlapping-members.zip").write_bytes(bytes(data))
    out["overlapping members"] = str(zips / "overlapping-members.zip")
    return out


def pin_plain_default(bundle: Path) -> None:
    """Make plain fp32 on onnxruntime the bundle's default, as it is on a quiet x86_64 machine.

    Export times the candidates, and on another machine another one may lead (fp32+threads=1 did on
    a CI runner, and the tests that name what loads by default failed there). The manifest is not
    among its own hashed files, so reordering its candidates keeps the bundle valid."""
    from edgeship import jsonout

    path = bundle / MANIFEST
    m = json.loads(path.read_text())
    cpu = m["candidates"]["cpu"]
    m["candidates"]["cpu"] = [c for c in cpu if c["id"] == "fp32"] + [c for c in cpu if c["id"] != "fp32"]
    m["defaults"]["cpu"] = "fp32"
    path.write_text(jsonout.dumps(m, indent=2))


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    for name in ("model.py", "train.py"):
        shutil.copy(REPO / "examples" / "simplenet" / name, work / name)
    run = dict(cwd=work, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "train.py", "--epochs", "5"], **run)
    bundle = out / "simplenet.edgeship"
    subprocess.run([sys.executable, "-m", "edgeship", "export", "simplenet_state.pt", "--arch", "model.py:SimpleNet",
                    "--input", "x:1x10", "--dynamic-batch", "-o", str(bundle)], **run)
    pin_plain_default(bundle)
    zip_with(bundle, out / "simplenet.edgeship.zip")
    zips = out / "zips"
    zips.mkdir(exist_ok=True)
    schema2 = json.dumps({**json.loads((bundle / MANIFEST).read_text()), "schema_version": 2}).encode()
    cases = {
        "flipped byte": lambda d: flip_member(zip_with(bundle, d)),
        "missing file": lambda d: zip_with(bundle, d, drop={"report.json"}),
        "extra file": lambda d: zip_with(bundle, d, extra=[("notes.txt", b"x", 0)]),
        "zip slip": lambda d: zip_with(bundle, d, extra=[("../../evil.sh", b"x", 0)]),
        "absolute entry": lambda d: zip_with(bundle, d, extra=[("/etc/cron.d/x", b"x", 0)]),
        "symlink entry": lambda d: zip_with(bundle, d, extra=[("link", b"/etc/passwd", SYMLINK)]),
        "duplicate entry": lambda d: zip_with(bundle, d, extra=[("report.json", b"{}", 0)]),
        "manifest not json": lambda d: zip_with(bundle, d, replace={MANIFEST: b"\xff{oops"}),
        "unknown schema": lambda d: zip_with(bundle, d, replace={MANIFEST: schema2}),
        "no manifest": lambda d: zip_with(bundle, d, drop={MANIFEST}),
        "encrypted entries": lambda d: patch_headers(zip_with(bundle, d), flags=0x1),
        "unknown compression": lambda d: patch_headers(zip_with(bundle, d), method=99),
        "truncated": lambda d: d.write_bytes(zip_with(bundle, d).read_bytes()[:-300]),
    }
    index = {"bundle": str(bundle), "zip": str(out / "simplenet.edgeship.zip"), "zips": {}}
    for case, make in cases.items():
        dst = zips / (case.replace(" ", "-") + ".zip")
        make(dst)
        index["zips"][case] = str(dst)
    index["zips"].update(bombs(bundle, zips))
    index["external"] = str(external_data_bundle(bundle, out / "external.edgeship"))
    (out / "index.json").write_text(json.dumps(index, indent=1))
    print(out / "index.json")


if __name__ == "__main__":
    main()
