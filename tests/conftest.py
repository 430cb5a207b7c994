"""Shared fixtures: model files of every format, an exported bundle, and a CLI runner."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
MODELS_PY = TESTS / "models.py"


def pytest_collection_modifyitems(config, items):
    """``cuda`` tests run only where onnxruntime has a CUDA execution provider; ``no_cuda`` tests
    (the errors a missing GPU gives) only where it has none."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        marker = "no_cuda"
        skip = pytest.mark.skip(reason="CUDAExecutionProvider is installed: this checks the error without it")
    else:
        marker = "cuda"
        skip = pytest.mark.skip(reason="no CUDAExecutionProvider (install onnxruntime-gpu on a CUDA machine)")
    for item in items:
        if item.get_closest_marker(marker) is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def decoder_graph_speed():
    """The decoder export keeps the faster of its passing graphs (torch.onnx, onnxruntime-genai's builder)
    by timing them; tests get fixed figures instead (the builder's graph faster, as measured in B9), so
    which graph a test's bundle holds does not hang on the machine's load. The real timing function is
    returned for the test that runs it."""
    from edgeship.pipeline import decoder

    real = decoder._tokens_per_s
    mp = pytest.MonkeyPatch()
    mp.setattr(decoder, "_tokens_per_s", lambda sessions, prompt, pad, tokens=None: {
        n: {decoder.TORCH: 1000.0, decoder.BUILDER: 2000.0}[n] for n in sessions})
    yield real
    mp.undo()


def arch(name: str) -> str:
    return f"{MODELS_PY}:{name}"


def fake_p50s(ms_of):
    """A stand-in for interleave.quick_p50s giving each runner one block of ``ms_of(name)``; like the
    real one, it prepares the runners it is told to (open, parity) and leaves out those that fail."""
    from edgeship.profiling.interleave import Timings

    def quick_p50s(runners, feeds, prepare=None, **kw):
        prepare = prepare or {}
        return Timings({n: (ms_of(n),) for n in runners if n not in prepare or prepare[n]()})

    return quick_p50s


class FakeChildren:
    """Stands in for the cold-start child processes (``coldstart.spawn``): child n (from 0) answers
    session n + 1 ms and first call 0.25 ms, so each row's figure says which child gave it; the
    requests it got say which configuration each child was asked to open. ``fail[n]``: child n
    crashes, times out, fails with an error, or prints no result."""

    def __init__(self):
        self.requests: list = []  # coldstart.Request
        self.timeouts: list[float] = []
        self.argv: list[list[str]] = []
        self.fail: dict[int, str] = {}

    def __call__(self, argv, data, timeout_s):
        import json
        import signal
        import subprocess

        import edgeship.profiling.coldstart as coldstart

        n = len(self.requests)
        self.requests.append(coldstart.decode(b"".join(data)))
        self.timeouts.append(timeout_s)
        self.argv.append(argv)
        how = self.fail.get(n)
        if how == "timeout":
            raise subprocess.TimeoutExpired(argv, timeout_s)
        if how == "crash":
            return subprocess.CompletedProcess(argv, -signal.SIGSEGV, b"", b"")
        if how == "error":
            return subprocess.CompletedProcess(argv, 1, b"", b"warning: something\nModelLoadError: cannot open the model\n")
        if how == "garbage":
            return subprocess.CompletedProcess(argv, 0, b"hello\n", b"")
        result = json.dumps({"session_ms": n + 1.0, "first_run_ms": 0.25, "import_ms": 40.0 + n})
        return subprocess.CompletedProcess(argv, 0, f"a line a library printed\n{coldstart.MARKER} {result}\n".encode(), b"")


@pytest.fixture
def children(monkeypatch):
    """FakeChildren installed as the cold-start children: no process is started."""
    fake = FakeChildren()
    monkeypatch.setattr("edgeship.profiling.coldstart.spawn", fake)
    return fake


@pytest.fixture
def cli(capsys):
    """Run the edgeship CLI in-process; returns (exit_code, stdout + stderr)."""
    from edgeship.cli import main

    def run(*args: str) -> tuple[int, str]:
        old = sys.argv
        sys.argv = ["edgeship", *map(str, args)]
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        finally:
            sys.argv = old
        out = capsys.readouterr()
        return code, " ".join((out.out + out.err).split())

    return run


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """One MLP saved in every supported format, plus the feeds to call it with."""
    import models
    import torch

    d = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)  # the same MLP whatever ran before: its init draws from the global RNG
    m = models.trained(models.MLP())
    x = torch.randn(2, 10)
    torch.save(m.state_dict(), d / "mlp_state.pt")
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}},
               d / "mlp_ckpt.pt")
    torch.jit.save(torch.jit.trace(m, x), d / "mlp_ts.pt")
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, d / "mlp_ep.pt2")
    torch.save(m, d / "mlp_pickled.pt")
    torch.onnx.export(m, (x,), str(d / "mlp.onnx"), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return {"dir": d, "module": m, "x": x.numpy()}


@pytest.fixture(scope="session")
def mlp_bundle(files, tmp_path_factory):
    """A bundle of the MLP (state_dict + --arch, dynamic batch) exported once per session.

    Its variants are fp32 and int8_dynamic; fp32 is the CPU default whatever the machine's load:
    the select stage is given fixed timings (fp32 1 ms, the rest 2 ms) instead of measuring, so no
    test that loads the default variant depends on how busy the machine was during the export.
    """
    from edgeship.config import ExportConfig, LoadOptions
    from edgeship.pipeline import export

    out = tmp_path_factory.mktemp("bundles") / "mlp.edgeship"
    cfg = ExportConfig(model=files["dir"] / "mlp_state.pt", output=out, inputs=("x:1x10",), dynamic_batch=True,
                       load=LoadOptions(arch=arch("MLP")), exporter="torchscript")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("edgeship.profiling.interleave.quick_p50s", fake_p50s(lambda n: 1.0 if n == "fp32" else 2.0))
        return export(cfg).bundle


@pytest.fixture
def bundle_copy(mlp_bundle, tmp_path):
    """A private copy of the MLP bundle that a test may damage."""
    import shutil

    dst = tmp_path / "copy.edgeship"
    shutil.copytree(mlp_bundle, dst)
    return dst


def feeds_like(x: np.ndarray) -> dict:
    return {"x": x.astype(np.float32)}
