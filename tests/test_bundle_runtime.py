"""Bundles (folder and zip), verification, and the torch-free runtime."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import edgeship
from edgeship.bundle import MANIFEST, open_bundle, sha256_file
from edgeship.errors import BundleError, SpecError, TargetUnavailableError


def test_bundle_layout_and_manifest(mlp_bundle):
    m = json.loads((mlp_bundle / MANIFEST).read_text())
    assert m["schema_version"] == 1 and m["name"] == "mlp"
    assert set(m["files"]) == {"models/fp32.onnx", "torchscript/model.pt", "golden/inputs.npz",
                               "golden/outputs.npz", "report.json"} | {v["file"] for v in m["variants"].values()}
    assert "int8_dynamic" in m["variants"]  # --quantize auto: dynamic int8 for the MLP's Gemms
    for rel, meta in m["files"].items():
        assert sha256_file(mlp_bundle / rel) == meta["sha256"]
        assert (mlp_bundle / rel).stat().st_size == meta["size"]
    assert m["defaults"]["cpu"] == "fp32"
    assert m["io"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 10]}]
    assert {"torch", "onnx", "onnxruntime"} <= set(m["tools"])
    assert "cpu_flags" in m["host"]


def test_load_positional_and_dict(mlp_bundle, files):
    m = edgeship.load(mlp_bundle)
    x = files["x"]
    y = m(x)
    assert isinstance(y, np.ndarray) and y.shape == (2, 4)
    d = m({"x": x})
    assert list(d) == [o.name for o in m.outputs] and np.array_equal(d[m.outputs[0].name], y)
    assert m.variant == json.loads((mlp_bundle / MANIFEST).read_text())["defaults"]["cpu"]
    assert m.providers == ["CPUExecutionProvider"]
    assert edgeship.load(mlp_bundle, variant="fp32").variant == "fp32"
    assert m.inputs[0].shape == ("batch", 10)


def test_load_zip_bundle(mlp_bundle, tmp_path, files):
    z = tmp_path / "mlp.edgeship.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(mlp_bundle.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(mlp_bundle).as_posix())
    np.testing.assert_array_equal(edgeship.load(z)(files["x"]), edgeship.load(mlp_bundle)(files["x"]))


@pytest.mark.parametrize("variant", ["auto", "fp32", "int8_dynamic"])
def test_load_hands_onnxruntime_the_verified_bytes_not_a_path(mlp_bundle, monkeypatch, variant):
    import hashlib

    import onnxruntime as ort

    from edgeship.bundle.read import Bundle

    opened, verified = [], []
    real_session, real_read = ort.InferenceSession, Bundle.read

    def session(model, *args, **kwargs):
        opened.append(model)
        return real_session(model, *args, **kwargs)

    def read(self, rel):
        verified.append(real_read(self, rel))  # bytes that passed the sha256 check
        return verified[-1]

    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(Bundle, "read", read)
    m = edgeship.load(mlp_bundle, variant=variant)
    manifest = json.loads((mlp_bundle / MANIFEST).read_text())
    rel = manifest["variants"][m.variant]["file"]
    (model,) = opened  # one session, opened on the very bytes that were verified: nothing re-reads the file
    assert type(model) is bytes and any(model is data for data in verified)
    assert model == (mlp_bundle / rel).read_bytes()
    assert hashlib.sha256(model).hexdigest() == manifest["files"][rel]["sha256"]


def _zip_bytes(bundle: Path) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(bundle.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(bundle).as_posix())
    return buf.getvalue()


def test_load_from_zip_bytes_in_memory_is_verified_like_a_file(mlp_bundle, files, tmp_path, monkeypatch):
    import tempfile

    data = _zip_bytes(mlp_bundle)
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: pytest.fail("no temporary file"))
    np.testing.assert_array_equal(edgeship.load(data)(files["x"]), edgeship.load(mlp_bundle)(files["x"]))
    model = (mlp_bundle / "models" / "fp32.onnx").read_bytes()
    i = data.find(model) + len(model) // 2  # flip one byte inside the stored (uncompressed) model
    bad = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    with pytest.raises(BundleError, match="does not match its sha256|corrupt"):
        edgeship.load(bad)
    with pytest.raises(BundleError, match="not a readable zip bundle"):
        edgeship.load(b"not a zip")


def test_session_options_threads_and_provider_options_reach_onnxruntime(mlp_bundle, files, monkeypatch):
    import onnxruntime as ort

    seen = []

    class Spy(ort.InferenceSession):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("provider_options"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", Spy)
    m = edgeship.load(mlp_bundle, threads=1, inter_op_threads=2, provider_options={"use_arena": "0"})
    so = m.session.get_session_options()
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 2
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert seen == [[{"use_arena": "0"}]]
    mine = ort.SessionOptions()
    mine.intra_op_num_threads = 3
    mine.enable_mem_pattern = False
    m2 = edgeship.load(mlp_bundle, session_options=mine)
    so2 = m2.session.get_session_options()
    assert so2.intra_op_num_threads == 3 and so2.enable_mem_pattern is False
    np.testing.assert_array_equal(m(files["x"]), m2(files["x"]))


def test_model_releases_the_model_bytes_once_the_session_is_open(mlp_bundle):
    m = edgeship.load(mlp_bundle)
    assert m._runner.model is None and getattr(m.session, "_model_bytes", None) is None
    assert m(np.ones((2, 10), np.float32)).shape == (2, 4)  # the session runs without them


def test_eight_threads_on_one_model_give_identical_results(mlp_bundle):
    from concurrent.futures import ThreadPoolExecutor

    m = edgeship.load(mlp_bundle)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((i % 4 + 1, 10)).astype(np.float32) for i in range(64)]
    want = [m(x) for x in xs]

    def work(k: int) -> list[np.ndarray]:
        return [m(xs[(k + j) % len(xs)]) for j in range(50)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for k, got in enumerate(results):
        for j, y in enumerate(got):
            np.testing.assert_array_equal(y, want[(k + j) % len(xs)])


@pytest.mark.parametrize("call, match", [
    (lambda m: m(np.zeros((1, 10))), "expects dtype float32, got float64"),
    (lambda m: m(np.zeros((1, 9), np.float32)), r"expects shape \[batch, 10\], got \[1, 9\]"),
    (lambda m: m({"y": np.zeros((1, 10), np.float32)}), r"\(missing x; unexpected y\)"),
    (lambda m: m(np.zeros((1, 10), np.float32), np.zeros(1)), "takes 1 input \\(x\\), got 2 positional arrays"),
])
def test_bad_feeds_name_the_input(mlp_bundle, call, match):
    with pytest.raises(SpecError, match=match):
        call(edgeship.load(mlp_bundle))


def test_unknown_variant(mlp_bundle):
    with pytest.raises(BundleError, match="variant 'int8' is not in bundle"):
        edgeship.load(mlp_bundle, variant="int8")


@pytest.mark.no_cuda
def test_cuda_target_without_cuda(mlp_bundle):
    with pytest.raises(TargetUnavailableError, match="available: .*CPUExecutionProvider.*onnxruntime-gpu"):
        edgeship.load(mlp_bundle, target="cuda")
    assert edgeship.load(mlp_bundle, target="auto").target == "cpu"


def _flip(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_refused_by_load_and_check(bundle_copy, cli):
    _flip(bundle_copy / "models" / "fp32.onnx")
    with pytest.raises(BundleError, match="models/fp32.onnx does not match its sha256"):
        edgeship.load(bundle_copy)
    code, out = cli("check", bundle_copy)
    assert code == 2 and "does not match its sha256" in out


@pytest.mark.parametrize("damage, match", [
    (lambda b: (b / "golden" / "inputs.npz").unlink(), "listed files are missing: golden/inputs.npz"),
    (lambda b: (b / "extra.txt").write_text("x"), "not listed in manifest.json: extra.txt"),
    (lambda b: (b / MANIFEST).write_text("{not json"), "not valid JSON"),
    (lambda b: (b / MANIFEST).unlink(), "no manifest.json"),
    (lambda b: _edit_manifest(b, schema_version=99), "schema_version 99 is not supported"),
    (lambda b: _edit_manifest(b, files={"../evil.onnx": {"sha256": "0" * 64, "size": 1}}), "escapes the bundle"),
    (lambda b: _edit_manifest(b, files={"/etc/passwd": {"sha256": "0" * 64, "size": 1}}), "escapes the bundle"),
    (lambda b: _symlink(b), "symbolic link"),
])
def test_tampered_bundles_are_refused_before_onnxruntime(bundle_copy, damage, match):
    damage(bundle_copy)
    with pytest.raises(BundleError, match=match):
        open_bundle(bundle_copy)
    with pytest.raises(BundleError, match=match):
        edgeship.load(bundle_copy)


def _edit_manifest(bundle: Path, **changes) -> None:
    m = json.loads((bundle / MANIFEST).read_text())
    m.update(changes)
    (bundle / MANIFEST).write_text(json.dumps(m))


def _symlink(bundle: Path) -> None:
    target = bundle / "models" / "fp32.onnx"
    real = bundle.parent / "elsewhere.onnx"
    shutil.move(target, real)
    os.symlink(real, target)


def test_zip_slip_entry_refused(tmp_path, mlp_bundle):
    z = tmp_path / "evil.edgeship.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(MANIFEST, (mlp_bundle / MANIFEST).read_text())
        zf.writestr("../../escape.txt", "x")
    with pytest.raises(BundleError, match="escapes the bundle"):
        edgeship.load(z)


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx', 'onnxscript'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import numpy as np, edgeship
m = edgeship.load(sys.argv[1])
y = m(np.ones((3, 10), np.float32))
assert 'torch' not in sys.modules and 'onnx' not in sys.modules
print('ok', y.shape)
"""


def test_runtime_works_where_torch_cannot_be_imported(mlp_bundle):
    r = subprocess.run([sys.executable, "-c", BLOCK_TORCH, str(mlp_bundle)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ok (3, 4)" in r.stdout


def test_import_edgeship_does_not_import_torch():
    code = "import edgeship, edgeship.cli, edgeship.model, sys; assert 'torch' not in sys.modules, 'torch'; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_run_bound_returns_outputs_as_ort_values(mlp_bundle, files):
    import onnxruntime as ort

    m = edgeship.load(mlp_bundle)
    out = m.run_bound({"x": files["x"]})
    assert set(out) == {t.name for t in m.outputs} and all(isinstance(v, ort.OrtValue) for v in out.values())
    (name,) = out
    np.testing.assert_array_equal(out[name].numpy(), m(files["x"]))
    on_host = ort.OrtValue.ortvalue_from_numpy(files["x"])  # an OrtValue already where the model runs
    np.testing.assert_array_equal(m.run_bound({"x": on_host})[name].numpy(), m(files["x"]))
    with pytest.raises(SpecError, match="input 'x'"):
        m.run_bound({"x": files["x"].astype(np.float64)})
    with pytest.raises(SpecError, match="run_bound needs every input"):
        m.run_bound({"y": on_host})


@pytest.mark.cuda
def test_run_bound_keeps_cuda_outputs_on_the_device(mlp_bundle, files):
    m = edgeship.load(mlp_bundle, target="cuda")
    out = m.run_bound({"x": files["x"]})
    (value,) = out.values()
    assert value.device_name().lower() == "cuda"
    np.testing.assert_allclose(value.numpy(), edgeship.load(mlp_bundle)(files["x"]), atol=1e-5)


def test_the_lean_call_path_checks_every_fixed_axis_and_falls_back_to_full_validation(mlp_bundle):
    from edgeship.model import _fast_path

    f32 = np.dtype("float32")
    name, dtype, ndim, sizes_of, want = _fast_path([("x", f32, 4, ((1, 3), (2, 8), (3, 8)))], ["y"])
    assert (name, dtype, ndim) == ("x", f32, 4)
    assert sizes_of((5, 3, 8, 8)) == want and sizes_of((5, 3, 8, 9)) != want and sizes_of((5, 4, 8, 8)) != want
    assert _fast_path([("x", f32, 2, ())], ["y"])[3] is None  # every axis dynamic: nothing fixed to check
    assert _fast_path([("a", f32, 1, ()), ("b", f32, 1, ())], ["y"]) is None
    assert _fast_path([("a", f32, 1, ())], ["y", "z"]) is None

    m = edgeship.load(mlp_bundle)
    x = np.random.default_rng(0).standard_normal((3, 10), dtype=np.float32)
    np.testing.assert_array_equal(m(x), m.session.run(None, {"x": x})[0])
    for bad, match in ((x.astype(np.float64), "expects dtype float32"), (x.astype(">f4"), "non-native byte order"),
                       (x[:, :9], r"x"), (x[None], r"x"), (x.tolist(), "numpy")):
        with pytest.raises(SpecError, match=match):
            m(bad)
