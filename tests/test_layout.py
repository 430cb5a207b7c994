"""The package's layout rules (README, Development): rooms import only rooms below them, no module
imports another's private name, and the torch-free rooms import neither torch nor onnx at module
level. Read from the source with ast, so a violation fails here before it ships."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgeship"
# top to bottom: a room may import itself and rooms below it, never one above it
ROOMS = ["cli", "pipeline", "profiling", "parity", "exporters", "model", "bundle", "hf", "runtimes", "root"]
TORCH_FREE = ("model", "bundle", "parity", "profiling", "runtimes.base", "runtimes.ort", "runtimes.lifecycle",
              "runtimes.deadline", "runtimes.external_data", "runtimes.onnx_wire", "runtimes.openvino", "spec", "errors",
              "config", "host", "telemetry", "schemas", "jsonout", "hf", "generate")
ALLOWED_UP = {("edgeship.__main__", "edgeship.cli")}  # `python -m edgeship` runs the CLI


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        out.append((name, ast.parse(path.read_text(), str(path))))
    return out


def _room(module: str) -> str:
    part = module.split(".")[1] if module.count(".") else ""
    return part if part in ROOMS else "root"


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            lines |= {n.lineno for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def _imports(tree: ast.Module) -> list[tuple[ast.stmt, str, list[str]]]:
    """(statement, module, names) of every import, at any depth; relative imports resolved as absolute."""
    out: list[tuple[ast.stmt, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node, a.name, []) for a in node.names]
    return out


MODULES = _modules()


def test_every_folder_is_a_package():
    """A folder without __init__.py is a namespace package, which setuptools' find leaves out of
    the wheel: every room must be a regular package."""
    missing = [d.name for d in PACKAGE.iterdir() if d.is_dir() and d.name != "__pycache__"
               and not (d / "__init__.py").is_file()]
    assert not missing, f"no __init__.py in {missing}"


def test_the_layout_has_every_room():
    rooms = {_room(name) for name, _ in MODULES}
    assert rooms == set(ROOMS)


@pytest.mark.parametrize("name,tree", MODULES, ids=[n for n, _ in MODULES])
def test_rooms_import_only_rooms_below(name, tree):
    skip = _type_checking_only(tree)
    mine = ROOMS.index(_room(name))
    up = [f"line {node.lineno}: {target}" for node, target, _ in _imports(tree)
          if target.startswith("edgeship.") and node.lineno not in skip and (name, target) not in ALLOWED_UP
          and ROOMS.index(_room(target)) < mine]
    assert not up, f"{name} ({_room(name)}) imports rooms above it: {up}"


@pytest.mark.parametrize("name,tree", MODULES, ids=[n for n, _ in MODULES])
def test_no_private_name_is_imported_from_another_module(name, tree):
    private = [f"line {node.lineno}: {target}.{n}" for node, target, names in _imports(tree)
               if target.startswith("edgeship") and target != name for n in names if n.startswith("_")]
    assert not private, f"{name} imports private names: {private}"


@pytest.mark.parametrize("name,tree", [(n, t) for n, t in MODULES if n.removeprefix("edgeship.").startswith(TORCH_FREE)],
                         ids=[n for n, _ in MODULES if n.removeprefix("edgeship.").startswith(TORCH_FREE)])
def test_torch_free_rooms_import_no_torch_or_onnx_at_module_level(name, tree):
    top = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    heavy = [target for node in top for _, target, _ in _imports(ast.Module(body=[node], type_ignores=[]))
             if target.split(".")[0] in ("torch", "onnx", "onnxscript", "transformers")]
    assert not heavy, f"{name} imports {heavy} at module level; import them inside the functions that need them"


def test_the_rules_catch_a_violation():
    """The checks above are not vacuous: a crafted module breaking each rule is caught."""
    tree = ast.parse("import torch\nfrom edgeship.cli.app import _private\n")
    _, target, names = _imports(tree)[1]
    assert ROOMS.index(_room(target)) < ROOMS.index(_room("edgeship.bundle.read"))
    assert names == ["_private"]
    assert _imports(ast.Module(body=[tree.body[0]], type_ignores=[]))[0][1] == "torch"
