"""What this machine is: recorded in bundles and profiles, since int8 and fp16 speed depend on it."""

from __future__ import annotations

import functools
import os
import platform
import re
from pathlib import Path

from edgeship.errors import SpecError

CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve", "bf16")
# EDGESHIP_CPU_MASK=avx512_bf16,amx_bf16: these CPU flags are treated as absent here, so a test or a
# user sees what a bundle does on a device without them (which candidate load takes, what check checks)
CPU_MASK_ENV = "EDGESHIP_CPU_MASK"


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and every flag /proc/cpuinfo lists (x86 ``flags``, Arm ``Features``);
    the platform's processor name and no flags where there is no /proc (macOS, Windows)."""
    cpu, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags |= set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and cpu == platform.processor():
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu, frozenset(flags)


def cpu_mask() -> frozenset[str]:
    """The flags :data:`CPU_MASK_ENV` says to treat as absent (lower case, blanks ignored)."""
    return frozenset(f.strip().lower() for f in os.environ.get(CPU_MASK_ENV, "").split(",") if f.strip())


def host_info() -> dict:
    """Machine, OS, CPU model and count, Python, and the CPU flags that matter (VNNI, AMX, ...),
    less those :data:`CPU_MASK_ENV` masks (named under ``cpu_mask`` when set)."""
    cpu, _ = _cpuinfo()
    mask = cpu_mask()
    info = {"machine": platform.machine(), "system": platform.system(), "cpu": cpu, "cpus": os.cpu_count(),
            "usable_cpus": usable_cpus(), "python": platform.python_version(), "cpu_flags": cpu_flags()}
    if mask:
        info["cpu_mask"] = sorted(mask)
    return info


def cpu_flags() -> list[str]:
    """The flags of :data:`CPU_FLAGS` this CPU has, less the masked ones (what decides int8, bf16
    and fp16 speed, and which candidates can run here)."""
    _, flags = _cpuinfo()
    mask = cpu_mask()
    return [f for f in CPU_FLAGS if f in flags and f not in mask]


def resolve_threads(value: object, usable: int | None = None) -> int:
    """A candidate's stored thread count for this host: an int is taken as it is, ``"cores/N"``
    as this host's usable cores divided by N (so a choice made on a 32-core runner means the same
    share of a 4-core device); either is capped at the usable cores and is at least 1.

    Raises:
        SpecError: neither a positive int nor ``cores/N`` with N a positive int.
    """
    usable = usable or usable_cpus()
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return min(value, usable)
    match = re.fullmatch(r"cores/([1-9][0-9]{0,5})", value) if isinstance(value, str) else None
    if match:
        return max(1, min(usable // int(match[1]), usable))
    raise SpecError(f"threads={value!r}: use a whole number from 1 up, or cores/N (this host's usable cores divided by N).")


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """How many cores this process may really use: its CPU affinity, capped by a cgroup v2
    ``cpu.max`` quota where one is set (a container limited to 1.5 CPUs gets 1), at least 1.
    ``os.cpu_count()`` counts the machine's cores, which oversubscribes a pinned or limited process."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        n = os.cpu_count() or 1
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)
