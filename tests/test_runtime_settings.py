"""CPU-class detection and the onnxruntime session settings chosen from it (real sessions of the packaged model)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from sparky.embedders import local, runtime
from sparky.embedders.runtime import RuntimeSettings, choose, cpu_class, cpu_flags
from sparky.errors import SparkyError

EPYC_VNNI = "fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni sha_ni"
ALDER_LAKE = "fpu sse2 avx avx2 fma avx_vnni"
EPYC_AVX2 = "fpu sse2 avx avx2 fma sha_ni"


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_flags_are_read_from_the_first_processor(tmp_path):
    text = f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {EPYC_VNNI}\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    assert cpu_flags(cpuinfo(tmp_path, text)) == frozenset(EPYC_VNNI.split())


def test_arm_features_are_read(tmp_path):
    flags = cpu_flags(cpuinfo(tmp_path, "processor\t: 0\nFeatures\t: fp asimd asimddp sve\n"))
    assert flags == {"fp", "asimd", "asimddp", "sve"}
    assert cpu_class(flags) == "other"


def test_unreadable_or_flagless_cpuinfo_is_no_flags(tmp_path):
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert cpu_flags(cpuinfo(tmp_path, "processor\t: 0\nmodel name\t: something\n")) == frozenset()
    assert cpu_class(frozenset()) == "other"


@pytest.mark.parametrize("flags, expected", [
    (EPYC_VNNI, "avx512-vnni"),
    (ALDER_LAKE, "avx-vnni"),
    (EPYC_AVX2, "avx2"),
    ("fpu sse2 sse4_1", "other"),
    ("avx2 avx512_vnni", "avx2"),  # VNNI without AVX-512 foundation cannot run the 512-bit kernels
    (EPYC_VNNI + " avx_vnni", "avx512-vnni"),  # the wider of the two wins
])
def test_cpu_class_of_flag_sets(flags, expected):
    assert cpu_class(frozenset(flags.split())) == expected


def test_this_machine_has_a_class():
    assert cpu_class(cpu_flags()) in runtime.CLASSES


@pytest.mark.parametrize("cpu", runtime.CLASSES)
def test_every_class_has_settings_and_no_spinning(cpu):
    settings = choose(cpu, {})
    assert settings == runtime.SETTINGS[cpu]
    assert not settings.spinning  # spinning workers steal the CPU another process or thread needs
    assert settings.optimization in runtime.OPTIMIZATIONS


def test_environment_overrides_workers_threads_and_spinning():
    settings = choose("avx2", {"SPARKY_ONNX_WORKERS": "1", "SPARKY_ONNX_THREADS": "3", "SPARKY_ONNX_SPIN": "1"})
    assert (settings.workers, settings.threads, settings.spinning) == (1, 3, True)
    assert choose("avx2", {"SPARKY_ONNX_SPIN": "0", "SPARKY_ONNX_THREADS": " "}) == runtime.SETTINGS["avx2"]


def test_by_default_one_worker_per_core_each_on_one_thread():
    settings = choose("avx512-vnni", {})
    assert (runtime.worker_count(settings), settings.threads) == (runtime.physical_cores(), 1)


@pytest.mark.parametrize("name, value", [("SPARKY_ONNX_THREADS", "0"), ("SPARKY_ONNX_THREADS", "two"),
                                         ("SPARKY_ONNX_THREADS", "-1"), ("SPARKY_ONNX_WORKERS", "0"),
                                         ("SPARKY_ONNX_WORKERS", "1.5"), ("SPARKY_ONNX_SPIN", "yes")])
def test_bad_override_is_one_line_naming_the_variable(name, value):
    with pytest.raises(SparkyError, match=name) as error:
        choose("avx512-vnni", {name: value})
    assert "\n" not in str(error.value)


def test_physical_cores_is_positive():
    assert 1 <= runtime.physical_cores() <= (os.cpu_count() or 1)


def applied(embedder: local.OnnxMiniLM) -> tuple:
    """What the embedder's real onnxruntime session runs with."""
    options = embedder._session.get_session_options()
    return (options.intra_op_num_threads, options.get_session_config_entry("session.intra_op.allow_spinning"),
            str(options.graph_optimization_level), str(options.execution_mode))


def test_default_session_gets_this_machines_class_settings(monkeypatch):
    monkeypatch.delenv("SPARKY_ONNX_WORKERS", raising=False)
    monkeypatch.delenv("SPARKY_ONNX_THREADS", raising=False)
    monkeypatch.delenv("SPARKY_ONNX_SPIN", raising=False)
    embedder = local.OnnxMiniLM(local.INT8_MODEL, local.int8_path())
    expected = runtime.SETTINGS[cpu_class(cpu_flags())]
    assert embedder.settings == expected
    spin = "1" if expected.spinning else "0"
    assert applied(embedder)[:2] == (expected.threads, spin)
    assert embedder.workers == runtime.worker_count(expected)


def test_overrides_reach_the_session(monkeypatch):
    monkeypatch.setenv("SPARKY_ONNX_THREADS", "1")
    monkeypatch.setenv("SPARKY_ONNX_SPIN", "1")
    embedder = local.OnnxMiniLM(local.INT8_MODEL, local.int8_path())
    assert applied(embedder) == (1, "1", "GraphOptimizationLevel.ORT_ENABLE_ALL", "ExecutionMode.ORT_SEQUENTIAL")


def test_explicit_settings_reach_the_session_and_give_the_same_vectors():
    texts = ["what did I plan for the garden in May?", "the export has 544 conversations"]
    basic = local.OnnxMiniLM(local.INT8_MODEL, local.int8_path(),
                             settings=RuntimeSettings(threads=1, optimization="basic", parallel=True))
    assert applied(basic) == (1, "0", "GraphOptimizationLevel.ORT_ENABLE_BASIC", "ExecutionMode.ORT_PARALLEL")
    full = local.OnnxMiniLM(local.INT8_MODEL, local.int8_path(), settings=RuntimeSettings(threads=2))
    assert applied(full) == (2, "0", "GraphOptimizationLevel.ORT_ENABLE_ALL", "ExecutionMode.ORT_SEQUENTIAL")
    cosines = (basic.embed(texts) * full.embed(texts)).sum(axis=1)
    assert cosines.min() > 0.9999


class MeetingSession:
    """The real session, whose first call on each thread waits until ``parties`` threads are inside a call at
    once (a barrier: calls made one after another never meet, and the wait times out)."""

    def __init__(self, session, parties: int) -> None:
        self.session = session
        self.barrier = threading.Barrier(parties, timeout=120)
        self.threads: set[str] = set()

    def run(self, *args, **kwargs):
        name = threading.current_thread().name
        if name not in self.threads:
            self.threads.add(name)
            self.barrier.wait()
        return self.session.run(*args, **kwargs)


def test_workers_run_their_calls_at_once_and_give_the_same_vectors():
    texts = [f"message {n}: " + "the garden plan for May and the tomato seedlings " * (n % 7 + 1) for n in range(40)]
    alone = local.OnnxMiniLM(local.Q8_MODEL, local.q8_path(), 0, RuntimeSettings(workers=1))
    two = local.OnnxMiniLM(local.Q8_MODEL, local.q8_path(), 0, RuntimeSettings(workers=2))
    two._session = meeting = MeetingSession(two._session, 2)
    vectors = two.embed(texts)
    assert len(meeting.threads) == 2 and all(name.startswith("embed-") for name in meeting.threads)
    np.testing.assert_allclose(vectors, alone.embed(texts), atol=1e-6)
    two._session = meeting.session
    np.testing.assert_allclose(two.embed(texts[:1]), vectors[:1], atol=1e-6)  # one call, on the caller's thread
