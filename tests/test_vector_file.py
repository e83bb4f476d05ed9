"""The vector file beside a SQLite store: a cold search maps it instead of reading every blob, and it is
never trusted over the store (stale, grown, damaged, locked or unwritable)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparky.models import Conversation, Message
from sparky.stores import MessageRecord, StoreFilters
from sparky.stores.sqlite import SQLiteStore
from sparky.stores.sqlite import search as sqlite_search

DIMENSIONS = 8
FILES = ("ids.i64", "messages.i64", "vectors.f32")
Hit = tuple[int, int, float]

FRESH_PROCESS = """
import json, sys
import numpy as np
from sparky.stores import StoreFilters
from sparky.stores.sqlite import SQLiteStore, search
reads = []
real = search._read_vectors
def counting(db, path, space, dimensions, after, up_to):
    reads.append([after, up_to])
    return real(db, path, space, dimensions, after, up_to)
search._read_vectors = counting
store = SQLiteStore(sys.argv[1], create=False)
hits = store.vector_hits(np.array(json.loads(sys.argv[2]), dtype=np.float32), StoreFilters(), 10)
print(json.dumps({"reads": reads, "hits": [[h.message, h.chunk, h.score] for h in hits]}))
"""


def record(number: int, chunks: int = 2) -> MessageRecord:
    """Message ``number`` of conversation ``number % 3``, with ``chunks`` random unit vectors."""
    conversation = Conversation("chatgpt", f"c{number % 3}", f"title {number % 3}", 1.0, 2.0)
    role = ("user", "assistant")[number % 2]
    message = Message(conversation.id, f"m{number}", role, 1.5 + number, f"text {number}", number)
    vectors = np.random.default_rng(number).normal(size=(chunks, DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = tuple(f"text {number} part {part}" for part in range(chunks))
    return MessageRecord(message.key("chatgpt"), conversation, message, texts, vectors)


def build(path: Path, count: int) -> SQLiteStore:
    store = SQLiteStore(path)
    store.ensure_schema("m", DIMENSIONS)
    store.upsert([record(number) for number in range(count)])
    return store


def add(path: Path, numbers: range) -> None:
    """An ingestion in another connection."""
    writer = SQLiteStore(path)
    writer.upsert([record(number) for number in numbers])
    writer.close()


def query(seed: int = 99) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIMENSIONS).astype(np.float32)
    return vector / np.linalg.norm(vector)


def folder(store: SQLiteStore) -> Path:
    return Path(f"{store.path}.vectors") / "space-1"


def state(store: SQLiteStore) -> dict:
    return json.loads((folder(store) / "state.json").read_text())


def sizes(store: SQLiteStore) -> list[int]:
    return [(folder(store) / name).stat().st_size for name in FILES]


def max_chunk(store: SQLiteStore) -> int:
    return store.db.execute("SELECT max(chunk) FROM vectors").fetchone()[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def reads(monkeypatch) -> list[tuple[int, int]]:
    """The chunk id ranges (after, up_to] read out of SQLite, from a process-wide cache of its own."""
    calls: list[tuple[int, int]] = []
    real = sqlite_search._read_vectors

    def counting(db, path, space, dimensions, after, up_to):
        calls.append((after, up_to))
        return real(db, path, space, dimensions, after, up_to)

    monkeypatch.setattr(sqlite_search, "_read_vectors", counting)
    monkeypatch.setattr(sqlite_search, "_MATRICES", {})
    return calls


def hits(store: SQLiteStore, filters: StoreFilters = StoreFilters(), warm: bool = False) -> list[Hit]:
    """A search as a new process runs it (nothing kept), unless ``warm``."""
    if not warm:
        sqlite_search._MATRICES.clear()
    return [(hit.message, hit.chunk, hit.score) for hit in store.vector_hits(query(), filters, 10)]


def from_sqlite(store: SQLiteStore, filters: StoreFilters = StoreFilters()) -> list[Hit]:
    """The hits of the SQLite path (no vector file), leaving a fresh vector file behind."""
    store.remove_derived_files()
    return hits(store, filters)


def kept_vectors(store: SQLiteStore) -> np.ndarray:
    return next(iter(sqlite_search._MATRICES.values())).rows.vectors


# Mapping instead of reading

def test_a_cold_search_maps_the_file_and_finds_exactly_what_sqlite_finds(tmp_path, reads):
    store = build(tmp_path / "m.db", 40)
    assert not folder(store).exists()
    filters = [StoreFilters(), StoreFilters(role="assistant"), StoreFilters(conversations=[1])]
    expected = [from_sqlite(store, f) for f in filters]
    assert reads == [(0, max_chunk(store))] * 3 and not isinstance(kept_vectors(store), np.memmap)
    reads.clear()
    assert [hits(store, f) for f in filters] == expected
    assert reads == [] and isinstance(kept_vectors(store), np.memmap)
    assert state(store) == {"deletions": 0, "count": 80, "max_id": 80, "dimensions": DIMENSIONS, "format": 1}
    assert sizes(store) == [80 * 8, 80 * 8, 80 * DIMENSIONS * 4]
    store.close()


def test_a_new_process_maps_the_file_without_reading_a_blob(tmp_path):
    store = build(tmp_path / "m.db", 30)
    store.close()

    def fresh() -> dict:
        return json.loads(subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(store.path),
                                          json.dumps(query().tolist())], check=True, capture_output=True,
                                         text=True).stdout)

    first, second = fresh(), fresh()
    assert first["reads"] == [[0, 60]] and second["reads"] == []
    assert second["hits"] == first["hits"] and len(first["hits"]) == 10


def test_the_files_are_readable_by_their_owner_only(tmp_path, reads):
    previous = os.umask(0o022)
    try:
        store = build(tmp_path / "m.db", 5)
        hits(store)
    finally:
        os.umask(previous)
    assert mode(folder(store).parent) == mode(folder(store)) == 0o700
    assert {path.name: mode(path) for path in folder(store).iterdir()} == {
        name: 0o600 for name in (*FILES, "state.json", ".lock")}
    store.close()


# Stale and grown

def test_a_delete_removes_the_file_and_a_stale_one_left_behind_is_rebuilt(tmp_path, reads):
    store = build(tmp_path / "m.db", 20)
    hits(store)
    shutil.copytree(folder(store), tmp_path / "before-the-delete")
    gone = record(3)
    assert store.delete_keys([gone.key]) == 1
    assert not folder(store).parent.exists()  # `sparky reset` and `ingest --reset` end here
    shutil.copytree(tmp_path / "before-the-delete", folder(store))  # as if another process left it
    reads.clear()
    found = hits(store)
    assert reads == [(0, 40)]  # the file says 0 deletions, the store 1: not used
    assert all(store.messages([message])[message].key != gone.key for message, _, _ in found)
    assert state(store)["deletions"] == 1 and state(store)["count"] == 38
    reads.clear()
    assert hits(store) == found and reads == []
    store.close()


def test_an_ingestion_adds_only_its_rows_to_the_file(tmp_path, reads):
    store = build(tmp_path / "m.db", 20)
    hits(store)
    inode = (folder(store) / "vectors.f32").stat().st_ino
    add(store.path, range(20, 23))
    reads.clear()
    hits(store)  # a new process
    assert reads == [(40, 46)]
    assert sizes(store) == [46 * 8, 46 * 8, 46 * DIMENSIONS * 4] and state(store)["count"] == 46
    add(store.path, range(23, 25))
    hits(store, warm=True)  # a long-lived process appends to the file too
    assert reads == [(40, 46), (46, 50)] and state(store)["max_id"] == 50
    assert (folder(store) / "vectors.f32").stat().st_ino == inode  # appended, never rewritten
    reads.clear()
    mapped = hits(store)
    assert reads == [] and mapped == from_sqlite(store)
    store.close()


def test_an_emptied_store_still_answers(tmp_path, reads):
    store = build(tmp_path / "m.db", 3)
    hits(store)
    store.delete_keys([record(number).key for number in range(3)])
    assert hits(store) == [] and hits(store) == []
    assert state(store)["count"] == 0
    store.close()


def test_a_file_left_by_a_store_that_was_deleted_and_made_again_is_not_used(tmp_path, reads):
    old = build(tmp_path / "m.db", 20)
    hits(old)
    old.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{old.path}{suffix}").unlink(missing_ok=True)
    store = SQLiteStore(old.path)  # the same ids, counts and deletions, other vectors
    store.ensure_schema("m", DIMENSIONS)
    store.upsert([record(number) for number in range(100, 120)])
    reads.clear()
    found = hits(store)
    assert reads == [(0, 40)] and found == from_sqlite(store)
    store.close()


# Damaged

def truncate_vectors(path: Path) -> None:
    os.truncate(path / "vectors.f32", (path / "vectors.f32").stat().st_size - 4)


def lengthen_ids(path: Path) -> None:
    with open(path / "ids.i64", "ab") as file:
        file.write(np.int64(999).tobytes())


def zero_vectors(path: Path) -> None:
    (path / "vectors.f32").write_bytes(bytes((path / "vectors.f32").stat().st_size))


def change_last_vector(path: Path) -> None:
    with open(path / "vectors.f32", "r+b") as file:
        file.seek(-4, os.SEEK_END)
        file.write(np.float32(0.5).tobytes())


def shift_messages(path: Path) -> None:
    messages = np.fromfile(path / "messages.i64", dtype="<i8")
    (messages + 1).tofile(path / "messages.i64")


def swap_ids(path: Path) -> None:
    """Out of order at rows 3 and 4, which the comparison of a few rows with the store does not look at."""
    ids = np.fromfile(path / "ids.i64", dtype="<i8")
    ids[[3, 4]] = ids[[4, 3]]
    ids.tofile(path / "ids.i64")


def lie_about_count(path: Path) -> None:
    data = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**data, "count": data["count"] - 1}))


def drop_last_row_everywhere(path: Path) -> None:
    """Files and state.json agree on one row fewer, but the last id is not the recorded max_id."""
    lie_about_count(path)
    count = json.loads((path / "state.json").read_text())["count"]
    for name, width in zip(FILES, (8, 8, DIMENSIONS * 4)):
        os.truncate(path / name, count * width)


def garble_state(path: Path) -> None:
    (path / "state.json").write_text('{"deletions": 0, "count": ')


def unknown_format(path: Path) -> None:
    data = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**data, "format": 2}))


def remove_state(path: Path) -> None:
    (path / "state.json").unlink()


@pytest.mark.parametrize("damage", [truncate_vectors, lengthen_ids, zero_vectors, change_last_vector,
                                    shift_messages, swap_ids, lie_about_count, drop_last_row_everywhere,
                                    garble_state, unknown_format, remove_state])
def test_a_damaged_file_is_not_used_and_is_rewritten(tmp_path, reads, damage):
    store = build(tmp_path / "m.db", 20)
    expected = hits(store)
    damage(folder(store))
    reads.clear()
    assert hits(store) == expected and reads == [(0, 40)]
    reads.clear()
    assert hits(store) == expected and reads == []  # rewritten whole
    assert sizes(store) == [40 * 8, 40 * 8, 40 * DIMENSIONS * 4] and state(store)["count"] == 40
    store.close()


# Concurrent and unwritable

def test_a_search_never_waits_for_a_writer_of_the_file(tmp_path, reads):
    store = build(tmp_path / "m.db", 10)
    expected = hits(store)
    fd = os.open(folder(store) / ".lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process is writing the file
    try:
        reads.clear()
        assert hits(store) == expected and reads == [(0, 20)]  # read from SQLite, not mapped
        remove_state(folder(store))
        assert hits(store) == expected and not (folder(store) / "state.json").exists()  # and not written
    finally:
        os.close(fd)
    store.close()


def test_a_place_where_the_folder_cannot_be_made_still_answers(tmp_path, reads):
    store = build(tmp_path / "m.db", 10)
    Path(f"{store.path}.vectors").write_text("in the way")
    expected = hits(store)
    assert hits(store) == expected and reads == [(0, 20), (0, 20)]
    assert Path(f"{store.path}.vectors").read_text() == "in the way"
    store.close()


def unprivileged() -> list[str]:
    """A command prefix under which the permission bits apply (root ignores them)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]


def test_an_unwritable_folder_still_answers_and_its_valid_file_is_still_used(tmp_path):
    store = build(tmp_path / "m.db", 10)
    hits(store)
    store.close()
    shutil.copytree(folder(store), tmp_path / "saved")
    written = sizes(store)

    def fresh() -> dict:
        os.chmod(folder(store), 0o500)
        try:
            done = subprocess.run([*unprivileged(), sys.executable, "-c", FRESH_PROCESS, str(store.path),
                                   json.dumps(query().tolist())], capture_output=True, text=True)
        finally:
            os.chmod(folder(store), 0o700)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        return json.loads(done.stdout)

    assert fresh()["reads"] == []
    add(store.path, range(10, 12))
    assert fresh()["reads"] == [[20, 24]]  # could not append: the new rows are kept in memory only
    assert sizes(store) == written and state(store)["count"] == 20
    writer = SQLiteStore(store.path)
    writer.delete_keys([record(11).key])
    writer.close()
    shutil.copytree(tmp_path / "saved", folder(store))  # a stale file that cannot be rewritten
    stale = fresh()
    assert stale["reads"] == [[0, 22]] and state(store)["count"] == 20
    reader = SQLiteStore(store.path)
    assert stale["hits"] == [list(hit) for hit in from_sqlite(reader)]
    reader.close()
