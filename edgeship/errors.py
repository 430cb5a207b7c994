"""The EdgeshipError tree and the CLI exit codes.

Every user-facing failure is an :class:`EdgeshipError` whose message says what was asked,
what was found and what to do. The CLI prints it without a traceback and exits with
``exit_code``: 1 when a gate failed (parity, latency regression), 2 for bad usage or bad input.
Any other exception is a bug: the CLI prints its traceback and exits 3.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeship.parity.report import ParityReport

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BUG = 3


class EdgeshipError(Exception):
    """Base class of every error edgeship reports to users.

    ``report``: the parity checks made before the failure, where there were any (a failed fp32
    gate, a quantized variant that did not pass), so the CLI can still print and write them.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str = "", report: ParityReport | None = None):
        super().__init__(message)
        self.report = report


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


class InferenceError(EdgeshipError):
    """onnxruntime failed to run a loaded model on feeds that passed validation (for example it
    could not allocate memory for them)."""


class InferenceTimeout(InferenceError):
    """Inference did not finish within its deadline (``--timeout``, ``timeout=``): a graph can run
    as long as it says. ``stuck``: the runtime could not stop it (OpenVINO), so it still runs on
    one of the runtime's threads and the process cannot exit normally."""

    def __init__(self, message: str = "", stuck: bool = False):
        super().__init__(message)
        self.stuck = stuck


class DiskFullError(EdgeshipError):
    """A folder edgeship writes its work in (TMPDIR) has no room for what it is about to write;
    checked before each large write, since onnxruntime and torch abort the process (or fail with
    an unrelated message) when a disk fills up under them."""


class TargetUnavailableError(EdgeshipError):
    """The requested execution target (e.g. CUDA) is not available on this machine."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m|\[[0-9;]*m")
_CLASS = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")
_ORT_SOURCE = re.compile(r"/onnxruntime_src/\S+ [\w:~<>]+\([^)]*\)\s*")
_NOISE = ("This is step", "(Refer to the full stack", "Traceback", "⬆")


def brief(e: BaseException, limit: int = 300) -> str:
    """One readable line from a library exception: no interpreter traces, colour codes or C++
    source paths. The one place that shortens onnxruntime's, torch's and the exporters' messages.

    - onnxruntime: the node and the reason after "Status Message:";
    - torch.onnx's dynamo exporter: its "Exception summary" (the op it could not translate), not
      the paragraph of generic advice before it;
    - torch.load's weights-only refusal: the "Unsupported global" line naming the class;
    - any other multi-line text (a TorchScript or Python trace): its last line.
    """
    text = _ORT_SOURCE.sub("", _ANSI.sub("", str(e))).strip()  # no C++ source paths and signatures
    if "Status Message:" in text:  # onnxruntime: keep the node and the reason
        head, _, msg = text.partition("Status Message:")
        head = head.replace("[ONNXRuntimeError] : ", "").split(": ", 2)[-1]
        text = f"{head.strip()} {_ORT_SOURCE.sub('', msg).strip()}"
    elif "## Exception summary" in text:
        summary = text.split("## Exception summary", 1)[1]
        text = " ".join(ln.strip() for ln in _CLASS.sub(r"\1", summary).splitlines()
                        if ln.strip() and not ln.strip().startswith(_NOISE))
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(_NOISE)]
        wanted = [ln for ln in lines if "Unsupported global" in ln]
        text = (wanted or lines[-1:] or [""])[0]
    return clip(text, limit) or type(e).__name__


def clip(text: str, limit: int = 300) -> str:
    """``text`` on one line (white space folded), cut to ``limit`` characters with "..."."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
