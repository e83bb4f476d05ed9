"""``sparky ingest --progressive``: a static pass, then the transformer pass, each exactly once, resumable
between and during the passes; search across a partial better space; ``--space``; both passes in progress."""

from __future__ import annotations

import io
import json
import signal
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from conftest import generate_export, sparky_subprocess  # noqa: E402
from sparky.cli import cli  # noqa: E402
from sparky.cli.display import Display  # noqa: E402
from sparky.embedders import get_embedder  # noqa: E402
from sparky.pipeline.ingest import StopRequest  # noqa: E402
from sparky.pipeline.progressive import ProgressiveIngestion, pending_space  # noqa: E402
from sparky.search import Searcher  # noqa: E402
from sparky.stores import Space, open_store  # noqa: E402
from support.displays import StopAfter  # noqa: E402

EXPORT = ROOT / "sample" / "chat-history"
FAST, BETTER = "wordllama", "minilm"
BATCH = 8
RUN_TIMEOUT = 300  # seconds; only guards against a hang
LABELLED_KINDS = ("exact", "paraphrase", "non-english")


def space(name: str) -> Space:
    embedder = get_embedder(name)
    return Space(embedder.model, embedder.dimensions)


def run(url: str, folder: Path, stop_between: bool = False, stop_after: int | None = None):
    """One in-process progressive ingestion of the sample export, stopped between the passes or after
    ``stop_after`` batches of pass 2 when asked."""
    stop = StopRequest()
    store = open_store(url)
    try:
        return ProgressiveIngestion(EXPORT, folder / "progress.json", store, get_embedder(FAST), get_embedder(BETTER),
                                    Display(Console(file=io.StringIO()), quiet=True), StopAfter(stop, stop_after),
                                    batch_chunks=BATCH, stop=stop,
                                    between=(lambda _: stop.event.set()) if stop_between else None).run()
    finally:
        store.close()


def contents(url: str) -> dict[tuple[str, str], dict[str, bytes]]:
    """(message key, chunk text) -> {model: vector bytes} of every chunk of a SQLite store."""
    rows = sqlite3.connect(url).execute(
        "SELECT m.key, c.text, s.model, v.vector FROM chunks c JOIN messages m ON m.id = c.message"
        " LEFT JOIN vectors v ON v.chunk = c.id LEFT JOIN spaces s ON s.id = v.space").fetchall()
    found: dict[tuple[str, str], dict[str, bytes]] = {}
    for key, text, model, vector in rows:
        vectors = found.setdefault((key, text), {})
        assert model not in vectors, "a chunk holds two vectors of one space"
        vectors[model] = vector
    return found


def state(url: str) -> tuple[dict[Space, int], int, dict[str, str]]:
    store = open_store(url, create=False)
    try:
        return store.space_vectors(), store.stats()["chunks"], store.meta()
    finally:
        store.close()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> str:
    """The sample export through both passes in one go (CLI), the reference the interrupted runs must equal."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    url = str(folder / "memory.db")
    result = CliRunner().invoke(cli, ["ingest", str(EXPORT), "--progressive", "--static", FAST, "--db", url,
                                      "--progress-file", str(folder / "progress.json"), "--batch-size", str(BATCH),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Pass 1 done: searchable now" in result.output
    return url


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> str:
    """A store whose pass 2 was stopped after about half its chunks."""
    folder = tmp_path_factory.mktemp("mixed")
    url = str(folder / "memory.db")
    run(url, folder, stop_between=True)
    chunks = state(url)[1]
    run(url, folder, stop_after=chunks // BATCH // 2)
    return url


def test_both_passes_store_each_vector_exactly_once_and_the_transformer_ends_primary(uninterrupted, tmp_path):
    counts, chunks, meta = state(uninterrupted)
    assert counts == {space(FAST): chunks, space(BETTER): chunks}
    assert (meta["model"], meta["dimensions"]) == (space(BETTER).model, str(space(BETTER).dimensions))
    held = contents(uninterrupted)
    assert all(set(vectors) == {space(FAST).model, space(BETTER).model} for vectors in held.values())
    tokens = get_embedder(BETTER).count_tokens([text for _, text in held])
    assert max(tokens) <= get_embedder(BETTER).max_tokens  # chunked for the transformer's window in pass 1

    again = CliRunner().invoke(cli, ["ingest", str(EXPORT), "--progressive", "--db", uninterrupted,
                                     "--progress-file", str(tmp_path / "p.json"), "--quiet"])
    assert again.exit_code == 0, again.output
    assert "--progressive is a plain ingest" in again.output
    assert contents(uninterrupted) == held  # nothing written twice, nothing re-embedded


@pytest.mark.slow
def test_stopped_between_and_during_the_passes_then_resumed_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    url = str(tmp_path / "memory.db")
    first = run(url, tmp_path, stop_between=True)
    assert first.stopped and first.reembed is None and first.ingest.complete
    counts, chunks, meta = state(url)
    assert counts == {space(FAST): chunks, space(BETTER): 0} and meta["model"] == space(FAST).model
    store = open_store(url, create=False)
    assert pending_space(store) == space(BETTER)  # the store records the pass still to come
    store.close()

    second = run(url, tmp_path, stop_after=2)
    assert second.stopped and second.reembed.written == 2 * BATCH  # the batches committed before the stop
    assert state(url)[0][space(BETTER)] == 2 * BATCH and state(url)[2]["model"] == space(FAST).model

    resumed = CliRunner().invoke(cli, ["ingest", str(EXPORT), "--db", url, "--progress-file",
                                       str(tmp_path / "progress.json"), "--batch-size", str(BATCH), "--quiet"])
    assert resumed.exit_code == 0, resumed.output  # a plain ingest finishes the pass still to come
    assert f"this run wrote {chunks - 2 * BATCH:,} vectors" in resumed.output
    assert contents(url) == contents(uninterrupted)
    assert state(url)[2]["model"] == space(BETTER).model


@pytest.mark.slow
def test_a_kill_in_pass_1_then_a_plain_ingest_finishes_both_passes(uninterrupted, tmp_path):
    args = ["ingest", str(EXPORT), "--progressive", "--static", FAST, "--batch-size", str(BATCH), "--quiet"]
    killed = sparky_subprocess(args, cwd=tmp_path, env={"SPARKY_CRASH_AT": "after_commit:3"})
    killed.communicate(timeout=RUN_TIMEOUT)
    assert killed.returncode == -signal.SIGKILL
    url = str(tmp_path / "sparky_memory.db")
    counts, _, _ = state(url)
    assert counts[space(BETTER)] == 0  # pass 2 had not started
    rerun = sparky_subprocess(["ingest", str(EXPORT), "--batch-size", str(BATCH), "--quiet"], cwd=tmp_path)
    out, err = rerun.communicate(timeout=RUN_TIMEOUT)
    assert rerun.returncode == 0, err
    assert contents(url) == contents(uninterrupted)


def test_another_export_into_a_store_mid_way_is_stored_statically_then_both_passes_complete(mixed, tmp_path):
    url = str(tmp_path / "memory.db")
    snapshot = sqlite3.connect(url)
    sqlite3.connect(mixed).backup(snapshot)
    snapshot.close()
    other = generate_export(tmp_path / "other", 3, 12)
    before = contents(url)
    result = CliRunner().invoke(cli, ["ingest", str(other), "--db", url, "--progress-file",
                                      str(tmp_path / "other.json"), "--batch-size", str(BATCH), "--quiet"])
    assert result.exit_code == 0, result.output
    after = contents(url)
    assert set(before) < set(after)  # the new messages are in, the old ones kept
    assert all(set(vectors) == {space(FAST).model, space(BETTER).model} for vectors in after.values())
    assert all(after[chunk][space(FAST).model] == vectors[space(FAST).model] for chunk, vectors in before.items())
    assert state(url)[2]["model"] == space(BETTER).model


def test_the_mixed_store_is_searched_in_both_spaces_and_never_worse_than_either_alone(mixed):
    counts, chunks, meta = state(mixed)
    assert 0 < counts[space(BETTER)] < chunks and meta["model"] == space(FAST).model
    queries = labelled(mixed)
    store = open_store(mixed, create=False)
    try:
        searcher = Searcher(store)
        recall = {name: recall_at_5(searcher, queries, name) for name in (None, FAST, BETTER)}
        better_keys = keys_with_vectors(mixed, space(BETTER))
        found = {result.key for query in queries for result in searcher.search(query["query"], k=5, mode="vector")}
    finally:
        store.close()
    assert found & better_keys and found - better_keys  # results from both parts
    assert recall[None] >= max(recall[FAST], recall[BETTER]), recall


def test_space_restricts_the_search_to_one_space(mixed):
    better_keys = keys_with_vectors(mixed, space(BETTER))
    for name, keys in ((BETTER, better_keys), (space(BETTER).model, better_keys)):
        result = CliRunner().invoke(cli, ["search", "how do I upgrade django", "--db", mixed, "--space", name,
                                          "--mode", "vector", "--all", "-k", "20", "--format", "json"])
        assert result.exit_code == 0, result.output
        shown = {hit["key"] for hit in json.loads(result.output)["results"]}
        assert shown and shown <= keys
    fast = CliRunner().invoke(cli, ["search", "how do I upgrade django", "--db", mixed, "--space", FAST,
                                    "--mode", "vector", "--all", "-k", "20", "--format", "json"])
    assert {hit["key"] for hit in json.loads(fast.output)["results"]} - better_keys
    unknown = CliRunner().invoke(cli, ["search", "django", "--db", mixed, "--space", "e5"])
    assert unknown.exit_code != 0 and "holds no vectors of e5" in unknown.output
    assert "Traceback" not in unknown.output


def test_progress_shows_both_passes(mixed):
    folder = Path(mixed).parent
    counts, chunks, _ = state(mixed)
    args = ["progress", "--db", mixed, "--progress-file", str(folder / "progress.json")]
    shown = CliRunner().invoke(cli, [*args, "--estimate-time"])
    assert shown.exit_code == 0, shown.output
    assert f"Pass 1 (static, searchable at once, {space(FAST).model}): 97/97 messages stored; {chunks}/{chunks} " \
           in shown.output
    assert f"Pass 2 (transformer, {space(BETTER).model}): {counts[space(BETTER)]}/{chunks} chunks" in shown.output
    assert "Pass 2 time left: " in shown.output
    report = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)
    assert [(item["number"], item["vectors"]) for item in report["passes"]] == [
        (1, chunks), (2, counts[space(BETTER)])]


def labelled(url: str) -> list[dict]:
    """bench/queries.json's queries answered by the sample export, each answer resolved to its message key."""
    document = json.loads((ROOT / "bench" / "queries.json").read_text(encoding="utf-8"))
    queries = [query for query in document["queries"] if query["kind"] in LABELLED_KINDS]
    with sqlite3.connect(url) as db:
        for query in queries:
            query["keys"] = {key for answer in query["answers"] for (key,) in db.execute(
                "SELECT m.key FROM messages m JOIN conversations v ON v.id = m.conversation"
                " WHERE v.conversation_id = ? AND instr(m.text, ?) > 0", (answer["conversation"], answer["contains"]))}
    return [query for query in queries if query["keys"]]


def recall_at_5(searcher: Searcher, queries: list[dict], space_name: str | None) -> float:
    """Mean share of each query's answers among the messages (and their exchanges) of its top 5."""
    shares = []
    for query in queries:
        shown = set()
        for result in searcher.search(query["query"], k=5, space=space_name):
            shown |= {result.key} | {item.key for item in (result.question, result.answer) if item is not None}
        shares.append(len(query["keys"] & shown) / min(5, len(query["keys"])))
    return float(np.mean(shares))


def keys_with_vectors(url: str, held: Space) -> set[str]:
    """The keys of the messages holding at least one vector in ``held``."""
    with sqlite3.connect(url) as db:
        return {key for (key,) in db.execute(
            "SELECT DISTINCT m.key FROM messages m JOIN chunks c ON c.message = m.id JOIN vectors v ON v.chunk = c.id"
            " JOIN spaces s ON s.id = v.space WHERE s.model = ?", (held.model,))}
