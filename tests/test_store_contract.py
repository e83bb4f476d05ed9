"""The Store protocol's contract, one suite run against every backend (a SQLite file, a real PostgreSQL).

Searches are checked against answers worked out here by brute force (exact cosine, FTS5's BM25 over a
corpus of plain words), so both stores are held to the same reference; an ingestion of the sample export
then has to give the same top results on both, in every mode; reset and rebuild go through each store.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from contextlib import contextmanager

from support.postgres import (fresh_schema, minilm, postgres_database, postgres_server, postgres_url,  # noqa: F401
                              run_ingest)
from sparky.errors import LockedError, StoreError
from sparky.models import Conversation, Message
from sparky.pipeline.progress import load_progress
from sparky.pipeline.rebuild import rebuild_progress
from sparky.pipeline.reset import reset_export
from sparky.pipeline.scan import scan_export
from sparky.readers import ExportReader
from sparky.search import Filters, Searcher
from sparky.stores import MessageRecord, Space, StoreFilters, open_store

BACKENDS = ["sqlite", "postgres"]
DIMENSIONS = 8
WORDS = ("apple banana cherry docker kernel python garden river mountain coffee violin tiger orbit pixel"
         " lantern meadow harbor quartz saddle tunnel walnut zephyr ember falcon glacier").split()


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "memory.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url):
    store = open_store(store_url)
    yield store
    store.close()


@contextmanager
def location(request, tmp_path_factory):
    """A new store location of the backend ``request.param`` names, for a module-scoped fixture."""
    if request.param == "sqlite":
        yield str(tmp_path_factory.mktemp("store") / "memory.db")
    else:
        with fresh_schema(request.getfixturevalue("postgres_database")) as url:
            yield url


def unit(rng: np.random.Generator, rows: int) -> np.ndarray:
    vectors = rng.normal(size=(rows, DIMENSIONS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def record(conversation: Conversation, message_id: str, texts: tuple[str, ...], role: str = "user",
           created_at: float | None = 1.5, position: int = 0, vectors: np.ndarray | None = None,
           seed: int = 0) -> MessageRecord:
    message = Message(conversation.id, message_id, role, created_at, " ".join(texts), position)
    if vectors is None:
        vectors = unit(np.random.default_rng(seed), len(texts))
    return MessageRecord(message.key(conversation.source), conversation, message, texts, vectors)


def conversation(number: int, source: str = "chatgpt", created_at: float | None = 1.0) -> Conversation:
    return Conversation(source, f"conv-{number}", f"Title {number}", created_at, (created_at or 0) + 1)


# Schema, model and dimensions

def test_ensure_schema_records_the_model_once_and_refuses_another(store, store_url):
    store.ensure_schema("model-a", DIMENSIONS)
    store.ensure_schema("model-a", DIMENSIONS)
    assert {k: v for k, v in store.meta().items() if k in ("model", "dimensions")} == \
        {"model": "model-a", "dimensions": str(DIMENSIONS)}
    assert store.spaces() == [Space("model-a", DIMENSIONS)]
    for model, dimensions in (("model-b", DIMENSIONS), ("model-a", DIMENSIONS * 2)):
        with pytest.raises(StoreError, match="built with embedding model model-a"):
            store.ensure_schema(model, dimensions)
    again = open_store(store_url, create=False)
    try:
        assert again.meta()["model"] == "model-a" and again.stats()["dimensions"] == DIMENSIONS
    finally:
        again.close()


def test_opening_without_create_never_makes_a_store(store_url):
    with pytest.raises(StoreError, match="run `sparky ingest EXPORT` first"):
        open_store(store_url, create=False)
    if "://" in store_url:
        import psycopg

        with psycopg.connect(store_url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()[0] == 0
    else:
        assert not Path(store_url).exists()


def test_url_never_shows_a_password(store):
    assert "***" in store.url or "://" not in store.url


def test_upsert_before_ensure_schema_is_refused(store):
    with pytest.raises(StoreError, match="ensure_schema first"):
        store.upsert([record(conversation(1), "m1", ("hello",))])


# Writing

def test_upsert_stores_each_key_once_and_a_reinsert_is_a_no_op(store):
    store.ensure_schema("m", DIMENSIONS)
    first = [record(conversation(1), f"m{i}", (f"text {i}", f"more {i}"), position=i, seed=i) for i in range(5)]
    assert store.upsert(first) == 5
    assert store.upsert(first) == 0
    assert store.upsert(first[:2] + [record(conversation(2), "x", ("new",), seed=9)]) == 1
    assert store.known([r.key for r in first] + ["nope"]) == {r.key for r in first}
    assert store.stats() == {"conversations": 2, "messages": 6, "chunks": 11, "superseded": 0, "model": "m",
                             "dimensions": DIMENSIONS}
    assert store.message_count() == 6


def test_a_key_twice_in_one_batch_is_written_once(store):
    store.ensure_schema("m", DIMENSIONS)
    one = record(conversation(1), "m1", ("same",))
    assert store.upsert([one, one]) == 1
    assert store.stats()["chunks"] == 1


def test_vectors_of_the_wrong_shape_are_refused_and_nothing_of_the_batch_is_written(store):
    store.ensure_schema("m", DIMENSIONS)
    good = record(conversation(1), "good", ("fine",))
    too_few = record(conversation(1), "bad", ("a", "b"), vectors=unit(np.random.default_rng(1), 1))
    too_wide = record(conversation(1), "wide", ("a",), vectors=np.ones((1, DIMENSIONS + 1), np.float32))
    for bad in (too_few, too_wide):
        with pytest.raises(StoreError, match="nothing was written"):
            store.upsert([good, bad])
    assert store.known([good.key]) == set() and store.stats()["messages"] == 0
    assert store.upsert([good]) == 1


def test_a_known_conversation_gets_its_new_title(store):
    store.ensure_schema("m", DIMENSIONS)
    store.upsert([record(conversation(1), "a", ("one",))])
    renamed = Conversation("chatgpt", "conv-1", "Renamed", 1.0, 5.0)
    store.upsert([record(renamed, "b", ("two",), position=1)])
    rows = store.messages(list(range(1, 10)))
    assert {row.title for row in rows.values()} == {"Renamed"} and store.stats()["conversations"] == 1


def test_delete_keys_removes_messages_chunks_vectors_and_keywords(store):
    store.ensure_schema("m", DIMENSIONS)
    keep = record(conversation(1), "keep", ("walnut kernel",), seed=1)
    gone = [record(conversation(2), f"gone{i}", ("walnut tiger", "tiger"), position=i, seed=i + 2) for i in range(3)]
    store.upsert([keep, *gone])
    assert store.delete_keys([r.key for r in gone] + ["unknown"]) == 3
    assert store.known([r.key for r in [keep, *gone]]) == {keep.key}
    assert store.stats() == {"conversations": 1, "messages": 1, "chunks": 1, "superseded": 0, "model": "m",
                             "dimensions": DIMENSIONS}
    assert store.keyword_hits(["tiger"], StoreFilters(), 10) == []
    assert [hit.message for hit in store.keyword_hits(["walnut"], StoreFilters(), 10)] == \
        [hit.message for hit in store.vector_hits(keep.vectors[0], StoreFilters(), 10)]
    assert store.upsert(gone) == 3  # deleted keys can be stored again
    assert store.meta()["deletions"] == "1"


# The ingester's lock

def test_the_lock_is_exclusive_and_released_on_exit(store, store_url):
    store.ensure_schema("m", DIMENSIONS)
    other = open_store(store_url)
    try:
        with store.lock():
            with pytest.raises(LockedError, match="in use by another ingestion"):
                with other.lock():
                    pass
        with other.lock():
            pass
    finally:
        other.close()


@pytest.mark.slow
def test_the_lock_of_a_killed_process_is_released(store, store_url):
    store.ensure_schema("m", DIMENSIONS)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom sparky.stores import open_store\n"
         "lock = open_store(sys.argv[1]).lock()\nlock.__enter__()\nprint('locked', flush=True)\ntime.sleep(60)",
         store_url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError):
            with store.lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while True:  # the server notices the closed connection at once, the kernel the closed file
        try:
            with store.lock():
                break
        except LockedError:
            assert time.monotonic() < deadline, "the dead holder's lock was never released"
            time.sleep(0.05)


# Search: a corpus of plain words, answered by brute force here

def corpus(messages: int = 240, conversations: int = 12, seed: int = 3) -> list[MessageRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for number in range(messages):
        conv = conversation(number % conversations, "chatgpt" if number % conversations < 8 else "claude",
                            created_at=1_000.0 * (number % conversations))
        chunks = tuple(" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(1 + number % 3 // 2))
        created = None if number % 7 == 0 else 1_000.0 * (number % conversations) + number
        records.append(record(conv, f"m{number}", chunks, role="user" if number % 2 else "assistant",
                              created_at=created, position=number // conversations,
                              vectors=unit(rng, len(chunks))))
    return records


@pytest.fixture(scope="module", params=BACKENDS)
def filled(request, tmp_path_factory):
    """A store holding ``corpus()`` (read only: the tests that take it never write)."""
    with location(request, tmp_path_factory) as url:
        store = open_store(url)
        store.ensure_schema("m", DIMENSIONS)
        records = corpus()
        store.upsert(records[:100])
        store.upsert(records[100:])
        rows = {row.key: row for row in store.messages(list(range(1, 1000))).values()}
        yield store, records, rows
        store.close()


FILTERS = {
    "none": Filters(),
    "role": Filters(role="user"),
    "source": Filters(source="claude"),
    "since": Filters(since=5_000.0),
    "until": Filters(until=3_000.0),
    "window": Filters(since=2_000.0, until=7_500.0),
    "conversation": Filters(conversation="Title 3"),
    "all": Filters(role="assistant", source="chatgpt", since=1_000.0, until=6_000.0),
}


def passes(record: MessageRecord, filters: Filters) -> bool:
    date = record.message.created_at if record.message.created_at is not None else record.conversation.created_at
    return ((filters.role is None or record.message.role == filters.role)
            and (filters.source is None or record.conversation.source == filters.source)
            and (filters.conversation is None or filters.conversation in record.conversation.title)
            and (filters.since is None or (date is not None and date >= filters.since))
            and (filters.until is None or (date is not None and date < filters.until)))


def store_filters(store, filters: Filters) -> StoreFilters:
    rows = None if filters.conversation is None else tuple(store.conversations_matching(filters.conversation))
    return StoreFilters(filters.role, filters.source, rows, filters.since, filters.until)


def exact_vector(records: list[MessageRecord], query: np.ndarray, filters: Filters, k: int) -> list[tuple[str, float]]:
    best = [(r.key, float(np.max(r.vectors @ query))) for r in records if passes(r, filters)]
    return sorted(best, key=lambda item: -item[1])[:k]


def bm25(records: list[MessageRecord], terms: list[str], filters: Filters, k: int) -> list[tuple[str, float]]:
    """FTS5's BM25 (k1 1.2, b 0.75, IDF floor 1e-6) over whitespace words: the best chunk of each message."""
    chunks = [(r, text.split()) for r in records for text in r.chunk_texts]
    average = sum(len(words) for _, words in chunks) / len(chunks)
    frequency = {term: sum(term in words for _, words in chunks) for term in terms}
    idf = {term: max(math.log((len(chunks) - n + 0.5) / (n + 0.5)), 0) or 1e-6 for term, n in frequency.items()}
    best: dict[str, float] = {}
    for r, words in chunks:
        counts = Counter(words)
        if not any(counts[term] for term in terms) or not passes(r, filters):
            continue
        score = sum(idf[t] * counts[t] * 2.2 / (counts[t] + 1.2 * (0.25 + 0.75 * len(words) / average))
                    for t in terms)
        best[r.key] = max(best.get(r.key, 0.0), score)
    return sorted(best.items(), key=lambda item: -item[1])[:k]


@pytest.mark.parametrize("name", FILTERS)
def test_vector_hits_are_the_exact_nearest_messages_that_pass(filled, name):
    store, records, rows = filled
    filters = FILTERS[name]
    for query in unit(np.random.default_rng(11), 3):
        expected = exact_vector(records, query, filters, 10)
        hits = store.vector_hits(query, store_filters(store, filters), 10)
        by_id = {row.id: row.key for row in rows.values()}
        assert [by_id[hit.message] for hit in hits] == [key for key, _ in expected], name
        assert [hit.score for hit in hits] == pytest.approx([score for _, score in expected], abs=1e-5)
        for hit in hits:  # the chunk given is the message's best
            record = next(r for r in records if r.key == by_id[hit.message])
            chunk_index = int(np.argmax(record.vectors @ query))
            assert store.chunk_texts([hit.chunk])[hit.chunk] == record.chunk_texts[chunk_index]


@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("terms", [["kernel"], ["tiger", "orbit"], ["docker", "python", "coffee"]])
def test_keyword_hits_rank_by_bm25_among_the_messages_that_pass(filled, name, terms):
    store, records, rows = filled
    filters = FILTERS[name]
    expected = bm25(records, terms, filters, 15)
    hits = store.keyword_hits(terms, store_filters(store, filters), 15)
    by_id = {row.id: row.key for row in rows.values()}
    assert [hit.score for hit in hits] == pytest.approx([score for _, score in expected], rel=1e-6)
    wanted = dict(expected)
    for hit in hits:  # each message with its own score (ties may come in either order)
        assert wanted[by_id[hit.message]] == pytest.approx(hit.score, rel=1e-6)
        assert any(term in store.chunk_texts([hit.chunk])[hit.chunk].split() for term in terms)


def test_keyword_terms_are_words_never_query_syntax(filled):
    store = filled[0]
    for terms in (["a' | b"], ["\\"], ["!"], [":*"], ["&(", "kernel:*"], ["'kernel'"], ["kernel&tiger"],
                  ["<->"], ["NOT", "OR"], ["東京"]):
        hits = store.keyword_hits(terms, StoreFilters(), 5)  # never an error
        assert all(hit.score > 0 for hit in hits)
    assert store.keyword_hits(["'kernel'"], StoreFilters(), 5) == store.keyword_hits(["kernel"], StoreFilters(), 5)


@pytest.fixture(scope="module", params=BACKENDS)
def sparse(request, tmp_path_factory):
    """3,000 one-chunk messages: 2% of them from Claude, 3 of them by the assistant."""
    with location(request, tmp_path_factory) as url:
        store = open_store(url)
        store.ensure_schema("m", DIMENSIONS)
        rng = np.random.default_rng(5)
        total = 3000
        claude = set(rng.choice(total, size=total // 50, replace=False).tolist())
        assistant = set(rng.choice(total, size=3, replace=False).tolist())
        records = [record(conversation(number % 50, "claude" if number in claude else "chatgpt"), f"m{number}",
                          (f"word{number}",), role="assistant" if number in assistant else "user",
                          vectors=unit(rng, 1), position=number) for number in range(total)]
        for start in range(0, total, 1000):
            store.upsert(records[start:start + 1000])
        yield store, records
        store.close()


@pytest.mark.parametrize(("filters", "k"), [(Filters(source="claude"), 10), (Filters(source="claude"), 25),
                                            (Filters(role="assistant"), 10)])
def test_a_selective_filter_still_returns_the_full_k(sparse, filters, k):
    """Only 2% (or a handful) of the rows pass: the k nearest of those still come back, exactly."""
    store, records = sparse
    for query in unit(np.random.default_rng(8), 4):
        expected = exact_vector(records, query, filters, k)
        hits = store.vector_hits(query, store_filters(store, filters), k)
        rows = store.messages([hit.message for hit in hits])
        assert len(hits) == len(expected) == min(k, sum(passes(r, filters) for r in records))
        assert [rows[hit.message].key for hit in hits] == [key for key, _ in expected]


def test_lookups_messages_chunks_neighbours_and_conversations(filled):
    store, records, rows = filled
    row = rows[records[27].key]  # conversation 3, position 2
    assert (row.conversation_id, row.title, row.source, row.role, row.position, row.text) == \
        ("conv-3", "Title 3", "chatgpt", "user", 2, records[27].message.text)
    assert row.created_at == records[27].message.created_at
    undated = rows[records[0].key]  # a message without a date takes its conversation's
    assert records[0].message.created_at is None and undated.created_at == records[0].conversation.created_at
    before, after = store.neighbours(row, 2)
    assert [r.position for r in before] == [0, 1] and [r.position for r in after] == [3, 4]
    assert all(r.conversation == row.conversation for r in before + after)
    assert store.neighbours(row, 0) == ([], [])
    assert store.conversations_matching("title 1") == sorted(store.conversations_matching("TITLE 1"))
    assert len(store.conversations_matching("title 1")) == 3  # 1, 10, 11
    assert store.conversations_matching("conv-4") == [row.conversation + 1]
    assert store.conversations_matching("nothing like it") == []
    assert store.messages([]) == {} and store.chunk_texts([]) == {}


def test_a_query_of_another_width_is_an_error(filled):
    with pytest.raises(StoreError, match="dimensions"):
        filled[0].vector_hits(np.ones(DIMENSIONS + 1, np.float32), StoreFilters(), 5)


def test_vector_hits_in_a_named_space_rank_only_the_messages_holding_its_vectors(store):
    store.ensure_schema("model-a", DIMENSIONS)
    records = [record(conversation(1), f"m{i}", (f"text {i}",), position=i, seed=i) for i in range(6)]
    store.upsert(records)
    other = Space("model-b", 3)
    store.add_space(other.model, other.dimensions)
    chunks = sorted(chunk for chunk, _ in store.chunks_missing_vectors(other, 0, 100))
    axes = np.eye(3, dtype=np.float32)
    store.put_vectors(other, chunks[:3], axes)  # the first three chunks only, one axis each
    rows = {row.key: row_id for row_id, row in store.messages(list(range(1, 50))).items()}
    hits = store.vector_hits(axes[1], StoreFilters(), 10, space=other)
    assert [hit.chunk for hit in hits][0] == chunks[1] and {hit.chunk for hit in hits} == set(chunks[:3])
    assert hits[0].score == pytest.approx(1.0) and hits[0].message == rows[records[1].key]
    primary = store.vector_hits(records[4].vectors[0], StoreFilters(), 10)  # the primary space: all six
    assert len(primary) == 6 and primary[0].message == rows[records[4].key]
    with pytest.raises(StoreError, match="model-c"):
        store.vector_hits(axes[0], StoreFilters(), 10, space=Space("model-c", 3))
    with pytest.raises(StoreError, match="dimensions"):
        store.vector_hits(np.ones(4, np.float32), StoreFilters(), 10, space=other)


# End to end: the sample export through the pipeline, then the searcher

@pytest.fixture(scope="module")
def ingested(tmp_path_factory, sample_export, minilm, request):
    """The sample export ingested into a SQLite file and a PostgreSQL database, by the real pipeline."""
    urls = {"sqlite": str(tmp_path_factory.mktemp("e2e-sqlite") / "memory.db")}
    with fresh_schema(request.getfixturevalue("postgres_database")) as postgres:
        urls["postgres"] = postgres
        results = {name: run_ingest(url, sample_export, tmp_path_factory.mktemp(f"e2e-{name}"), minilm)
                   for name, url in urls.items()}
        yield urls, results


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_ingestion_stores_everything_and_a_second_run_stores_nothing_new(ingested, backend, sample_export,
                                                                           minilm, tmp_path):
    urls, results = ingested
    first = results[backend]
    assert first.complete and first.processed == first.total_messages and first.failed == 0
    store = open_store(urls[backend], create=False)
    before = store.stats()
    store.close()
    again = run_ingest(urls[backend], sample_export, tmp_path, minilm)
    assert again.processed == 0 and again.skipped == first.total_messages
    store = open_store(urls[backend], create=False)
    try:
        assert store.stats() == before and before["messages"] == first.total_messages
    finally:
        store.close()


QUERIES = ["how did I fix the docker permission error", "usermod", "ModuleNotFoundError", "ripening bananas",
           "東京", "fêter l'anniversaire", "sourdough starter"]


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
def test_both_stores_give_the_same_search_results(ingested, mode):
    urls, _ = ingested
    stores = {name: open_store(url, create=False) for name, url in urls.items()}
    try:
        searchers = {name: Searcher(store) for name, store in stores.items()}
        filters = [Filters(), Filters(role="user"), Filters(source="claude"), Filters(since=1.7e9)]
        for query in QUERIES:
            for where in filters:
                answers = {name: searcher.search(query, k=5, mode=mode, filters=where, context=1, floor=False)
                           for name, searcher in searchers.items()}
                sqlite, postgres = answers["sqlite"], answers["postgres"]
                assert [r.key for r in sqlite] == [r.key for r in postgres], (query, where)
                # BM25 counts words as each engine's tokenizer splits them: a hex id like 2e1a is one word for
                # FTS5, two for PostgreSQL's parser (a number in scientific notation, then a letter)
                assert [r.score for r in sqlite] == pytest.approx([r.score for r in postgres], rel=1e-2, abs=1e-5)
                assert [(r.snippet, r.before, r.after) for r in sqlite] == \
                    [(r.snippet, r.before, r.after) for r in postgres]
                floored = {name: searcher.search(query, k=5, mode=mode, filters=where)
                           for name, searcher in searchers.items()}
                keys = {name: [r.key for r in results] for name, results in floored.items()}
                # the floor is a cut on those scores: only a result within their 1 % of a cut may fall on either side
                cuts = {searchers["sqlite"].floor_for(mode), searchers["sqlite"].floor_for(mode, corroborated=True)}
                either = set(keys["sqlite"]) ^ set(keys["postgres"])
                assert all(any(abs(r.score - cut) <= 1e-2 * cut for cut in cuts)
                           for results in floored.values() for r in results if r.key in either), (query, where, keys)
                assert [key for key in keys["sqlite"] if key not in either] == \
                    [key for key in keys["postgres"] if key not in either]
    finally:
        for store in stores.values():
            store.close()


# Reset and rebuild, through each store

def export_keys(export: Path) -> set[str]:
    return set(scan_export(ExportReader(export)).all_keys())


def minilm_record(embedder, number: int) -> MessageRecord:
    """A message of another export, embedded by the store's model."""
    text = f"a message from another export, number {number}"
    return record(conversation(900 + number), f"other-{number}", (text,), vectors=embedder.embed([text]))


def test_reset_removes_the_exports_messages_and_its_progress_file_only(store_url, sample_export, minilm, tmp_path):
    progress = tmp_path / "p.json"
    first = run_ingest(store_url, sample_export, tmp_path, minilm)
    store = open_store(store_url, create=False)
    try:
        store.upsert([minilm_record(minilm, 1)])
        kept = store.stats()["messages"] - first.processed
        result = reset_export(sample_export, progress, store)
        assert (result.removed_messages, result.removed_progress_file) == (first.processed, True)
        assert store.known(export_keys(sample_export)) == set() and not progress.exists()
        assert store.stats()["messages"] == kept == 1
        assert store.meta()["model"] == minilm.model  # the store stays, with its model
    finally:
        store.close()
    again = run_ingest(store_url, sample_export, tmp_path, minilm)  # deleted keys are stored again
    assert again.complete and again.processed == first.processed and again.skipped == 0


def test_rebuild_writes_the_progress_file_the_store_implies(store_url, sample_export, minilm, tmp_path):
    """The progress file lost, then one that claims messages the store no longer holds: the store wins, and
    the next run stores exactly what is missing."""
    progress = tmp_path / "p.json"
    first = run_ingest(store_url, sample_export, tmp_path, minilm)
    progress.unlink()
    store = open_store(store_url, create=False)
    try:
        lost = rebuild_progress(progress, store, sample_export)
        assert (lost.total_messages, lost.stored_messages, lost.kept_history) == \
            (first.total_messages, first.processed, False)
        rebuilt = load_progress(progress)
        assert set(rebuilt["processed_messages"]) == export_keys(sample_export)
        assert rebuilt["store"] == store.url and rebuilt["embedder"]["model"] == minilm.model
        gone = sorted(export_keys(sample_export))[:5]
        assert store.delete_keys(gone) == 5
        stale = rebuild_progress(progress, store, None)  # the export recorded in the progress file
        assert (stale.stored_messages, stale.kept_history) == (first.processed - 5, True)
        assert set(load_progress(progress)["processed_messages"]) == export_keys(sample_export) - set(gone)
    finally:
        store.close()
    resumed = run_ingest(store_url, sample_export, tmp_path, minilm)
    assert resumed.complete and resumed.processed == 5 and resumed.skipped == first.processed - 5


def test_reset_and_rebuild_are_refused_while_an_ingester_holds_the_store(store_url, sample_export, minilm, tmp_path):
    run_ingest(store_url, sample_export, tmp_path, minilm)
    holder, store = open_store(store_url, create=False), open_store(store_url, create=False)
    try:
        with holder.lock():
            with pytest.raises(LockedError):
                reset_export(sample_export, tmp_path / "p.json", store)
            with pytest.raises(LockedError):
                rebuild_progress(tmp_path / "p.json", store, sample_export)
        assert store.known(export_keys(sample_export)) == export_keys(sample_export)
    finally:
        holder.close()
        store.close()
