"""edgeship: ship trained PyTorch models to the edge.

The public API is imported lazily, so ``import edgeship`` and ``edgeship.load`` never import
torch (or onnx):

    edgeship.load(bundle, target="cpu", variant="auto") -> Model
    edgeship.export(ExportConfig(...)) -> ExportResult
    edgeship.quantize(model.onnx, "dynamic") -> QuantizeResult
    edgeship.check(bundle, targets=("cpu",)) -> ParityReport
    edgeship.compare(a, b) -> ParityReport
    edgeship.profile(bundle_or_onnx, ProfileConfig(...)) -> ProfileReport

Type checkers see the real types: every lazy name is also imported under ``TYPE_CHECKING`` (never
at runtime), so ``edgeship.load("b")`` is an ``edgeship.model.Model`` to mypy and pyright, and a
misspelt name is an error rather than ``Any``.

Importing edgeship turns the runtimes' telemetry off (``ORT_DISABLE_TELEMETRY=1`` unless set;
``EDGESHIP_RUNTIME_TELEMETRY=1`` keeps it): see :mod:`edgeship.telemetry`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edgeship import telemetry as _telemetry
from edgeship.errors import (
    BundleError,
    DiskFullError,
    EdgeshipError,
    ExportError,
    InferenceError,
    InferenceTimeout,
    ModelLoadError,
    ParityError,
    QuantizationError,
    RegressionError,
    SpecError,
    TargetUnavailableError,
    UnsafeModelError,
)

if TYPE_CHECKING:  # the names _LAZY imports on first use, for type checkers only
    from edgeship.config import ExportConfig, LoadOptions, ProfileConfig
    from edgeship.model import Model, load
    from edgeship.parity.check import check
    from edgeship.parity.compare import compare
    from edgeship.pipeline import export
    from edgeship.pipeline import quantize_model as quantize
    from edgeship.profiling.profiler import profile

__version__ = "0.1.0"

_telemetry.quiet_onnxruntime_import()  # before anything imports onnxruntime: it reads the variable then

_LAZY = {
    "load": ("edgeship.model", "load"),
    "Model": ("edgeship.model", "Model"),
    "export": ("edgeship.pipeline", "export"),
    "quantize": ("edgeship.pipeline", "quantize_model"),
    "ExportConfig": ("edgeship.config", "ExportConfig"),
    "LoadOptions": ("edgeship.config", "LoadOptions"),
    "ProfileConfig": ("edgeship.config", "ProfileConfig"),
    "check": ("edgeship.parity.check", "check"),
    "compare": ("edgeship.parity.compare", "compare"),
    "profile": ("edgeship.profiling.profiler", "profile"),
}

# spelt out (not `*_LAZY`) so type checkers read it: a name listed here is the package's to export
__all__ = ["BundleError", "DiskFullError", "EdgeshipError", "ExportError", "InferenceError", "InferenceTimeout", "ModelLoadError",
           "ParityError", "QuantizationError", "RegressionError", "SpecError", "TargetUnavailableError", "UnsafeModelError",
           "__version__", "load", "Model", "export", "quantize", "ExportConfig", "LoadOptions", "ProfileConfig", "check",
           "compare", "profile"]


if not TYPE_CHECKING:  # hidden from type checkers, which would otherwise read any other name as Any
    def __getattr__(name: str) -> Any:
        if name in _LAZY:
            module, attr = _LAZY[name]
            value = getattr(importlib.import_module(module), attr)
            globals()[name] = value
            return value
        raise AttributeError(f"module 'edgeship' has no attribute {name!r}")
