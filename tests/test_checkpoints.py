"""Checkpoints of the progress file: what each writes does not grow with what is done (issue 9, defect 2).

The file is rewritten whole only at a session's start, at its end and on a stop; every checkpoint in between
appends one line with what changed to ``<progress file>.journal``, which every reader replays
(src/sparky/pipeline/progress.py). These tests measure the bytes of each checkpoint write, kill the ingester
right after journal lines, tear a line, read the file while a run is held just after a checkpoint, and check
the files' modes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT, generate_export, sparky_subprocess, store_keys
from sparky.cli import cli
from sparky.pipeline import progress as progress_module
from sparky.pipeline.progress import (ProgressCheckpoint, empty_progress, journal_path, load_progress,
                                      remove_stale_temp_files, save_progress)
from sparky.pipeline.reset import reset_export
from sparky.pipeline.scan import scan_export
from sparky.readers import ExportReader
from sparky.stores import open_store

KEYS = [f"{number:064x}" for number in range(1, 40)]  # message keys are 64-hex sha256 strings


@contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def ingest_args(export: Path, folder: Path, batch: int) -> list[str]:
    return ["ingest", str(export), "--batch-size", str(batch), "--quiet", "--progress-file",
            str(folder / "progress.json"), "--db", str(folder / "store.db")]


# --- the bytes of each checkpoint ----------------------------------------------------------------------


class CheckpointWrites:
    """Every fsync of the progress file's temp file (a whole rewrite: its size) or of its journal (a checkpoint
    line: how much the journal grew), in order, as ("rewrite" | "journal", bytes)."""

    def __init__(self, progress: Path) -> None:
        self.progress = progress
        self.writes: list[tuple[str, int]] = []
        self._journal_size = 0
        self._real_fsync = os.fsync

    def fsync(self, fd: int) -> None:
        self._real_fsync(fd)
        name = Path(os.readlink(f"/proc/self/fd/{fd}"))
        size = os.fstat(fd).st_size
        if name == journal_path(self.progress):
            self.writes.append(("journal", size - self._journal_size if size >= self._journal_size else size))
            self._journal_size = size
        elif name.parent == self.progress.parent and name.name.startswith(f".{self.progress.name}.tmp-"):
            self.writes.append(("rewrite", size))
            self._journal_size = 0  # a rewrite deletes the journal


@pytest.fixture(scope="module")
def long_export(tmp_path_factory) -> Path:
    """12 conversations, 120 meaningful messages: one message a batch, 24 checkpoints in a run."""
    return generate_export(tmp_path_factory.mktemp("long-export") / "chat-history", 12, 120, seed=3)


@pytest.mark.slow
def test_bytes_per_checkpoint_do_not_grow_with_what_is_done(tmp_path, long_export, monkeypatch):
    writes = CheckpointWrites(tmp_path / "progress.json")
    monkeypatch.setattr(os, "fsync", writes.fsync)
    with umask(0o022):
        result = CliRunner().invoke(cli, ingest_args(long_export, tmp_path, 1))
    assert result.exit_code == 0, result.output
    kinds = [kind for kind, _ in writes.writes]
    assert kinds[0] == kinds[-1] == "rewrite", kinds
    assert set(kinds[1:-1]) == {"journal"}, f"the whole file is rewritten only at the start and the end: {kinds}"
    lines = [size for kind, size in writes.writes if kind == "journal"]
    assert len(lines) >= 20, "a long run: many checkpoints"
    # each line holds the keys of five one-message batches: the same number every time
    assert lines[-1] <= 1.5 * lines[0] and max(lines) <= 2 * min(lines), lines
    final = writes.writes[-1][1]
    assert lines[-1] < final / 5, "a checkpoint late in the run is a small part of what the file holds"
    assert not journal_path(tmp_path / "progress.json").exists(), "the final rewrite holds everything"
    assert mode(tmp_path / "progress.json") == 0o600, "a new progress file is owner-only"
    facts = json.loads((tmp_path / "progress.json").read_text())
    assert sorted(facts["processed_messages"]) == store_keys(tmp_path / "store.db")
    assert facts["stats"]["processed_messages"] == len(facts["processed_messages"])


# --- the journal, as every reader replays it -----------------------------------------------------------


def started(path: Path) -> tuple[dict, ProgressCheckpoint]:
    """A session's progress document (nothing done yet, one failed message) and its start-up rewrite."""
    progress = empty_progress()
    progress["stats"].update(total_conversations=3, total_messages=len(KEYS))
    progress["failed_messages"] = {KEYS[5]: "PermanentEmbedError: an old failure"}
    progress["sessions"].append({"started": "2025-01-15T14:30:22", "ended": None, "processed": 0, "seconds": 0.0})
    checkpoints = ProgressCheckpoint(path, progress)
    checkpoints.rewrite()
    return progress, checkpoints


def facts(progress: dict) -> dict:
    return {"messages": sorted(progress["processed_messages"]),
            "conversations": sorted(progress["processed_conversations"]),
            "failed": progress["failed_messages"], "stats": progress["stats"],
            "failed_conversations": progress.get("failed_conversations") or [],
            "session": {name: progress["sessions"][-1][name] for name in ("processed", "seconds")}}


def checkpoint_twice(progress: dict, checkpoints: ProgressCheckpoint) -> None:
    """Two checkpoints: keys stored, a conversation done, a failure added then retried and stored."""
    session = {"processed": 3, "skipped": 0, "failed": 1}
    progress["failed_messages"][KEYS[9]] = "TransientEmbedError: timed out"
    checkpoints.append(KEYS[:3], ["c1"], [("c3", "ValueError: bad node")], session, 1.5)
    session = {"processed": 6, "skipped": 0, "failed": 1}
    del progress["failed_messages"][KEYS[9]]
    checkpoints.append([KEYS[3], KEYS[4], KEYS[9]], ["c2"], [("c3", "ValueError: bad node")], session, 3.0)


def test_readers_replay_the_journal_and_a_rewrite_equals_the_replay(tmp_path):
    path = tmp_path / "progress.json"
    progress, checkpoints = started(path)
    checkpoint_twice(progress, checkpoints)
    raw = json.loads(path.read_text())
    assert raw["processed_messages"] == [] and raw["stats"]["processed_messages"] == 0, "the file itself is as started"
    loaded = load_progress(path)
    assert facts(loaded) == facts(progress)
    assert loaded["stats"]["processed_messages"] == 6 and loaded["stats"]["current_session_processed"] == 6
    assert loaded["failed_messages"] == {KEYS[5]: "PermanentEmbedError: an old failure"}
    assert loaded["failed_conversations"] == [["c3", "ValueError: bad node"]]
    assert loaded["last_updated"] == progress["last_updated"] != raw["last_updated"]
    assert set(loaded) >= {"processed_conversations", "processed_messages", "last_updated", "stats"}
    lines = journal_path(path).read_bytes().splitlines()
    assert len(lines) == 2 and all(len(line) < 1000 for line in lines), "a line holds what changed, not all"

    checkpoints.rewrite()  # what the end of the session (or a stop) writes
    assert not journal_path(path).exists()
    assert facts(json.loads(path.read_text())) == facts(progress) == facts(load_progress(path))


def test_a_torn_or_damaged_last_line_is_ignored_and_replaying_twice_changes_nothing(tmp_path):
    path = tmp_path / "progress.json"
    progress, checkpoints = started(path)
    checkpoint_twice(progress, checkpoints)
    expected = facts(load_progress(path))
    journal = journal_path(path)
    whole = journal.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    for torn in (last[: len(last) // 2], last[:-1], b'{"base": "2025-', b"\0" * 40):
        journal.write_bytes(whole + torn)  # a kill -9 or a power cut in the middle of a line
        assert facts(load_progress(path)) == expected, torn[:20]
    journal.write_bytes(whole + b"{ not json at all\n")
    assert facts(load_progress(path)) == expected
    journal.write_bytes(whole + last)  # the same line twice: keys are set-unioned
    assert facts(load_progress(path)) == expected
    journal.write_bytes(whole.splitlines(keepends=True)[0] + b"{ damaged\n" + last)
    assert load_progress(path)["processed_messages"] == KEYS[:3], "the replay stops at a damaged line"


def test_journal_lines_from_before_a_rewrite_are_ignored(tmp_path):
    """A crash after the new file is in place and before the old journal is deleted leaves that journal."""
    path = tmp_path / "progress.json"
    progress, checkpoints = started(path)
    checkpoint_twice(progress, checkpoints)
    left_over = journal_path(path).read_bytes()
    progress["sessions"].append({"started": "2025-01-16T09:00:00", "ended": None, "processed": 0, "seconds": 0.0})
    progress["stats"]["current_session_processed"] = 0
    checkpoints.rewrite()  # the next session's start
    journal_path(path).write_bytes(left_over)
    loaded = load_progress(path)
    assert facts(loaded) == facts(progress)
    assert loaded["sessions"][-1]["processed"] == 0 and loaded["sessions"][-2]["processed"] == 6
    checkpoints.append([KEYS[10]], [], [], {"processed": 1, "skipped": 6, "failed": 0}, 0.5)
    assert facts(load_progress(path)) == facts(progress), "the new session's lines apply after the stale ones"


def test_a_reset_deletes_the_journal_and_a_journal_without_its_file_is_cleaned(tmp_path):
    path = tmp_path / "progress.json"
    progress, checkpoints = started(path)
    checkpoint_twice(progress, checkpoints)
    store = open_store(str(tmp_path / "store.db"))
    try:
        result = reset_export(None, path, store)
    finally:
        store.close()
    assert result.removed_progress_file
    assert not path.exists() and not journal_path(path).exists()
    journal_path(path).write_bytes(b"{}\n")  # a reset killed between the two deletions
    assert load_progress(path) is None
    assert remove_stale_temp_files(path) == 1 and not journal_path(path).exists()


# --- file modes ------------------------------------------------------------------------------------------


def test_new_progress_temp_and_journal_files_are_owner_only(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    temp_modes: list[int] = []
    real_replace = os.replace

    def replace(source, destination):
        temp_modes.append(os.stat(source).st_mode & 0o777)
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    with umask(0):  # not the umask's doing
        progress, checkpoints = started(path)
        checkpoint_twice(progress, checkpoints)
    assert temp_modes == [0o600]
    assert mode(path) == 0o600 and mode(journal_path(path)) == 0o600


def test_an_existing_progress_file_keeps_its_mode(tmp_path):
    path = tmp_path / "progress.json"
    save_progress(path, empty_progress())
    path.chmod(0o644)  # the user made it readable to others
    with umask(0o077):
        progress = load_progress(path)
        progress["sessions"].append({"started": "x", "ended": None, "processed": 0, "seconds": 0.0})
        checkpoints = ProgressCheckpoint(path, progress)
        checkpoints.rewrite()
        assert mode(path) == 0o644
        checkpoints.append(KEYS[:2], [], [], {"processed": 2, "skipped": 0, "failed": 0}, 1.0)
        assert mode(journal_path(path)) == 0o644, "the journal is as readable as its file (its facts are the same)"
        checkpoints.rewrite()
    assert mode(path) == 0o644


# --- real ingesters: killed right after a checkpoint, read while one runs ---------------------------------


@pytest.fixture(scope="module")
def journal_export(tmp_path_factory) -> Path:
    """12 conversations, 50 meaningful messages: with one message a batch, 10 checkpoints in a run."""
    return generate_export(tmp_path_factory.mktemp("journal-export") / "chat-history", 12, 50, seed=7)


@pytest.fixture(scope="module")
def clean_journal_run(tmp_path_factory, journal_export) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    process = sparky_subprocess(ingest_args(journal_export, folder, 1), cwd=folder)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return folder


def store_facts(export: Path, db: Path) -> dict:
    """What a clean final progress file says, derived from the store (the source of truth)."""
    scan = scan_export(ExportReader(export))
    stored = set(store_keys(db))
    return {"messages": sorted(stored),
            "conversations": sorted(cid for cid, keys in scan.conversation_keys.items() if set(keys) <= stored),
            "total_messages": scan.total_messages, "total_conversations": len(scan.conversation_keys)}


def progress_facts(progress: dict) -> dict:
    return {"messages": sorted(progress["processed_messages"]),
            "conversations": sorted(progress["processed_conversations"]),
            "total_messages": progress["stats"]["total_messages"],
            "total_conversations": progress["stats"]["total_conversations"]}


@pytest.mark.slow
def test_kill_right_after_each_checkpoint_line_then_resume_equals_a_clean_run(tmp_path, journal_export,
                                                                             clean_journal_run):
    progress = tmp_path / "progress.json"
    crashes = 0
    for n in range(1, 12):
        process = sparky_subprocess(ingest_args(journal_export, tmp_path, 1), cwd=tmp_path,
                                    env={"SPARKY_CRASH_AT": f"journal_written:{n}"})
        _, err = process.communicate(timeout=600)
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, err
        crashes += 1
        json.loads(progress.read_text())  # the file itself always parses
        loaded = load_progress(progress)
        # killed just after the line: the replayed file says exactly what the store holds
        assert progress_facts(loaded) == store_facts(journal_export, tmp_path / "store.db")
        assert loaded["stats"]["processed_messages"] == len(loaded["processed_messages"])
        assert loaded["stats"]["processed_messages"] > json.loads(progress.read_text())["stats"]["processed_messages"]
        # ... the same facts as the file a rebuild from the store writes whole
        copy = tmp_path.parent / f"rebuilt-{n}"
        shutil.copytree(tmp_path, copy)
        rebuilt = CliRunner().invoke(cli, ["progress", "--rebuild", "--progress-file", str(copy / "progress.json"),
                                           "--db", str(copy / "store.db")])
        assert rebuilt.exit_code == 0, rebuilt.output
        assert not journal_path(copy / "progress.json").exists()
        whole = json.loads((copy / "progress.json").read_text())
        assert progress_facts(whole) == progress_facts(loaded)
        assert whole["failed_messages"] == loaded["failed_messages"] == {}
        if n == 1:  # and a line torn by the kill is ignored by the next run
            with open(journal_path(progress), "ab") as journal:
                journal.write(b'{"base":"' + loaded["last_updated"].encode()[:9])
            assert progress_facts(load_progress(progress)) == progress_facts(loaded)
    else:
        pytest.fail("no run completed")
    assert crashes >= 3, "the chain crashed after several checkpoints"
    assert store_keys(tmp_path / "store.db") == store_keys(clean_journal_run / "store.db")
    assert not journal_path(progress).exists()
    final, clean = json.loads(progress.read_text()), json.loads((clean_journal_run / "progress.json").read_text())
    assert progress_facts(final) == progress_facts(clean) == store_facts(journal_export, tmp_path / "store.db")
    assert final["stats"]["processed_messages"] == clean["stats"]["processed_messages"]
    assert final["failed_messages"] == clean["failed_messages"] == {}
    assert len(final["sessions"]) == crashes + 1
    assert sum(session["processed"] for session in final["sessions"]) == len(clean["processed_messages"])


def arrivals(trace: Path, pid: int, site: str) -> int:
    lines = trace.read_text().splitlines() if trace.exists() else []
    return sum(1 for line in lines if line.split()[:2] == [str(pid), site])


def stored_count(db: Path) -> int:
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as connection:
        return connection.execute("SELECT count(*) FROM messages").fetchone()[0]


@pytest.mark.slow
def test_a_report_during_a_run_gives_the_counts_of_the_last_checkpoint(tmp_path, journal_export):
    """The ingester is held 15 s just after its second checkpoint line: the report must say what the store
    holds then, though the file itself still says what the start-up rewrite wrote."""
    trace = tmp_path / "trace.txt"
    process = sparky_subprocess(ingest_args(journal_export, tmp_path, 1), cwd=tmp_path,
                                env={"SPARKY_TRACE_FILE": str(trace), "SPARKY_TRACE_PAUSE": "journal_written:15"})
    try:
        deadline = time.monotonic() + 300
        while arrivals(trace, process.pid, "journal_written") < 2:
            assert process.poll() is None, "the run ended without a checkpoint between its start and its end"
            assert time.monotonic() < deadline, "no checkpoint in 300 s"
            time.sleep(0.01)
        held = stored_count(tmp_path / "store.db")
        report = subprocess.run([sys.executable, str(ROOT / "check_ingestion_progress.py"), "--json",
                                 "--progress-file", str(tmp_path / "progress.json")],
                                capture_output=True, text=True, timeout=60)
        text = subprocess.run([sys.executable, "-m", "sparky", "progress", "--progress-file",
                               str(tmp_path / "progress.json")], capture_output=True, text=True, timeout=60)
        still_held = arrivals(trace, process.pid, "after_commit") == arrivals(trace, process.pid, "journal_written") * 5
        raw = json.loads((tmp_path / "progress.json").read_text())
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)
    assert still_held, "the run went on while the report was read: the test proves nothing"
    assert report.returncode == 0, report.stderr
    reported = json.loads(report.stdout)
    assert reported["messages"]["processed"] == held > 0
    assert reported["running_pid"] == process.pid
    assert raw["stats"]["processed_messages"] == 0, "the file itself is as the start-up rewrite left it"
    assert text.returncode == 0, text.stderr
    assert f"Messages processed: {held:,}" in text.stdout
    assert process.returncode == 130
