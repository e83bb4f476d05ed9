"""The Store protocol on SQLite: URLs, locks, owner-only files, busy errors, schema migration, the vector cache."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import store_health, store_keys
from sparky.cli import cli
from sparky.errors import StoreError, TransientStoreError
from sparky.locking import FileLock
from sparky.models import Conversation, Message
from sparky.stores import MessageRecord, StoreFilters, open_store, redact, store_path
from sparky.stores.sqlite import SQLiteStore
from sparky.stores.sqlite import search as sqlite_search
from sparky.stores.sqlite.store import _m001_initial

SECRET = "s3cr3t-pa55"


def record(conversation_id: str, message_id: str, text: str, dimensions: int = 4, seed: int = 0) -> MessageRecord:
    conversation = Conversation("chatgpt", conversation_id, f"title {conversation_id}", 1.0, 2.0)
    message = Message(conversation_id, message_id, "user", 1.5, text, 0)
    vector = np.random.default_rng(seed).normal(size=(1, dimensions)).astype(np.float32)
    return MessageRecord(message.key("chatgpt"), conversation, message, (text,), vector / np.linalg.norm(vector))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# URLs and secrets

@pytest.mark.parametrize(("url", "path"), [
    ("memory.db", Path("memory.db")), ("/a/b.db", Path("/a/b.db")), ("sqlite:///rel.db", Path("rel.db")),
    ("sqlite:////abs/x.db", Path("/abs/x.db")), (f"postgresql://u:{SECRET}@h/db", None), ("mysql://h/db", None),
])
def test_a_url_that_is_not_a_path_is_never_turned_into_one(url, path):
    assert store_path(url) == path


@pytest.mark.parametrize("url", [f"postgresql://me:{SECRET}@db.example.com:5432/memory",
                                 f"postgres://me:{SECRET}@h/db?sslmode=require",
                                 f"postgresql://h/db?user=me&password={SECRET}"])
def test_redact_hides_every_password(url):
    shown = redact(url)
    assert SECRET not in shown and "***" in shown and shown.split("://")[0] in url


@pytest.mark.parametrize("command", [["search", "docker"], ["ingest", "EXPORT"], ["progress", "--rebuild"]])
def test_a_postgres_url_with_a_password_never_reaches_the_screen_or_a_file(tmp_path, sample_export, command,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"postgresql://me:{SECRET}@127.0.0.1:1/memory"
    args = [str(sample_export) if part == "EXPORT" else part for part in command]
    result = CliRunner().invoke(cli, [*args, "--db", url, "--progress-file", str(tmp_path / "p.json")])
    assert result.exit_code == 2, result.output
    assert SECRET not in result.output and "Traceback" not in result.output
    assert "postgresql://me:***@127.0.0.1:1/memory" in result.output
    for file in tmp_path.rglob("*"):
        assert not file.is_file() or SECRET.encode() not in file.read_bytes(), file
    assert not any(part.startswith("postgresql:") for part in (p.name for p in tmp_path.rglob("*")))


# Owner-only files

def test_the_store_its_lock_wal_and_shm_are_readable_by_the_owner_only(tmp_path, sample_export):
    db = tmp_path / "memory.db"
    result = CliRunner().invoke(cli, ["ingest", str(sample_export), "--quiet", "--db", str(db),
                                      "--progress-file", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    store = SQLiteStore(db)  # holds the WAL and shared-memory files open
    try:
        store.known(["x"])
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.lock"), tmp_path / "p.json.lock"]
        assert {file.name: mode(file) for file in files} == {file.name: 0o600 for file in files}
    finally:
        store.close()


def test_an_existing_store_keeps_its_mode(tmp_path):
    db = tmp_path / "shared.db"
    SQLiteStore(db).close()
    db.chmod(0o640)
    store = SQLiteStore(db)
    store.ensure_schema("m", 4)
    store.upsert([record("c", "m1", "hello")])
    store.close()
    assert mode(db) == 0o640


# Locks

def test_the_store_lock_refuses_a_second_holder_and_reports_the_first(tmp_path):
    store = SQLiteStore(tmp_path / "m.db")
    try:
        with store.lock():
            assert store.lock().holder() == __import__("os").getpid()
            with pytest.raises(Exception, match="in use by another ingestion"):
                store.lock().acquire()
        assert store.lock().holder() is None
    finally:
        store.close()


def test_a_pid_left_in_a_lock_file_by_a_killed_process_is_not_an_ingester(tmp_path):
    """The pid written by a process killed with -9 may belong to any live process later: ask the lock."""
    progress = tmp_path / "p.json"
    Path(f"{progress}.lock").write_text(str(__import__("os").getpid()))  # a live pid, but nobody holds the lock
    assert FileLock(progress, "progress file").holder() is None
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from sparky.locking import FileLock; FileLock(sys.argv[1], 'p').acquire();"
        " print('held', flush=True); sys.stdin.read()"), str(progress)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert FileLock(progress, "progress file").holder() == holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert FileLock(progress, "progress file").holder() is None


# Busy store

def test_a_store_busy_past_its_timeout_is_a_transient_store_error(tmp_path):
    store = SQLiteStore(tmp_path / "m.db", busy_timeout=0.05)
    store.ensure_schema("m", 4)
    other = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientStoreError, match="busy"):
            store.upsert([record("c", "m1", "hello")])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.upsert([record("c", "m1", "hello")]) == 1  # free again: the same write succeeds
    store.close()


def test_vectors_of_the_wrong_shape_are_refused_before_anything_is_written(tmp_path):
    store = SQLiteStore(tmp_path / "m.db")
    store.ensure_schema("m", 4)
    bad = record("c", "m1", "hello", dimensions=3)
    with pytest.raises(StoreError, match="nothing was written"):
        store.upsert([record("c", "m0", "fine"), bad])
    assert store.message_count() == 0
    store.close()


# Schema

def test_a_schema_1_store_is_migrated_in_place_without_re_embedding(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    _m001_initial(db)
    db.execute("PRAGMA user_version = 1")
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("model", "m"), ("dimensions", "4")])
    db.execute("INSERT INTO conversations VALUES (1, 'chatgpt', 'c', 'Old', 1.0, 2.0)")
    old = record("c", "m1", "kept from schema one")
    db.execute("INSERT INTO messages VALUES (1, ?, 1, 'm1', 'user', 1.5, 0, ?, 3.0)", (old.key, old.message.text))
    db.execute("INSERT INTO chunks VALUES (7, 1, 0, ?, ?)", (old.message.text, old.vectors[0].tobytes()))
    db.execute("INSERT INTO chunks_fts (rowid, text) VALUES (7, ?)", (old.message.text,))
    db.close()
    store = SQLiteStore(path)
    try:
        assert [(s.model, s.dimensions) for s in store.spaces()] == [("m", 4)]
        hits = store.vector_hits(old.vectors[0], StoreFilters(), 5)
        assert [(hit.chunk, round(hit.score, 5)) for hit in hits] == [(7, 1.0)]
        assert [hit.chunk for hit in store.keyword_hits(["schema"], StoreFilters(), 5)] == [7]
        store.upsert([record("c", "m2", "new after the migration", seed=1)])
        assert store.known([old.key]) == {old.key} and store.message_count() == 2
    finally:
        store.close()
    assert store_health(path)["bad_vectors"] == 0 and len(store_keys(path)) == 2


# The vector matrix kept between searches

def test_the_kept_matrix_notices_a_delete_even_when_the_count_is_unchanged(tmp_path):
    store = SQLiteStore(tmp_path / "m.db")
    store.ensure_schema("m", 4)
    first, second = record("c", "a", "first", seed=1), record("c", "b", "second", seed=2)
    store.upsert([first])
    assert store.vector_hits(first.vectors[0], StoreFilters(), 1)[0].score == pytest.approx(1.0)
    store.delete_keys([first.key])
    store.upsert([second])  # same count, and SQLite would hand out the same rowid again without AUTOINCREMENT
    hits = store.vector_hits(second.vectors[0], StoreFilters(), 2)
    assert len(hits) == 1 and hits[0].score == pytest.approx(1.0)
    assert store.messages([hits[0].message])[hits[0].message].text == "second"
    store.close()


def test_a_long_lived_store_reads_only_the_chunks_an_ingestion_added(tmp_path, monkeypatch):
    store = SQLiteStore(tmp_path / "m.db")
    store.ensure_schema("m", 4)
    store.upsert([record("c", f"m{i}", f"text {i}", seed=i) for i in range(5)])
    reads: list[tuple[int, int]] = []
    real = sqlite_search._read_vectors

    def counting(db, path, space, dimensions, after, up_to):
        reads.append((after, up_to))
        return real(db, path, space, dimensions, after, up_to)

    monkeypatch.setattr(sqlite_search, "_read_vectors", counting)
    query = record("c", "m0", "text 0", seed=0).vectors[0]
    store.vector_hits(query, StoreFilters(), 3)
    store.vector_hits(query, StoreFilters(), 3)  # nothing changed: nothing read
    writer = SQLiteStore(tmp_path / "m.db")  # an ingestion in another connection adds two messages
    writer.upsert([record("c", "m5", "text 5", seed=5), record("c", "m6", "text 6", seed=6)])
    writer.close()
    assert len(store.vector_hits(query, StoreFilters(), 10)) == 7
    assert [up_to - after for after, up_to in reads][1:] == [2]  # only the two new chunks
    store.close()


def test_search_never_creates_a_store_or_touches_a_foreign_file(tmp_path):
    foreign = tmp_path / "other.db"
    sqlite3.connect(foreign).close()
    before = foreign.read_bytes()
    for url in (str(tmp_path / "missing.db"), str(foreign)):
        with pytest.raises(StoreError):
            open_store(url, create=False)
    assert not (tmp_path / "missing.db").exists() and foreign.read_bytes() == before
