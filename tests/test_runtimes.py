"""Conformance: every runner gives the same outputs on the same small models and feeds."""

import models
import numpy as np
import pytest

from edgeship.bundle.golden import make_samples
from edgeship.errors import SpecError
from edgeship.runtimes.ort import OrtRunner
from edgeship.runtimes.torch_eager import TorchEagerRunner
from edgeship.runtimes.torchscript import TorchScriptRunner
from edgeship.spec import IOSpec, TensorSpec

CASES = {
    "mlp": (models.MLP, (TensorSpec("x", "float32", ("batch", 10)),), ("y",)),
    "multi_io": (models.MultiIO, (TensorSpec("feats", "float32", ("batch", 6)),
                                  TensorSpec("ids", "int64", ("batch", 5))), ("logits", "hidden")),
    "resnetish": (models.ResNetish, (TensorSpec("img", "float32", ("batch", 3, 16, 16)),), ("logits",)),
}


def _runners(case, tmp_path):
    import torch

    cls, inputs, outputs = CASES[case]
    module = models.trained(cls())
    spec = IOSpec(inputs, tuple(TensorSpec(n) for n in outputs))
    samples = make_samples(inputs, seed=1)
    args = tuple(torch.from_numpy(samples[0].feeds[t.name]) for t in inputs)
    path = tmp_path / "m.onnx"
    torch.onnx.export(module, args, str(path), dynamo=False, input_names=list(spec.input_names),
                      output_names=list(outputs),
                      dynamic_axes={t.name: t.dynamic_axes for t in inputs})
    ts = torch.jit.trace(module, args, strict=False)
    return spec, samples, [TorchEagerRunner(spec, module), TorchScriptRunner(spec, ts), OrtRunner(spec, path)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_runner_agrees_with_eager(case, tmp_path):
    spec, samples, runners = _runners(case, tmp_path)
    assert len({s.sizes["batch"] for s in samples}) == 2  # both batch sizes are exercised
    for sample in samples:
        ref = runners[0].infer(sample.feeds)
        assert list(ref) == spec.output_names
        for r in runners[1:]:
            with r:
                got = r.infer(sample.feeds)
            assert list(got) == spec.output_names, r.name
            for name in ref:
                np.testing.assert_allclose(got[name], ref[name], atol=1e-4, rtol=1e-3, err_msg=r.name)


@pytest.mark.parametrize("case", ["mlp"])
def test_every_runner_validates_feeds(case, tmp_path):
    spec, samples, runners = _runners(case, tmp_path)
    for r in runners:
        with pytest.raises(SpecError, match="expects dtype float32, got float64"):
            r.infer({"x": np.zeros((1, 10))})
        with pytest.raises(SpecError, match=r"\(missing x\b"):
            r.infer({})


def test_ort_runner_unknown_target():
    from edgeship.errors import TargetUnavailableError
    from edgeship.runtimes.ort import providers_for

    with pytest.raises(TargetUnavailableError, match="unknown target 'gpu9'"):
        providers_for("gpu9")


@pytest.mark.no_cuda
def test_ort_runner_missing_cuda_target():
    from edgeship.errors import TargetUnavailableError
    from edgeship.runtimes.ort import providers_for

    with pytest.raises(TargetUnavailableError, match="install onnxruntime-gpu"):
        providers_for("cuda")
