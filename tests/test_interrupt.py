"""Interrupt a real ``sparky ingest`` process (SIGINT, SIGTERM, SIGKILL) and resume it: nothing lost or doubled.

Every run writes the phase trace (SPARKY_TRACE_FILE, see src/sparky/crashpoints.py). A signal is sent once the
trace shows the run at a named site, and a SIGKILL is a crash point (SPARKY_CRASH_AT): where each lands never
depends on how fast the machine is.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from pathlib import Path
from subprocess import Popen

import pytest

from conftest import read_progress, sparky_subprocess, store_health, store_keys, wait_for_trace

pytestmark = pytest.mark.slow
BATCH = ["--batch-size", "16", "--quiet"]
SEED = 20261124
HOLD = 600  # seconds a pause holds a run: longer than any wait below


def ingest(workdir: Path, export: Path, env: dict | None = None) -> Popen:
    """Start an ingestion with the default progress file and store, in ``workdir``, tracing to trace.txt."""
    return sparky_subprocess(["ingest", str(export), *BATCH], cwd=workdir,
                             env={"SPARKY_TRACE_FILE": str(workdir / "trace.txt"), **(env or {})})


def sites_of(workdir: Path, process: Popen) -> list[str]:
    """The sites one process's trace shows it arrived at, in order."""
    lines = (workdir / "trace.txt").read_text().splitlines()
    return [parts[1] for parts in map(str.split, lines) if parts[0] == str(process.pid)]


def run_to_completion(workdir: Path, export: Path) -> str:
    """Run an ingestion to its end; its stdout, where the summary is."""
    process = ingest(workdir, export)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return out


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, small_generated_export) -> tuple[list[str], Counter]:
    """The keys a clean run stores, and how many times it arrived at each crash site."""
    workdir = tmp_path_factory.mktemp("clean")
    process = ingest(workdir, small_generated_export)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    keys = store_keys(workdir / "sparky_memory.db")
    assert len(keys) == len(set(keys)) > 0
    arrivals = Counter(sites_of(workdir, process))
    del arrivals["start"]  # traced when the pipeline is imported: not a crash point
    return keys, arrivals


@pytest.fixture(scope="module")
def clean_run_keys(clean_run) -> list[str]:
    return clean_run[0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_progress_exits_130_and_resume_matches_a_clean_run(
        tmp_path, small_generated_export, clean_run_keys, sig):
    # every batch lasts a second longer, so the run is dozens of seconds from its end when stopped
    process = ingest(tmp_path, small_generated_export, env={"SPARKY_TRACE_PAUSE": "after_embed:1"})
    wait_for_trace(tmp_path / "trace.txt", "after_embed", process=process)
    process.send_signal(sig)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "Resume with the same command: " in out
    progress = read_progress(tmp_path / "sparky_ingestion_progress.json")
    stored_after_interrupt = store_keys(tmp_path / "sparky_memory.db")
    assert 0 < len(stored_after_interrupt) < len(clean_run_keys), "the batch in flight is stored, and no more"
    assert sorted(progress["processed_messages"]) == stored_after_interrupt

    summary = run_to_completion(tmp_path, small_generated_export)
    assert "INGESTION COMPLETE!" in summary
    assert store_keys(tmp_path / "sparky_memory.db") == clean_run_keys
    assert store_health(tmp_path / "sparky_memory.db")["messages_without_chunks"] == 0


def test_sigkill_at_random_points_then_resume_matches_a_clean_run(tmp_path, small_generated_export, clean_run):
    """Up to five runs, each resuming the last, SIGKILL themselves at a random crash site the clean run visits,
    at a random one of its arrivals there (a seeded draw); the first run, a whole one, always gets there."""
    clean_run_keys, arrivals = clean_run
    rng = random.Random(SEED)
    progress = tmp_path / "sparky_ingestion_progress.json"
    kills = 0
    for _ in range(5):
        site = rng.choice(sorted(arrivals))
        n = rng.randint(1, arrivals[site])
        process = ingest(tmp_path, small_generated_export, env={"SPARKY_CRASH_AT": f"{site}:{n}"})
        _, err = process.communicate(timeout=600)
        if process.returncode == 0:  # a resumed run, with less to do, arrived there fewer than n times
            assert sites_of(tmp_path, process).count(site) < n
            break
        assert process.returncode == -signal.SIGKILL, err
        assert sites_of(tmp_path, process).count(site) == n, f"not killed at {site}:{n}"
        kills += 1
        read_progress(progress) if progress.exists() else None  # must always parse
        keys = store_keys(tmp_path / "sparky_memory.db") if (tmp_path / "sparky_memory.db").exists() else []
        assert len(keys) == len(set(keys))
    assert kills >= 1, "the first run did not crash where it was told to"
    run_to_completion(tmp_path, small_generated_export)
    assert store_keys(tmp_path / "sparky_memory.db") == clean_run_keys
    health = store_health(tmp_path / "sparky_memory.db")
    assert health["integrity"] == "ok" and health["fts_consistent"]
    assert health["messages_without_chunks"] == health["orphan_chunks"] == 0
    assert not list(tmp_path.glob(".sparky_ingestion_progress.json.tmp-*"))


def test_a_second_concurrent_ingester_process_is_refused(tmp_path, small_generated_export):
    first = ingest(tmp_path, small_generated_export, env={"SPARKY_TRACE_PAUSE": f"after_embed:{HOLD}"})
    try:
        wait_for_trace(tmp_path / "trace.txt", "after_embed", process=first)  # held inside its first batch
        second = sparky_subprocess(["ingest", str(small_generated_export), *BATCH], cwd=tmp_path)
        _, err = second.communicate(timeout=300)
    finally:
        first.kill()
        first.communicate()
    assert second.returncode == 3, err
    assert "in use by another ingestion" in err and "Traceback" not in err
