"""Random SIGKILLs, aimed by the phase trace rather than the clock: each run of a chain is killed at a random
site that a clean run visits and at a random arrival there (``Reference.kill_target``, drawn from a seeded
generator; the per-batch arrivals in proportion to what the store still lacks). At a crash point the run kills itself (SPARKY_CRASH_AT); at ``start`` (the pipeline's
import, not a crash point) the test sends SIGKILL as soon as the trace shows it. Resume, kill again ... until a
run completes (after six kills the next run is left to complete); then start a new chain, until enough kills
have landed. The seed alone decides every kill, whatever the CPU speed (SPARKY_KILL_SEED picks another).

Where each kill landed is read from the killed process's phase trace. The test insists that kills landed in
every phase, among them inside an open store transaction (``before_commit``: every row of the batch written,
not committed) and during a resume's recovery/start-up (store open, lock, stale temp files, scan,
reconciliation, first checkpoint), so it cannot pass by missing the dangerous windows; it keeps killing (up to
MAX_KILLS) until they have.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import wait_for_trace
from .conftest import (
    RUN_TIMEOUT, START, Landing, Workdir, assert_consistent, assert_matches_reference, assert_rework_bounded, landing,
    phases,
)

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("SPARKY_KILL_SEED", "20261124"))
MIN_KILLS = 20  # the same for both stores: with this seed REQUIRED is only met after 24 kills anyway
MAX_KILLS = 70
KILLS_PER_CHAIN = 6  # then the chain's next run is left to complete
REQUIRED = {"open transaction": 2, "recovery/start-up": 2, "start-up": 1, "progress file replace": 2,
            "embedding/between batches": 2}


def enough(landings: list[Landing]) -> bool:
    counts = phases(landings)
    return len(landings) >= MIN_KILLS and all(counts[phase] >= need for phase, need in REQUIRED.items())


def run(work: Workdir, export: Path, target: tuple[str, int] | None) -> tuple[subprocess.Popen, str, str]:
    """One run of the chain, killed at ``target`` (site, arrival) when it gets there; its stdout and stderr."""
    if target is None or target[0] == START:
        process = work.start(export)
        if target is not None:
            wait_for_trace(work.trace, START, process=process)
            process.kill()
    else:
        process = work.start(export, env={"SPARKY_CRASH_AT": "%s:%d" % target})
    out, err = process.communicate(timeout=RUN_TIMEOUT)
    return process, out, err


def test_random_kills_in_chains_of_resumes(tmp_path, crash_export, reference, backend, workdir, watch):
    rng = random.Random(SEED)
    landings: list[Landing] = []
    chains = 0
    while not enough(landings):
        assert len(landings) < MAX_KILLS, f"seed {SEED}: kills never landed in every window: {phases(landings)}"
        chains += 1
        (tmp_path / f"chain-{chains}").mkdir()
        work = workdir(tmp_path / f"chain-{chains}")
        watcher = watch(work.progress)
        kills = stored = 0
        while True:
            target = reference.kill_target(rng, stored) if kills < KILLS_PER_CHAIN else None
            process, out, err = run(work, crash_export, target)
            arrivals = [parts[0] for parts in work.trace_of(process.pid)].count(target[0]) if target else 0
            if process.returncode == 0:
                assert target is None or arrivals < target[1], f"seed {SEED}: passed {target} without crashing"
                break
            assert process.returncode == -signal.SIGKILL, f"seed {SEED}: {err}"
            assert arrivals == target[1], f"seed {SEED}: killed at arrival {arrivals} of {target[0]}, not {target}"
            landings.append(landing(work.trace_of(process.pid), resumed=kills > 0))
            kills += 1
            stored = assert_consistent(work, reference, backend, dead_pid=process.pid)
        assert "INGESTION COMPLETE!" in out  # the summary is a result: stdout
        watcher.finish()
        assert_matches_reference(work, reference, backend)
        assert_rework_bounded(work, reference, kills)

    print(f"seed {SEED}: {len(landings)} kills in {chains} chains: {dict(phases(landings))}")
