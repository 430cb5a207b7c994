"""The EdgeshipError tree and the CLI exit codes.

Every user-facing failure is an :class:`EdgeshipError` whose message says what was asked,
what was found and what to do. The CLI prints it without a traceback and exits with
``exit_code``: 1 when a gate failed (parity, latency), 2 for bad usage or bad input.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2


class EdgeshipError(Exception):
    """Base class of every error edgeship reports to users."""

    exit_code = EXIT_BAD_INPUT


class ModelLoadError(EdgeshipError):
    """The model file could not be read, recognised or loaded."""


class UnsafeModelError(ModelLoadError):
    """Loading the model would execute arbitrary code and the user did not opt in."""


class SpecError(EdgeshipError):
    """An input/output spec, feed or example input is malformed or does not match the model."""


class ExportError(EdgeshipError):
    """TorchScript or ONNX export failed."""


class QuantizationError(EdgeshipError):
    """A quantized variant could not be built."""


class ParityError(EdgeshipError):
    """A candidate runtime drifted from the reference beyond tolerance (a failed gate)."""

    exit_code = EXIT_GATE_FAILED


class BundleError(EdgeshipError):
    """A bundle is missing, corrupt, tampered with or of an unknown schema."""


class TargetUnavailableError(EdgeshipError):
    """The requested execution target (e.g. CUDA) is not available on this machine."""
