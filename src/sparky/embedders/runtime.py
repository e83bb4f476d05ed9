"""onnxruntime session settings chosen per CPU class, with environment overrides.

The CPU class comes from the instruction-set flags in /proc/cpuinfo (``other`` when they cannot be read):
``avx512-vnni`` (int8 dot products in 512-bit registers), ``avx-vnni`` (the same in 256-bit registers),
``avx2`` (no VNNI) or ``other``. ``SPARKY_ONNX_WORKERS=N`` (model calls at once), ``SPARKY_ONNX_THREADS=N``
(threads per call) and ``SPARKY_ONNX_SPIN=0/1`` override the settings of any class.
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
    """How the model runs: ``workers`` calls at once (0: one per physical core), each on ``threads``
    onnxruntime threads, with the session options below."""

    workers: int = 0
    threads: int = 1
    spinning: bool = False
    optimization: str = "all"  # one of OPTIMIZATIONS
    parallel: bool = False  # ORT_PARALLEL execution mode (independent nodes at once); else sequential


# Measured with `bench/embedders.py --settings` (README "Performance", per CPU class). A model call embeds one
# text (minilm) or ~256 padded tokens (fp32): too little work to share across threads, so one thread per core
# each running its own calls beats every core on each call. On a 2-core Intel Xeon with AVX-512 VNNI and AMX
# (2026-12-02, quiet): 2 workers of 1 thread embedded 146.6 texts/s against 97.3 for one call on 2 threads and
# 125.5 for the same spinning, and 96.9 / 85.0 / 53.3 beside a busy process, at the CPU of one thread (13.4
# ms a text against 17.1). On a 2-core AMD EPYC with AVX-512 VNNI (load 6-16) spinning cost 22 vs 43 CPU ms a
# text and ran 1.8x (quiet) to 3x (beside a busy process) slower; one thread per core beat cores - 1; the graph
# optimisation levels were within noise (the q8 graph is fused already) and ORT_PARALLEL cost 70% more CPU.
# Workers and spinning are about sharing cores, not the instruction set: the classes not measured get the
# same settings. minilm keeps int8 arithmetic on every class: faster than fp32 on all three machines measured
# (1.5-2x), and one arithmetic everywhere keeps a store's vectors the same on every machine.
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
    for name, field in (("SPARKY_ONNX_WORKERS", "workers"), ("SPARKY_ONNX_THREADS", "threads")):
        value = environ.get(name, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise SparkyError(f"{name} must be a whole number, 1 or more (got {value!r})")
            settings = replace(settings, **{field: int(value)})
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
    options.intra_op_num_threads = settings.threads
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


def worker_count(settings: RuntimeSettings) -> int:
    """How many model calls run at once under ``settings``."""
    return settings.workers or physical_cores()


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
