"""Faults around a real `sparky ingest` process: a full disk, a read-only store, an unwritable progress folder,
an embedder failing at random, a slow embedder interrupted by Ctrl+C or SIGTERM, a double Ctrl+C.

Each must end with a clear message and the documented exit code (README: 0 ok, 1 some messages failed,
2 bad input / damaged file / store problem, 3 locked, 130 interrupted), leave the finished work intact, and
the next run must complete.

How the faults are made:
- Disk full, two ways: the ingester runs under RLIMIT_FSIZE (set in the child before exec), so any write
  that would grow a file past the limit fails like a full disk (SQLite sees a short write: "disk is full",
  or EFBIG: "disk I/O error"); and SQLite's own cap, `PRAGMA max_page_count`, set through the test-only
  SPARKY_SQLITE_MAX_PAGES (crashpoints.py) at half the pages a complete store needs (SQLITE_FULL). No small
  filesystem can be mounted in CI.
- Read-only files: the tests run as root, which ignores permission bits; the child drops CAP_DAC_OVERRIDE
  and CAP_DAC_READ_SEARCH from its capability bounding set before exec (prctl), so chmod applies to it as
  to any user. Where that is not allowed the test is skipped (and says why). The progress folder is also
  made unusable without privileges, by putting the progress file under a regular file.
- A slow embedder: SPARKY_TRACE_PAUSE="after_embed:seconds" (crashpoints.py) makes every batch take that
  much longer, in the embedding worker, before the batch is handed back.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import generate_export, sparky_subprocess, store_health, store_keys
from sparky.readers import ExportReader
from sparky.pipeline.scan import scan_export

pytestmark = pytest.mark.slow

SLOW_BATCH = 8.0  # seconds the slow embedder adds to every batch
GRACE = 5.0  # the README's promise: a first Ctrl+C exits within the batch in flight plus this
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, PR_CAPBSET_DROP = 1, 2, 24


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """8 conversations, 30 meaningful messages: about 7 batches of 8 chunks."""
    return generate_export(tmp_path_factory.mktemp("faults") / "chat-history", 8, 30, seed=11)


@pytest.fixture(scope="module")
def expected_keys(export) -> list[str]:
    from sparky.embedders import get_embedder

    get_embedder("minilm")  # builds the model cache now, not inside a run with a file-size limit
    return sorted(scan_export(ExportReader(export)).all_keys())


class Work:
    """A folder with one ingestion's progress file, store and phase trace."""

    def __init__(self, root: Path, progress: Path | None = None) -> None:
        self.root = root
        self.progress = progress or root / "progress.json"
        self.db = root / "store.db"
        self.trace = root / "trace.txt"

    def start(self, export: Path, env: dict | None = None, preexec_fn=None,
              faults: str | None = None) -> subprocess.Popen:
        args = ["ingest", str(export), "--batch-size", "8", "--quiet", "--progress-file", str(self.progress),
                "--db", str(self.db)]
        return sparky_subprocess(args, cwd=self.root, env={"SPARKY_TRACE_FILE": str(self.trace), **(env or {})},
                                 preexec_fn=preexec_fn, faults=faults)

    def run(self, export: Path, env: dict | None = None, preexec_fn=None,
            faults: str | None = None) -> tuple[int, str]:
        process = self.start(export, env, preexec_fn, faults)
        _, err = process.communicate(timeout=300)
        return process.returncode, err

    def wait_for_trace(self, site: str, count: int = 1, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.trace.read_text().split("\n") if self.trace.exists() else []
            if sum(1 for line in lines if line.split()[1:2] == [site]) >= count:
                return
            time.sleep(0.01)
        raise AssertionError(f"the ingester never reached {site}")

    def keys(self) -> list[str]:
        return store_keys(self.db) if self.db.exists() else []


def one_error_line(err: str, *fragments: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], err
    return errors[0]


def assert_intact(work: Work, expected: list[str], before: list[str] = ()) -> list[str]:
    """The store is healthy, holds only this export's messages (at least those it held before), and the
    progress file parses and claims nothing the store lacks."""
    stored = work.keys()
    if stored:
        health = store_health(work.db)
        assert (health["integrity"], health["fts_consistent"], health["messages_without_chunks"],
                health["orphan_chunks"], health["bad_vectors"]) == ("ok", True, 0, 0, 0), health
    assert len(stored) == len(set(stored)) and set(stored) <= set(expected)
    assert set(before) <= set(stored), "finished work was lost"
    if work.progress.exists():
        progress = json.loads(work.progress.read_text(encoding="utf-8"))
        assert set(progress["processed_messages"]) <= set(stored)
        assert not set(progress["failed_messages"]) & set(stored)
    return stored


def assert_next_run_completes(work: Work, export: Path, expected: list[str]) -> None:
    process = work.start(export)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "INGESTION COMPLETE!" in out  # the summary is a result: stdout
    assert work.keys() == expected
    assert_intact(work, expected)


def partially_ingested(work: Work, export: Path) -> list[str]:
    """Stop a first run after two committed batches (SIGKILL), as a crash would."""
    code, err = work.run(export, env={"SPARKY_CRASH_AT": "after_commit:2"})
    assert code == -signal.SIGKILL, err
    stored = work.keys()
    assert stored
    return stored


def limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def unprivileged():
    """A preexec_fn making a root child obey file permissions (None when not root: they apply anyway)."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "prctl") or not _can_drop_capabilities(libc):
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE, so permission bits would not apply")

    def apply() -> None:
        for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return apply


def _can_drop_capabilities(libc) -> bool:
    """Try it in a throwaway child: dropping a capability is irreversible."""
    pid = os.fork()
    if pid == 0:
        os._exit(0 if libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


# --- the store and the progress file cannot be written ---------------------------------------------------


def test_disk_full_is_a_clear_error_and_the_next_run_completes(tmp_path, export, expected_keys):
    work = Work(tmp_path)
    code, err = work.run(export, preexec_fn=limit_file_size(160 * 1024))
    assert code == 2, err
    line = one_error_line(err, str(work.db))
    assert "disk is full" in line or "disk I/O error" in line, line
    stored = assert_intact(work, expected_keys)
    assert 0 < len(stored) < len(expected_keys), "the limit should strike mid-way"
    assert_next_run_completes(work, export, expected_keys)


def test_sqlite_page_cap_is_a_clear_error_and_the_next_run_completes(tmp_path, export, expected_keys):
    complete = Work(tmp_path / "complete")
    complete.root.mkdir()
    assert_next_run_completes(complete, export, expected_keys)
    with sqlite3.connect(complete.db) as connection:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
    work = Work(tmp_path)
    code, err = work.run(export, env={"SPARKY_SQLITE_MAX_PAGES": str(pages // 2)})
    assert code == 2, err
    assert "disk is full" in one_error_line(err, str(work.db))
    stored = assert_intact(work, expected_keys)
    assert 0 < len(stored) < len(expected_keys), "the cap should strike mid-way"
    assert_next_run_completes(work, export, expected_keys)


@pytest.mark.parametrize("what", ["file", "file and folder"])
def test_read_only_store_is_a_clear_error_and_keeps_what_it_holds(tmp_path, export, expected_keys, what):
    work = Work(tmp_path / "work", progress=tmp_path / "progress.json")
    work.root.mkdir()
    before = partially_ingested(work, export)
    work.db.chmod(0o444)
    if what == "file and folder":
        work.root.chmod(0o555)
    try:
        code, err = work.run(export, preexec_fn=unprivileged())
    finally:
        work.root.chmod(0o755)
        work.db.chmod(0o644)
    assert code == 2, err
    one_error_line(err, str(work.db), "readonly")
    assert assert_intact(work, expected_keys, before) == before
    assert_next_run_completes(work, export, expected_keys)


def test_progress_file_under_a_regular_file_is_a_clear_error(tmp_path, export, expected_keys):
    (tmp_path / "not-a-folder").write_text("a file where a folder should be")
    work = Work(tmp_path, progress=tmp_path / "not-a-folder" / "progress.json")
    code, err = work.run(export)
    assert code == 2, err
    one_error_line(err, str(work.progress), "Not a directory")
    assert work.keys() == []
    assert_next_run_completes(Work(tmp_path), export, expected_keys)


def test_progress_folder_becoming_read_only_mid_run_keeps_the_stored_work(tmp_path, export, expected_keys):
    folder = tmp_path / "progress"
    folder.mkdir()
    work = Work(tmp_path, progress=folder / "progress.json")
    process = work.start(export, preexec_fn=unprivileged())
    work.wait_for_trace("after_replace")  # the start-up checkpoint is written
    folder.chmod(0o555)
    try:
        _, err = process.communicate(timeout=300)
    finally:
        folder.chmod(0o755)
    assert process.returncode == 2, err
    one_error_line(err, str(work.progress), "cannot write the progress file", "Permission denied")
    stored = assert_intact(work, expected_keys)
    commits = sum(1 for line in work.trace.read_text().splitlines() if line == f"{process.pid} after_commit")
    assert commits == 5 and 0 < len(stored) < len(expected_keys), "stopped at the checkpoint after five batches"
    assert_next_run_completes(work, export, expected_keys)


# --- the embedder fails ---------------------------------------------------------------------------------


def test_embedder_raising_at_random_then_a_clean_run_completes(tmp_path, export, expected_keys):
    work = Work(tmp_path)
    poisoned = next(text for conversation in ExportReader(export).conversations()
                    for text in (m.text for m in conversation.messages) if len(text) > 40)
    for seed in (1, 2):
        code, err = work.run(export, faults=f"transient=0.6,permanent={poisoned[:30]},seed={seed}")
        assert code == 1, err
        assert "Traceback" not in err
        assert "FAILED MESSAGE(S)" in err or "the embedder keeps failing" in err, err
        stored = assert_intact(work, expected_keys)
        failed = set(json.loads(work.progress.read_text())["failed_messages"])
        assert failed and not failed & set(stored) and failed <= set(expected_keys)
    assert_next_run_completes(work, export, expected_keys)


# --- signals during a slow batch -----------------------------------------------------------------------


def slow_run(work: Work, export: Path) -> subprocess.Popen:
    """An ingester whose batches take SLOW_BATCH seconds longer, stopped inside its first batch: the batch's
    texts are embedded and it is not back yet."""
    process = work.start(export, env={"SPARKY_TRACE_PAUSE": f"after_embed:{SLOW_BATCH}"})
    work.wait_for_trace("after_embed")
    return process


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stop_signal_during_a_slow_batch_exits_within_one_batch(tmp_path, export, expected_keys, sig):
    work = Work(tmp_path)
    process = slow_run(work, export)
    process.send_signal(sig)
    sent = time.monotonic()
    out, err = process.communicate(timeout=120)
    waited = time.monotonic() - sent
    assert process.returncode == 130, err
    assert waited <= SLOW_BATCH + 1.5 + GRACE, f"{waited:.1f}s: more than the batch in flight"
    assert "INGESTION PAUSED" in out and "Resume with the same command" in out and "Traceback" not in err
    stored = assert_intact(work, expected_keys)
    assert stored, "the batch in flight is finished and stored"
    assert sorted(json.loads(work.progress.read_text())["processed_messages"]) == stored
    assert_next_run_completes(work, export, expected_keys)


def test_double_ctrl_c_stops_at_once_and_the_store_stays_consistent(tmp_path, export, expected_keys):
    work = Work(tmp_path)
    process = slow_run(work, export)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert time.monotonic() - sent < 3, "a second Ctrl+C must not wait for the batch"
    assert "Traceback" not in err
    assert_intact(work, expected_keys)
    assert_next_run_completes(work, export, expected_keys)


def test_ctrl_c_while_the_model_loads_exits_130(tmp_path, export, expected_keys):
    work = Work(tmp_path)
    process = work.start(export)
    deadline = time.monotonic() + 60
    while not work.db.exists() and time.monotonic() < deadline:  # the store is opened just before the model loads
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert "Traceback" not in err
    assert process.returncode == 130, err
    assert_next_run_completes(work, export, expected_keys)
