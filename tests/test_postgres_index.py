"""The PostgreSQL store's indexes. HNSW: a space is filled without it and the index built once over its vectors
at the end of the ingest, re-embedding or copy that filled it; later writes go into it; a build cut short
leaves the data whole and search exact until the next run builds it. Keywords: written by the insert (schema 3),
a store of schema 2 migrated in place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
from click.testing import CliRunner

from support.postgres import (admin, hnsw_scans, postgres_database, postgres_keys,  # noqa: F401
                              postgres_server, postgres_url)
from sparky.cli import cli
from sparky.models import Conversation, Message
from sparky.pipeline.scan import scan_export
from sparky.readers import ExportReader
from sparky.search import Searcher
from sparky.stores import MessageRecord, StoreFilters, open_store
from sparky.stores.postgres import schema

QUERY = "docker permission denied on the socket"
# `sparky` with every space large enough for its HNSW index (the sample's 190 chunks are far below the threshold)
SMALL_INDEX_CLI = ("import sys; from sparky.stores.postgres import schema; schema.HNSW_MIN_ROWS = 1; "
                   "from sparky.cli import cli; sys.argv[0] = 'sparky'; cli()")


def hnsw_indexes(url: str) -> list[str]:
    with admin(url) as conn:
        return [row[0] for row in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND indexdef LIKE '%USING hnsw%'"
            " ORDER BY indexname").fetchall()]


def top_keys(url: str) -> list[str]:
    result = CliRunner().invoke(cli, ["search", QUERY, "--db", url, "-k", "10", "--all", "--format", "json"])
    assert result.exit_code == 0, result.output
    return [hit["key"] for hit in json.loads(result.output)["results"]]


def records(count: int, start: int = 0, dimensions: int = 8, seed: int = 3) -> list[MessageRecord]:
    vectors = np.random.default_rng(seed + start).normal(size=(count, dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    conversation = Conversation("chatgpt", "c1", "A title", 1.0, 2.0)
    made = []
    for number, vector in enumerate(vectors, start):
        message = Message("c1", str(number), "user", 1.5, f"text {number}", number)
        made.append(MessageRecord(message.key("chatgpt"), conversation, message, (message.text,), vector[None]))
    return made


def test_an_ingest_killed_as_it_builds_the_index_keeps_every_message_and_the_next_run_builds_it(
        postgres_url, sample_export, tmp_path, monkeypatch):
    """Killed inside the index build (SIGKILL at ``index_build``): every message is stored, no index is left
    (half-built or invalid), search answers exactly; the next ingest stores nothing and builds the index,
    and the top 10 are the same through it."""
    progress = tmp_path / "progress.json"
    args = ["ingest", str(sample_export), "--db", postgres_url, "--embedder", "wordllama", "--quiet",
            "--progress-file", str(progress)]
    child = subprocess.Popen([sys.executable, "-c", SMALL_INDEX_CLI, *args], cwd=tmp_path,
                             env={**os.environ, "SPARKY_CRASH_AT": "index_build:1"})
    child.wait(timeout=600)
    assert child.returncode == -9
    assert set(postgres_keys(postgres_url)) == set(scan_export(ExportReader(sample_export)).all_keys())
    assert hnsw_indexes(postgres_url) == []
    exact = top_keys(postgres_url)
    assert len(exact) == 10

    monkeypatch.setattr(schema, "HNSW_MIN_ROWS", 1)
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    [index] = hnsw_indexes(postgres_url)
    assert set(postgres_keys(postgres_url)) == set(scan_export(ExportReader(sample_export)).all_keys())
    assert top_keys(postgres_url) == exact
    store = open_store(postgres_url)
    try:  # the same search on this connection, whose scan counts are flushed on asking (a closed session's are
        before = hnsw_scans(store)  # flushed as its server process exits, which may come after the CLI returns)
        assert [hit.key for hit in Searcher(store).search(QUERY, k=10, floor=False)] == exact
        assert hnsw_scans(store) > before  # answered through the index this time
    finally:
        store.close()


def test_a_space_below_the_threshold_gets_no_index_and_is_searched_exactly(postgres_url):
    store = open_store(postgres_url)
    try:
        store.ensure_schema("m", 8)
        stored = records(300)
        store.upsert(stored)
        assert schema.HNSW_MIN_ROWS > 300 and store.ensure_index() is None and hnsw_indexes(postgres_url) == []
        query = stored[7].vectors[0]
        best = sorted(stored, key=lambda record: -float(record.vectors[0] @ query))[:10]
        hits = store.vector_hits(query, StoreFilters(), 10)
        rows = store.messages([hit.message for hit in hits])
        assert [rows[hit.message].key for hit in hits] == [record.key for record in best]
    finally:
        store.close()


def test_the_index_is_built_once_and_later_writes_go_into_it(postgres_url, monkeypatch):
    monkeypatch.setattr(schema, "HNSW_MIN_ROWS", 10_000)
    store = open_store(postgres_url)
    try:
        store.ensure_schema("m", 8)
        assert store.ensure_index() is None  # no vectors yet: nothing to build
        store.upsert(records(3000))
        assert store.ensure_index() is None  # below the threshold: exact scans
        for start in range(3000, 12_000, 3000):  # enough rows that the planner prefers the index to a scan
            store.upsert(records(3000, start))
        assert hnsw_indexes(postgres_url) == []  # filled without the index
        assert store.ensure_index() == (12_000, True)
        assert store.ensure_index() is None  # there already
        later = records(50, start=12_000)
        store.upsert(later)
        with admin(postgres_url) as conn:
            conn.execute("ANALYZE")  # as autovacuum does after a load: the planner's row estimates
        before = hnsw_scans(store)
        for record in later[:5]:
            [hit] = store.vector_hits(record.vectors[0], StoreFilters(), 1)
            assert store.messages([hit.message])[hit.message].key == record.key
        assert hnsw_scans(store) == before + 5  # found through the index, which the writes went into
    finally:
        store.close()


def test_copy_into_postgres_and_reembed_build_the_index_of_the_space_they_filled(postgres_url, sample_export,
                                                                                  tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "HNSW_MIN_ROWS", 1)
    source = tmp_path / "memory.db"
    ingest = CliRunner().invoke(cli, ["ingest", str(sample_export), "--db", str(source), "--embedder", "wordllama",
                                      "--quiet", "--progress-file", str(tmp_path / "p.json")])
    assert ingest.exit_code == 0, ingest.output
    copy = CliRunner().invoke(cli, ["copy", "--from", str(source), "--to", postgres_url])
    assert copy.exit_code == 0, copy.output
    assert len(hnsw_indexes(postgres_url)) == 1
    reembed = CliRunner().invoke(cli, ["reembed", "--embedder", "minilm", "--db", postgres_url, "--quiet"])
    assert reembed.exit_code == 0, reembed.output
    with admin(postgres_url) as conn:
        spaces = [row[0] for row in conn.execute("SELECT id FROM spaces ORDER BY id").fetchall()]
    assert hnsw_indexes(postgres_url) == sorted(f"vectors_hnsw_{space}" for space in spaces) and len(spaces) == 2


def test_a_schema_2_store_migrates_to_keywords_written_by_the_insert_keeping_its_chunks_searchable(
        postgres_url, monkeypatch):
    """Schema 2 generated ``tsv`` and ``tokens`` and kept no pending list; schema 3 writes both in the insert
    and lets the keyword index take a bounded pending list. A chunk stored before is found as before, one
    stored after is found too, and BM25's word counts are the same for both."""
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
    old = open_store(postgres_url)
    old.ensure_schema("m", 8)
    old.close()
    with admin(postgres_url) as conn:  # what schema 2's upsert wrote: the text, its keywords generated
        conn.execute("INSERT INTO conversations (source, conversation_id, title) VALUES ('chatgpt', 'c1', 'Old')")
        conn.execute("INSERT INTO messages (key, conversation, message_id, role, position, text, ingested_at)"
                     " SELECT 'old-key', id, 'm0', 'user', 0, 'the lighthouse at Hook Head', 1.0 FROM conversations")
        conn.execute("INSERT INTO chunks (message, idx, text) SELECT id, 0, 'the lighthouse at Hook Head'"
                     " FROM messages")
        conn.execute("UPDATE keyword_totals SET chunks = 1, tokens = 5")
    monkeypatch.undo()

    store = open_store(postgres_url)
    try:
        [new] = records(1, start=1)
        new = replace(new, chunk_texts=("a lighthouse keeper diary",))
        store.upsert([new])
        with admin(postgres_url) as conn:
            assert conn.execute("SELECT max(version) FROM sparky_schema").fetchone()[0] == len(schema.MIGRATIONS) == 3
            generated = conn.execute("SELECT attname, attgenerated FROM pg_attribute WHERE attrelid = 'chunks'::regclass"
                                     " AND attname IN ('tsv', 'tokens') ORDER BY attname").fetchall()
            options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = 'chunks_tsv'::regclass").fetchone()[0]
            tokens = dict(conn.execute("SELECT text, tokens FROM chunks").fetchall())
        assert generated == [("tokens", ""), ("tsv", "")]
        assert set(options) == {"fastupdate=on", "gin_pending_list_limit=1024"}
        hits = store.keyword_hits(["lighthouse"], StoreFilters(), 10)
        keys = {row.key for row in store.messages([hit.message for hit in hits]).values()}
        assert keys == {"old-key", new.key}
        assert tokens == {"the lighthouse at Hook Head": 5, new.chunk_texts[0]: 4}
    finally:
        store.close()
