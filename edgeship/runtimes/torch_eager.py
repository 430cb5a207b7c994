"""Eager PyTorch runner: the reference every candidate is compared with."""

from __future__ import annotations

import numpy as np

from edgeship.runtimes.base import Runner
from edgeship.spec import IOSpec


def flatten_outputs(out) -> list[tuple[str | None, object]]:
    """Flatten a model's return value (tensor, tuple/list, dict, nested) into (key, tensor) pairs.

    Dict keys become the default output names; tuples and lists give ``None`` keys.
    The order matches the flattening torch.onnx uses for output names.
    """
    import torch

    if isinstance(out, torch.Tensor):
        return [(None, out)]
    if isinstance(out, dict):
        pairs: list[tuple[str | None, object]] = []
        for k, v in out.items():
            inner = flatten_outputs(v)
            pairs += [((str(k) if ik is None else f"{k}.{ik}"), t) for ik, t in inner]
        return pairs
    if isinstance(out, (tuple, list)):
        return [p for v in out for p in flatten_outputs(v)]
    if out is None:
        return []
    raise TypeError(f"unsupported model output type {type(out).__name__}")


def to_numpy(t) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


class TorchEagerRunner(Runner):
    """Calls an ``nn.Module`` (or any callable module) under ``torch.inference_mode``."""

    name = "torch-eager"

    def __init__(self, spec: IOSpec, module, name: str | None = None):
        super().__init__(spec)
        self.module = module
        if name:
            self.name = name

    def _load(self) -> None:
        pass

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in self.spec.inputs]
        with torch.inference_mode():
            out = self.module(*args)
        tensors = [to_numpy(t) for _, t in flatten_outputs(out)]
        names = self.spec.output_names
        if len(tensors) != len(names):
            from edgeship.errors import SpecError

            raise SpecError(
                f"{self.name} returned {len(tensors)} outputs, but the spec names {len(names)} "
                f"({', '.join(names)})."
            )
        return dict(zip(names, tensors))
