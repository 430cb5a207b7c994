"""JSON as edgeship writes it: strict RFC 8259, which JavaScript's ``JSON.parse``, Go's
``encoding/json`` and GitHub Actions' ``fromJSON`` all read.

Python's ``json`` writes ``Infinity`` and ``NaN`` for non-finite floats by default, which none of
those accept. Every JSON file and stream edgeship writes goes through :func:`dumps`: a non-finite
number is written as the **string** ``"Infinity"``, ``"-Infinity"`` or ``"NaN"`` (an SNR of two
identical outputs is ``"Infinity"``), so the value is kept and ``float(x)`` in Python or
``Number(x)`` in JavaScript reads it back; numpy scalars become plain numbers, tuples lists, and
anything else its ``str()``. ``allow_nan=False`` then guarantees nothing non-finite gets through.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its string (see the module's docstring),
    numpy scalars and arrays as plain Python values."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE.get(value, "NaN")
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(value)``, strict (``allow_nan=False``); other types as ``str()``."""
    return json.dumps(finite(value), allow_nan=False, default=str, **kwargs)
