"""Test bundles for the JavaScript loader's tests, built with the Python side (run by the tests).

    python js/test/fixtures.py OUT

writes OUT/simplenet.edgeship (``edgeship export`` of examples/simplenet, as ``make demo`` does),
OUT/simplenet.edgeship.zip (the same bundle zipped by ``edgeship export -o NAME.edgeship.zip``'s
writer) and OUT/zips/CASE.zip: the hostile zips of tests/hostile/test_bundles_hostile.py, made
with Python's zipfile. Prints OUT/index.json's path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
import zipfile
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
    index["external"] = str(external_data_bundle(bundle, out / "external.edgeship"))
    (out / "index.json").write_text(json.dumps(index, indent=1))
    print(out / "index.json")


if __name__ == "__main__":
    main()
