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

No verdict depends on the machine's speed: a signal is sent once the phase trace (SPARKY_TRACE_FILE) shows the
ingester at a named site, and what it did afterwards is read from that trace, not from a clock. Where the run
must be held somewhere (in the model load, in a model call), it is held there for HOLD seconds, longer than the
hang guard: a run that ends in time can only have been ended by the signal.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import generate_export, read_progress, sparky_subprocess, store_health, store_keys, wait_for_trace
from sparky.readers import ExportReader
from sparky.pipeline.scan import scan_export

pytestmark = pytest.mark.slow

SLOW_BATCH = 4.0  # seconds the slow embedder adds to every batch
HANG_GUARD = 300  # seconds a run may take before the test calls it hung
HOLD = 600  # seconds a pause holds a run: longer than the hang guard
# `sparky` whose model calls take HOLD seconds and cannot be cut short, as a real model call cannot. Each call
# marks "embedding" in the trace and waits there (SPARKY_TRACE_PAUSE="embedding:...", which a stop request
# ends), marks "embedding_on" once it has, then computes on for HOLD seconds.
SLOW_MODEL = f"""
import time
import sparky.embedders as embedders
from sparky.crashpoints import crashpoint

class SlowModel:
    def __init__(self, inner):
        self.inner = inner
    def __getattr__(self, name):
        return getattr(self.inner, name)
    def embed(self, texts):
        crashpoint("embedding")
        crashpoint("embedding_on")
        time.sleep({HOLD})
        return self.inner.embed(texts)

real_get_embedder = embedders.get_embedder
embedders.get_embedder = lambda name=embedders.DEFAULT_EMBEDDER: SlowModel(real_get_embedder(name))
from sparky.cli import cli
cli(prog_name="sparky")
"""
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


@pytest.fixture(autouse=True)
def reap():
    """Kill what a failing test left running (a run held in a pause would outlive it by minutes)."""
    yield
    for process in Work.started:
        if process.poll() is None:
            process.kill()
            process.communicate()
    Work.started.clear()


class Work:
    """A folder with one ingestion's progress file, store and phase trace."""

    started: list[subprocess.Popen] = []  # every run started by the current test

    def __init__(self, root: Path, progress: Path | None = None) -> None:
        self.root = root
        self.progress = progress or root / "progress.json"
        self.db = root / "store.db"
        self.trace = root / "trace.txt"

    def start(self, export: Path, env: dict | None = None, preexec_fn=None, faults: str | None = None,
              script: str | None = None) -> subprocess.Popen:
        """Start `sparky ingest` (with ``script``: that Python code, given the same arguments, instead)."""
        args = ["ingest", str(export), "--batch-size", "8", "--quiet", "--progress-file", str(self.progress),
                "--db", str(self.db)]
        env = {"SPARKY_TRACE_FILE": str(self.trace), **(env or {})}
        if script is None:
            process = sparky_subprocess(args, cwd=self.root, env=env, preexec_fn=preexec_fn, faults=faults)
        else:
            process = subprocess.Popen([sys.executable, "-c", script, *args], cwd=self.root, env={**os.environ, **env},
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        Work.started.append(process)
        return process

    def run(self, export: Path, env: dict | None = None, preexec_fn=None,
            faults: str | None = None) -> tuple[int, str]:
        process = self.start(export, env, preexec_fn, faults)
        _, err = finish(process)
        return process.returncode, err

    def sites(self, pid: int) -> list[str]:
        """The sites one process's trace shows it arrived at, in order."""
        lines = self.trace.read_text().splitlines() if self.trace.exists() else []
        return [parts[1] for parts in map(str.split, lines) if parts[0] == str(pid)]

    def keys(self) -> list[str]:
        return store_keys(self.db) if self.db.exists() else []


def finish(process: subprocess.Popen) -> tuple[str, str]:
    """Wait for a run to end (its stdout and stderr); one still running after HANG_GUARD is killed and fails."""
    try:
        return process.communicate(timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"the ingester was still running after {HANG_GUARD}s: {err[-2000:]}")


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
        progress = read_progress(work.progress)
        assert set(progress["processed_messages"]) <= set(stored)
        assert not set(progress["failed_messages"]) & set(stored)
    return stored


def assert_next_run_completes(work: Work, export: Path, expected: list[str]) -> None:
    process = work.start(export)
    out, err = finish(process)
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
    # about half of what this export's store and WAL need (schema 2 writes more pages per batch than 1 did)
    code, err = work.run(export, preexec_fn=limit_file_size(500 * 1024))
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
    # every checkpoint is held 3 s once written: the folder turns read-only while the start-up one is held
    process = work.start(export, env={"SPARKY_TRACE_PAUSE": "after_replace:3"}, preexec_fn=unprivileged())
    try:
        wait_for_trace(work.trace, "after_replace", process=process)
        folder.chmod(0o555)
        assert "after_commit" not in work.sites(process.pid), "the folder turned read-only after the first batch"
        _, err = finish(process)
    finally:
        folder.chmod(0o755)
    assert process.returncode == 2, err
    one_error_line(err, str(work.progress), "cannot write the progress file", "Permission denied")
    stored = assert_intact(work, expected_keys)
    sites = work.sites(process.pid)
    assert sites.count("after_replace") == 1, "only the start-up checkpoint was written"
    assert sites.count("after_commit") == 5 and 0 < len(stored) < len(expected_keys), (
        "stopped at the checkpoint after five batches")
    assert_next_run_completes(work, export, expected_keys)


# --- the embedder fails ---------------------------------------------------------------------------------


def test_embedder_raising_at_random_then_a_clean_run_completes(tmp_path, export, expected_keys):
    work = Work(tmp_path)
    poisoned = next(text for conversation in ExportReader(export).conversations()
                    for text in (m.text for m in conversation.messages) if len(text) > 40)
    for seed in (1, 2):
        process = work.start(export, faults=f"transient=0.6,permanent={poisoned[:30]},seed={seed}")
        out, err = process.communicate(timeout=300)
        assert process.returncode == 1, err
        assert "Traceback" not in err
        # the summary (stdout) counts the failed messages; an embedder that stays down is an error (stderr)
        assert "INGESTION FINISHED WITH" in out or "the embedder keeps failing" in err, out + err
        stored = assert_intact(work, expected_keys)
        failed = set(read_progress(work.progress)["failed_messages"])
        assert failed and not failed & set(stored) and failed <= set(expected_keys)
    assert_next_run_completes(work, export, expected_keys)


# --- signals during a batch and during the model load ----------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stop_signal_during_a_slow_batch_exits_within_one_batch(tmp_path, export, expected_keys, sig):
    """Every batch takes SLOW_BATCH seconds longer (until a stop request ends the wait); the signal comes once
    the first one is embedded. The run stores the batch in flight and starts no other: read from the trace."""
    work = Work(tmp_path)
    process = work.start(export, env={"SPARKY_TRACE_PAUSE": f"after_embed:{SLOW_BATCH}"})
    wait_for_trace(work.trace, "after_embed", process=process)
    process.send_signal(sig)
    committed_before = work.sites(process.pid).count("after_commit")  # read after the signal: never too low
    out, err = finish(process)
    assert process.returncode == 130, err
    assert "INGESTION PAUSED" in out and "Resume with the same command" in out and "Traceback" not in err
    sites = work.sites(process.pid)
    assert sites.count("after_embed") == sites.count("after_commit"), "an embedded batch was not stored"
    assert sites.count("after_commit") <= committed_before + 1, f"batches went on after the stop: {sites}"
    stored = assert_intact(work, expected_keys)
    assert 0 < len(stored) < len(expected_keys), "the batch in flight is finished and stored, and no more"
    assert sorted(read_progress(work.progress)["processed_messages"]) == stored
    assert_next_run_completes(work, export, expected_keys)


def test_double_ctrl_c_stops_at_once_and_the_store_stays_consistent(tmp_path, export, expected_keys):
    """The first batch's model call takes HOLD seconds and cannot be cut short (SLOW_MODEL): a first Ctrl+C
    waits for it, so a run that ends within the hang guard was ended by the second Ctrl+C, at once."""
    work = Work(tmp_path)
    process = work.start(export, env={"SPARKY_TRACE_PAUSE": f"embedding:{HOLD}"}, script=SLOW_MODEL)
    wait_for_trace(work.trace, "embedding", process=process)
    process.send_signal(signal.SIGINT)
    wait_for_trace(work.trace, "embedding_on", process=process)  # the stop is recorded: it ended the pause
    process.send_signal(signal.SIGINT)
    _, err = finish(process)
    assert process.returncode == 130, err
    assert "Stopped now" in err and "Traceback" not in err
    assert "after_embed" not in work.sites(process.pid)
    assert assert_intact(work, expected_keys) == [], "the batch in flight is dropped whole"
    assert_next_run_completes(work, export, expected_keys)


def stop_while_the_model_loads(work: Work, export: Path, expected: list[str], sig: signal.Signals) -> None:
    """Hold the run where the CLI is about to load the model (its signal handlers installed) for HOLD seconds,
    which only a stop request cuts short, and stop it there: 130, nothing stored, and the next run completes."""
    process = work.start(export, env={"SPARKY_TRACE_PAUSE": f"loading_model:{HOLD}"})
    wait_for_trace(work.trace, "loading_model", process=process)
    process.send_signal(sig)
    _, err = finish(process)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert not {"after_embed", "before_commit", "after_commit"} & set(work.sites(process.pid))
    assert assert_intact(work, expected) == [], "nothing is stored"
    if work.progress.exists():
        assert read_progress(work.progress)["processed_messages"] == []
    assert_next_run_completes(work, export, expected)


def test_ctrl_c_while_the_model_loads_exits_130(tmp_path, export, expected_keys):
    stop_while_the_model_loads(Work(tmp_path), export, expected_keys, signal.SIGINT)


def test_sigterm_while_the_model_loads_exits_130(tmp_path, export, expected_keys):
    stop_while_the_model_loads(Work(tmp_path), export, expected_keys, signal.SIGTERM)
