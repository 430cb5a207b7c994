"""CUDA paths: run only where onnxruntime-gpu sees a GPU (the `cuda` marker skips elsewhere)."""

import json

import models
import numpy as np
import pytest
import torch
from conftest import arch

import edgeship
from edgeship.config import ExportConfig, LoadOptions
from edgeship.pipeline import export

pytestmark = pytest.mark.cuda


def test_load_on_cuda_matches_cpu(mlp_bundle, files):
    gpu = edgeship.load(mlp_bundle, target="cuda", variant="fp32")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    cpu = edgeship.load(mlp_bundle, target="cpu", variant="fp32")
    np.testing.assert_allclose(gpu(files["x"]), cpu(files["x"]), atol=1e-4, rtol=1e-3)
    assert edgeship.load(mlp_bundle, target="auto").target == "cuda"


def test_check_on_cuda(mlp_bundle, cli):
    code, out = cli("check", mlp_bundle, "--target", "cpu,cuda", "--table")
    assert code == 0, out
    assert "onnxruntime-cuda" in out


def test_export_auto_adds_fp16_and_a_cuda_default(tmp_path):
    path = tmp_path / "r.pt"
    torch.save(models.trained(models.ResNetish()).state_dict(), path)
    r = export(ExportConfig(model=path, output=tmp_path / "r.edgeship", inputs=("x:4x3x32x32",),
                            load=LoadOptions(arch=arch("ResNetish")), exporter="torchscript"))
    assert "fp16" in r.variants and r.variants["fp16"].passed["cuda"]
    manifest = json.loads((r.bundle / "manifest.json").read_text())
    assert set(manifest["defaults"]) == {"cpu", "cuda"}
    assert "cuda" in manifest["variants"]["fp32"]["latency_ms"]
