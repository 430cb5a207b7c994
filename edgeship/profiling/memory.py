"""Peak resident memory of the process, per configuration where the OS allows it."""

from __future__ import annotations

import math
import sys


def lifetime_peak_mb() -> float | None:
    """The process's lifetime peak RSS (``ru_maxrss``) in MiB; None where the ``resource`` module
    does not exist (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 2**20 if sys.platform == "darwin" else kb / 1024  # macOS reports bytes


RSS_NOT_MEASURED = "not measured on this platform"


class PeakRss:
    """Peak resident memory of this process, reset per configuration where Linux allows it.

    Writing ``5`` to ``/proc/self/clear_refs`` resets VmHWM (Linux ≥ 4.0), so the peak covers
    one configuration; elsewhere it falls back to ``ru_maxrss``, the process's lifetime peak;
    where neither exists (Windows) it is not measured and reads NaN (``scope`` says which:
    ``configuration``, ``process`` or ``unmeasured``).
    """

    def __init__(self) -> None:
        if self._reset():
            self.scope = "configuration"
        else:
            self.scope = "process" if lifetime_peak_mb() is not None else "unmeasured"

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return PeakRss._status("VmHWM") is not None
        except OSError:
            return False

    @staticmethod
    def _status(key: str) -> float | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) / 1024  # kB -> MiB
        except OSError:
            pass
        return None

    def reset(self) -> None:
        if self.scope == "configuration":
            self._reset()

    def current_mb(self) -> float:
        v = self._status("VmRSS")
        return v if v is not None else self.peak_mb()

    def peak_mb(self) -> float:
        """MiB; NaN where not measured."""
        if self.scope == "configuration":
            v = self._status("VmHWM")
            if v is not None:
                return v
        peak = lifetime_peak_mb()
        return math.nan if peak is None else peak
