"""ExportedProgram (.pt2) helpers: its own symbolic dims and their ranges, and capturing what
``torch.export.load`` only logs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


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
