"""Crafted ORT-format twins (``export --target mobile``'s ``.ort`` files), re-signed in the manifest as
an attacker who edits a bundle on purpose would: every one is refused with an EdgeshipError (exit 2),
or fails parity (exit 1), in ``load`` + a call and in ``edgeship check``; never exit 3, a crash of the
process (a negative return code: each case runs in a child) or a hang (the child's timeout).

What guards each case: the manifest's format (file identifier ``ORTM`` at byte 4), edgeship's own
walk of the flatbuffer (external data; offsets inside the file), the ORT format version the manifest
records, onnxruntime's flatbuffers verifier and tensor checks (their verdict refuses the bundle
instead of passing the file over as unsupported on this host), and the io spec. Two cases are not
refusals: an op this onnxruntime lacks is passed over by load and check alike (an app's newer
onnxruntime may have it), and a graph edited to allocate gigabytes runs into an OS memory limit.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import arch, fake_p50s
from hostile_helpers import PY, python_env, resign

LIMIT = r"""
import resource, sys
if sys.argv[-1].startswith("--limit-gib="):  # an OS limit on memory, as trust.md asks of untrusted models
    gib = int(sys.argv.pop()[len("--limit-gib="):])
    resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))
"""
CHECK = LIMIT + r"""
sys.argv = ["edgeship", "check", "--table", *sys.argv[1:]]  # the table and its notes, also under CI=true
from edgeship.cli import main
main()
"""
CHILD = LIMIT + r"""
import numpy as np, edgeship
from edgeship.errors import EdgeshipError
bundle, variant = sys.argv[1:3]
shape = tuple(map(int, sys.argv[3].split("x"))) if len(sys.argv) > 3 else (2, 10)
try:
    with edgeship.load(bundle, variant=variant) as m:
        m(np.ones(shape, np.float32))
except EdgeshipError as e:
    print(f"{type(e).__name__}: {e}")
    sys.exit(2)
print("ran")
"""


def _load_and_check(bundle: Path, variant: str, *extra: str) -> tuple[tuple[int, str], tuple[int, str]]:
    """``(code, output)`` of load + one call of ``variant``, and of ``edgeship check``, each in a child;
    ``extra``: the input's shape (``1x3x32x32``) and ``--limit-gib=N``."""
    shape = [a for a in extra if not a.startswith("--")]
    limit = [a for a in extra if a.startswith("--")]
    out = []
    for argv in ([PY, "-c", CHILD, str(bundle), variant, *shape, *limit], [PY, "-c", CHECK, str(bundle), *limit]):
        p = subprocess.run(argv, env=python_env(), capture_output=True, text=True, timeout=300)
        out.append((p.returncode, " ".join((p.stdout + p.stderr).split())))
    return out[0], out[1]


@pytest.fixture(scope="module")
def mobile(tmp_path_factory):
    """A tiny MLP bundle exported with --target mobile (fp32, int8_dynamic and their ORT twins), and
    an ORT file of another MLP whose input and output have other names."""
    import models
    import torch

    from edgeship.config import ExportConfig, LoadOptions
    from edgeship.exporters.ort_format import convert
    from edgeship.pipeline import export

    d = tmp_path_factory.mktemp("ort-files")
    torch.manual_seed(0)
    torch.save(models.MLP().state_dict(), d / "mlp.pt")
    cfg = ExportConfig(model=d / "mlp.pt", output=d / "mlp.edgeship", inputs=("x:2x10",), dynamic_batch=True,
                       load=LoadOptions(arch=arch("MLP")), exporter="torchscript", torchscript=False,
                       quantize=("dynamic",), targets=("mobile",), tune=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0 if n == "fp32" else 2.0))
        bundle = export(cfg).bundle
    torch.manual_seed(1)
    torch.onnx.export(models.MLP(), (torch.randn(2, 10),), str(d / "other.onnx"), dynamo=False,
                      input_names=["inp"], output_names=["out"])
    other, _ = convert({"other": d / "other.onnx"}, d / "other")
    return {"bundle": bundle, "other": other["other"].read_bytes()}


def _crafted(mobile, tmp_path, data: bytes, rel: str = "models/fp32.ort") -> Path:
    b = Path(shutil.copytree(mobile["bundle"], tmp_path / "b.edgeship"))
    (b / rel).write_bytes(data)
    resign(b, rel)
    return b


def _ort(mobile, name: str = "fp32") -> bytes:
    return (mobile["bundle"] / "models" / f"{name}.ort").read_bytes()


def _flipped(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0xFF
    return bytes(out)


def _version_field(data: bytes) -> int:
    """Where the ORT format version string's one character is (``InferenceSession.ort_version``)."""
    from edgeship.runtimes.ort_format import ort_format_version

    assert ort_format_version(data) == "6"
    at = data.index(b"\x01\x00\x00\x006") + 4
    assert data.count(b"\x01\x00\x00\x006") == 1
    return at


def _renamed_op(data: bytes, op: bytes) -> bytes:
    """The twin with its one ``Gemm`` node's op type replaced (same length)."""
    old = b"\x04\x00\x00\x00Gemm"
    assert data.count(old) == 1 and len(op) == 4
    return data.replace(old, old[:4] + op)


# (name, how the fp32 twin's bytes are made, what the refusal says)
CASES = [
    ("empty", lambda d: b"", "is 'ort' format, but the file is 'onnx' format"),
    ("truncated to 7 bytes", lambda d: d[:7], "is 'ort' format, but the file is 'onnx' format"),
    ("truncated to half", lambda d: d[:len(d) // 2], r"does not read as one \(offset"),
    ("random bytes", lambda d: bytes((i * 131 + 7) % 256 for i in range(len(d))), "is 'ort' format, but the file is"),
    ("root offset flipped", lambda d: _flipped(d, 0), r"does not read as one \(offset"),
    ("file identifier flipped", lambda d: _flipped(d, 4), "is 'ort' format, but the file is 'onnx' format"),
    ("root vtable flipped", lambda d: _flipped(d, 8), r"malformed ORT-format model \(.*ORT model verification failed"),
    ("a vtable field flipped", lambda d: _flipped(d, 40), r"malformed ORT-format model \(.*ORT model verification failed"),
    ("an op type that is not UTF-8", lambda d: _renamed_op(d, b"G\xcemm"),
     r"malformed ORT-format model \(its error quotes bytes of the file that are not UTF-8: 'utf-8' codec can't decode byte 0xce"),
    ("ORT format version edited", lambda d: d[:_version_field(d)] + b"9" + d[_version_field(d) + 1:],
     "is ORT format version '9', but manifest.json records version '6'"),
]


@pytest.mark.parametrize("name,make,says", CASES, ids=[c[0] for c in CASES])
def test_a_crafted_ort_twin_is_refused_by_load_and_check(mobile, tmp_path, name, make, says):
    b = _crafted(mobile, tmp_path, make(_ort(mobile)))
    (code, out), (check_code, check_out) = _load_and_check(b, "fp32_ort")
    assert code == 2 and "BundleError: bundle " in out and "models/fp32.ort" in out and "e-export" in out, out
    assert re.search(says, out), out
    assert check_code == 2 and "models/fp32.ort" in check_out and "Traceback" not in check_out, check_out


@pytest.mark.parametrize("at", [12, 16, 24, 32, 48, 64, 100, 200, 1000, 2000, 3000, -8, -1])
def test_one_flipped_byte_anywhere_is_an_edgeship_error_or_runs(mobile, tmp_path, at):
    """A flipped byte may leave a file onnxruntime still runs (padding, an unused field: then check
    runs it too) or one it cannot open; never a crash or exit 3. onnxruntime's NOT_IMPLEMENTED (a kernel
    this build lacks) is passed over as unsupported here, by load and check alike. (onnxruntime's Python binding prints
    "EP Error" lines to stdout before it raises on some of them: the error is still edgeship's.)"""
    data = _ort(mobile)
    b = _crafted(mobile, tmp_path, _flipped(data, at % len(data)))
    (code, out), (check_code, check_out) = _load_and_check(b, "fp32_ort")
    assert code in (0, 2) and (code == 0 or "BundleError: bundle " in out), out
    assert check_code in (0, 1, 2) and "Traceback" not in check_out, check_out
    if code == 0:
        assert "fp32_ort" in check_out, check_out  # it opens: check ran it
    elif "it did not open" not in out:  # refused as damaged (not passed over as unsupported here): so is check
        assert check_code == 2 and "models/fp32.ort" in check_out, check_out


def test_an_op_this_onnxruntime_does_not_know_is_passed_over_by_load_and_check_alike(mobile, tmp_path):
    """An op (or a kernel) this onnxruntime lacks may be the app's onnxruntime's (a newer one): the twin
    does not run here, load says why, and check names it as not checked instead of passing it."""
    b = _crafted(mobile, tmp_path, _renamed_op(_ort(mobile), b"Gemq"))
    (code, out), (check_code, check_out) = _load_and_check(b, "fp32_ort")
    assert code == 2 and "fp32_ort: it did not open" in out and "Gemq" in out, out
    assert check_code == 0 and "candidate fp32_ort: it did not open" in check_out, check_out


def test_an_ort_file_of_another_model_is_refused_for_its_io(mobile, tmp_path):
    b = _crafted(mobile, tmp_path, mobile["other"])
    (code, out), (check_code, check_out) = _load_and_check(b, "fp32_ort")
    assert code == 2 and "does not match manifest.json's io spec (inputs are ['inp'] in the model, ['x']" in out, out
    assert check_code == 2 and "does not match manifest.json's io spec" in check_out, check_out


def test_the_int8_twin_signed_as_the_fp32_one_fails_parity(mobile, tmp_path):
    b = _crafted(mobile, tmp_path, _ort(mobile, "int8_dynamic"))
    (code, out), (check_code, check_out) = _load_and_check(b, "fp32_ort")
    assert code == 0, out  # same inputs and outputs: it opens and runs ...
    assert check_code == 1 and "check FAILED" in check_out and "fp32_ort" in check_out, check_out  # ... and drifts


def test_an_onnx_file_renamed_to_ort_is_refused(mobile, tmp_path):
    b = _crafted(mobile, tmp_path, (mobile["bundle"] / "models" / "fp32.onnx").read_bytes())
    (code, out), (check_code, check_out) = _load_and_check(b, "fp32_ort")
    assert code == 2 and "says models/fp32.ort is 'ort' format, but the file is 'onnx' format" in out, out
    assert check_code == 2 and "is 'ort' format, but the file is 'onnx' format" in check_out, check_out


def test_an_ort_file_where_the_manifest_says_onnx_is_refused(mobile, tmp_path):
    b = _crafted(mobile, tmp_path, _ort(mobile), rel="models/fp32.onnx")
    (code, out), (check_code, check_out) = _load_and_check(b, "fp32")
    assert code == 2 and "says models/fp32.onnx is 'onnx' format, but the file is 'ort' format" in out, out
    assert check_code == 2 and "is 'onnx' format, but the file is 'ort' format" in check_out, check_out


def test_a_variant_pointed_at_another_variants_ort_file_fails_check(mobile, tmp_path):
    """fp32_ort's manifest entry names the int8 twin's (signed) file: it opens and runs (the same inputs
    and outputs), and check holds it to fp32's tolerance, which it fails."""
    b = Path(shutil.copytree(mobile["bundle"], tmp_path / "b.edgeship"))
    m = json.loads((b / "manifest.json").read_text())
    m["variants"]["fp32_ort"]["file"] = "models/int8_dynamic.ort"
    (b / "manifest.json").write_text(json.dumps(m))
    (code, out), (check_code, check_out) = _load_and_check(b, "fp32_ort")
    assert code == 0, out
    assert check_code == 1 and "check FAILED" in check_out, check_out
    assert re.search(r"│ fp32_ort │ onnxruntime\S* │ fp32_ort │ output │[^\n]*FAIL", check_out), check_out


@pytest.mark.parametrize("in_subgraph", [False, True])
def test_an_ort_file_with_external_data_is_refused_before_onnxruntime_reads_it(mobile, tmp_path, in_subgraph):
    """The ORT format can keep a tensor's data outside the file (``Tensor.external_data_offset``, read
    from a file beside the model): refused by edgeship's own walk of the flatbuffer."""
    from test_mobile import _crafted_ort

    b = _crafted(mobile, tmp_path, _crafted_ort(True, in_subgraph))
    (code, out), (check_code, check_out) = _load_and_check(b, "fp32_ort")
    assert code == 2 and "ORT-format model that keeps tensor 'secret_weight' in external data" in out, out
    assert check_code == 2 and "secret_weight" in check_out, check_out


def _shared_subgraphs(levels: int) -> bytes:
    """An ORT-format model of ``levels`` graphs, each one's node holding the one below twice (an
    attribute's ``graphs``): 2**levels graphs to walk in a file of a few kB."""
    import flatbuffers
    import onnxruntime.tools.ort_format_model  # noqa: F401  (puts ort_flatbuffers_py on sys.path)
    from ort_flatbuffers_py.fbs import Attribute as A
    from ort_flatbuffers_py.fbs import Graph as G
    from ort_flatbuffers_py.fbs import InferenceSession as S
    from ort_flatbuffers_py.fbs import Model as M
    from ort_flatbuffers_py.fbs import Node as N

    b = flatbuffers.Builder(0)
    G.GraphStart(b)
    g = G.GraphEnd(b)
    for _ in range(levels):
        A.AttributeStartGraphsVector(b, 2)
        b.PrependUOffsetTRelative(g)
        b.PrependUOffsetTRelative(g)
        graphs = b.EndVector()
        A.AttributeStart(b)
        A.AttributeAddGraphs(b, graphs)
        attr = A.AttributeEnd(b)
        N.NodeStartAttributesVector(b, 1)
        b.PrependUOffsetTRelative(attr)
        attrs = b.EndVector()
        N.NodeStart(b)
        N.NodeAddAttributes(b, attrs)
        node = N.NodeEnd(b)
        G.GraphStartNodesVector(b, 1)
        b.PrependUOffsetTRelative(node)
        nodes = b.EndVector()
        G.GraphStart(b)
        G.GraphAddNodes(b, nodes)
        g = G.GraphEnd(b)
    M.ModelStart(b)
    M.ModelAddGraph(b, g)
    model = M.ModelEnd(b)
    version = b.CreateString("6")
    S.InferenceSessionStart(b)
    S.InferenceSessionAddOrtVersion(b, version)
    S.InferenceSessionAddModel(b, model)
    b.Finish(S.InferenceSessionEnd(b), file_identifier=b"ORTM")
    return bytes(b.Output())


def test_subgraphs_shared_a_trillion_times_are_refused_not_walked(mobile, tmp_path):
    """edgeship's walk for external data stops after MAX_TABLES tables (seconds), not 2**40."""
    b = _crafted(mobile, tmp_path, _shared_subgraphs(40))
    (code, out), (check_code, check_out) = _load_and_check(b, "fp32_ort")
    assert code == 2 and "models/fp32.ort is marked as an ORT-format model" in out and "more than 2000000 tables" in out, out
    assert check_code == 2 and "more than 2000000 tables" in check_out, check_out


def test_profile_refuses_an_ort_twin_of_another_model(mobile, tmp_path, cli):
    """profile runs the bundle's files on feeds made from the manifest's io spec: a file that takes
    other inputs is an EdgeshipError before the timed calls (it was exit 3: onnxruntime's ValueError)."""
    b = _crafted(mobile, tmp_path, mobile["other"])
    code, out = cli("profile", b, "--target", "mobile", "--iterations", "2", "--warmup", "1", "--cold-start", "off")
    assert code == 2 and "does not take the feeds made from its io spec (feeds do not match the model's inputs " \
                         "(missing inp; unexpected x)" in out, out


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A MobileNet-style CNN (width 8) exported with static int8 and --target mobile."""
    import models
    import torch

    from edgeship.config import ExportConfig, LoadOptions
    from edgeship.pipeline import export

    d = tmp_path_factory.mktemp("ort-cnn")
    torch.manual_seed(0)
    torch.save(models.MobileNetish(width=8).state_dict(), d / "mnet.pt")
    cfg = ExportConfig(model=d / "mnet.pt", output=d / "cnn.edgeship", inputs=("x:1x3x32x32",),
                       load=LoadOptions(arch=arch("MobileNetish"), arch_kwargs={"width": 8}), exporter="torchscript",
                       torchscript=False, quantize=("static",), targets=("mobile",), tune=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0 if n == "fp32" else 2.0))
        return export(cfg).bundle


def _padded(data: bytes, pad: int) -> tuple[bytes, str]:
    """The twin with its first QLinearConv's first ``pads`` value set to ``pad`` (an int64 in the
    attribute's vector, found with onnxruntime's generated flatbuffers reader); and the node's name."""
    import struct

    import onnxruntime.tools.ort_format_model  # noqa: F401  (puts ort_flatbuffers_py on sys.path)
    from ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

    g = InferenceSession.GetRootAsInferenceSession(data, 0).Model().Graph()
    for i in range(g.NodesLength()):
        node = g.Nodes(i)
        for k in range(node.AttributesLength()):
            a = node.Attributes(k)
            if node.OpType() == b"QLinearConv" and a.Name() == b"pads" and a.IntsLength():
                out = bytearray(data)
                struct.pack_into("<q", out, a._tab.Vector(a._tab.Offset(22)), pad)  # Attribute.ints: slot 22
                return bytes(out), node.Name().decode()
    raise AssertionError("no QLinearConv with pads in the int8 twin")


def test_a_twin_edited_to_allocate_gigabytes_fails_under_an_os_memory_limit(cnn, tmp_path):
    """What no check of the file can catch: its attributes are the graph, and a graph allocates what it
    says. One pad of 2**24 in a QLinearConv (a single flipped byte in the 99 kB file does it too) asks
    onnxruntime for gigabytes per run; without a limit the process is killed by the OS for memory.
    Under a limit (trust.md: run untrusted bundles under OS limits) it is an InferenceError (exit 2) and
    a check failure (exit 1), never a crash."""
    data, node = _padded((cnn / "models" / "int8_static.ort").read_bytes(), 1 << 24)
    b = Path(shutil.copytree(cnn, tmp_path / "b.edgeship"))
    (b / "models" / "int8_static.ort").write_bytes(data)
    resign(b, "models/int8_static.ort")
    (code, out), (check_code, check_out) = _load_and_check(b, "int8_static_ort", "1x3x32x32", "--limit-gib=4")
    assert code == 2 and out.startswith("InferenceError: onnxruntime failed to run") and node in out, out
    assert "Failed to allocate memory" in out, out
    assert check_code == 1 and "check FAILED" in check_out and "int8_static_ort" in check_out, check_out
