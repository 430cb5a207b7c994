"""ONNX export: ``auto`` tries the dynamo exporter first and the TorchScript-based one after.

Dynamo cannot take a ScriptModule (a TorchScript archive), so ``auto`` sends those straight to
the TorchScript-based exporter. An export whose requested dynamic axes came out fixed (the
exporter specialised them) counts as failed in ``auto`` mode and falls back too. The file is
always saved as one ``.onnx`` below 2 GB (weights inline), with external data above that.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeship.errors import ExportError
from edgeship.exporters.onnx_errors import explain_failure, export_hint, unsupported_ops
from edgeship.exporters.onnx_guard import external_tensors
from edgeship.exporters.program import program_module
from edgeship.spec import IOSpec

log = logging.getLogger(__name__)

DEFAULT_OPSET = {"dynamo": 20, "torchscript": 17}
EXPORTERS = ("auto", "dynamo", "torchscript")
_TWO_GB = 2 * 1024**3


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    exporter: str
    opset: int | None
    notes: tuple[str, ...] = ()


def export_onnx(source, args: tuple, spec: IOSpec, path: Path, *, exporter: str = "auto",
                opset: int | None = None) -> OnnxExport:
    """Export ``source`` (nn.Module, ScriptModule or ExportedProgram) to ``path``.

    Raises:
        ExportError: every exporter tried failed; the message carries each one's reason.
    """
    import torch

    if exporter not in EXPORTERS:
        raise ExportError(f"unknown --exporter {exporter!r}; use one of {', '.join(EXPORTERS)}.")
    is_script = isinstance(source, torch.jit.ScriptModule)
    is_ep = isinstance(source, torch.export.ExportedProgram)
    if exporter == "auto":
        order = ["torchscript"] if is_script else ["dynamo", "torchscript"]
    else:
        order = [exporter]
    if is_script and "dynamo" in order:
        raise ExportError(
            "--exporter dynamo cannot export a TorchScript archive (torch.export does not take "
            "ScriptModules); use --exporter torchscript or auto."
        )
    notes, errors, raw = [], [], []
    if is_script and _returns_containers(source):
        source = _flat_outputs(source, args)
        notes.append("TorchScript archive returning a dict or nested outputs: flattened to a tuple (names from "
                      "the dict keys) for export")
    elif is_script and _takes_more(source, len(args)):
        source = _flat_outputs(source, args)  # its defaulted parameters keep their defaults, not graph inputs
        notes.append("TorchScript archive whose forward() has parameters the spec does not feed: traced with their "
                     "defaults for export")
    for name in order:
        chosen = opset or DEFAULT_OPSET[name]
        model = program_module(source, source.module()) if (is_ep and name == "torchscript") else source
        try:
            _run_exporter(name, model, args, spec, path, chosen)
            _check(path, spec, rename=name == "dynamo")
            if is_script:
                notes.append("TorchScript input: exported with the TorchScript-based exporter")
            return OnnxExport(path, name, chosen, tuple(notes))
        except Exception as e:
            log.debug("exporter error in full: %s", e)
            reason = explain_failure(e)
            errors.append(f"{name} exporter: {reason}")
            raw.append(str(e))
            log.info("%s exporter failed: %s", name, reason)
            later = order[order.index(name) + 1:]
            if later:
                notes.append(f"the {name} exporter failed: {reason}; tried the {later[0]} exporter next")
    hint = export_hint(" ".join(raw), order, is_script)
    ops = unsupported_ops(" ".join(raw))
    what = f" (unsupported op: {', '.join(ops)})" if ops else ""
    body = " | ".join(errors).rstrip(". ")
    raise ExportError(f"ONNX export failed{what}. {body}" + (f". Hint: {hint}." if hint else "."))


def copy_onnx(src: Path, dst: Path) -> int | None:
    """Copy a user's ONNX file (checked by ``onnx_guard``) to ``dst`` as one self-contained file.

    External data is read from beside ``src`` and inlined below 2 GB (kept external above it),
    so the copy does not depend on files left in the user's folder. Returns the default opset.
    """
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in external_tensors(model)):
        model = onnx.load(str(src))  # only after onnx_guard accepted every location
        big = sum(t.ByteSize() for t in external_tensors(model)) >= _TWO_GB
        onnx.save(model, str(dst), save_as_external_data=big, location=dst.name + ".data")
    else:
        shutil.copyfile(src, dst)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


@contextlib.contextmanager
def _quiet_torch_onnx_log():
    """torch's TorchScript-based exporter turns its C++ log on and prints the whole IR graph to
    stdout when an op fails; send that to the debug log instead."""
    import torch

    original = torch._C._jit_onnx_log
    torch._C._jit_onnx_log = lambda *parts: log.debug("torch.onnx: %s", " ".join(map(str, parts))[:4000])
    try:
        yield
    finally:
        torch._C._jit_onnx_log = original


def _run_exporter(name, model, args, spec: IOSpec, path: Path, opset: int) -> None:
    import torch

    dynamic_axes = {t.name: t.dynamic_axes for t in (*spec.inputs, *spec.outputs) if t.dynamic_axes}
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
            _quiet_torch_onnx_log():
        warnings.simplefilter("ignore")
        kwargs: dict[str, Any] = dict(
            input_names=spec.input_names, output_names=spec.output_names, opset_version=opset,
            dynamic_axes=dynamic_axes or None,
        )
        if name == "dynamo":
            if isinstance(model, torch.export.ExportedProgram):
                kwargs.pop("dynamic_axes")  # the program carries its own dynamic shapes
            # dynamo refuses output names that an internal value already has ('embedding' in a
            # transformer): export with its own names, then rename (dynamic_axes keyed by input only)
            kwargs.pop("output_names")
            if kwargs.get("dynamic_axes"):
                kwargs["dynamic_axes"] = {k: v for k, v in kwargs["dynamic_axes"].items() if k in spec.input_names}
            big = param_bytes(model) >= _TWO_GB
            torch.onnx.export(model, args, str(path), dynamo=True, external_data=big, **kwargs)
        else:
            torch.onnx.export(model, args, str(path), dynamo=False, **kwargs)
    log.debug("torch.onnx (%s) said: %s", name, sink.getvalue()[-2000:])


def rename_outputs(graph: Any, names: list[str]) -> bool:
    """Give the graph's outputs ``names``, moving any internal value that already has one aside.
    An output that is a graph input passed through (or a value output twice) gets an Identity node
    of its own. Returns whether anything changed."""
    from onnx import helper

    old = [o.name for o in graph.output]
    if old == list(names) or len(old) != len(names):
        return False
    sources = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for n in [n for n in graph.node if n.op_type == "Identity" and list(n.input) == list(n.output)]:
        graph.node.remove(n)  # torch 2.13's dynamo exporter writes Identity(x) -> x for an input returned as is
    taken = {v for n in graph.node for v in (*n.input, *n.output)} | sources
    mapping: dict[str, str] = {}
    copies: list[tuple[int, str, str]] = []  # (output index, value, new name)
    for i, (o, new) in enumerate(zip(old, names)):
        if o in sources or o in mapping:
            copies.append((i, o, new))
        else:
            mapping[o] = new
    for new in names:
        if new in taken and new not in old:
            mapping.setdefault(new, f"{new}__internal")

    def fix(values):
        for i, v in enumerate(values):
            if v in mapping:
                values[i] = mapping[v]

    for n in graph.node:
        fix(n.input)
        fix(n.output)
    copied = {i for i, _, _ in copies}
    for i, vi in enumerate(graph.output):
        if i not in copied:
            vi.name = mapping.get(vi.name, vi.name)
    for vi in graph.value_info:
        vi.name = mapping.get(vi.name, vi.name)
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for i, value, new in copies:
        graph.node.append(helper.make_node("Identity", [value if value in sources else mapping.get(value, value)],
                                           [new], name=f"{new}__identity"))
        graph.output[i].name = new
    return True


def param_bytes(model) -> int:
    """The bytes of a module's weights and buffers (0 where it has no ``state_dict``): about what
    its TorchScript archive or ONNX file takes on disk."""
    try:
        state = model.state_dict  # a method of modules, a dict of an ExportedProgram
        return sum(p.numel() * p.element_size() for p in (state() if callable(state) else state).values())
    except Exception:
        return 0


def _check(path: Path, spec: IOSpec, rename: bool) -> None:
    """Output names as asked (``rename``: the dynamo exporter's own names are replaced), a full
    onnx.checker pass, and every requested dynamic axis still symbolic. The file is parsed once."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if rename and rename_outputs(model.graph, spec.output_names):
        onnx.save(model, str(path))
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in external_tensors(model))
    onnx.checker.check_model(str(path) if external else model, full_check=True)  # > 2 GB: by path
    graph_inputs = {i.name: i for i in model.graph.input}
    weights = {i.name for i in model.graph.initializer}
    extra = [n for n in graph_inputs if n not in weights and n not in spec.input_names]
    if extra:
        raise ExportError(
            f"the ONNX graph has input(s) the spec does not: {', '.join(extra)} (the spec: {', '.join(spec.input_names)}); "
            "the exporter made a forward() parameter with a default (or a non-tensor argument) a graph input. "
            "Give it as an --input if it should be one, or bind it in the model (functools.partial, a wrapper)")
    for t in spec.inputs:
        if t.name not in graph_inputs:
            raise ExportError(f"the ONNX graph has no input {t.name!r} (has {list(graph_inputs)})")
        dims = graph_inputs[t.name].type.tensor_type.shape.dim
        for axis, sym in t.dynamic_axes.items():
            if axis < len(dims) and not dims[axis].dim_param:
                raise ExportError(
                    f"input {t.name!r} axis {axis} ({sym!r}) was specialised to "
                    f"{dims[axis].dim_value} by the exporter; the model's code fixes that size"
                )


def _returns_containers(sm: Any) -> bool:
    """Whether a ScriptModule's forward returns anything but a tensor or a flat tuple of tensors."""
    try:
        ret = str(sm.forward.schema.returns[0].type)
    except (AttributeError, IndexError, RuntimeError):
        return False
    return not re.fullmatch(r"Tensor|\(Tensor(, Tensor)*\)|Tuple\[Tensor(, Tensor)*\]", ret)


def _takes_more(sm: Any, n: int) -> bool:
    """Whether a ScriptModule's forward has more parameters than the ``n`` inputs given."""
    from edgeship.runtimes.torch_eager import forward_params

    return len(forward_params(sm) or ()) > n


def _flat_outputs(sm: Any, args: tuple) -> Any:
    """``sm`` traced inside a wrapper that returns its outputs as a flat tuple, in the order (and
    so with the names) the eager reference flattened them: dict keys, nested tuples."""
    import torch

    from edgeship.runtimes.torch_eager import flatten_outputs, wrap_module

    flat = wrap_module(sm, lambda model, inputs: tuple(t for _, t in flatten_outputs(model(*inputs))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(flat, args, strict=False, check_trace=False)
