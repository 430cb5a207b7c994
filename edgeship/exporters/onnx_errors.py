"""What an ONNX exporter's failure means, in one line, and what to try next.

torch's exporters bury the cause: the TorchScript-based one ends its message with the IR of the
value it choked on (the last line reads ``) (type 'Tensor')``), the dynamo one wraps it in its
pass manager's report. :func:`explain_failure` finds the cause and where it happened (the user's
file and line, the module, the op); :func:`export_hint` suggests only what can work (never a
higher ``--opset`` for an op no opset translates, never the dynamo exporter for a TorchScript
archive).
"""

from __future__ import annotations

import contextlib
import importlib
import re
from pathlib import Path

from edgeship.errors import brief

_OPS = re.compile(r"operator '([\w:.]+)'|op='([\w.]+)'")
_OBJECT_REPR = re.compile(r"<([\w.]+?)(?: object)? at 0x[0-9a-fA-F]+>")
_USER_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\w+)')
_CAUSE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$", re.M)
# torch.onnx's SymbolicValueError: "<cause>  [Caused by the value '73 defined in (... scope: A::/pkg.Class::attr ...)"
_SYMBOLIC = re.compile(r"([^\n]*?)\s*\[Caused by the value (.*?)\]", re.S)
_SCOPE = re.compile(r"scope: (\S+)")
_NO_TYPE_INFO = ("tensor of unknown rank", "UNKNOWN_SCALAR", "unknown scalar type", "unknown shape")
ARCH_FIX = ("export the nn.Module itself instead: save its weights (torch.save(model.state_dict(), 'model.pt')) and "
            "pass --arch module:factory (the dynamo exporter takes an nn.Module)")


def explain_failure(e: BaseException) -> str:
    """An exporter's failure in one readable line: where torch says it happened (the user's file
    and line, the module, the op), the underlying error rather than a wrapper's or the IR dump
    after it, no object addresses, and what a known cryptic message means."""
    text = str(e)
    reason = _OBJECT_REPR.sub(r"\1", brief(e, limit=600))
    where: list[str] = []
    causes = [m for m in _CAUSE.findall(text) if "PassManager" not in m[1]]
    symbolic = _SYMBOLIC.search(text)
    if symbolic and symbolic.group(1).strip():  # the TorchScript-based exporter: cause first, the IR after
        reason = " ".join(symbolic.group(1).split())
        where += _module_of(symbolic.group(2))
    elif "pass" in reason and "PassManager" in text and causes:  # onnx_ir wraps the real error in its pass manager
        kind, cause = causes[-1]
        cause = _OBJECT_REPR.sub(r"\1", cause)[:300]
        reason = f"an ONNX graph pass failed: {kind}: {cause}"
    if "Unable to cast Python instance of type" in text:
        reason += (" (the exporter met a Python value it cannot trace: a non-tensor input or output such as a "
                   "dataclass, a dict of non-tensors or None; return tensors, or bind inputs by name with --input "
                   "names that match forward()'s parameters)")
    frames = [f for f in _USER_FRAME.findall(text) if "site-packages" not in f[0] and "/torch/" not in f[0]]
    where = ([f"{Path(frames[-1][0]).name}:{frames[-1][1]} in {frames[-1][2]}()"] if frames else []) + where
    where += [f"op {op}" for op in unsupported_ops(text)[:2]]
    return (f"[{', '.join(where)}] " if where else "") + reason


def _module_of(value: str) -> list[str]:
    """``inside nn.MultiheadAttention 'attn'`` from the scope torch gives the value it failed on."""
    scope = _SCOPE.search(value)
    if not scope:
        return []
    parts = [(cls, attr) for cls, attr in re.findall(r"([\w.]+)::(\w*)", scope.group(1)) if "." in cls]
    if not parts:
        return []
    cls, attr = parts[-1]
    cls = re.sub(r"^torch\.nn\.modules\.\w+\.", "nn.", cls)
    return [f"inside {cls}" + (f" {attr!r}" if attr else "")]


def unsupported_ops(text: str) -> list[str]:
    """The ops an exporter said it cannot translate (``aten::...`` or ``prims....``), in order."""
    return list(dict.fromkeys(a or b for a, b in _OPS.findall(text)))


def _opsets_with(op: str) -> list[int] | None:
    """The opsets in which the TorchScript-based exporter translates ``op`` (``aten::x``), from its
    own registry; None where that cannot be read (another torch, a dynamo op)."""
    if not op.startswith("aten::"):
        return None
    try:
        from torch.onnx import _constants
        from torch.onnx._internal.torchscript_exporter import registration

        newest = _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
        for v in range(7, newest + 1):  # each module registers its opset's translations when imported
            with contextlib.suppress(ImportError):
                importlib.import_module(f"torch.onnx._internal.torchscript_exporter.symbolic_opset{v}")
        return [v for v in range(7, newest + 1) if registration.registry.is_registered_op(op, v)]
    except Exception:  # a private API: torch may move it
        return None


def export_hint(text: str, tried: list[str] | None = None, script: bool = False) -> str:
    """What to try next. Never a loop: a TorchScript archive is not sent to the dynamo exporter
    (it refuses ScriptModules); --opset is suggested only where a higher opset translates the op
    (or where torch cannot say); a ``prim::`` op or a value whose type the archive does not carry
    is not sent to --opset, which cannot help it. For a TorchScript archive the fix that works is
    the nn.Module itself (a state_dict with --arch)."""
    untried = [x for x in ("dynamo", "torchscript") if x not in (tried or []) and not (script and x == "dynamo")]
    ops = unsupported_ops(text)
    if ops and all(op.startswith("prim::") for op in ops):
        return (f"{', '.join(ops)} is TorchScript's own {'container' if 'Construct' in ops[0] else 'op'}, not a "
                "tensor op: return tensors (or a tuple of tensors) from forward(), or export the nn.Module "
                "(a state_dict with --arch) instead of the TorchScript archive")
    if any(k in text for k in _NO_TYPE_INFO):
        return ("the TorchScript-based exporter lacks the shape or type of a value here (a TorchScript archive "
                "does not carry them for every value), and a higher --opset fails the same way; "
                + (ARCH_FIX if script else "try --exporter dynamo" if "dynamo" in untried else ARCH_FIX))
    if ops or "Unsupported" in text or "not supported" in text or "No decomposition" in text:
        tried_opset = max((int(v) for v in re.findall(r"opset version (\d+)", text)), default=0)
        known = [_opsets_with(op) for op in ops]
        higher = [v for k in known for v in (k or ()) if v > tried_opset]
        opset = ""
        if not ops or any(k is None for k in known):
            opset = "try a higher --opset, "
        elif higher:
            opset = f"try --opset {min(higher)}, "
        other = f"try --exporter {untried[0]}, " if untried else ""
        fix = f"{ARCH_FIX}, " if script else ""
        missing = "has no ONNX translation in any opset the exporter knows" if ops and not opset else \
            "has no ONNX translation at this opset"
        return (f"an op {missing}: {fix}replace it in the model (or compute it outside the exported part), "
                f"{opset}{other}or register a translation (custom_translation_table= for the dynamo exporter, "
                "torch.onnx.register_custom_op_symbolic for the TorchScript-based one)")
    if "specialised" in text or "Constraints violated" in text:
        return ("the model's code fixes a size you marked dynamic (e.g. x.view(1, -1)); use "
                "x.flatten(1) / x.reshape(x.shape[0], -1), or drop the dynamic axis")
    return f"{ARCH_FIX}" if script else ""
