"""The runtimes' telemetry, off unless asked for.

Measured (onnxruntime 1.32, OpenVINO 2026.4 with openvino-telemetry 2025.2, fresh ``HOME`` and
``TMPDIR``): ``import onnxruntime`` writes ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/``
(``deviceid``, ``onnxruntime.db``) and ``$TMPDIR/.ses``, and its telemetry uploader later resolves
its collector's address; ``import openvino`` (its model converter, through openvino-telemetry)
writes ``~/intel/openvino_ga_cid`` and ``~/intel/stats`` and sends usage events. A library
embedded in apps on devices must do neither, so edgeship turns both off:

- onnxruntime: ``ORT_DISABLE_TELEMETRY=1`` is set when ``edgeship`` is imported, before edgeship
  imports onnxruntime (onnxruntime reads it once, when it is imported: ``disable_telemetry_events()``
  alone comes too late for the files), unless the variable is set already; and
  ``onnxruntime.disable_telemetry_events()`` is called before edgeship's first session, for an
  onnxruntime the application imported before edgeship.
- OpenVINO: edgeship imports it with ``openvino_telemetry`` unimportable for that moment, so its
  converter takes the no-op stub it ships for that case; nothing is written in the home folder
  (OpenVINO's own opt-out, ``opt_in_out --opt_out``, writes a file there).

``EDGESHIP_RUNTIME_TELEMETRY=1`` leaves both runtimes as they come (their telemetry on by
default); ``ORT_DISABLE_TELEMETRY=0`` set before ``import edgeship`` does so for onnxruntime only.
An application that imports onnxruntime or OpenVINO before edgeship gets their files written at
that import, as without edgeship.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any

ENV = "EDGESHIP_RUNTIME_TELEMETRY"
ORT_ENV = "ORT_DISABLE_TELEMETRY"
_ORT_QUIETED = False


def wanted() -> bool:
    """Whether the user asked for the runtimes' own telemetry (``EDGESHIP_RUNTIME_TELEMETRY=1``)."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def quiet_onnxruntime_import() -> None:
    """Set ``ORT_DISABLE_TELEMETRY=1`` for the onnxruntime this process will import (unless set,
    or telemetry is wanted). Called by ``import edgeship``."""
    if not wanted():
        os.environ.setdefault(ORT_ENV, "1")


def quiet_onnxruntime(ort: ModuleType) -> None:
    """Turn off onnxruntime's telemetry events, once per process, unless wanted (or the user set
    ``ORT_DISABLE_TELEMETRY`` to something false)."""
    global _ORT_QUIETED
    if _ORT_QUIETED:
        return
    _ORT_QUIETED = True
    off = os.environ.get(ORT_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
    if off and not wanted() and hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()


def import_openvino() -> ModuleType:
    """``import openvino``, without openvino-telemetry unless wanted (see the module's docstring).

    Raises:
        ImportError: OpenVINO is not installed.
    """
    if "openvino" in sys.modules or wanted():
        import openvino

        return openvino
    modules: dict[str, Any] = sys.modules  # None entries are allowed there (typeshed says ModuleType)
    blocked = "openvino_telemetry" not in modules
    if blocked:
        modules["openvino_telemetry"] = None  # an import of it raises ImportError
    try:
        import openvino
    finally:
        if blocked and "openvino_telemetry" in modules and modules["openvino_telemetry"] is None:
            del modules["openvino_telemetry"]
    return openvino
