"""Eager PyTorch runner: the reference every candidate is compared with."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeship.errors import SpecError
from edgeship.runtimes.base import Runner
from edgeship.spec import IOSpec


def flatten_outputs(out) -> list[tuple[str | None, object]]:
    """Flatten a model's return value (tensor, tuple/list, dict, nested) into (key, tensor) pairs.

    Dict keys (and dataclass fields) become the default output names; a list or tuple inside one
    is named by index (``hidden_states.0``, ``hidden_states.1``, ``past.1.0``: the positions of
    ``None`` entries are skipped, not renumbered). A top-level tuple or list gives ``None`` keys.
    The order matches the flattening torch.onnx uses for output names.
    """
    import torch

    if isinstance(out, torch.Tensor):
        return [(None, out)]
    if isinstance(out, dict):
        pairs: list[tuple[str | None, object]] = []
        for k, v in out.items():
            inner = _indexed(v) if isinstance(v, (tuple, list)) else flatten_outputs(v)
            pairs += [((str(k) if ik is None else f"{k}.{ik}"), t) for ik, t in inner]
        return pairs
    if isinstance(out, (tuple, list)):
        return [p for v in out for p in flatten_outputs(v)]
    if dataclasses.is_dataclass(out) and not isinstance(out, type):  # e.g. an ExportedProgram's registered output class
        return flatten_outputs({f.name: getattr(out, f.name) for f in dataclasses.fields(out)})
    if out is None:
        return []
    raise TypeError(f"unsupported model output type {type(out).__name__}")


def _indexed(seq: tuple | list) -> list[tuple[str | None, object]]:
    """A list or tuple's tensors named by their position in it (``0``, ``1.x``, ...)."""
    return [((str(i) if ik is None else f"{i}.{ik}"), t) for i, v in enumerate(seq)
            for ik, t in (_indexed(v) if isinstance(v, (tuple, list)) else flatten_outputs(v))]


def to_numpy(t) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


class TorchEagerRunner(Runner):
    """Calls an ``nn.Module`` (or any callable module) under ``torch.inference_mode``."""

    name = "torch-eager"
    runtime = "torch"

    def __init__(self, spec: IOSpec, module: Any, name: str | None = None, binding: Binding | None = None):
        super().__init__(spec)
        self.module = module
        self.binding = binding
        if name:
            self.name = name

    def _load(self) -> None:
        pass

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in self.spec.inputs]
        if self.binding is None:
            self.binding = bind_inputs(self.module, self.spec.input_names)
        with torch.inference_mode():
            out = self.binding.call(self.module, args)
        tensors = [to_numpy(t) for _, t in flatten_outputs(out)]
        names = self.spec.output_names
        if len(tensors) != len(names):
            raise SpecError(
                f"{self.name} returned {len(tensors)} outputs, but the spec names {len(names)} "
                f"({', '.join(names)})."
            )
        return dict(zip(names, tensors))


@dataclass(frozen=True)
class Binding:
    """How the spec's inputs, in order, reach ``forward()``: ``keywords[i]`` is the parameter input
    ``i`` binds to by keyword, or None where it goes by position. ``note`` says what was decided
    when it is not the plain positional case."""

    keywords: tuple[str | None, ...]
    note: str | None = None

    @property
    def positional(self) -> bool:
        return all(k is None for k in self.keywords)

    def call(self, module: Any, tensors: Sequence[Any]) -> Any:
        args = [t for t, k in zip(tensors, self.keywords) if k is None]
        kwargs = {k: t for t, k in zip(tensors, self.keywords) if k is not None}
        return module(*args, **kwargs)


def forward_params(module: Any) -> list[tuple[str, str]] | None:
    """``(name, kind)`` of each parameter of ``module.forward`` (TorchScript: its schema), kind as
    in :class:`inspect.Parameter` (``POSITIONAL_OR_KEYWORD``, ``VAR_POSITIONAL``...); None when it
    cannot be read."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:  # a TorchScript method: no *args or keyword-only parameters
        return [(a.name, "POSITIONAL_OR_KEYWORD") for a in schema.arguments if a.name != "self"]
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError, AttributeError):
        return None
    return [(p.name, p.kind.name) for p in sig.parameters.values() if p.name != "self"]


def bind_inputs(module: Any, names: Sequence[str]) -> Binding:
    """Bind inputs to ``forward()`` parameters by name, by position where names do not match.

    Inputs named like the first parameters, in order, go by position as before. Otherwise each
    input whose name is a parameter goes by keyword (GPT-2's ``attention_mask`` must not land in
    ``past_key_values``) and the others fill the leading positional parameters, with a note.

    Raises:
        SpecError: an input names no parameter and no positional slot is left for it.
    """
    params = forward_params(module)
    if params is None:
        return Binding((None,) * len(names))
    plain = [n for n, kind in params if kind in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")]
    by_keyword = {n for n, kind in params if kind in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY")}
    varargs = any(kind == "VAR_POSITIONAL" for _, kind in params)
    if list(names) == plain[:len(names)] or not any(n in by_keyword for n in names):
        if not varargs and len(names) > len(plain):
            raise SpecError(f"the model takes {len(plain)} input{'s' * (len(plain) != 1)} ({', '.join(plain) or 'none'}), but "
                            f"{len(names)} were given ({', '.join(names)}); pass one --input per forward() parameter.")
        matched = list(names) == plain[:len(names)]
        note = None if matched or not plain else (
            f"inputs {', '.join(names)} name no forward() parameter (it takes {', '.join(n for n, _ in params)}): "
            "passed by position")
        return Binding((None,) * len(names), note)
    keywords = tuple(n if n in by_keyword else None for n in names)
    loose = [n for n, k in zip(names, keywords) if k is None]
    slots = plain[:len(loose)]
    if len(slots) < len(loose) and not varargs or any(s in names for s in slots):
        raise SpecError(
            f"input(s) {', '.join(loose)} match no parameter of the model's forward(), which takes "
            f"{', '.join(n for n, _ in params)}; name each --input after the parameter it feeds.")
    note = (f"inputs {', '.join(n for n in names if n in by_keyword)} are passed to forward() by name"
            + (f"; {', '.join(loose)} by position (as {', '.join(slots)})" if loose else ""))
    return Binding(keywords, note)


def by_name_module(module: Any, binding: Binding, names: Sequence[str]) -> Any:
    """``module`` itself when its inputs go by position to exactly its parameters; otherwise a
    wrapper whose ``forward`` takes the inputs positionally in spec order (parameters named after
    them, so tracing and both ONNX exporters see the input names) and calls ``module`` with
    ``binding``. Parameters the spec does not feed keep their defaults: the TorchScript-based
    exporter would otherwise fill them in as graph inputs (Hugging Face's ``logits_to_keep=0``)."""
    import torch

    params = forward_params(module)
    named = [n for n, kind in params or () if kind not in ("VAR_POSITIONAL", "VAR_KEYWORD")]
    if binding.positional and (len(named) <= len(names) or isinstance(module, torch.jit.ScriptModule)):
        return module
    return wrap_module(module, binding.call, names)


def wrap_module(module: Any, forward: Callable[[Any, Sequence[Any]], Any], names: Sequence[str] | None = None) -> Any:
    """An ``nn.Module`` holding ``module`` whose ``forward(*inputs)`` is ``forward(module, inputs)``
    (for tracing and the ONNX exporters); ``names``: the parameter names its signature shows."""
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module

        def forward(self, *inputs: Any) -> Any:
            return forward(self.model, inputs)

        def train(self, mode: bool = True) -> Any:
            self.training = mode  # the wrapped module keeps its own mode (an ExportedProgram's refuses train())
            return self

    if names is not None:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        Wrapper.forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("self", kind)] + [inspect.Parameter(n, kind) for n in names])
    return Wrapper().eval()
