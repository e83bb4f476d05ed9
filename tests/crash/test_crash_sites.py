"""Deterministic crashes: SIGKILL at the n-th arrival at every crash site, for n = 1, 2, 3 ... in one chain.

Run k of a chain carries ``SPARKY_CRASH_AT=site:k`` and resumes what runs 1..k-1 left, so every arrival
index of the site is crashed once, at a different point of the ingestion each time (for the per-batch
sites, after 0, 1, 3, 6, 10 ... committed batches; for the whole rewrite of the progress file, at a run's
start-up and at its end; for the journal, at the checkpoint after five batches, and so on), until a run has
fewer than k arrivals and completes.
After every crash the store and the progress file must be consistent and the locks free; the chain must
end with exactly a clean run's messages and search results, without re-embedding more than one batch
per crash. Each chain runs against a SQLite file and against a PostgreSQL store (``backend``), the same
sites and arrivals on both.
"""

from __future__ import annotations

import signal

import pytest

from .conftest import assert_consistent, assert_matches_reference, assert_rework_bounded

pytestmark = pytest.mark.slow

SITES = ["schema", "after_embed", "before_commit", "after_commit", "progress_tmp_written", "before_replace",
         "after_replace", "journal_written"]
# The progress file is rewritten whole twice a run (start-up, end), so a chain crashes there twice; its journal
# gets a line every five batches, once in a resumed run of this export (tests/test_checkpoints.py has more).
MIN_CRASHES = {"schema": 1, "progress_tmp_written": 2, "before_replace": 2, "after_replace": 2, "journal_written": 1}
MAX_CRASHES = 12


@pytest.mark.parametrize("site", SITES)
def test_crash_at_every_arrival_of_a_site_then_resume(tmp_path, crash_export, reference, backend, workdir, watch,
                                                       site):
    work = workdir(tmp_path)
    watch(work.progress)
    crashes = 0
    for n in range(1, MAX_CRASHES + 2):
        process = work.start(crash_export, env={"SPARKY_CRASH_AT": f"{site}:{n}"})
        out, err = process.communicate(timeout=300)
        arrivals = [parts[0] for parts in work.trace_of(process.pid)].count(site)
        if process.returncode == 0:
            assert arrivals < n, "the run passed its crash point without crashing"
            assert "INGESTION COMPLETE!" in out  # the summary is a result: stdout
            break
        assert process.returncode == -signal.SIGKILL, err
        assert arrivals == n, f"killed at arrival {arrivals} of {site}, not {n}"
        crashes += 1
        assert_consistent(work, reference, backend, dead_pid=process.pid)
    else:
        pytest.fail(f"no run completed after {MAX_CRASHES} crashes at {site}")

    assert crashes >= MIN_CRASHES.get(site, 3), "the chain did not crash at several points"
    assert_matches_reference(work, reference, backend)
    assert_rework_bounded(work, reference, kills=crashes)
