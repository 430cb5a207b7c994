"""Hostile and broken model files: pickles that run code, format confusion, state_dicts that do not fit.

Each case: the error type and message, exit 2 through the CLI, no output written, no code run.
"""

import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from conftest import arch
from hostile_helpers import assert_untouched, evil_payload, sentinel  # noqa: F401

from edgeship.config import LoadOptions
from edgeship.errors import ModelLoadError, SpecError, UnsafeModelError
from edgeship.exporters.loading import EXPORTED_PROGRAM, TORCHSCRIPT, load_model, sniff_format

# ----------------------------------------------------------------------------- pickles


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_code_running_pickle_refused_by_cli_without_retry(tmp_path, cli, sentinel, monkeypatch, legacy):  # noqa: F811
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": {"w": evil_payload(sentinel)}}, path,
               _use_new_zipfile_serialization=not legacy)
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or real(*a, **k))
    out = tmp_path / "evil.edgeship"
    code, msg = cli("export", path, "--arch", arch("MLP"), "--input", "x:1x10", "-o", out)
    assert code == 2, msg
    assert "loading it would run arbitrary code, so it was refused" in msg and "--trust-pickle" in msg
    assert "Traceback" not in msg
    assert calls == [True]  # one weights-only attempt, no silent retry with weights_only=False
    assert_untouched(out, {})


def test_whole_module_pickle_with_payload_refused(tmp_path, sentinel):  # noqa: F811
    class Trap(torch.nn.Linear):
        def __reduce_ex__(self, protocol):
            return (os.system, (f"touch {sentinel}",))

    path = tmp_path / "module.pt"
    torch.save(Trap(2, 2), path)
    with pytest.raises(UnsafeModelError, match=r"most likely a whole nn.Module.*--trust-pickle"):
        load_model(path)


def test_pickle_inside_example_inputs_is_refused(tmp_path, cli, files, sentinel):  # noqa: F811
    npz = tmp_path / "example.npz"
    obj = np.empty(1, dtype=object)
    obj[0] = evil_payload(sentinel)
    np.savez(npz, x=obj)
    out = tmp_path / "b.edgeship"
    code, msg = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--example-inputs", npz, "-o", out)
    assert code == 2 and "--example-inputs" in msg and "allow_pickle" in msg
    assert_untouched(out, {})


def test_pickle_inside_run_inputs_is_refused(tmp_path, cli, mlp_bundle, sentinel):  # noqa: F811
    npy = tmp_path / "x.npy"
    obj = np.empty(1, dtype=object)
    obj[0] = evil_payload(sentinel)
    np.save(npy, obj, allow_pickle=True)
    code, msg = cli("run", mlp_bundle, "--input", f"x={npy}", "-o", tmp_path / "y.npz")
    assert code == 2 and "cannot read it" in msg and "allow_pickle" in msg
    assert not (tmp_path / "y.npz").exists()


# ----------------------------------------------------------------------------- format confusion


def _truncate(src, dst, fraction=0.5):
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


@pytest.fixture
def bundle_zip(mlp_bundle, tmp_path):
    from hostile_helpers import zip_tree

    return zip_tree(mlp_bundle, tmp_path / "some.edgeship.zip")


CONFUSION = {
    "zero bytes": (lambda d, f: (d / "m.pt").write_bytes(b"") and None, "is empty"),
    "random bytes": (lambda d, f: (d / "m.pt").write_bytes(np.random.default_rng(1).bytes(4096)), "cannot recognise the format"),
    "truncated torchscript": (lambda d, f: _truncate(f / "mlp_ts.pt", d / "m.pt"), "truncated or corrupt"),
    "truncated pt2": (lambda d, f: _truncate(f / "mlp_ep.pt2", d / "m.pt"), "truncated or corrupt"),
    "truncated state_dict zip": (lambda d, f: _truncate(f / "mlp_state.pt", d / "m.pt", 0.9), "truncated or corrupt"),
    "truncated onnx": (lambda d, f: _truncate(f / "mlp.onnx", d / "m.pt", 0.3), "cannot recognise the format"),
    "a directory": (lambda d, f: (d / "m.pt").mkdir(), "is a directory"),
    "a pipe": (lambda d, f: os.mkfifo(d / "m.pt"), "not a regular file"),
    "an edgeship bundle zip": (None, "not one PyTorch wrote"),
}


@pytest.mark.parametrize("case", list(CONFUSION))
def test_format_confusion_exit_2_nothing_written(tmp_path, cli, files, bundle_zip, case):
    make, match = CONFUSION[case]
    if make is None:
        model = bundle_zip
    else:
        make(tmp_path, files["dir"])
        model = tmp_path / "m.pt"
    out = tmp_path / "out.edgeship"
    with pytest.raises(ModelLoadError, match=match):
        load_model(model, LoadOptions(arch=arch("MLP")))
    code, msg = cli("export", model, "--arch", arch("MLP"), "--input", "x:1x10", "-o", out)
    assert code == 2 and match in msg and "Traceback" not in msg
    assert_untouched(out, {})


@pytest.mark.parametrize("name, fmt", [("mlp_ts.pt", TORCHSCRIPT), ("mlp_ep.pt2", EXPORTED_PROGRAM)])
def test_renamed_archives_are_read_by_content_not_name(files, tmp_path, name, fmt):
    for fake in ("model.onnx", "model.npz", "weights.safetensors"):
        p = tmp_path / fake
        p.write_bytes((files["dir"] / name).read_bytes())
        assert sniff_format(p) == fmt


def test_zip_with_torchscript_layout_but_garbage_is_a_load_error(tmp_path, cli):
    p = tmp_path / "fake_ts.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/constants.pkl", b"\x80\x02garbage")
        z.writestr("archive/code/__torch__.py", "def forward(self): ...")
    with pytest.raises(ModelLoadError, match="torch.jit.load could not read"):
        load_model(p)
    code, msg = cli("export", p, "--input", "x:1x10", "-o", tmp_path / "o.edgeship")
    assert code == 2 and "torch.jit.load could not read" in msg
    assert_untouched(tmp_path / "o.edgeship", {})


# ----------------------------------------------------------------------------- state_dicts


def test_state_dict_that_fits_nothing_lists_first_mismatches_exit_2(files, tmp_path, cli):
    out = tmp_path / "r.edgeship"
    code, msg = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("ResNetish"), "--input", "x:1x3x8x8", "-o", out)
    assert code == 2
    assert "does not fit --arch" in msg and "missing in file: stem.0.weight" in msg
    assert "more)" in msg and "unexpected in file: net.0.weight" in msg
    assert_untouched(out, {})


def test_state_dict_of_non_tensors_is_named(tmp_path):
    p = tmp_path / "opt.pt"
    torch.save({"lr": 0.1, "betas": (0.9, 0.99)}, p)
    with pytest.raises(ModelLoadError, match="holds a dict with keys lr, betas, not a state_dict"):
        load_model(p, LoadOptions(arch=arch("MLP")))


def test_mismatched_example_inputs_is_a_spec_error(files, tmp_path):
    npz = tmp_path / "ex.npz"
    np.savez(npz, x=np.zeros((1, 10), np.float64))
    from edgeship.config import ExportConfig
    from edgeship.pipeline import export

    out = tmp_path / "b.edgeship"
    with pytest.raises(SpecError, match=r"--example-inputs has float64\[1, 10\] for input 'x', but --input says float32"):
        export(ExportConfig(model=files["dir"] / "mlp_state.pt", output=out, inputs=("x:1x10",), example_inputs=npz,
                            load=LoadOptions(arch=arch("MLP"))))
    assert_untouched(out, {})


def _npz_with_raw_member(path):
    """An .npz whose member is not an .npy file: numpy would hand back raw bytes for it."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"not an npy file")
    return path


def test_example_inputs_with_a_non_array_member_exit_2(files, tmp_path, cli):
    npz = _npz_with_raw_member(tmp_path / "ex.npz")
    out = tmp_path / "b.edgeship"
    code, msg = cli("export", files["dir"] / "mlp_state.pt", "--arch", arch("MLP"), "--example-inputs", npz, "-o", out)
    assert code == 2 and "member 'x' is not a numpy array" in msg
    assert_untouched(out, {})


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04trunc", None])
def test_run_inputs_that_are_not_arrays_exit_2(mlp_bundle, tmp_path, cli, content):
    p = tmp_path / "in.npz"
    _npz_with_raw_member(p) if content is None else p.write_bytes(content)
    code, msg = cli("run", mlp_bundle, "--input", p)
    assert code == 2 and "cannot read it" in msg and "Traceback" not in msg


# ----------------------------------------------------------------------------- hostile ExportedPrograms
# torch.export.load (torch 2.13) unpickles some records with weights_only=False: the sample
# inputs after a failed safe load, weights/constants marked use_pickle, and opaque constants.


def _evil_torch_save(target) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save((evil_payload(target),), buf)
    return buf.getvalue()


def _rewrite_pt2(src, dst, edit, extra=()):
    """Copy a .pt2 record by record with torch's own archive writer; ``edit(name, data)`` returns
    the new bytes of a record; ``extra`` holds (name, bytes) records to add."""
    writer = torch._C.PyTorchFileWriter(str(dst))
    with zipfile.ZipFile(src) as z:
        records = [(i.filename.split("/", 1)[1], z.read(i.filename)) for i in z.infolist()]
    for name, data in [(n, edit(n, d)) for n, d in records if not n.startswith(".data/")] + list(extra):
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return dst


def _sample_inputs(target):
    edit = lambda name, data: _evil_torch_save(target) if name.startswith("data/sample_inputs/") else data  # noqa: E731
    return edit, ()


def _pickled_weight(target):
    def edit(name, data):
        if name.endswith("_weights_config.json"):
            config = json.loads(data)
            config["config"]["net.0.bias"]["use_pickle"] = True
            return json.dumps(config).encode()
        return _evil_torch_save(target) if name == "data/weights/weight_1" else data
    return edit, ()


def _opaque_constant(target):
    def edit(name, data):
        if name.endswith("_constants_config.json"):
            return json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                                "tensor_meta": None}}}).encode()
        return data
    return edit, [("data/constants/opaque_obj_0", pickle.dumps(evil_payload(target)))]


@pytest.mark.parametrize("make", [_sample_inputs, _pickled_weight, _opaque_constant],
                         ids=["sample inputs", "use_pickle weight", "opaque constant"])
def test_exported_program_carrying_a_pickle_is_refused(files, tmp_path, cli, sentinel, make):  # noqa: F811
    edit, extra = make(sentinel)
    path = _rewrite_pt2(files["dir"] / "mlp_ep.pt2", tmp_path / "evil.pt2", edit, extra)
    with pytest.raises(UnsafeModelError, match=r"ExportedProgram whose archive holds pickled Python objects.*--trust-pickle"):
        load_model(path)
    out = tmp_path / "evil.edgeship"
    code, msg = cli("export", path, "-o", out)
    assert code == 2 and "was refused" in msg and "Traceback" not in msg
    assert_untouched(out, {})


def test_refusal_patches_are_undone(files):
    import pickle as pickle_module

    before = (torch.load, pickle_module.loads, torch._C._pickle_load_obj)
    load_model(files["dir"] / "mlp_ep.pt2")
    assert (torch.load, pickle_module.loads, torch._C._pickle_load_obj) == before
