"""The public API's types, as an app sees them (edgeship ships py.typed): ``mypy --strict`` passes on
an app written as the README shows (tests/typing/app.py), the lazily imported names are edgeship's
own types rather than Any, and a wrong use fails, so the check has teeth. mypy runs in a subprocess
with tests/typing/mypy.ini, which finds edgeship in this checkout and silences edgeship's own
errors (``make lint`` checks those), never the app's."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import edgeship

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parent.parent
TYPING = ROOT / "tests" / "typing"
INIT = ROOT / "edgeship" / "__init__.py"


@pytest.fixture(scope="module")
def mypy(tmp_path_factory):
    """``mypy(path) -> (exit status, output)``: ``mypy --strict`` with tests/typing/mypy.ini, run
    outside the checkout (edgeship is found through the config's mypy_path), one cache for the module."""
    cache = tmp_path_factory.mktemp("mypy_cache")

    def run(path: Path) -> tuple[int, str]:
        r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--config-file", str(TYPING / "mypy.ini"),
                            "--cache-dir", str(cache), "--no-error-summary", "--hide-error-context", str(path)],
                           capture_output=True, text=True, cwd=cache, timeout=120)
        stray = [line for line in r.stdout.splitlines() if not line.startswith(str(path))]
        assert not stray, r.stdout  # only the app's own lines: edgeship's errors stay silent
        return r.returncode, r.stdout + r.stderr

    return run


def _write(tmp_path: Path, code: str) -> Path:
    path = tmp_path / "snippet.py"
    path.write_text(textwrap.dedent(code))
    return path


def _revealed(out: str) -> dict[int, str]:
    """{line: revealed type}, without ``builtins.`` (which mypy versions print or leave out)."""
    return {int(n): t.replace("builtins.", "") for n, t in re.findall(r':(\d+): note: Revealed type is "(.*)"', out)}


def test_the_readme_app_passes_mypy_strict(mypy):
    rc, out = mypy(TYPING / "app.py")
    assert rc == 0, out


def test_the_public_names_are_edgeships_types_not_any(mypy, tmp_path):
    rc, out = mypy(_write(tmp_path, """\
        import numpy as np
        import edgeship

        m = edgeship.load("b")
        x = np.ones((2, 3), np.float32)
        reveal_type(m)
        reveal_type(edgeship.Model)
        reveal_type(m({"x": x}))
        reveal_type(m(x=x))
        reveal_type(m.run({"x": x}))
        reveal_type(m(x))
        reveal_type(m(x).shape)
        reveal_type(m.inputs)
        reveal_type(m.precision)
        reveal_type(edgeship.export)
        reveal_type(edgeship.quantize)
        reveal_type(edgeship.check)
        reveal_type(edgeship.compare)
        reveal_type(edgeship.profile)
        reveal_type(edgeship.ExportConfig)
        reveal_type(edgeship.LoadOptions)
        reveal_type(edgeship.ProfileConfig)
        """))
    assert rc == 0, out
    t = _revealed(out)
    assert t[6] == "edgeship.model.Model", out
    assert t[7].startswith("def (bundle: edgeship.bundle.read.Bundle") and t[7].endswith("-> edgeship.model.Model"), out
    assert t[8] == t[9] == t[10] and t[8].startswith("dict[str, numpy.ndarray["), out  # numpy spells the rest
    assert t[11] == t[12] == "Any", out  # positional: one array, or a tuple for several outputs (Model.__call__)
    assert t[13] == "tuple[edgeship.spec.TensorSpec, ...]" and t[14] == "str", out
    returns = {15: "edgeship.pipeline.runner.ExportResult", 16: "edgeship.pipeline.runner.QuantizeResult",
               17: "edgeship.parity.report.ParityReport", 18: "edgeship.parity.report.ParityReport",
               19: "edgeship.profiling.profiler.ProfileReport", 20: "edgeship.config.ExportConfig",
               21: "edgeship.config.LoadOptions", 22: "edgeship.config.ProfileConfig"}
    assert {n: t[n].rsplit("-> ", 1)[-1] for n in returns} == returns, out


def test_a_wrong_use_fails_the_check(mypy, tmp_path):
    """The teeth: each line below is an error an app must be told about (before, all were Any)."""
    rc, out = mypy(_write(tmp_path, """\
        import numpy as np
        import edgeship

        m = edgeship.load("b")
        x = np.ones((2, 3), np.float32)
        shape = m({"x": x}).shape
        m(x, y=x)
        edgeship.lod("b")
        edgeship.load(b"zip", threads="2")
        n: int = m.precision
        """))
    assert rc == 1, out
    errors = {int(n) for n in re.findall(r":(\d+): error:", out)}
    assert errors == {6, 7, 8, 9, 10}, out
    assert re.search(r':6: error: "dict\[str, ndarray\[.*\]\]" has no attribute "shape"', out), out
    assert 'Module has no attribute "lod"' in out


def _type_checking_imports() -> dict[str, tuple[str, str]]:
    """{name: (module, attribute)} of ``edgeship/__init__.py``'s ``if TYPE_CHECKING:`` imports."""
    out = {}
    for node in ast.parse(INIT.read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module, ast.dump(imp)
                out.update({a.asname or a.name: (imp.module, a.name) for a in imp.names})
    return out


def test_the_type_checkers_imports_are_the_lazy_names():
    """What type checkers are shown is what ``edgeship.<name>`` gives at runtime, and every name is exported."""
    assert _type_checking_imports() == edgeship._LAZY
    assert set(edgeship._LAZY) <= set(edgeship.__all__)
    assert all(hasattr(edgeship, name) for name in edgeship.__all__)


def test_the_lazy_names_still_import_no_torch():
    code = ("import sys, edgeship\n"
            "edgeship.load, edgeship.Model, edgeship.LoadOptions, edgeship.ExportConfig\n"
            "heavy = [n for n in sys.modules if n.split('.')[0] in ('torch', 'onnx', 'onnxscript')]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
