"""ExportedProgram (.pt2) helpers: reading one safely, its tensor inputs (positional and keyword), a
module taking them positionally, its own symbolic dims and their ranges."""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeship.config import LoadOptions
from edgeship.errors import ModelLoadError, UnsafeModelError, brief
from edgeship.exporters.usercode import import_user_code

log = logging.getLogger(__name__)
_MISSING = re.compile(r"Deserializing ([A-Za-z_][\w.]*)\.(\w+) in pytree is not registered")
_MAX_IMPORTS = 16  # output classes from distinct modules a program may name


def read_program(path: Path, options: LoadOptions) -> Any:
    """``torch.export.load`` of ``path``, unpickling nothing that could run code (unless
    ``--trust-pickle``), after ``--import``/``--code``.

    A program's outputs may be classes that torch's pytree knows only once their module is imported
    (Hugging Face's ``transformers.modeling_outputs.CausalLMOutputWithPast``: transformers 5 registers
    each output class when its submodule is imported, not with the package). When the program names
    such a module inside a package given with ``--import`` (``--import transformers``), that module is
    imported and the load retried; a module outside those packages is never imported because a file
    named it.

    Raises:
        UnsafeModelError: the archive holds pickled objects the safe loader refuses.
        ModelLoadError: torch cannot read it, or an output class's module was not named by --import.
    """
    import torch

    import_user_code(options)  # --import/--code first: pytree must know the program's output classes
    imported: list[str] = []
    while True:
        refused: list[str] = []
        said: list[str] = []  # torch.export.load logs the real cause as a warning, then raises a generic error
        try:
            with contextlib.nullcontext() if options.trust_pickle else _only_safe_unpickling(refused), \
                    captured_log("torch.export", said):
                return torch.export.load(str(path))
        except Exception as e:
            if refused:
                raise UnsafeModelError(
                    f"{path} is an ExportedProgram whose archive holds pickled Python objects that the "
                    f"safe loader refuses ({refused[0]}); torch.export.load would unpickle them with "
                    "weights_only=False and run any code they carry, so it was refused. Re-save it with "
                    "torch.export.save from code you trust, or, only if you trust the file, pass --trust-pickle."
                ) from e
            missing = _MISSING.search(" ".join([str(e), *said]))
            if not missing:
                raise ModelLoadError(f"torch.export.load could not read {path}: {brief(e)}") from e
            module, cls = missing.groups()
            if module in imported or len(imported) >= _MAX_IMPORTS or not _named_by_import(module, options):
                raise _unregistered(path, module, cls, options, module in imported) from e
            try:
                importlib.import_module(module)
            except Exception as e2:
                raise ModelLoadError(f"{path}: the program returns {module}.{cls}; importing {module} (inside a "
                                     f"package you gave with --import) failed: {brief(e2)}") from e2
            imported.append(module)
            log.info("imported %s for the program's output class %s", module, cls)


def _named_by_import(module: str, options: LoadOptions) -> bool:
    """Whether ``module`` is a package given with --import or inside one."""
    return any(module == name or module.startswith(name + ".") for name in options.imports)


def _unregistered(path: Path, module: str, cls: str, options: LoadOptions, tried: bool) -> ModelLoadError:
    if tried:
        return ModelLoadError(
            f"{path}: the program returns {module}.{cls}; {module} was imported, but it does not register "
            f"{cls} with torch's pytree under that name. Register it (torch.export.register_dataclass or "
            "torch.utils._pytree.register_pytree_node with serialized_type_name) in a module you pass with --import.")
    return ModelLoadError(
        f"{path}: the program returns {module}.{cls}, a class torch's pytree does not know until its module is "
        f"imported; pass --import {module} (the module that defines it; a package given with --import, such as "
        f"--import {module.split('.')[0]}, lets edgeship import the module the program names inside it) so "
        "torch.export.load can rebuild its outputs.")


@contextlib.contextmanager
def _only_safe_unpickling(refused: list):
    """While ``torch.export.load`` runs, allow no unpickling that could execute code.

    torch 2.13 unpickles parts of a .pt2 with ``weights_only=False``: the sample inputs (after a
    failed safe load, silently), weights and constants marked ``use_pickle``, and "opaque"
    constants with plain ``pickle.loads``. Here every ``torch.load`` is forced to
    ``weights_only=True`` and raw unpickling is refused; what was refused lands in ``refused``.
    A .pt2 that torch.export.save wrote from ordinary tensors needs none of it. The patches are
    process-wide for the duration of the call (export is single-threaded).
    """
    import pickle

    import torch

    real_load, real_loads, real_obj = torch.load, pickle.loads, torch._C._pickle_load_obj

    def safe_load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            return real_load(f, *args, **kwargs)
        except pickle.UnpicklingError as e:
            refused.append(brief(e))
            raise

    def refuse(*args, **kwargs):
        refused.append("a raw pickled object")
        raise pickle.UnpicklingError("edgeship refused to unpickle a raw object from the archive")

    torch.load, pickle.loads, torch._C._pickle_load_obj = safe_load, refuse, refuse
    try:
        yield
    finally:
        torch.load, pickle.loads, torch._C._pickle_load_obj = real_load, real_loads, real_obj




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


def rename_reserved(ep: Any) -> dict[str, str]:
    """Rename, in ``ep`` itself, each top-level submodule, parameter or buffer named like an attribute
    torch.fx.GraphModule has of its own (``meta``, ``graph``, ``code``...) to that name with a
    trailing ``_``. torch 2.13 cannot unlift such a program: ``ep.module()`` and the dynamo
    exporter's decompositions look the weights up under GraphModule's own ``meta`` dict and fail
    ("references nonexistent attribute fc of meta"). Only the state's names change (its targets in
    the graph signature, the state_dict and constants keys); the graph and its results do not.
    Returns {old: new}, empty when nothing collides."""
    import torch

    reserved = set(dir(torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph())))
    specs = [s for s in ep.graph_signature.input_specs if getattr(s, "target", None)]
    taken = {s.target.split(".")[0] for s in specs}
    rename: dict[str, str] = {}
    for head in sorted(taken & reserved):
        new = head + "_"
        while new in taken or new in reserved:
            new += "_"
        rename[head] = new
    if not rename:
        return rename

    def renamed(target: str) -> str:
        head, dot, rest = target.partition(".")
        return rename.get(head, head) + dot + rest

    for s in specs:
        s.target = renamed(s.target)
    for table in (ep.state_dict, ep.constants):
        if isinstance(table, dict):
            items = list(table.items())
            table.clear()
            table.update((renamed(k), v) for k, v in items)
    return rename


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
