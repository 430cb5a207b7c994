"""Test bundles for the JavaScript loader's tests, built with the Python side (run by the tests).

    python js/test/fixtures.py OUT

writes OUT/simplenet.edgeship (``edgeship export`` of examples/simplenet, as ``make demo`` does),
OUT/simplenet.edgeship.zip (the same bundle zipped by ``edgeship export -o NAME.edgeship.zip``'s
writer) and OUT/zips/CASE.zip: the hostile zips of tests/hostile/test_bundles_hostile.py and
test_zip_limits.py, made by tests/bundle_zips.py. Prints OUT/index.json's path.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # as pytest puts it for tests/conftest.py

from bundle_zips import ZIP_CASES, manifest_and_files, overlapping, resigned_zip, zip_with  # noqa: E402

from edgeship.bundle import MANIFEST  # noqa: E402

DEFLATED = zipfile.ZIP_DEFLATED


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


def bombs(bundle: Path, zips: Path) -> dict[str, str]:
    """The zips of tests/hostile/test_zip_limits.py, deflated (what the JS loader reads)."""
    manifest, files = manifest_and_files(bundle)
    out = {}
    # 100 members of 1 MiB of zeros (each under the per-member floor), all listed: 200x over in all
    extra = {f"pad/{i}.bin": bytes(1 << 20) for i in range(100)}
    (zips / "many-small-members.zip").write_bytes(resigned_zip(manifest, files, extra, dict.fromkeys(extra, DEFLATED)))
    out["many small members"] = str(zips / "many-small-members.zip")
    # one member of 4 MiB of zeros (~1000x), beside 256 KiB of random bytes so the total is in bounds
    extra = {"pad/zeros.bin": bytes(4 << 20), "pad/random.bin": random.Random(0).randbytes(256 << 10)}
    (zips / "one-member-bomb.zip").write_bytes(resigned_zip(manifest, files, extra, {"pad/zeros.bin": DEFLATED}))
    out["one member bomb"] = str(zips / "one-member-bomb.zip")
    # ov/a.bin (stored) runs on over the header and data of ov/b.bin: the two share bytes, both listed
    (zips / "overlapping-members.zip").write_bytes(overlapping(files, manifest))
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
    index = {"bundle": str(bundle), "zip": str(out / "simplenet.edgeship.zip"), "zips": {}}
    for case, make in ZIP_CASES.items():
        dst = zips / (case.replace(" ", "-") + ".zip")
        make(bundle, dst)
        index["zips"][case] = str(dst)
    index["zips"].update(bombs(bundle, zips))
    index["external"] = str(external_data_bundle(bundle, out / "external.edgeship"))
    (out / "index.json").write_text(json.dumps(index, indent=1))
    print(out / "index.json")


if __name__ == "__main__":
    main()
