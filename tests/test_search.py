"""Memory search against real SQLite stores filled with real MiniLM embeddings."""

from __future__ import annotations

import re

import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from support.postgres import postgres_database, postgres_server, postgres_url  # noqa: F401
from sparky.cli import cli
from sparky.embedders import get_embedder
from sparky.models import Conversation, Message
from sparky.search import Filters, Searcher, SearchError, keyword_terms, open_for_search, parse_when
from sparky.stores.sqlite.search import fts_match
from sparky.stores import MessageRecord
from sparky.stores.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent


def day(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


# (source, conversation id, title, created, [(role, created or None, text), ...])
CONVERSATIONS = [
    ("chatgpt", "conv-docker", "Docker on the new Ubuntu laptop", "2024-01-10", [
        ("user", "2024-01-10", "Running docker ps gives: permission denied while trying to connect to the "
                               "Docker daemon socket at unix:///var/run/docker.sock"),
        ("assistant", "2024-01-10", "Your user is not in the docker group. Run sudo usermod -aG docker $USER, "
                                    "then log out and back in so the new group applies."),
        ("user", "2024-01-10", "That worked, thanks! docker ps lists my containers now."),
        ("assistant", "2024-01-10", "Glad it works. Avoid running the daemon as root for everyday use."),
    ]),
    ("claude", "conv-bread", "Sourdough starter trouble", "2024-03-05", [
        ("user", None, "My sourdough starter has not bubbled at all after three days on the counter."),
        ("assistant", None, "Keep the starter around 24 °C and feed it twice a day with equal weights of "
                            "flour and water; rye flour wakes it up faster."),
        ("user", "2024-03-07", "Unrelated: is docker installed on the kitchen laptop?"),
    ]),
    ("chatgpt", "conv-python", "Python import errors", "2023-11-20", [
        ("user", "2023-11-20", "ModuleNotFoundError: No module named 'numpy' even though I installed it"),
        ("assistant", "2023-11-20", "You probably installed numpy into another interpreter. Activate the "
                                    "virtual environment, then run python -m pip install numpy."),
    ]),
    ("chatgpt", "conv-travel", "Voyage au Japon", "2024-06-01", [
        ("user", "2024-06-01", "東京で一番おいしいラーメン屋はどこですか"),
        ("assistant", "2024-06-01", "Ichiran in Shibuya is a popular choice for tonkotsu ramen."),
        ("user", "2024-06-02", "Quel temps fera-t-il à Kyoto en avril ? 🎉 On part fêter un anniversaire."),
    ]),
    ("chatgpt", "conv-compose", "Compose notes", "2024-02-15", [
        ("assistant", "2024-02-15", f"Docker compose note {i}: docker compose up starts the docker services; "
                                    f"docker compose logs shows docker output for service {i}.")
        for i in range(12)
    ]),
]


def records(conversations=CONVERSATIONS) -> list[MessageRecord]:
    embedder = get_embedder("minilm")
    result = []
    for source, conversation_id, title, created, messages in conversations:
        conversation = Conversation(source, conversation_id, title, day(created), None)
        items = [Message(conversation_id, f"{conversation_id}-{position}", role, day(when) if when else None,
                         text, position * 2)  # gaps: positions of dropped messages are not stored
                 for position, (role, when, text) in enumerate(messages)]
        vectors = embedder.embed([message.text for message in items])
        for message, vector in zip(items, vectors):
            result.append(MessageRecord(message.key(source), conversation, message, (message.text,),
                                        np.asarray(vector, dtype=np.float32)[None, :]))
    return result


def make_store(path: Path, conversations=CONVERSATIONS) -> Path:
    embedder = get_embedder("minilm")
    store = SQLiteStore(path)
    store.ensure_schema(embedder.model, embedder.dimensions)
    store.upsert(records(conversations))
    store.close()
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("search") / "memory.db")


@pytest.fixture()
def searcher(store_path):
    store = open_for_search(str(store_path))
    yield Searcher(store)
    store.close()


def texts(results) -> list[str]:
    return [result.text for result in results]


def all_messages(store_path: Path) -> list[tuple]:
    """(text, role, source, conversation id, title, date) of every stored message."""
    with sqlite3.connect(store_path) as db:
        return db.execute(
            "SELECT m.text, m.role, v.source, v.conversation_id, v.title, coalesce(m.created_at, v.created_at)"
            " FROM messages m JOIN conversations v ON v.id = m.conversation"
        ).fetchall()


def search_cli(store_path: Path, *args: str):
    return CliRunner().invoke(cli, ["search", *args, "--db", str(store_path)])


# Ranking facts

@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_exact_error_text_is_found_first(searcher, mode):
    results = searcher.search("ModuleNotFoundError", k=5, mode=mode)
    assert results[0].text.startswith("ModuleNotFoundError: No module named 'numpy'")
    assert (0, len("ModuleNotFoundError")) in results[0].highlights


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_exact_command_is_found_first(searcher, mode):
    assert "usermod -aG docker" in searcher.search("usermod", k=3, mode=mode)[0].text


def test_paraphrase_is_found_by_meaning(searcher):
    query = "yeast culture refuses to rise"
    assert searcher.search(query, k=3, mode="keyword") == []  # no word in common
    results = searcher.search(query, k=3, mode="vector", exchanges=False, floor=False)
    assert [r.conversation_id for r in results[:2]] == ["conv-bread", "conv-bread"]
    assert results[0].vector_score is not None and results[0].keyword_score is None


def test_hybrid_finds_the_question_behind_the_issue_query(searcher):
    first = searcher.search("how did I fix the docker permission error", k=5)[0]
    assert "usermod -aG docker" in first.answer.text
    assert "permission denied while trying to connect" in first.question.text


def test_a_message_appears_once_with_its_best_chunk(tmp_path):
    embedder = get_embedder("minilm")
    store = SQLiteStore(tmp_path / "chunks.db")
    store.ensure_schema(embedder.model, embedder.dimensions)
    conversation = Conversation("chatgpt", "c", "Long answer", day("2024-01-01"), None)
    parts = ("Kubernetes pods restart because the liveness probe fails.",
             "Bananas ripen faster in a paper bag.",
             "Increase the probe's initialDelaySeconds so the pod can start.")
    message = Message("c", "m", "assistant", day("2024-01-01"), " ".join(parts), 0)
    store.upsert([MessageRecord(message.key("chatgpt"), conversation, message, parts, embedder.embed(list(parts)))])
    results = Searcher(store).search("ripening bananas in a bag", k=5, mode="hybrid")
    store.close()
    assert len(results) == 1
    assert "Bananas" in results[0].snippet and results[0].highlights


# Filters: applied before the top-k cut

def test_filter_reaches_past_the_unfiltered_top_k(searcher):
    unfiltered = texts(searcher.search("docker", k=3, mode="keyword"))
    assert not any("kitchen laptop" in text for text in unfiltered)
    for mode in ("keyword", "hybrid", "vector"):
        filtered = searcher.search("docker", k=3, mode=mode, filters=Filters(source="claude"), floor=False)
        assert "Unrelated: is docker installed on the kitchen laptop?" in texts(filtered), mode


def test_keyword_filter_returns_every_match_that_exists(searcher, store_path):
    results = searcher.search("docker", k=100, mode="keyword", filters=Filters(role="user"))
    expected = {text for text, role, *_ in all_messages(store_path) if role == "user" and "docker" in text.lower()}
    assert set(texts(results)) == expected and len(expected) == 3


@pytest.mark.parametrize("filters, keep", [
    (Filters(role="user"), lambda m: m[1] == "user"),
    (Filters(role="assistant"), lambda m: m[1] == "assistant"),
    (Filters(source="claude"), lambda m: m[2] == "claude"),
    (Filters(source="chatgpt"), lambda m: m[2] == "chatgpt"),
    (Filters(conversation="conv-python"), lambda m: m[3] == "conv-python"),
    (Filters(conversation="UBUNTU laptop"), lambda m: m[3] == "conv-docker"),
    (Filters(conversation="o"), lambda m: "o" in m[4].lower()),
    (Filters(since=parse_when("2024-03-05")), lambda m: m[5] >= day("2024-03-05")),
    (Filters(until=parse_when("2024-01-10", end=True)), lambda m: m[5] < day("2024-01-11")),
    (Filters(since=parse_when("2024-03"), until=parse_when("2024-03", end=True)),
     lambda m: day("2024-03-01") <= m[5] < day("2024-04-01")),
    (Filters(role="user", source="chatgpt", since=parse_when("2024")),
     lambda m: m[1] == "user" and m[2] == "chatgpt" and m[5] >= day("2024-01-01")),
])
@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_each_filter_returns_exactly_the_messages_that_pass(searcher, store_path, filters, keep, mode):
    results = searcher.search("anything at all", k=100, mode=mode, filters=filters, floor=False, exchanges=False)
    expected = sorted(m[0] for m in all_messages(store_path) if keep(m))
    assert expected and sorted(texts(results)) == expected


def test_date_filter_uses_the_conversation_date_when_the_message_has_none(searcher):
    march_5 = Filters(since=parse_when("2024-03-05"), until=parse_when("2024-03-05", end=True))
    results = searcher.search("starter", k=10, mode="vector", filters=march_5, exchanges=False, floor=False)
    assert {r.text[:20] for r in results} == {"My sourdough starter", "Keep the starter aro"}
    assert all(r.created_at == day("2024-03-05") for r in results)


def test_unknown_conversation_is_a_clear_error(searcher, store_path):
    with pytest.raises(SearchError, match="no conversation"):
        searcher.search("docker", filters=Filters(conversation="no such thing"))
    result = search_cli(store_path, "docker", "--conversation", "no such thing")
    assert result.exit_code == 2
    assert result.output == "Error: no conversation has the id or a title containing 'no such thing'\n"


def test_dates_parse_to_utc_periods():
    assert parse_when("2024-02", end=True) == day("2024-03-01")
    assert parse_when("2024-12", end=True) == day("2025-01-01")
    assert parse_when("2024-01-31T10:00", end=True) == day("2024-01-31T10:01")
    assert parse_when("2024-01-31T10:00:00+02:00") == day("2024-01-31T08:00")
    with pytest.raises(SearchError, match="not a date"):
        parse_when("last tuesday")


# Context expansion

def test_context_adds_neighbours_of_the_same_conversation_in_order(searcher):
    hit = searcher.search("usermod", k=1, mode="keyword", context=1)[0]
    assert [m.text[:13] for m in hit.before] == ["Running docke"]
    assert [m.text[:13] for m in hit.after] == ["That worked, "]
    wide = searcher.search("usermod", k=1, mode="keyword", context=5)[0]
    assert len(wide.before) == 1 and len(wide.after) == 2
    assert [m.position for m in (*wide.before, wide, *wide.after)] == [0, 2, 4, 6]


def test_context_ignores_the_role_filter(searcher):
    hit = searcher.search("usermod", k=1, mode="keyword", context=1, filters=Filters(role="assistant"))[0]
    assert hit.before[0].role == "user" and hit.after[0].role == "user"


# Output formats

def test_json_format_is_one_document(store_path):
    result = search_cli(store_path, "docker permission", "--format", "json", "-k", "2", "--context", "1", "--all")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["query"] == "docker permission" and document["mode"] == "hybrid"
    assert len(document["results"]) == 2
    first = document["results"][0]
    assert {"title", "created_at", "role", "score", "snippet", "highlights", "before", "after"} <= set(first)
    assert first["created_at"].endswith("Z")


def test_context_format_is_a_prompt_ready_block(store_path):
    result = search_cli(store_path, "usermod", "--format", "context", "-k", "1", "--context", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "[1] Docker on the new Ubuntu laptop · 2024-01-10 · chatgpt"
    assert lines[1].startswith("user: Running docker ps")
    assert lines[2].startswith("assistant: Your user is not in the docker group")
    assert lines[3].startswith("user: That worked")


def test_readable_text_is_the_default_and_plain_when_not_a_terminal(store_path):
    result = search_cli(store_path, "sourdough starter", "-k", "2", "--mode", "keyword")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("[1] Sourdough starter trouble\n") and "BM25" in result.output
    assert "┃" not in result.output and "\x1b" not in result.output


def test_every_option_of_the_command(store_path):
    result = search_cli(store_path, "docker", "-k", "5", "--role", "user", "--conversation", "ubuntu",
                        "--since", "2024-01-01", "--until", "2024-12-31", "--source", "chatgpt",
                        "--context", "2", "--mode", "vector", "--format", "json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)["results"]
    assert {r["text"][:12] for r in found} == {"Running dock", "That worked,"}


def test_no_match_says_so(store_path):
    result = search_cli(store_path, "zyzzyva", "--mode", "keyword")
    assert result.exit_code == 0 and "No messages match." in result.output
    result = search_cli(store_path, "zyzzyva")
    assert result.exit_code == 0 and "No good match" in result.stderr and result.stdout == ""


# Odd queries

ODD_QUERIES = ['"unbalanced', 'say "hello" there', "AND OR NOT NEAR", "NEAR(docker permission, 2)", "dock*",
               "*", '"', ":", "title: docker", "(docker) AND (", "docker -permission", "^start", "🎉",
               "東京 ラーメン", "fêter l'anniversaire", "C++ && ||", "ModuleNotFoundError: 'numpy'", "{ } [ ]"]


@pytest.mark.parametrize("query", ODD_QUERIES)
@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_odd_queries_are_never_read_as_fts_syntax(searcher, query, mode):
    """FTS5 syntax in a query is matched as words: no error, and every keyword hit holds one of its words."""
    results = searcher.search(query, k=3, mode=mode, floor=False, exchanges=False)
    words = [word.casefold() for word in re.findall(r"[^\W_]+", query)]
    if mode == "keyword":
        assert all(any(word in result.text.casefold() for word in words) for result in results), query
        assert bool(results) <= bool(words)
    else:
        assert len(results) == 3 or not words


def test_odd_queries_still_match_their_words(searcher):
    assert searcher.search("東京で一番おいしいラーメン屋はどこですか", k=1, mode="keyword")[0].title == "Voyage au Japon"
    tokyo = searcher.search("東京", k=1, mode="keyword")[0]  # unspaced scripts match as substrings of a run
    assert tokyo.text.startswith("東京で") and tokyo.highlights == ((0, 2),)
    ramen = searcher.search("ラーメン", k=1, mode="keyword")[0]  # inside the run, through the trigram index
    assert ramen.text.startswith("東京で")
    assert "Kyoto" in searcher.search("à Kyoto?", k=1, mode="keyword")[0].text
    assert "numpy" in searcher.search('ModuleNotFoundError: "numpy"', k=1, mode="keyword")[0].text
    assert searcher.search("🎉", k=3, mode="keyword") == []


def test_a_whole_japanese_sentence_finds_its_message_by_keyword(searcher):
    """A sentence of an unspaced script is one token: its overlapping trigrams are matched instead, so
    another sentence about Tokyo ramen finds the stored one, and the rarer trigrams weigh more."""
    assert keyword_terms("東京のラーメン屋") == ["東京の", "京のラ", "のラー", "ラーメ", "ーメン", "メン屋"]
    [hit] = searcher.search("東京のおいしいラーメン屋を教えて", k=1, mode="keyword")
    assert hit.text == "東京で一番おいしいラーメン屋はどこですか"
    assert searcher.search("大阪の天気", k=3, mode="keyword") == []  # no trigram in common: nothing


def test_the_bigrams_of_a_sentence_are_read_only_when_no_trigram_matched(searcher, monkeypatch):
    """Trigrams go through the index; a sentence none of whose trigrams matches is looked up again by its
    bigrams (the two-character words inside it), which only a read of every chunk finds."""
    asked: list[list[str]] = []
    real = searcher.store.keyword_hits
    monkeypatch.setattr(searcher.store, "keyword_hits", lambda terms, *rest: asked.append(list(terms)) or real(terms, *rest))
    [hit] = searcher.search("東京のおいしいラーメン屋を教えて", k=1, mode="keyword")
    assert hit.text == "東京で一番おいしいラーメン屋はどこですか" and len(asked) == 1  # its trigrams sufficed
    asked.clear()
    [hit] = searcher.search("東京駅の近く", k=1, mode="keyword")  # trigrams 東京駅, 京駅の, 駅の近, の近く: none stored
    assert hit.text.startswith("東京") and asked == [keyword_terms("東京駅の近く"), keyword_terms("東京駅の近く", fine=True)]


def test_unspaced_runs_split_into_trigrams_and_korean_words_into_bigrams():
    assert keyword_terms("今晩 2名 予約") == ["今晩", "2名", "予約"]  # short runs and mixed tokens stay whole
    assert keyword_terms("東京") == ["東京"] and keyword_terms("名") == ["名"]
    assert keyword_terms("찌개에 두부는") == ["찌개", "개에", "두부", "부는"]
    assert keyword_terms("列表推导式 map") == ["列表推", "表推导", "推导式", "map"]
    assert keyword_terms("ラーメン 東京都") == ["ラーメ", "ーメン", "東京都"]  # a run of three stays whole
    assert keyword_terms("김치찌개를끓였어요") == ["김치찌", "치찌개", "찌개를", "개를끓", "를끓였", "끓였어", "였어요"]
    assert keyword_terms("東京のラーメン", fine=True) == ["東京", "京の", "のラ", "ラー", "ーメ", "メン"]


def test_keyword_terms_and_the_fts_expression_quote_every_term():
    assert keyword_terms('how did I fix "the" docker NEAR error*') == ["fix", "docker", "NEAR", "error*"]
    assert fts_match(keyword_terms('how did I fix "the" docker NEAR error*')) == '"fix" OR "docker" OR "NEAR" OR "error*"'
    assert fts_match(keyword_terms('say "hello" (today)')) == '"say" OR """hello""" OR "(today)"'
    assert keyword_terms("the how") == ["the", "how"]
    assert keyword_terms("* : ( ) 🎉") == []
    assert fts_match(["東京"]) == '"東京"'


@pytest.mark.parametrize("query", ["docker\x00permission", "docker\x1b[31mpermission", "\x00docker", "docker\u200b"])
def test_control_characters_in_a_query_are_read_as_spaces(searcher, query):
    results = searcher.search(query, k=3, mode="keyword")
    assert results and "docker" in results[0].text.lower()


def test_a_query_of_control_characters_only_is_an_empty_query(store_path):
    result = search_cli(store_path, "\x00\x07")
    assert result.exit_code == 2 and "empty query" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_a_clear_error(store_path, query):
    result = search_cli(store_path, query)
    assert result.exit_code == 2 and "empty query" in result.output


# Errors

def test_missing_database_is_not_created(tmp_path):
    missing = tmp_path / "nothing.db"
    result = search_cli(missing, "docker")
    assert result.exit_code == 2 and "sparky ingest" in result.output
    assert not missing.exists()


def test_default_database_is_beside_the_progress_file(tmp_path):
    progress = tmp_path / "progress.json"
    result = CliRunner().invoke(cli, ["search", "docker", "--progress-file", str(progress)])
    assert result.exit_code == 2 and str(tmp_path / "sparky_memory.db") in result.output


def test_empty_store_is_a_clear_error(tmp_path):
    embedder = get_embedder("minilm")
    store = SQLiteStore(tmp_path / "empty.db")
    store.ensure_schema(embedder.model, embedder.dimensions)
    store.close()
    result = search_cli(tmp_path / "empty.db", "docker")
    assert result.exit_code == 2 and "empty" in result.output


def test_file_that_is_not_a_store_is_left_alone(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (x)")
    result = search_cli(other, "docker")
    assert result.exit_code == 2 and "not a Sparky memory store" in result.output
    with sqlite3.connect(other) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]


def test_store_of_another_model_refuses_vector_search_but_allows_keywords(tmp_path, store_path):
    other = tmp_path / "other-model.db"
    other.write_bytes(store_path.read_bytes())
    with sqlite3.connect(other) as db:
        db.execute("UPDATE meta SET value = 'someone/else' WHERE name = 'model'")
    result = search_cli(other, "docker")
    assert result.exit_code == 2 and "built with embedding model someone/else" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert search_cli(other, "docker", "--mode", "keyword").exit_code == 0


def test_new_messages_are_found_after_the_cached_matrix_goes_stale(tmp_path):
    path = make_store(tmp_path / "grow.db", CONVERSATIONS[:1])
    store = open_for_search(str(path))
    searcher = Searcher(store)
    assert searcher.search("sourdough starter", k=1, mode="vector", floor=False)[0].conversation_id == "conv-docker"
    writer = SQLiteStore(path)
    writer.upsert(records(CONVERSATIONS[1:2]))
    writer.close()
    assert searcher.search("sourdough starter", k=1, mode="vector")[0].conversation_id == "conv-bread"
    store.close()


# The original script and start-up

def test_retrieve_similar_shim_and_keyword_mode_without_the_model(store_path):
    done = subprocess.run([sys.executable, str(ROOT / "retrieve_similar.py"), "usermod", "--db", str(store_path),
                           "--format", "context", "-k", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[1] Docker on the new Ubuntu laptop")
    code = ("import sys; from sparky.search import Searcher, open_for_search; "
            f"Searcher(open_for_search({str(store_path)!r})).search('docker', mode='keyword'); "
            "print(sorted(m for m in ('onnxruntime', 'tokenizers', 'rich.progress') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "[]", loaded.stderr


def test_a_store_of_a_model_this_version_cannot_run_still_searches_by_keyword(tmp_path, store_path):
    other = tmp_path / "api-model.db"
    other.write_bytes(store_path.read_bytes())
    with sqlite3.connect(other) as db:
        db.execute("UPDATE meta SET value = 'text-embedding-3-small' WHERE name = 'model'")
    result = search_cli(other, "docker")  # no --embedder: the store's model, which is not local
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "built with embedding model text-embedding-3-small" in result.output and "--mode keyword" in result.output
    assert search_cli(other, "docker", "--mode", "keyword").exit_code == 0


@pytest.fixture(params=["sqlite", "postgres"])
def either_store(request, tmp_path):
    """A store of each kind holding the same Japanese and Korean messages (two-dimensional vectors)."""
    from sparky.stores import open_store

    url = str(tmp_path / "memory.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = open_store(url)
    store.ensure_schema("test-model", 2)
    conversation = Conversation("chatgpt", "mixed", "Mixed", 1.0, 2.0)
    texts = ["東京でラーメンを食べた。ラーメンは最高", "駅前のラーメン屋", "맛있는 김치찌개를 끓였어요", "The ramen in Tokyo"]
    store.upsert([MessageRecord(Message("mixed", f"m{n}", "user", 1.0, text, n).key("chatgpt"), conversation,
                                Message("mixed", f"m{n}", "user", 1.0, text, n), (text,),
                                np.ones((1, 2), np.float32) / np.sqrt(2)) for n, text in enumerate(texts)])
    yield store
    store.close()


def test_both_stores_rank_a_sentence_by_its_pieces_alike(either_store):
    """The trigrams of a Japanese sentence and the bigrams of a Korean word with its particle are matched as
    substrings, each weighted by its IDF: on both stores, the message sharing two rare trigrams (のラー, メン屋)
    outranks the one sharing only the common ラーメ, ーメン (in half the messages: IDF at its floor)."""
    from sparky.stores import StoreFilters

    ramen = either_store.keyword_hits(keyword_terms("東京のラーメン屋"), StoreFilters(), 5)
    rows = either_store.messages([hit.message for hit in ramen])
    assert [rows[hit.message].text for hit in ramen] == ["駅前のラーメン屋", "東京でラーメンを食べた。ラーメンは最高"]
    rare = np.log(3.5 / 1.5)  # a trigram in one of the four chunks
    assert [hit.score for hit in ramen] == [pytest.approx(2 * rare, abs=1e-4), pytest.approx(0, abs=1e-4)]
    [stew] = either_store.keyword_hits(keyword_terms("찌개에 두부는"), StoreFilters(), 5)
    assert either_store.messages([stew.message])[stew.message].text == "맛있는 김치찌개를 끓였어요"
