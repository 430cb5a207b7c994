"""Which ops an ExportedProgram (.pt2) may call before edgeship runs its graph.

A .pt2 needs no pickle to be hostile: its graph is a list of op calls, and torch's verifier
accepts any registered op, including ``aten.from_file(path, shared=True)`` followed by
``fill_`` (a file write). Before anything runs the graph (the eager reference, the ONNX
exporters, ``check --against``, ``profile --compare-torch``), :func:`check_graph_ops` walks
every graph of the program (subgraphs of ``cond``/``while_loop``/``map`` included) and allows:

- ops of the ``aten`` and ``prims`` namespaces (tensor maths), except :data:`DENIED`;
- the symbolic-shape arithmetic the .pt2 format serialises (``operator``, ``math``, ``torch.sym_*``);
- the control-flow higher-order ops in :data:`CONTROL_FLOW`, whose subgraphs are checked too;
  ``auto_functionalized`` is judged by the op it wraps.

Anything else (a custom op namespace, ``call_module``/``call_method`` nodes, another
higher-order op) is refused, naming the op, unless the caller opted in (``--trust-ops``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeship.errors import UnsafeModelError

ALLOWED_NAMESPACES = ("aten", "prims")
# aten ops with file, process or console side effects (found by scanning every registered aten
# schema for str/Storage arguments): from_file maps (and with shared=True writes) any file,
# save writes one, _print and warn write to the console, set_ re-points a tensor at a storage
DENIED = frozenset({"from_file", "save", "_print", "warn", "set_"})
CONTROL_FLOW = frozenset({"cond", "while_loop", "map_impl", "scan", "invoke_subgraph",
                          "wrap_with_set_grad_enabled", "wrap_with_autocast"})
FUNCTIONALIZED = frozenset({"auto_functionalized", "auto_functionalized_v2"})
_GRAPH_NODES = frozenset({"placeholder", "output", "get_attr"})


def check_graph_ops(program: Any, path: Path) -> None:
    """Refuse an ExportedProgram whose graphs call an op outside the allow-list.

    Args:
        program: a ``torch.export.ExportedProgram``.
        path: the file it came from (for the message).

    Raises:
        UnsafeModelError: naming the first op that is not allowed and where it is called.
    """
    for node, why in _refused(program):
        raise UnsafeModelError(
            f"{path} is an ExportedProgram whose graph calls {_name(node.target)} (node {node.name!r}), "
            f"which {why}; edgeship runs only graphs of pure aten/prims tensor ops, because an op "
            "such as aten.from_file can read or write any file. Refused before running anything. "
            "Re-export the model from code you trust, or, only if you trust the file, pass --trust-ops."
        )


def _refused(program: Any) -> Iterator[tuple[Any, str]]:
    import torch

    for module in program.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op in _GRAPH_NODES:
                continue
            if node.op != "call_function":
                yield node, f"is a {node.op} node (not part of a pure exported graph)"
                continue
            why = _why_refused(node.target, node.args)
            if why:
                yield node, why


def _why_refused(target: Any, args: tuple) -> str | None:
    """Why ``target`` may not run, or None when it may."""
    import operator

    import torch

    if isinstance(target, torch._ops.OpOverload):
        namespace, name = target.namespace, target._schema.name.split("::")[-1]
        if namespace not in ALLOWED_NAMESPACES:
            return f"is not an aten or prims op (namespace {namespace!r})"
        if name in DENIED:
            return "has file, process or console side effects"
        return None
    if isinstance(target, torch._ops.HigherOrderOperator):
        if target.name() in CONTROL_FLOW:
            return None  # its subgraphs are GraphModules, checked on their own
        if target.name() in FUNCTIONALIZED and args:
            return _why_refused(args[0], ())
        return "is a higher-order op edgeship does not run from an untrusted file"
    if target is operator.getitem or getattr(target, "__module__", None) in ("_operator", "math") \
            or (getattr(target, "__name__", "").startswith("sym_") and getattr(torch, target.__name__, None) is target):
        return None
    return "is not a torch op"


def _name(target: Any) -> str:
    import torch

    if isinstance(target, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
        return str(target)
    return f"{getattr(target, '__module__', None) or ''}.{getattr(target, '__name__', None) or target!r}".lstrip(".")
