"""onnxruntime session settings chosen per CPU class, with environment overrides.

The CPU class comes from the instruction-set flags in /proc/cpuinfo (``other`` when they cannot be read):
``avx512-vnni`` (int8 dot products in 512-bit registers), ``avx-vnni`` (the same in 256-bit registers),
``avx2`` (no VNNI) or ``other``. ``SPARKY_ONNX_THREADS=N`` and ``SPARKY_ONNX_SPIN=0/1`` override the
threads and the spinning of any class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from ..errors import SparkyError

CLASSES = ("avx512-vnni", "avx-vnni", "avx2", "other")
OPTIMIZATIONS = ("basic", "extended", "all")


@dataclass(frozen=True)
class RuntimeSettings:
    """What an onnxruntime session is built with. ``threads`` 0: one per physical core."""

    threads: int = 0
    spinning: bool = False
    optimization: str = "all"  # one of OPTIMIZATIONS
    parallel: bool = False  # ORT_PARALLEL execution mode (independent nodes at once); else sequential


# Measured with `bench/embedders.py --settings` on the avx512-vnni class only (2-core AMD EPYC, 2026-12-02,
# load average 6-16 from other work; README "Performance"): without spinning minilm spent 22-23 CPU ms a text
# rather than 43-45 and ran 1.8x (no busy process) to 3x (one busy process) faster; one thread per core
# beat cores - 1 (17.6 vs 6.3 texts/s beside a busy process); the graph optimisation levels were within
# noise (the q8 graph is fused already), and ORT_PARALLEL cost 70% more CPU. The avx-vnni, avx2 and other
# classes were not measured with these options: they get the same settings, since threads and spinning are
# about sharing cores, not the instruction set. minilm keeps int8 arithmetic on every class: it was faster
# than fp32 on both classes measured (1.87x here; 1.53x on a 2-core AMD EPYC with AVX2 only), and one
# arithmetic everywhere keeps a store's vectors the same on every machine.
SETTINGS = {cpu: RuntimeSettings() for cpu in CLASSES}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's flags (x86 ``flags``, ARM ``Features``) from the first processor listed; empty if unreadable."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_class(flags: frozenset[str]) -> str:
    """The class of a CPU with these flags: one of ``CLASSES``."""
    if "avx512_vnni" in flags and "avx512f" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx2" in flags:
        return "avx2"
    return "other"


def choose(cpu: str, environ: Mapping[str, str] = os.environ) -> RuntimeSettings:
    """The settings of the class ``cpu`` with the overrides in ``environ`` applied (a bad value: one error)."""
    settings = SETTINGS[cpu]
    threads = environ.get("SPARKY_ONNX_THREADS", "").strip()
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise SparkyError(f"SPARKY_ONNX_THREADS must be a whole number of threads, 1 or more (got {threads!r})")
        settings = replace(settings, threads=int(threads))
    spin = environ.get("SPARKY_ONNX_SPIN", "").strip()
    if spin:
        if spin not in ("0", "1"):
            raise SparkyError(f"SPARKY_ONNX_SPIN must be 0 or 1 (got {spin!r})")
        settings = replace(settings, spinning=spin == "1")
    return settings


def machine_settings() -> RuntimeSettings:
    """The settings for this machine's CPU class and environment."""
    return choose(cpu_class(cpu_flags()))


def session_options(settings: RuntimeSettings):
    """``onnxruntime.SessionOptions`` carrying ``settings``."""
    import onnxruntime

    levels = {"basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL}
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = settings.threads or physical_cores()
    options.graph_optimization_level = levels[settings.optimization]
    if settings.parallel:
        options.execution_mode = onnxruntime.ExecutionMode.ORT_PARALLEL
        options.inter_op_num_threads = 2
    else:
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if settings.spinning else "0")
    return options


def physical_cores() -> int:
    """Physical cores this process may run on (hyperthread siblings counted once)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))
