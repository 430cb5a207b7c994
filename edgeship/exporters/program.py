"""ExportedProgram (.pt2) helpers: its tensor inputs (positional and keyword), a module taking them
positionally, its own symbolic dims and their ranges, and capturing what ``torch.export.load`` only logs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


def program_inputs(ep: Any) -> tuple[tuple[str, Any], ...]:
    """``(name, example tensor)`` of each tensor input of the program, in its own input order: the
    positional arguments, then the keyword ones (``torch.export.export(m, (), kwargs={...})``, as
    Hugging Face users export), flattened as the program flattens them. Constant inputs (an int
    the program specialised) are left out. Empty when the program carries no example inputs."""
    import torch
    from torch.utils import _pytree as pytree

    example = getattr(ep, "example_inputs", None)
    if not example:
        return ()
    leaves = pytree.tree_leaves(example)
    names = list(ep.graph_signature.user_inputs)
    if len(names) != len(leaves):  # not the layout this was written for: name them by position
        names = [f"input_{i}" for i in range(len(leaves))]
    return tuple((str(n), leaf) for n, leaf in zip(names, leaves) if isinstance(leaf, torch.Tensor))


def program_module(ep: Any, module: Any) -> Any:
    """``module`` (``ep.module()``) as a module whose ``forward`` takes the program's tensor inputs
    positionally, in :func:`program_inputs` order, and calls it with the positional and keyword
    arguments the program was exported with (constant inputs at their example values). The wrapper's
    ``train()``/``eval()`` leave the program's module alone (it refuses them), so the TorchScript-based
    exporter can take it."""
    import torch
    from torch.utils import _pytree as pytree

    from edgeship.runtimes.torch_eager import wrap_module

    example = getattr(ep, "example_inputs", None)
    if not example:
        return module
    leaves, spec = pytree.tree_flatten(example)
    tensor_at = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]

    def call(model: Any, inputs: Any) -> Any:
        flat = list(leaves)
        for i, t in zip(tensor_at, inputs):
            flat[i] = t
        a, kw = pytree.tree_unflatten(flat, spec)
        return model(*a, **kw)

    return wrap_module(module, call, [n for n, _ in program_inputs(ep)])


def program_dims(ep: Any) -> tuple[tuple[tuple[str, int, str], ...], tuple[tuple[str, int, int], ...]]:
    """An ExportedProgram's symbolic input axes, read from its placeholders, and their ranges.

    Each plain symbol gets one name: ``batch`` where it is some input's axis 0, else
    ``<input>_dim<axis>`` of its first use. Derived sizes (``2*s0``) are not inputs of their own
    and are left out. Returns ((input, axis, symbol), ...) and ((symbol, lower, upper), ...)."""
    names: dict[str, str] = {}
    axes: list[tuple[str, int, str]] = []
    user = set(ep.graph_signature.user_inputs)
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in user]
    for node in placeholders:
        val = node.meta.get("val")
        for axis, d in enumerate(getattr(val, "shape", ())):
            expr = getattr(getattr(d, "node", None), "expr", None)
            if expr is None or not getattr(expr, "is_Symbol", False):
                continue
            key = str(expr)
            if key not in names:
                wanted = "batch" if axis == 0 and "batch" not in names.values() else f"{node.name}_dim{axis}"
                names[key] = wanted
            axes.append((node.name, axis, names[key]))
    ranges = []
    for sym, vr in getattr(ep, "range_constraints", {}).items():
        if str(sym) in names:
            ranges.append((names[str(sym)], _bound(vr.lower, 1), _bound(vr.upper, 2**31 - 1)))
    return tuple(axes), tuple(ranges)


@contextlib.contextmanager
def captured_log(name: str, into: list[str]) -> Iterator[None]:
    """Collect what logger ``name`` says (with tracebacks) into ``into`` instead of printing it."""
    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            into.append(self.format(record) + (logging.Formatter().formatException(record.exc_info)
                                               if record.exc_info else ""))

    logger = logging.getLogger(name)
    handlers, propagate = logger.handlers, logger.propagate  # torch attaches its own handler here
    logger.handlers, logger.propagate = [Collect()], False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = handlers, propagate
        log.debug("%s said: %s", name, "\n".join(into)[-4000:])


def _bound(value: Any, default: int) -> int:
    try:
        return int(value)
    except Exception:  # sympy's infinities raise TypeError, OverflowError or AttributeError
        return default
