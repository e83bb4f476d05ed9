"""The machine a benchmark ran on, for the header of every table: figures depend on the CPU class."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
         ("amx_int8", "AMX"))


def cpu_description() -> str:
    """CPU model, cores, and which of AVX2 / AVX-512 / VNNI / AMX it has, e.g.
    ``AMD EPYC, 2 cores; AVX2 yes, AVX-512 no, AVX-512 VNNI no, AVX-VNNI no, AMX no``."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    lines = info.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    have = ", ".join(f"{name} {'yes' if flag in flags else 'no'}" for flag, name in FLAGS) if flags else "flags unknown"
    return f"{model}, {os.cpu_count()} cores; {have}"


if __name__ == "__main__":
    print(cpu_description())
