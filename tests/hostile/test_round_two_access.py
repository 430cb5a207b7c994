"""Hostile inputs, round two (issue 10, items 1, 2, 4): no file written or read behind the user's back.

Each case: exit 2 with a message naming what was refused, no marker file, the output path untouched.
"""
import json
import os
import stat

import numpy as np
import pytest
import torch
from conftest import arch
from hostile_helpers import OrtSpy, assert_untouched, resign, snapshot, zip_tree

import edgeship
from edgeship.bundle import MANIFEST
from edgeship.errors import BundleError

# ----------------------------------------------------------------------------- item 1


def _evil_pt2(tmp_path, victim):
    """A pickle-free .pt2 whose graph maps ``victim`` with aten.from_file(shared=True) and fills it."""

    class M(torch.nn.Module):
        def forward(self, x):
            return x + torch.empty(4).fill_(1.0) * 0

    ep = torch.export.export(M(), (torch.randn(4),))
    for n in ep.graph.nodes:
        if n.op == "call_function" and n.target == torch.ops.aten.empty.memory_format:
            n.target, n.args = torch.ops.aten.from_file.default, (str(victim), True, 4)
            n.kwargs = {"dtype": torch.float32, "device": torch.device("cpu"), "pin_memory": False}
        elif n.op == "call_function" and "fill" in str(n.target):
            n.target = torch.ops.aten.fill_.Scalar  # in place: writes through the shared mapping
    ep.graph_module.recompile()
    path = tmp_path / "evil.pt2"
    torch.export.save(ep, path)
    return path


def test_exported_program_with_file_ops_is_refused(tmp_path, cli, mlp_bundle):
    victim = tmp_path / "victim.bin"
    path = _evil_pt2(tmp_path, victim)
    out = tmp_path / "evil.edgeship"
    code, msg = cli("export", path, "--input", "x:4", "-o", out)
    assert not victim.exists(), "the graph wrote a file"
    assert code == 2, msg
    assert "aten.from_file.default" in msg and "--trust-ops" in msg and "Traceback" not in msg
    assert_untouched(out, {})
    before = snapshot(mlp_bundle)
    code, msg = cli("check", mlp_bundle, "--against", path)  # the eager reference of check --against
    assert code == 2 and "aten.from_file.default" in msg, msg
    assert not victim.exists()
    assert snapshot(mlp_bundle) == before


def test_exported_program_of_plain_ops_still_loads(files):
    from edgeship.exporters.loading import load_model

    loaded = load_model(files["dir"] / "mlp_ep.pt2")
    assert loaded.module is not None


# ----------------------------------------------------------------------------- item 2


def _with_external(data: bytes, location: str) -> bytes:
    """The model with its first initializer's bytes moved to external data at ``location``."""
    import onnx

    m = onnx.load_model_from_string(data)
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location
    return m.SerializeToString()


def test_external_data_in_a_resigned_bundle_is_refused_before_onnxruntime(bundle_copy, tmp_path, cli, monkeypatch, files):
    secret = tmp_path / ".env"
    secret.write_bytes(np.arange(10_000, dtype=np.float32).tobytes())  # what the model would read
    monkeypatch.chdir(tmp_path)
    model = bundle_copy / "models" / "fp32.onnx"
    model.write_bytes(_with_external(model.read_bytes(), ".env"))
    resign(bundle_copy, "models/fp32.onnx")
    before = snapshot(bundle_copy)
    spy = OrtSpy(monkeypatch)
    with pytest.raises(BundleError, match=r"models/fp32.onnx keeps tensor .* in external data '.env'.*before onnxruntime"):
        edgeship.load(bundle_copy, variant="fp32")
    np.save(tmp_path / "x.npy", files["x"])
    for args in (("run", bundle_copy, "--variant", "fp32", "--input", f"x={tmp_path / 'x.npy'}"),
                 ("check", bundle_copy, "--variant", "fp32"), ("profile", bundle_copy, "--variant", "fp32", "-n", "1")):
        code, msg = cli(*args)
        assert code == 2 and "external data '.env'" in msg and "Traceback" not in msg, (args, msg)
    assert spy.calls == []  # onnxruntime never saw the bytes
    assert snapshot(bundle_copy) == before


def test_raw_onnx_external_data_is_guarded_in_compare_and_inspect(files, tmp_path, cli, monkeypatch):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(10_000, dtype=np.float32).tobytes())
    folder = tmp_path / "m"
    folder.mkdir()
    os.symlink(secret, folder / "weights.bin")  # inside the folder by name, elsewhere in fact
    model = folder / "model.onnx"
    model.write_bytes(_with_external((files["dir"] / "mlp.onnx").read_bytes(), "weights.bin"))
    monkeypatch.chdir(folder)
    spy = OrtSpy(monkeypatch)
    for args in (("inspect", model), ("compare", files["dir"] / "mlp.onnx", model), ("profile", model, "-n", "1")):
        code, msg = cli(*args)
        assert code == 2 and "symbolic link" in msg and "Traceback" not in msg, (args, msg)
    assert all("model.onnx" not in c for c in spy.calls)


# ----------------------------------------------------------------------------- item 4


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
def test_output_with_a_foreign_manifest_is_never_replaced(files, tmp_path, cli, zipped):
    app = tmp_path / "webapp"
    app.mkdir()
    (app / "manifest.json").write_text(json.dumps({"name": "my extension", "manifest_version": 3}))
    (app / "index.html").write_text("<html>precious</html>")
    out = zip_tree(app, tmp_path / "webapp.zip") if zipped else app
    before = snapshot(out)
    code, msg = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--input", "x:1x10",
                    "--quantize", "fp32", "--no-torchscript", "-o", out)
    assert code == 2 and "is not an edgeship" in msg and "refusing to replace it" in msg, msg
    assert_untouched(out, before)


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
def test_bundles_are_written_with_the_users_umask(mlp_bundle, tmp_path, zipped):
    from edgeship.bundle import write_bundle

    files = {rel: mlp_bundle / rel for rel in json.loads((mlp_bundle / MANIFEST).read_text())["files"]}
    manifest = {k: v for k, v in json.loads((mlp_bundle / MANIFEST).read_text()).items() if k != "files"}
    old = os.umask(0o022)
    try:
        out = write_bundle(tmp_path / ("b.edgeship.zip" if zipped else "b.edgeship"), files, manifest)
    finally:
        os.umask(old)
    modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in [out, *(out.rglob("*") if not zipped else [])]}
    assert all(m == (0o755 if p.is_dir() else 0o644) for p, m in modes.items()), {str(p): oct(m) for p, m in modes.items()}


# ----------------------------------------------------------------------------- item 3

class _WritesAFile(torch.nn.Module):
    """TorchScript that maps a file with aten.from_file(shared=True) and fills it: code in a bundle."""

    def __init__(self, victim: str):
        super().__init__()
        self.victim = victim
        self.fc = torch.nn.Linear(10, 4)

    def forward(self, x):
        mapped = torch.from_file(self.victim, True, 4, dtype=torch.uint8)
        mapped.fill_(65)
        return self.fc(x) + mapped.sum().to(x.dtype) * 0


def test_bundled_torchscript_is_not_run_without_opt_in(mlp_bundle, files, tmp_path):
    import shutil
    import subprocess
    import sys

    bundle = shutil.copytree(mlp_bundle, tmp_path / "evil.edgeship")
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"0000")
    torch.jit.save(torch.jit.script(_WritesAFile(str(victim))), bundle / "torchscript" / "model.pt")
    resign(bundle, "torchscript/model.pt")
    cmd = [sys.executable, "-m", "edgeship", "profile", str(bundle), "--compare-torch", str(files["dir"] / "mlp_state.pt"),
           "--arch", arch("MLP"), "--threads", "1", "-n", "3", "--warmup", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert victim.read_bytes() == b"0000", "the bundle's TorchScript ran without --run-bundled-torchscript"
    assert "bundle's TorchScript was not timed" in " ".join(r.stdout.split()) and "torchscript" not in r.stdout.split("note")[0]
    r = subprocess.run(cmd + ["--run-bundled-torchscript"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert victim.read_bytes() == b"AAAA"  # opted in: it is code, and it wrote the file (which is why it is opt-in)
