"""Message versions in both stores: an edited text supersedes the stored one (kept, hidden from search),
an old version comes back without re-embedding, copies keep versions as they are, and stores made by
schema 2 migrate in place."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from support.postgres import postgres_database, postgres_server, postgres_url  # noqa: F401
from sparky.models import Conversation, Message
from sparky.stores import MessageRecord, StoreFilters, open_store
from sparky.stores.copy import copy_store

DIMENSIONS = 4
CONVERSATION = Conversation("chatgpt", "conv-1", "Pets", 1.0, 2.0)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    url = str(tmp_path / "memory.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = open_store(url)
    store.ensure_schema("test-model", DIMENSIONS)
    yield store
    store.close()


def version(message_id: str, text: str, axis: int, position: int = 0, role: str = "user") -> MessageRecord:
    message = Message(CONVERSATION.id, message_id, role, 10.0 + position, text, position)
    vector = np.zeros((1, DIMENSIONS), np.float32)
    vector[0, axis] = 1.0
    return MessageRecord(message.key("chatgpt"), CONVERSATION, message, (text,), vector)


def test_an_edited_text_supersedes_the_stored_version_and_search_hides_it(store):
    old, new = version("m1", "my quokka is called Bramble", 0), version("m1", "my quokka is called Thorn", 1)
    assert store.upsert([old]) == 1
    assert store.upsert([new]) == 1
    assert store.known([old.key, new.key]) == {new.key}
    assert store.known([old.key, new.key], include_superseded=True) == {old.key, new.key}
    assert store.current_versions([("chatgpt", "conv-1")]) == {("chatgpt", "conv-1"): {"m1": new.key}}
    stats = store.stats()
    assert (stats["messages"], stats["superseded"], store.message_count()) == (1, 1, 1)
    query = np.array([1, 0, 0, 0], np.float32)  # nearest to the old version
    assert [hit.message for hit in store.vector_hits(query, StoreFilters(), 5)] == [_row(store, new)]
    with_old = store.vector_hits(query, StoreFilters(include_superseded=True), 5)
    assert with_old[0].message == _row(store, old)
    assert [hit.message for hit in store.keyword_hits(["bramble"], StoreFilters(), 5)] == []
    assert len(store.keyword_hits(["bramble"], StoreFilters(include_superseded=True), 5)) == 1


def test_an_old_version_is_made_current_again_without_new_vectors(store):
    old, new = version("m1", "first text", 0), version("m1", "second text", 1)
    store.upsert([old])
    store.upsert([new])
    revived = MessageRecord(old.key, CONVERSATION, old.message, old.chunk_texts, np.zeros((1, DIMENSIONS), np.float32))
    assert store.upsert([revived]) == 1
    assert store.known([old.key, new.key]) == {old.key}
    hits = store.vector_hits(np.array([1, 0, 0, 0], np.float32), StoreFilters(), 5)
    assert [(hit.message, round(hit.score, 3)) for hit in hits] == [(_row(store, old), 1.0)]  # its own vector
    assert store.stats()["chunks"] == 2


def test_supersede_hides_messages_left_off_a_branch_and_neighbours_skip_them(store):
    question, answer = version("q", "name my quokka", 0, 0), version("a1", "call it Bramble", 1, 1, "assistant")
    regenerated = version("a2", "call it Thorn", 2, 1, "assistant")
    store.upsert([question, answer, regenerated])
    assert store.known([answer.key, regenerated.key]) == {answer.key, regenerated.key}  # two message ids
    assert store.supersede([answer.key]) == 1
    assert store.supersede([answer.key]) == 0
    row = store.messages([_row(store, question)])[_row(store, question)]
    before, after = store.neighbours(row, 3)
    assert (before, [item.key for item in after]) == ([], [regenerated.key])


def test_stored_conversations_and_their_keys_include_every_version(store):
    store.upsert([version("m1", "one", 0), version("m2", "two", 1, 1)])
    store.upsert([version("m1", "one, edited", 2)])
    [stored] = store.stored_conversations("chatgpt")
    assert (stored.conversation_id, stored.title, stored.messages) == ("conv-1", "Pets", 3)
    assert store.stored_conversations("claude") == []
    keys = store.keys_of_conversations([("chatgpt", "conv-1")])
    assert len(keys) == 3
    assert store.delete_keys(keys) == 3 and store.stored_conversations("chatgpt") == []


def test_a_copy_keeps_superseded_versions_superseded_and_a_second_copy_copies_nothing(store, tmp_path):
    old, new = version("m1", "before", 0), version("m1", "after", 1)
    store.upsert([new])
    store.upsert([old])  # the older text stored last: row order says nothing about which is current
    target = open_store(str(tmp_path / "copy.db"))
    try:
        assert copy_store(store, target).copied == 2
        assert target.known([old.key, new.key]) == store.known([old.key, new.key]) == {old.key}
        again = copy_store(store, target)
        assert (again.copied, again.skipped) == (0, 2)
    finally:
        target.close()


def test_a_schema_2_store_migrates_in_place_keeping_its_vectors_and_gets_its_trigram_index(tmp_path):
    from sparky.stores.sqlite.store import MIGRATIONS

    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for migration in MIGRATIONS[:2]:
        migration(db)
    db.execute("PRAGMA user_version = 2")
    db.execute("INSERT INTO meta VALUES ('model', 'test-model'), ('dimensions', '4')")
    db.execute("INSERT INTO spaces (model, dimensions) VALUES ('test-model', 4)")
    db.execute("INSERT INTO conversations VALUES (1, 'chatgpt', 'conv-1', 'Pets', 1, 2)")
    for row, (key, text) in enumerate([("k-old", "an edit, stored twice by schema 2"), ("k-new", "the edit")], 1):
        db.execute("INSERT INTO messages VALUES (?, ?, 1, 'm1', 'user', 1, 0, ?, ?)", (row, key, text, float(row)))
        db.execute("INSERT INTO chunks (id, message, idx, text) VALUES (?, ?, 0, ?)", (row, row, text))
        db.execute("INSERT INTO vectors VALUES (1, ?, ?)", (row, np.eye(4, dtype=np.float32)[row].tobytes()))
        db.execute("INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)", (row, text))
    db.close()
    store = open_store(str(path))
    try:
        assert store.known(["k-old", "k-new"]) == {"k-new"}
        assert store.stats() | {"model": None} == {"conversations": 1, "messages": 1, "chunks": 2, "superseded": 1,
                                                   "model": None, "dimensions": 4}
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 5
        plan = store.db.execute("EXPLAIN QUERY PLAN SELECT count(*) FROM vectors WHERE space = 1").fetchall()
        assert "COVERING INDEX vectors_by_space" in plan[0][-1]  # a space's vectors counted without their pages
        assert store.db.execute("SELECT count(*) FROM chunks_trigram WHERE chunks_trigram MATCH 'edit'"
                                ).fetchone()[0] == 2  # the trigram index is filled from the chunks stored
    finally:
        store.close()


def _row(store, record: MessageRecord) -> int:
    """The row id of a stored version, found through the search side (no backend-specific SQL)."""
    hits = store.keyword_hits(record.message.text.replace(",", "").split(), StoreFilters(include_superseded=True), 50)
    rows = store.messages([hit.message for hit in hits])
    return next(row.id for row in rows.values() if row.key == record.key)
