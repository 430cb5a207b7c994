"""The one Runner interface every runtime implements.

A runner is created cheaply, opened with :meth:`Runner.load` (or ``with``), fed a dict of
numpy arrays by input name, and returns a dict of numpy arrays by output name. The base class
validates feed names, dtypes and shapes against the IOSpec before the runtime sees them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from edgeship.spec import IOSpec, validate_feeds

R = TypeVar("R", bound="Runner")


class Runner(ABC):
    """Base of every runner: ``name``, ``load()``, ``infer(feeds)``, ``close()``, context manager."""

    name: str = "runner"
    runtime: str = "?"  # the library that runs it: onnxruntime, openvino, torch
    load_s: float | None = None  # how long the last load() took to open it, seconds

    def __init__(self, spec: IOSpec):
        self.spec = spec
        self._loaded = False

    def load(self: R) -> R:
        if not self._loaded:
            t0 = time.perf_counter()
            self._load()
            self.load_s = time.perf_counter() - t0
            self._loaded = True
        return self

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference after validating ``feeds`` against the spec's inputs."""
        validate_feeds(self.spec.inputs, feeds)
        self.load()
        return self._infer(feeds)

    def timing_call(self, feeds: dict[str, np.ndarray]) -> tuple[Callable, tuple]:
        """``(call, args)``: the leanest call that runs one inference on ``feeds`` (already valid),
        for timing loops; runners override it with their runtime's own entry point."""
        self.load()
        return self._infer, (feeds,)

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded = False

    def __enter__(self: R) -> R:
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        pass
