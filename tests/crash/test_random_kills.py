"""Random SIGKILLs: kill -9 at a moment drawn uniformly over the running ingester's duration (start-up
included, stretched by a quarter so some runs outlive their kill), resume, kill again ... until a run
completes (after six kills the next run is left to complete); then start a new chain, until enough kills
have landed. A run's duration is estimated from a clean run's, in proportion to the messages the store
still lacks.

Where each kill landed is read from the killed process's phase trace. The test insists that some kills
landed inside an open store transaction and some during a resume's recovery/start-up (store open, lock,
stale temp files, scan, reconciliation, first checkpoint), so it cannot pass by missing the dangerous
windows; it keeps killing (up to MAX_KILLS) until they have. The open-transaction window is widened by
pausing 0.15 s at ``before_commit`` (SPARKY_TRACE_PAUSE, see crashpoints.py), with every row of the batch
written and the transaction not committed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess

import pytest

from .conftest import (
    RANDOM_KILL_ENV, RUN_TIMEOUT, Landing, Workdir, assert_consistent, assert_matches_reference, assert_rework_bounded,
    landing, phases,
)

pytestmark = pytest.mark.slow

MIN_KILLS = 25
MAX_KILLS = 70
KILLS_PER_CHAIN = 6  # then the chain's next run is left to complete
OVERSHOOT = 1.25
REQUIRED = {"open transaction": 2, "recovery/start-up": 2}


def enough(landings: list[Landing]) -> bool:
    counts = phases(landings)
    return len(landings) >= MIN_KILLS and all(counts[phase] >= need for phase, need in REQUIRED.items())


def test_random_kills_in_chains_of_resumes(tmp_path, crash_export, reference, watch):
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    landings: list[Landing] = []
    chains = 0
    while not enough(landings):
        assert len(landings) < MAX_KILLS, f"seed {seed}: kills never landed in every window: {phases(landings)}"
        chains += 1
        work = Workdir(tmp_path / f"chain-{chains}")
        work.root.mkdir()
        watcher = watch(work.progress)
        kills = stored = 0
        while True:
            process = work.start(crash_export, env=RANDOM_KILL_ENV)
            kill_after = rng.uniform(0, OVERSHOOT * reference.expected_seconds(stored))
            try:
                _, err = process.communicate(timeout=kill_after if kills < KILLS_PER_CHAIN else RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                _, err = process.communicate(timeout=60)
            if process.returncode == 0:
                break
            assert process.returncode == -signal.SIGKILL, f"seed {seed}: {err}"
            landings.append(landing(work.trace_of(process.pid), resumed=kills > 0))
            kills += 1
            stored = assert_consistent(work, reference, dead_pid=process.pid)
        assert "INGESTION COMPLETE!" in err
        watcher.finish()
        assert_matches_reference(work, reference)
        assert_rework_bounded(work, reference, kills)

    print(f"seed {seed}: {len(landings)} kills in {chains} chains: {dict(phases(landings))}")
