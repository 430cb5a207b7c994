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
            "python": platform.python_version(), "cpu_flags": [f for f in CPU_FLAGS if f in flags]}
