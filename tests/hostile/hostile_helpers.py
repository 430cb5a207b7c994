"""Shared checks of the hostile-input suite: nothing written, nothing executed, nothing opened."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from bundle_zips import zip_tree  # noqa: F401  (the tests import it from here too)

import edgeship
from edgeship.bundle import MANIFEST, sha256_file

REPO = Path(edgeship.__file__).resolve().parents[1]


def snapshot(path: Path) -> dict:
    """Every file under ``path`` (or ``path`` itself) -> sha256; {} when absent."""
    path = Path(path)
    if not path.exists():
        return {}
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def temps_beside(out: Path) -> list[Path]:
    """Temporary siblings a bundle writer may leave (``.NAME.tmp-PID-...``)."""
    prefix = f".{Path(out).name}.tmp-"  # by prefix: a glob of the name would read "[v2]" or "**" as syntax
    return sorted(p for p in Path(out).parent.iterdir() if p.name.startswith(prefix))


def assert_untouched(out: Path, before: dict) -> None:
    """``out`` holds exactly what it held before (or is still absent), and no temporary is left."""
    assert snapshot(out) == before, f"{out} changed"
    assert not temps_beside(out), temps_beside(out)


def evil_payload(sentinel: Path):
    """An object whose unpickling would create ``sentinel``."""

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    return Evil()


def edit_manifest(bundle: Path, **changes) -> dict:
    m = json.loads((bundle / MANIFEST).read_text())
    m.update(changes)
    (bundle / MANIFEST).write_text(json.dumps(m))
    return m


def resign(bundle: Path, rel: str) -> None:
    """Update the manifest's sha256/size of ``rel``, as someone who edits a bundle on purpose would."""
    m = json.loads((bundle / MANIFEST).read_text())
    path = bundle / rel
    m["files"][rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    (bundle / MANIFEST).write_text(json.dumps(m))


class OrtSpy:
    """Records every onnxruntime.InferenceSession created while installed."""

    def __init__(self, monkeypatch):
        import onnxruntime as ort

        self.calls = []
        real = ort.InferenceSession

        def spy(*args, **kwargs):
            self.calls.append(args[0] if isinstance(args[0], str) else f"<{len(args[0])} bytes>")
            return real(*args, **kwargs)

        monkeypatch.setattr(ort, "InferenceSession", spy)


def python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


PY = sys.executable


@pytest.fixture
def sentinel(tmp_path):
    """A file that hostile payloads try to create; the test fails if one ever does."""
    path = tmp_path / "SENTINEL-code-was-executed"
    yield path
    assert not path.exists(), "a hostile input executed code"


PEAK_SCRIPT = """
import resource, sys
sys.argv = ["edgeship", *sys.argv[1:]]
from edgeship.cli import main
try:
    main()
finally:  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's peak across exec)
    hwm = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
    print("PEAK_RSS_KB", hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def cli_peak(*args, timeout: float = 120, cwd=None) -> tuple[int, str, int]:
    """Run the CLI in a child process: (exit code, its output, its own peak RSS in MiB)."""
    import re
    import subprocess

    p = subprocess.run([PY, "-c", PEAK_SCRIPT, *map(str, args)], env=python_env(), capture_output=True,
                       text=True, timeout=timeout, cwd=cwd)
    out = " ".join((p.stdout + p.stderr).split())
    m = re.search(r"PEAK_RSS_KB (\d+)", out)
    return p.returncode, out, int(m.group(1)) // 1024 if m else -1


def bundle_files(bundle) -> dict:
    """A folder bundle's files but its manifest, by relative path: what write_bundle takes again."""
    return {p.relative_to(bundle).as_posix(): p for p in sorted(bundle.rglob("*")) if p.is_file() and p.name != MANIFEST}


def bundle_manifest(bundle, name) -> dict:
    """Its manifest without what write_bundle adds (schema_version, files), renamed ``name``."""
    m = json.loads((bundle / MANIFEST).read_text())
    for key in ("schema_version", "files"):
        m.pop(key)
    return {**m, "name": name}
