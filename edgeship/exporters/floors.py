"""Version floors that close known holes; checked before the export path imports the library.

- torch ≥ 2.6: ``torch.load`` defaults to the ``weights_only`` unpickler, which refuses arbitrary
  globals (edgeship passes ``weights_only=True`` explicitly, but older loaders had bypasses).
- onnx ≥ 1.21: external-data loading refuses unknown keys and paths outside the model's folder
  (edgeship guards external data itself too: see ``onnx_guard``).

The runtime side (``edgeship.load``, ``edgeship check``) imports neither and has no floor here.
"""

from __future__ import annotations

import re
from importlib import metadata

from edgeship.errors import ModelLoadError

FLOORS = {"torch": (2, 6), "onnx": (1, 21)}
# the oldest versions the suite runs on (pyproject's export extra, .ci/floors): what an upgrade asks for
TESTED = {"torch": "2.13", "onnx": "1.21"}
_WHY = {"torch": "its safe weights_only loader", "onnx": "its external-data path checks"}


def _parse(version: str) -> tuple[int, ...] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def require(package: str) -> None:
    """Refuse to go on when ``package`` is missing or older than its floor.

    Raises:
        ModelLoadError: naming the installed and the required version, and how to upgrade.
    """
    floor = FLOORS[package]
    need = ".".join(map(str, floor))
    try:
        have = metadata.version(package)
    except metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"{package} is not installed; the export side needs {package}>={TESTED[package]}: "
            "pip install 'edgeship[export]'."
        ) from None
    parsed = _parse(have)
    if parsed is None or parsed < floor:
        raise ModelLoadError(
            f"{package} {have} is below {need}, the oldest version edgeship trusts for {_WHY[package]}; "
            f"refusing to load models with it. Upgrade: pip install '{package}>={TESTED[package]}' (the oldest "
            "edgeship is tested with)."
        )
