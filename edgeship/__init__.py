"""edgeship: ship trained PyTorch models to the edge.

The public API is imported lazily, so ``import edgeship`` and ``edgeship.load`` never import
torch (or onnx):

    edgeship.load(bundle, target="cpu", variant="auto") -> Model
    edgeship.export(ExportConfig(...)) -> ExportResult
    edgeship.check(bundle, targets=("cpu",)) -> ParityReport
    edgeship.profile(bundle_or_onnx, ProfileConfig(...)) -> ProfileReport
"""

from __future__ import annotations

from edgeship.errors import EdgeshipError

__version__ = "0.1.0"
__all__ = ["EdgeshipError", "ExportConfig", "ProfileConfig", "__version__", "check", "export", "load", "profile"]

_LAZY = {
    "load": ("edgeship.runtime", "load"),
    "Model": ("edgeship.runtime", "Model"),
    "export": ("edgeship.pipeline", "export"),
    "ExportConfig": ("edgeship.config", "ExportConfig"),
    "check": ("edgeship.verify", "check"),
    "profile": ("edgeship.profiler", "profile"),
    "ProfileConfig": ("edgeship.config", "ProfileConfig"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgeship' has no attribute {name!r}")
