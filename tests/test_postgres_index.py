"""The PostgreSQL store's HNSW index: a space is filled without it and the index built once over its vectors at
the end of the ingest, re-embedding or copy that filled it; later writes go into it; a build cut short leaves
the data whole and search exact until the next run builds it."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from conftest import sparky_subprocess
from support.postgres import (admin, hnsw_scans, postgres_database, postgres_keys,  # noqa: F401
                              postgres_server, postgres_url)
from sparky.cli import cli
from sparky.models import Conversation, Message
from sparky.pipeline.scan import scan_export
from sparky.readers import ExportReader
from sparky.stores import MessageRecord, StoreFilters, open_store

QUERY = "docker permission denied on the socket"


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
        postgres_url, sample_export, tmp_path):
    """Killed inside the index build (SIGKILL at ``index_build``): every message is stored, no index is left
    (half-built or invalid), search answers exactly; the next ingest stores nothing and builds the index,
    and the top 10 are the same through it."""
    progress = tmp_path / "progress.json"
    args = ["ingest", str(sample_export), "--db", postgres_url, "--embedder", "wordllama", "--quiet",
            "--progress-file", str(progress)]
    child = sparky_subprocess(args, tmp_path, env={"SPARKY_CRASH_AT": "index_build:1"})
    child.communicate(timeout=600)
    assert child.returncode == -9
    assert set(postgres_keys(postgres_url)) == set(scan_export(ExportReader(sample_export)).all_keys())
    assert hnsw_indexes(postgres_url) == []
    exact = top_keys(postgres_url)
    assert len(exact) == 10

    again = CliRunner().invoke(cli, args[:-1] + [str(progress)])
    assert again.exit_code == 0, again.output
    [index] = hnsw_indexes(postgres_url)
    assert set(postgres_keys(postgres_url)) == set(scan_export(ExportReader(sample_export)).all_keys())
    store = open_store(postgres_url)
    try:
        before = hnsw_scans(store)
        assert top_keys(postgres_url) == exact
        assert hnsw_scans(store) > before  # answered through the index this time
    finally:
        store.close()


def test_the_index_is_built_once_and_later_writes_go_into_it(postgres_url):
    store = open_store(postgres_url)
    try:
        store.ensure_schema("m", 8)
        assert store.ensure_index() is None  # no vectors yet: nothing to build
        for start in range(0, 12_000, 3000):  # enough rows that the planner prefers the index to a scan
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
                                                                                  tmp_path):
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
