"""``sparky reembed`` and ``sparky spaces`` on both stores: another model's vectors from the chunk texts held,
one-to-one with the chunks, resumable after a kill at any commit, the primary switched only when asked."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from conftest import generate_export, sparky_subprocess, wait_for_trace  # noqa: E402
from fake_openai import FakeOpenAI  # noqa: E402
from support.postgres import (CachingEmbedder, admin, postgres_database, postgres_server,  # noqa: E402,F401
                              postgres_url, run_ingest)
from sparky.cli import cli  # noqa: E402
from sparky.embedders import get_embedder  # noqa: E402
from sparky.errors import StoreError  # noqa: E402
from sparky.stores import Space, StoreFilters, open_store  # noqa: E402

BASE = "minilm-fp32"  # the model the store is ingested with
NEW = "wordllama"  # the second space: fast, so runs of several batches stay quick
BATCH = 8
RUN_TIMEOUT = 300  # seconds; only guards against a hang
LOCK_RELEASE_TIMEOUT = 30
KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture(scope="session")
def export(tmp_path_factory) -> Path:
    """5 conversations, 40 messages: several batches of 8 chunks."""
    return generate_export(tmp_path_factory.mktemp("reembed") / "chat-history", 5, 40)


@pytest.fixture(scope="session")
def base_embedder():
    return CachingEmbedder(get_embedder(BASE))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path, export, base_embedder) -> str:
    """A store ingested with ``BASE``: a SQLite file, or a PostgreSQL schema of its own."""
    url = str(tmp_path / "memory.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    result = run_ingest(url, export, tmp_path, base_embedder)
    assert result.complete
    return url


def reembed(url: str, *extra: str, embedder: str = NEW):
    return CliRunner().invoke(cli, ["reembed", "--embedder", embedder, "--db", url, "--batch-size", str(BATCH),
                                    "--quiet", *extra])


def recorded(name: str) -> Space:
    embedder = get_embedder(name)
    return Space(embedder.model, embedder.dimensions)


def space_state(url: str) -> tuple[dict[Space, int], int, dict[str, str]]:
    store = open_store(url, create=False)
    try:
        return store.space_vectors(), store.stats()["chunks"], store.meta()
    finally:
        store.close()


def chunks_off_by_one(url: str, space: Space) -> int:
    """Chunks that do not hold exactly one vector of the space's width in it (0: one-to-one)."""
    query = ("SELECT count(*) FROM chunks c WHERE (SELECT count(*) FROM vectors v JOIN spaces s ON s.id = v.space"
             " WHERE v.chunk = c.id AND s.model = %s AND s.dimensions = %s AND {width} = s.dimensions) != 1")
    if "://" not in url:
        with sqlite3.connect(url) as db:
            return db.execute(query.format(width="length(v.vector) / 4").replace("%s", "?"),
                              (space.model, space.dimensions)).fetchone()[0]
    with admin(url) as conn:
        return conn.execute(query.format(width="extensions.vector_dims(v.embedding)"),
                            (space.model, space.dimensions)).fetchone()[0]


def message_chunks(url: str) -> list[tuple[str, str]]:
    """(message key, chunk text) of every current message's chunks."""
    query = ("SELECT m.key, c.text FROM chunks c JOIN messages m ON m.id = c.message"
             " WHERE m.superseded_at IS NULL ORDER BY c.id")
    if "://" not in url:
        with sqlite3.connect(url) as db:
            return db.execute(query).fetchall()
    with admin(url) as conn:
        return conn.execute(query).fetchall()


def assert_lock_free(url: str) -> None:
    """A killed run's store lock is gone (Postgres: waiting on the server for the dead session to end)."""
    if "://" not in url:
        from sparky.locking import FileLock

        FileLock(Path(url), "store").acquire().release()
        return
    from sparky.stores.postgres.store import LOCK_CLASS

    key = "(%s, hashtext('ingest:' || current_schema()))"
    with admin(url) as conn:
        conn.execute(f"SET lock_timeout = '{LOCK_RELEASE_TIMEOUT}s'")
        conn.execute(f"SELECT pg_advisory_lock{key}", (LOCK_CLASS,))
        conn.execute(f"SELECT pg_advisory_unlock{key}", (LOCK_CLASS,))


def embedded_texts(trace: Path, pid: int) -> int:
    """How many texts process ``pid`` embedded, from its ``after_embed`` trace lines."""
    lines = [line.split() for line in trace.read_text().splitlines()]
    return sum(int(parts[2]) for parts in lines if parts[0] == str(pid) and parts[1] == "after_embed")


def test_reembed_adds_a_space_one_to_one_and_keeps_the_primary(store_url, monkeypatch):
    if "://" in store_url:  # the sample's chunks count as a space large enough for an HNSW index
        from sparky.stores.postgres import schema

        monkeypatch.setattr(schema, "HNSW_MIN_ROWS", 1)
    result = reembed(store_url)
    assert result.exit_code == 0, result.output
    counts, chunks, meta = space_state(store_url)
    base, new = recorded(BASE), recorded(NEW)
    assert counts == {base: chunks, new: chunks}
    assert chunks_off_by_one(store_url, new) == 0 and chunks_off_by_one(store_url, base) == 0
    assert (meta["model"], meta["dimensions"]) == (base.model, str(base.dimensions))
    assert f"holds {chunks}/{chunks} chunks (complete); this run wrote {chunks} vectors" in result.output
    if "://" in store_url:  # PostgreSQL: the space reembed filled has its partial HNSW index, built at its end
        with admin(store_url) as conn:
            indexes = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'vectors'"
                                                      " AND schemaname = current_schema()").fetchall()}
            spaces = [row[0] for row in conn.execute("SELECT id FROM spaces ORDER BY id").fetchall()]
        assert len(spaces) == 2 and f"vectors_hnsw_{spaces[1]}" in indexes

    again = reembed(store_url)  # a complete space is not embedded again
    assert again.exit_code == 0, again.output
    assert "this run wrote 0 vectors" in again.output
    assert space_state(store_url)[0] == counts


def test_spaces_lists_each_space_with_its_counts(store_url):
    listed = CliRunner().invoke(cli, ["spaces", "--db", store_url])
    assert listed.exit_code == 0, listed.output
    chunks = space_state(store_url)[1]
    base, new = recorded(BASE), recorded(NEW)
    rows = [line.split() for line in listed.output.splitlines()]
    assert rows[0] == ["model", "dimensions", "vectors", "/", "chunks", "primary", "complete"]
    assert rows[1:] == [[base.model, str(base.dimensions), str(chunks), "/", str(chunks), "yes", "yes"]]

    assert reembed(store_url, "--replace").exit_code == 0
    rows = [line.split() for line in CliRunner().invoke(cli, ["spaces", "--db", store_url]).output.splitlines()]
    assert rows[1:] == [[base.model, str(base.dimensions), str(chunks), "/", str(chunks), "no", "yes"],
                        [new.model, str(new.dimensions), str(chunks), "/", str(chunks), "yes", "yes"]]


def test_replace_switches_the_primary_and_search_embeds_queries_with_the_new_model(store_url):
    result = reembed(store_url, "--replace")
    assert result.exit_code == 0, result.output
    assert "the primary space" in result.output
    new = recorded(NEW)
    meta = space_state(store_url)[2]
    assert (meta["model"], meta["dimensions"]) == (new.model, str(new.dimensions))

    query = "sourdough starter feeding schedule"
    search = CliRunner().invoke(cli, ["search", query, "--mode", "vector", "--format", "json", "--all", "-k", "1",
                                      "--db", store_url])
    assert search.exit_code == 0, search.output
    top = json.loads(search.output)["results"][0]
    model = get_embedder(NEW)  # the best message by the new model's cosine, worked out here
    rows = message_chunks(store_url)
    scores = model.embed([text for _, text in rows]) @ model.embed([query])[0]
    best: dict[str, float] = {}
    for (key, _), score in zip(rows, scores):
        best[key] = max(best.get(key, -1.0), float(score))
    expected = max(best, key=best.__getitem__)
    assert top["key"] == expected
    assert top["score"] == pytest.approx(best[expected], abs=1e-4)


def test_a_kept_sqlite_matrix_follows_the_primary_space(tmp_path, export, base_embedder):
    """A searcher's kept vector matrix (one per space, checked on every query) follows set_primary."""
    url = str(tmp_path / "memory.db")
    run_ingest(url, export, tmp_path, base_embedder)
    store = open_store(url, create=False)
    try:
        base_query = get_embedder(BASE).embed(["night train itinerary"])[0]
        assert len(store.vector_hits(base_query, StoreFilters(), 3)) == 3  # the base space's matrix is kept
        assert reembed(url, "--replace").exit_code == 0
        new_query = get_embedder(NEW).embed(["night train itinerary"])[0]
        hits = store.vector_hits(new_query, StoreFilters(), 3)
        with pytest.raises(StoreError, match="the query has 384 dimensions, the stored vectors 256"):
            store.vector_hits(base_query, StoreFilters(), 3)
    finally:
        store.close()
    rows = message_chunks(url)
    scores = get_embedder(NEW).embed([text for _, text in rows]) @ new_query
    assert hits[0].score == pytest.approx(float(scores.max()), abs=1e-4)


def test_chunks_ingested_later_are_the_only_ones_a_rerun_embeds(store_url, tmp_path, base_embedder):
    assert reembed(store_url).exit_code == 0
    new = recorded(NEW)
    before = space_state(store_url)[0][new]
    (tmp_path / "second").mkdir()
    run_ingest(store_url, generate_export(tmp_path / "more", 2, 12, seed=11), tmp_path / "second", base_embedder)
    counts, chunks, _ = space_state(store_url)
    assert counts[new] == before < chunks  # ingest writes the primary space only
    result = reembed(store_url)
    assert result.exit_code == 0, result.output
    assert f"holds {chunks}/{chunks} chunks (complete); this run wrote {chunks - before} vectors" in result.output
    assert chunks_off_by_one(store_url, new) == 0


def test_a_chunk_that_cannot_be_embedded_fails_alone_and_transient_failures_are_retried(store_url, faulty_embedders):
    texts = [text for _, text in message_chunks(store_url)]
    pieces = (text[start : start + 40] for text in texts for start in range(0, len(text) - 40, 20))
    marker = next(piece for piece in pieces if not {",", "="} & set(piece)
                  and sum(piece in text for text in texts) == 1)  # in one chunk only
    made = faulty_embedders(f"permanent={marker},transient=0.3,seed=3")
    result = reembed(store_url, "--retries", "20", "--retry-delay", "0", "--replace")
    assert result.exit_code == 1, result.output
    assert made[0].injected >= 2  # the permanent failure, and transient ones retried
    counts, chunks, meta = space_state(store_url)
    new = recorded(NEW)
    assert counts[new] == chunks - 1 and meta["model"] != new.model  # incomplete: not made primary
    assert "1 chunk failed (retried by the next run)" in result.output

    faulty_embedders("")
    rerun = reembed(store_url, "--replace")
    assert rerun.exit_code == 0, rerun.output
    assert "this run wrote 1 vector;" in rerun.output
    counts, chunks, meta = space_state(store_url)
    assert counts[new] == chunks and meta["model"] == new.model


@pytest.mark.slow
@pytest.mark.parametrize("site", ["after_embed", "before_commit", "after_commit"])
def test_a_kill_mid_reembed_then_a_rerun_leaves_vectors_one_to_one(store_url, tmp_path, site):
    trace = tmp_path / "trace.txt"
    args = ["reembed", "--embedder", NEW, "--db", store_url, "--batch-size", str(BATCH), "--quiet"]
    env = {"SPARKY_TRACE_FILE": str(trace)}
    killed = sparky_subprocess(args, cwd=tmp_path, env={**env, "SPARKY_CRASH_AT": f"{site}:3"})
    killed.communicate(timeout=RUN_TIMEOUT)
    assert killed.returncode == -signal.SIGKILL
    assert_lock_free(store_url)
    new = recorded(NEW)
    counts, chunks, meta = space_state(store_url)
    committed = 2 * BATCH if site != "after_commit" else 3 * BATCH  # the batch in flight is lost, nothing else
    assert counts[new] == committed
    assert chunks_off_by_one(store_url, new) == chunks - committed  # the rest have none; none has two

    listed = CliRunner().invoke(cli, ["spaces", "--db", store_url])
    assert f"{new.model} {new.dimensions} {committed} / {chunks} no no" in " ".join(listed.output.split())

    rerun = sparky_subprocess([*args, "--replace"], cwd=tmp_path, env=env)
    out, err = rerun.communicate(timeout=RUN_TIMEOUT)
    assert rerun.returncode == 0, err
    assert embedded_texts(trace, rerun.pid) == chunks - committed  # what was committed is never embedded again
    counts, chunks, meta = space_state(store_url)
    assert counts[new] == chunks and chunks_off_by_one(store_url, new) == 0
    assert (meta["model"], meta["dimensions"]) == (new.model, str(new.dimensions))


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_130_and_the_rerun_finishes(store_url, tmp_path):
    trace = tmp_path / "trace.txt"
    args = ["reembed", "--embedder", NEW, "--db", store_url, "--batch-size", str(BATCH), "--replace"]
    env = {"SPARKY_TRACE_FILE": str(trace), "SPARKY_TRACE_PAUSE": "after_commit:600"}  # a stop ends the pause
    running = sparky_subprocess(args, cwd=tmp_path, env=env)
    wait_for_trace(trace, "after_commit", process=running)
    running.send_signal(signal.SIGINT)
    out, err = running.communicate(timeout=RUN_TIMEOUT)
    assert running.returncode == 130, err
    assert "Interrupted: " in out and "Resume with the same command." in out
    new = recorded(NEW)
    counts, chunks, meta = space_state(store_url)
    assert counts[new] == BATCH and meta["model"] != new.model  # incomplete: the primary stays

    rerun = sparky_subprocess(args, cwd=tmp_path, env={"SPARKY_TRACE_FILE": str(trace)})
    rerun.communicate(timeout=RUN_TIMEOUT)
    assert rerun.returncode == 0
    assert embedded_texts(trace, rerun.pid) == chunks - BATCH
    counts, chunks, meta = space_state(store_url)
    assert counts[new] == chunks and meta["model"] == new.model


def test_identical_chunk_texts_of_a_batch_are_embedded_once(tmp_path):
    from sparky.models import Conversation, Message
    from sparky.pipeline.reembed import Reembedding
    from sparky.stores import MessageRecord

    base = get_embedder(BASE)
    store = open_store(str(tmp_path / "memory.db"))
    try:
        store.ensure_schema(base.model, base.dimensions)
        texts = ["the same pasted log line", "another text", "the same pasted log line"]
        records = []
        for index, text in enumerate(texts):
            conversation = Conversation("chatgpt", f"c{index}", "t", None, None)
            message = Message(f"c{index}", "m", "user", None, text, 0)
            records.append(MessageRecord(message.key("chatgpt"), conversation, message, (text,), base.embed([text])))
        store.upsert(records)
        result = Reembedding(store, get_embedder(NEW), _Quiet(), batch_chunks=BATCH).run()
        assert (result.written, result.embedded, result.complete) == (3, 2, True)
    finally:
        store.close()
    assert chunks_off_by_one(str(tmp_path / "memory.db"), recorded(NEW)) == 0


class _Quiet:
    def start(self, space: Space, chunks: int, held: int) -> None: ...
    def batch_stored(self, stored: int, failed: int) -> None: ...
    def finish(self) -> None: ...
    def stopping(self, immediate: bool) -> None: ...


def test_a_space_of_another_width_is_refused(store_url):
    store = open_store(store_url, create=False)
    try:
        base = recorded(BASE)
        with pytest.raises(StoreError, match=f"holds vectors of {base.model} with 384 dimensions, not 128"):
            store.add_space(base.model, 128)
        with pytest.raises(StoreError, match="vectors of shape"):
            store.put_vectors(base, [1], np.zeros((1, 128), dtype=np.float32))
        assert store.space_vectors() == {base: store.stats()["chunks"]}
    finally:
        store.close()


def test_bad_input_is_one_line(tmp_path):
    unknown = CliRunner().invoke(cli, ["reembed", "--embedder", "nope", "--db", str(tmp_path / "m.db")])
    assert unknown.exit_code == 2 and "unknown embedder 'nope'" in unknown.output
    missing = CliRunner().invoke(cli, ["reembed", "--embedder", NEW, "--db", str(tmp_path / "m.db")])
    assert missing.exit_code == 2 and "no memory store here" in missing.output
    assert not (tmp_path / "m.db").exists()
    listed = CliRunner().invoke(cli, ["spaces", "--db", str(tmp_path / "m.db")])
    assert listed.exit_code == 2 and "no memory store here" in listed.output
    open_store(str(tmp_path / "empty.db")).close()
    empty = CliRunner().invoke(cli, ["reembed", "--embedder", NEW, "--db", str(tmp_path / "empty.db")])
    assert empty.exit_code == 2 and "holds no messages yet" in empty.output
    for result in (unknown, missing, listed, empty):
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_openai_shows_what_is_sent_where_and_needs_yes(store_url):
    args = ["reembed", "--embedder", "openai", "--model", "nomic-embed-text", "--api-key-env", "MY_EMBED_KEY",
            "--db", store_url, "--batch-size", str(BATCH)]
    chunks = space_state(store_url)[1]
    with FakeOpenAI(key=KEY) as server:
        refused = CliRunner().invoke(cli, [*args, "--base-url", server.url], env={"MY_EMBED_KEY": KEY})
        assert refused.exit_code == 2, refused.output
        assert f"This sends {chunks} texts" in refused.output and "nothing was sent: pass --yes" in refused.output
        assert server.answered == 0 and len(space_state(store_url)[0]) == 1
        sent = CliRunner().invoke(cli, [*args, "--base-url", server.url, "--yes"], env={"MY_EMBED_KEY": KEY})
        assert sent.exit_code == 0, sent.output
        assert server.texts_sent() <= chunks + 1  # the chunks (identical ones once per batch), and the width probe
    assert KEY not in refused.output + sent.output
    counts, chunks, _ = space_state(store_url)
    openai = next(space for space in counts if space.model.startswith("openai:"))
    assert counts[openai] == chunks and chunks_off_by_one(store_url, openai) == 0
