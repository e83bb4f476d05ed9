"""``copy_store``: a memory moved between SQLite and PostgreSQL, both ways, interrupted and resumed, holds
exactly what a direct ingestion into the target holds (keys, texts, vectors), and nothing is embedded again."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from support.postgres import (admin, fresh_schema, minilm, postgres_database, postgres_health,  # noqa: F401
                              postgres_server, healthy, run_ingest, terminate)
from sparky.embedders import RetryPolicy
from sparky.pipeline.store_retry import with_store_retries
from sparky.errors import StoreError
from sparky.search import Searcher
from sparky.stores import open_store
from sparky.stores.copy import CopyProgress, copy_store

_MESSAGES = ("SELECT m.key, v.source, v.conversation_id, v.title, v.created_at, v.updated_at, m.message_id, m.role,"
             " m.created_at, m.position, m.text FROM messages m JOIN conversations v ON v.id = m.conversation")
_CHUNKS = "SELECT m.key, c.idx, c.text, {vector} FROM chunks c JOIN messages m ON m.id = c.message" \
          " JOIN vectors x ON x.chunk = c.id"


def snapshot(url: str) -> dict:
    """Everything a store holds about each message, by key: the message and its conversation, and its
    chunks with their vectors as float32 bytes. Row ids and ingestion times are left out."""
    if "://" in url:
        with admin(url) as conn:
            messages = conn.execute(_MESSAGES).fetchall()
            chunks = [(key, idx, text, np.asarray(vector, np.float32).tobytes()) for key, idx, text, vector in
                      conn.execute(_CHUNKS.format(vector="x.embedding::real[]")).fetchall()]
            meta = dict(conn.execute("SELECT name, value FROM meta WHERE name IN ('model', 'dimensions')").fetchall())
    else:
        with sqlite3.connect(url) as db:
            messages = db.execute(_MESSAGES).fetchall()
            chunks = db.execute(_CHUNKS.format(vector="x.vector")).fetchall()
            meta = dict(db.execute("SELECT name, value FROM meta WHERE name IN ('model', 'dimensions')").fetchall())
    held = {row[0]: {"message": tuple(row[1:]), "chunks": []} for row in messages}
    for key, idx, text, vector in sorted(chunks):
        held[key]["chunks"].append((idx, text, bytes(vector)))
    return {"meta": meta, "messages": held}


@pytest.fixture(scope="module")
def direct(tmp_path_factory, sample_export, minilm, request):
    """The sample export ingested straight into each kind of store."""
    urls = {"sqlite": str(tmp_path_factory.mktemp("direct") / "memory.db")}
    with fresh_schema(request.getfixturevalue("postgres_database")) as postgres:
        urls["postgres"] = postgres
        for name, url in urls.items():
            assert run_ingest(url, sample_export, tmp_path_factory.mktemp(f"direct-{name}"), minilm).complete
        yield urls


@pytest.fixture
def target(request, tmp_path, postgres_database):
    """An empty store of the kind the test's ``direction`` copies into."""
    if request.node.callspec.params["direction"] == "sqlite->postgres":
        with fresh_schema(postgres_database) as url:
            yield url
    else:
        yield str(tmp_path / "copy.db")


class Stop(Exception):
    pass


@pytest.mark.parametrize("direction", ["sqlite->postgres", "postgres->sqlite"])
def test_a_copy_interrupted_and_resumed_equals_a_direct_ingestion(direct, target, direction, minilm):
    source_kind, target_kind = direction.split("->")
    source = open_store(direct[source_kind], create=False)
    total = source.message_count()
    calls_before = minilm.calls
    seen: list[CopyProgress] = []

    def stop_after_one(progress: CopyProgress) -> None:
        seen.append(progress)
        raise Stop()

    try:
        destination = open_store(target)
        with pytest.raises(Stop):
            copy_store(source, destination, on_batch=stop_after_one, batch_size=20)
        assert seen == [CopyProgress(done=20, total=total, copied=20, skipped=0)]
        assert destination.stats()["messages"] == 20
        with destination.lock():  # the interrupted copy let go of the target's lock
            pass
        resumed = copy_store(source, destination, on_batch=seen.append, batch_size=20)
        assert (resumed.copied, resumed.skipped, resumed.total) == (total - 20, 20, total)
        assert seen[-1] == CopyProgress(done=total, total=total, copied=total - 20, skipped=20)
        again = copy_store(source, destination, batch_size=1000)
        assert (again.copied, again.skipped, again.batches) == (0, total, 1)
        destination.close()
    finally:
        source.close()
    assert minilm.calls == calls_before  # nothing was embedded
    assert snapshot(target) == snapshot(direct[target_kind])
    if target_kind == "postgres":
        assert healthy(postgres_health(target))
    copied, straight = open_store(target, create=False), open_store(direct[target_kind], create=False)
    try:
        for mode in ("hybrid", "keyword", "vector"):
            for query in ("docker permission error", "usermod", "東京"):
                assert [r.key for r in Searcher(copied).search(query, k=5, mode=mode)] == \
                       [r.key for r in Searcher(straight).search(query, k=5, mode=mode)]
    finally:
        copied.close()
        straight.close()


@pytest.mark.parametrize("direction", ["sqlite->postgres", "postgres->sqlite"])
def test_a_connection_lost_mid_copy_is_retried_and_the_copy_equals_a_direct_ingestion(direct, target, direction):
    """The PostgreSQL side's server connections are ended after the first batch: the next store call fails
    transiently, is retried on a new connection, and the copy completes with nothing lost or doubled."""
    source_kind, target_kind = direction.split("->")
    postgres = direct["postgres"] if source_kind == "postgres" else target
    ended: list[int] = []

    def end_connections(progress: CopyProgress) -> None:
        if not ended:
            ended.append(terminate(postgres))

    fast = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05)
    source, destination = open_store(direct[source_kind], create=False), open_store(target)
    try:
        result = copy_store(source, destination, on_batch=end_connections, batch_size=20,
                            retrying=lambda call: with_store_retries(call, fast))
    finally:
        source.close()
        destination.close()
    assert ended and ended[0] >= 1  # a connection was really ended
    assert (result.copied, result.skipped) == (result.total, 0)
    assert snapshot(target) == snapshot(direct[target_kind])


@pytest.mark.parametrize("direction", ["sqlite->postgres", "postgres->sqlite"])
def test_a_copy_into_a_store_of_another_model_is_refused_before_anything_is_written(direct, target, direction):
    source_kind, _ = direction.split("->")
    destination = open_store(target)
    source = open_store(direct[source_kind], create=False)
    try:
        destination.ensure_schema("another-model", 384)
        with pytest.raises(StoreError, match="built with embedding model another-model"):
            copy_store(source, destination)
        assert destination.stats()["messages"] == 0
    finally:
        source.close()
        destination.close()


def test_a_copy_from_an_empty_store_says_so(tmp_path):
    source = open_store(str(tmp_path / "empty.db"))
    target = open_store(str(tmp_path / "target.db"))
    try:
        with pytest.raises(StoreError, match="no vectors yet"):
            copy_store(source, target)
    finally:
        source.close()
        target.close()
