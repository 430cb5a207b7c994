"""The EdgeshipError tree and the CLI exit codes.

Every user-facing failure is an :class:`EdgeshipError` whose message says what was asked,
what was found and what to do. The CLI prints it without a traceback and exits with
``exit_code``: 1 when a gate failed (parity, latency regression), 2 for bad usage or bad input.
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


class RegressionError(EdgeshipError):
    """Latency regressed beyond ``--max-regression`` against a baseline (a failed gate)."""

    exit_code = EXIT_GATE_FAILED


class BundleError(EdgeshipError):
    """A bundle is missing, corrupt, tampered with or of an unknown schema."""


class TargetUnavailableError(EdgeshipError):
    """The requested execution target (e.g. CUDA) is not available on this machine."""


def brief(e: BaseException, limit: int = 300) -> str:
    """One readable line from a library exception: no interpreter traces or C++ source paths."""
    import re

    text = str(e).strip()
    if "Status Message:" in text:  # onnxruntime: keep the node and the reason
        head, _, msg = text.partition("Status Message:")
        head = head.replace("[ONNXRuntimeError] : ", "").split(": ", 2)[-1]
        msg = re.sub(r"/onnxruntime_src/\S+ [\w:~<>]+\([^)]*\)\s*", "", msg)
        text = f"{head.strip()} {msg.strip()}"
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if len(lines) > 1:  # a TorchScript or Python trace: the last line says what went wrong
            text = lines[-1]
    text = " ".join(text.split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
