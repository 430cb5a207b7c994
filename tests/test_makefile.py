"""`make test`'s JavaScript step (js-test) on a machine with node and npm but no reachable registry:
npm ci fails, and make prints a skip message and goes on (as web-deps does), instead of stopping
before pytest. Run against a copy of the Makefile with a fake node and npm, so nothing is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("no make on PATH")
    (tmp_path / "js").mkdir()
    for f in ("Makefile", "pyproject.toml", "constraints.txt", "js/package.json", "js/package-lock.json"):
        shutil.copy(ROOT / f, tmp_path / f)
    (tmp_path / "stamp").touch()  # newer than pyproject.toml: the venv is not built
    return tmp_path


def _fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\n" + body)
    (bin_dir / name).chmod(0o755)


def _js_test(project: Path, npm: str) -> subprocess.CompletedProcess:
    _fake(project / "bin", "node", "exit 0\n")
    _fake(project / "bin", "npm", f'echo "$@" >> {project / "npm-calls"}\n{npm}')
    env = {**os.environ, "PATH": f"{project / 'bin'}:{os.environ['PATH']}"}
    env.pop("MAKEFLAGS", None)
    return subprocess.run(["make", "-C", str(project), "js-test", f"STAMP={project / 'stamp'}"], env=env,
                          capture_output=True, text=True, timeout=60)


def test_an_unreachable_npm_registry_skips_the_js_tests_with_a_message(project):
    offline = 'case "$1" in ci) echo "npm error FetchError: getaddrinfo ENOTFOUND registry.npmjs.org" >&2; exit 1;; esac\n'
    r = _js_test(project, offline)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "npm ci --prefix js failed" in r.stdout and "skipping the JavaScript loader's tests" in r.stdout
    calls = (project / "npm-calls").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("ci ") and "--fetch-timeout=30000" in calls[0] \
        and "--fetch-retries=1" in calls[0]  # npm test never ran


def test_a_failing_js_test_still_fails_make(project):
    r = _js_test(project, 'case "$1" in ci) mkdir -p js/node_modules; touch js/node_modules/.package-lock.json;; '
                          'test) exit 1;; esac\n')
    assert r.returncode != 0, r.stdout + r.stderr
    assert [c.split()[0] for c in (project / "npm-calls").read_text().splitlines()] == ["ci", "test"]
