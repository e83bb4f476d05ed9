"""Interrupt a real ``sparky ingest`` process (SIGINT, SIGTERM, SIGKILL) and resume it: nothing lost or doubled."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from conftest import read_progress, sparky_subprocess, store_health, store_keys

pytestmark = pytest.mark.slow
BATCH = ["--batch-size", "16", "--quiet"]


def wait_for_stored_messages(progress: Path, at_least: int, timeout: float = 120) -> None:
    """Poll the progress file (it is always parseable) until it records some stored messages."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if progress.exists() and len(json.loads(progress.read_text())["processed_messages"]) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError("the ingestion never checkpointed")


def run_to_completion(workdir: Path, export: Path) -> str:
    process = sparky_subprocess(["ingest", str(export), *BATCH], cwd=workdir)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return err


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, small_generated_export) -> tuple[list[str], float]:
    """The keys a clean run stores, and how many seconds it took (start-up included)."""
    workdir = tmp_path_factory.mktemp("clean")
    started = time.monotonic()
    run_to_completion(workdir, small_generated_export)
    seconds = time.monotonic() - started
    keys = store_keys(workdir / "sparky_memory.db")
    assert len(keys) == len(set(keys)) > 0
    return keys, seconds


@pytest.fixture(scope="module")
def clean_run_keys(clean_run) -> list[str]:
    return clean_run[0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_progress_exits_130_and_resume_matches_a_clean_run(
        tmp_path, small_generated_export, clean_run_keys, sig):
    process = sparky_subprocess(["ingest", str(small_generated_export), *BATCH], cwd=tmp_path)
    wait_for_stored_messages(tmp_path / "sparky_ingestion_progress.json", 1)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Resume with the same command: " in err
    progress = read_progress(tmp_path / "sparky_ingestion_progress.json")
    stored_after_interrupt = store_keys(tmp_path / "sparky_memory.db")
    assert 0 < len(stored_after_interrupt) < len(clean_run_keys), "interrupt landed after the run ended"
    assert sorted(progress["processed_messages"]) == stored_after_interrupt

    err = run_to_completion(tmp_path, small_generated_export)
    assert "INGESTION COMPLETE!" in err
    assert store_keys(tmp_path / "sparky_memory.db") == clean_run_keys
    assert store_health(tmp_path / "sparky_memory.db")["messages_without_chunks"] == 0


def test_sigkill_at_random_points_then_resume_matches_a_clean_run(tmp_path, small_generated_export, clean_run):
    clean_run_keys, clean_seconds = clean_run
    rng = random.Random(20261124)
    progress = tmp_path / "sparky_ingestion_progress.json"
    kills = 0
    for _ in range(5):  # each kill lands within the first 60% of a clean run's time: the first always hits
        process = sparky_subprocess(["ingest", str(small_generated_export), *BATCH], cwd=tmp_path)
        time.sleep(rng.uniform(0.1, 0.6) * clean_seconds)
        if process.poll() is not None:
            break
        process.kill()
        process.wait()
        kills += 1
        read_progress(progress) if progress.exists() else None  # must always parse
        keys = store_keys(tmp_path / "sparky_memory.db") if (tmp_path / "sparky_memory.db").exists() else []
        assert len(keys) == len(set(keys))
    assert kills >= 1, "no kill landed during a run"
    run_to_completion(tmp_path, small_generated_export)
    assert store_keys(tmp_path / "sparky_memory.db") == clean_run_keys
    health = store_health(tmp_path / "sparky_memory.db")
    assert health["integrity"] == "ok" and health["fts_consistent"]
    assert health["messages_without_chunks"] == health["orphan_chunks"] == 0
    assert not list(tmp_path.glob(".sparky_ingestion_progress.json.tmp-*"))


def test_a_second_concurrent_ingester_process_is_refused(tmp_path, small_generated_export):
    first = sparky_subprocess(["ingest", str(small_generated_export), *BATCH], cwd=tmp_path)
    wait_for_stored_messages(tmp_path / "sparky_ingestion_progress.json", 0)
    second = sparky_subprocess(["ingest", str(small_generated_export), *BATCH], cwd=tmp_path)
    _, err = second.communicate(timeout=120)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert second.returncode == 3
    assert "in use by another ingestion" in err and "Traceback" not in err
