"""The export pipeline: ``export(ExportConfig) -> ExportResult``.

``runner`` runs the stages in order over one typed ``Context`` (``context``); each stage is a
module of its own: load, torchscript, onnx, optimize, quantize, parity, select, profile, package.
"""

from edgeship.pipeline.runner import ExportResult, QuantizeResult, export, quantize_model

__all__ = ["ExportResult", "QuantizeResult", "export", "quantize_model"]
