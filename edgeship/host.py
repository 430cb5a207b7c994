"""What this machine is: recorded in bundles and profiles, since int8 and fp16 speed depend on it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
             "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


def host_info() -> dict:
    """Machine, OS, CPU model and count, Python, and the CPU flags that matter (VNNI, AMX, ...)."""
    cpu, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags |= set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and cpu == platform.processor():
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"machine": platform.machine(), "system": platform.system(), "cpu": cpu, "cpus": os.cpu_count(),
            "usable_cpus": usable_cpus(), "python": platform.python_version(),
            "cpu_flags": [f for f in CPU_FLAGS if f in flags]}


def cpu_flags() -> list[str]:
    """The flags of :data:`CPU_FLAGS` this CPU has (what decides int8, bf16 and fp16 speed)."""
    return list(host_info()["cpu_flags"])


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
