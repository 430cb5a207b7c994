"""Issue 20 item 15: ``edgeship.load`` and a call write nothing outside the bundle (and Python's own
caches): onnxruntime wrote ``~/.cache/Microsoft/.../onnxruntime.db`` and ``$TMPDIR/.ses`` and
OpenVINO ``~/intel/openvino_ga_cid``, for their telemetry. Each check runs in a fresh process with
a fresh ``HOME``, ``TMPDIR`` and working folder. (The telemetry uploads themselves, DNS lookups of
the collectors, are not tested here: the machines that run the suite have no network. With the
uploaders never initialised there is nothing to send.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import edgeship

REPO = Path(edgeship.__file__).resolve().parents[1]


def snapshot(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}

# what makes onnxruntime or openvino-telemetry stay quiet on their own (CI detection); removed so
# the test sees what a user's machine sees
QUIETING = ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL", "CODEBUILD_BUILD_ID",
            "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER", "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI",
            "ORT_RUNNING_UNIT_TESTS", "ORT_DISABLE_TELEMETRY", "ORT_TELEMETRY_DISABLED", "EDGESHIP_RUNTIME_TELEMETRY")

SCRIPT = r"""
import os, sys
import numpy as np
import edgeship
bundle, runtime = sys.argv[1], sys.argv[2]
m = edgeship.load(bundle, runtime=None if runtime == "auto" else runtime)
y = m(np.ones((2, 10), np.float32))
m(np.ones((3, 10), np.float32))
print("ran", m.runtime, y.shape, os.environ.get("ORT_DISABLE_TELEMETRY"))
"""


def _fresh(tmp_path, **extra):
    dirs = {k: tmp_path / k for k in ("home", "tmp", "cwd")}
    for d in dirs.values():
        d.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in QUIETING and not k.startswith("XDG_")}
    env.update(HOME=str(dirs["home"]), TMPDIR=str(dirs["tmp"]), PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), **extra)
    return dirs, env


def _written(dirs) -> dict:
    return {k: sorted(str(p.relative_to(d)) for p in d.rglob("*")) for k, d in dirs.items() if any(d.iterdir())}


def _runtimes():
    out = ["onnxruntime"]
    try:
        import openvino  # noqa: F401

        out.append("openvino")
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("runtime", _runtimes())
def test_load_and_call_write_nothing_outside_the_bundle(mlp_bundle, tmp_path, runtime):
    dirs, env = _fresh(tmp_path)
    before = snapshot(mlp_bundle)
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(mlp_bundle), runtime], env=env, cwd=dirs["cwd"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and f"ran {runtime}" in p.stdout, p.stderr
    assert _written(dirs) == {}, f"written outside the bundle: {_written(dirs)}"
    assert snapshot(mlp_bundle) == before


def test_the_cli_writes_nothing_in_home_or_tmpdir_either(mlp_bundle, tmp_path):
    dirs, env = _fresh(tmp_path)
    p = subprocess.run([sys.executable, "-m", "edgeship", "check", str(mlp_bundle), "--candidates", "all"], env=env,
                       cwd=dirs["cwd"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert _written(dirs) == {}, f"written: {_written(dirs)}"


@pytest.mark.parametrize("runtime", _runtimes())
def test_profile_with_its_cold_start_children_writes_nothing(mlp_bundle, tmp_path, runtime):
    """``edgeship profile`` measures cold start in a fresh Python process per configuration (on by
    default): those children import the runtime too, and must import it as edgeship does (a plain
    ``import openvino`` there left its telemetry on: ``Core()`` wrote ``~/intel/openvino_ga_cid``)."""
    dirs, env = _fresh(tmp_path)
    p = subprocess.run([sys.executable, "-m", "edgeship", "profile", str(mlp_bundle), "--runtime", runtime,
                        "--variant", "fp32", "--threads", "1", "--batch", "1", "--warmup", "1", "--duration", "0.1",
                        "--cold-start", "fresh"], env=env, cwd=dirs["cwd"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "cold start not measured" not in p.stdout + p.stderr, p.stdout + p.stderr
    assert _written(dirs) == {}, f"written: {_written(dirs)}"


def test_telemetry_can_be_turned_back_on(mlp_bundle, tmp_path):
    """EDGESHIP_RUNTIME_TELEMETRY=1 leaves onnxruntime as it comes (its variable unset)."""
    dirs, env = _fresh(tmp_path, EDGESHIP_RUNTIME_TELEMETRY="1")
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(mlp_bundle), "onnxruntime"], env=env, cwd=dirs["cwd"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("None"), p.stdout + p.stderr


def test_a_users_own_setting_wins(mlp_bundle, tmp_path):
    dirs, env = _fresh(tmp_path, ORT_DISABLE_TELEMETRY="0")
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(mlp_bundle), "onnxruntime"], env=env, cwd=dirs["cwd"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith(" 0"), p.stdout + p.stderr


def test_import_edgeship_does_not_import_the_runtimes():
    code = "import sys, edgeship; print([m for m in ('onnxruntime', 'openvino', 'torch', 'onnx') if m in sys.modules])"
    p = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                       text=True, timeout=120)
    assert p.stdout.strip() == "[]", p.stdout + p.stderr
