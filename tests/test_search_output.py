"""Search a person can read and trust (issue 13): the passage that matched, the exchange around a hit, the
relevance floor, and output that is wrapped on a terminal (CJK and emoji by their cell widths) and plain,
never wrapped, anywhere else. Real SQLite stores, real MiniLM embeddings, the real chunker."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from rich.cells import cell_len
from rich.console import Console

from sparky.cli import cli
from sparky.cli.search import print_results
from sparky.embedders import get_embedder
from sparky.models import Conversation, Message
from sparky.pipeline.chunking import chunk_message
from sparky.search import Searcher, open_for_search
from sparky.stores import MessageRecord
from sparky.stores.sqlite import SQLiteStore

TRIP_DAYS = " ".join(f"Day {day}: drive the coast road, stop at the beaches and cafés, and walk the cliffs before "
                     f"dinner in a small town." for day in range(1, 40))
LIGHTHOUSE = ("One last tip: the oldest working lighthouse in the world is the Hook Head lighthouse in County "
              "Wexford, built about 800 years ago.")
KOREAN = ("생성형 AI 모델은 대규모 데이터로 학습하여 새로운 텍스트와 이미지를 만들어 냅니다 🤖. "
          "이런 모델을 평가할 때는 정확성과 안전성을 함께 봐야 합니다 ✅.")

# (conversation id, title, [(role, text), ...])
CONVERSATIONS = [
    ("trip", "Ireland road trip", [
        ("user", "Plan me a two-week road trip along the Irish coast."),
        ("assistant", TRIP_DAYS + "\n\n" + LIGHTHOUSE),
    ]),
    ("pet", "A name for my pet", [
        ("user", "Give my pet quokka a name and a home."),
        ("assistant", "Meet Bramblethorn, a cheerful quokka who lives in a burrow under the tea-tree hedge."),
    ]),
    ("docs", "Learning a new library", [
        ("user", "How should I learn a big new web framework?"),
        ("assistant", "Start small, read the docs, and build one small project before the big one."),
        ("user", "Any small habit that helps?"),
        ("assistant", "Keep a small notebook of every error you hit and how you fixed it."),
    ]),
    ("ai", "생성형 AI 질문", [
        ("user", "생성형 AI 모델이 무엇인지 설명해 주세요."),
        ("assistant", KOREAN),
    ]),
]


def build_store(path: Path) -> Path:
    """The conversations above, chunked and embedded as an ingestion does."""
    embedder = get_embedder("minilm")
    store = SQLiteStore(path)
    store.ensure_schema(embedder.model, embedder.dimensions)
    records = []
    for number, (conversation_id, title, messages) in enumerate(CONVERSATIONS):
        conversation = Conversation("chatgpt", conversation_id, title, 1.7e9 + number * 86400, None)
        for position, (role, text) in enumerate(messages):
            message = Message(conversation_id, f"{conversation_id}-{position}", role, None, text, position)
            key = message.key("chatgpt")
            chunks = tuple(chunk.text for chunk in chunk_message(key, text, embedder.tokenizer, embedder.max_tokens))
            records.append(MessageRecord(key, conversation, message, chunks,
                                         np.asarray(embedder.embed(list(chunks)), dtype=np.float32)))
    store.upsert(records)
    store.close()
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("readable") / "memory.db")


@pytest.fixture()
def searcher(store_path):
    store = open_for_search(str(store_path))
    yield Searcher(store)
    store.close()


def run(store_path: Path, *args: str):
    return CliRunner().invoke(cli, ["search", *args, "--db", str(store_path)], env={"COLUMNS": "80"})


def rendered(results, query: str, width: int, full: bool = False) -> str:
    """What ``print_results`` draws on a terminal ``width`` cells wide, without its colour codes."""
    out = io.StringIO()
    print_results(Console(file=out, force_terminal=True, width=width, color_system="standard"), results, query,
                  "hybrid", full)
    return re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())


# The passage: the chunk that matched, whole sentences

def test_a_fact_in_the_last_chunk_of_a_long_answer_is_the_passage_shown(searcher):
    hit = searcher.search("which lighthouse is the oldest still working", k=1)[0]
    assert hit.role == "assistant" and len(hit.text) > 4000  # several chunks; the fact is in the last
    assert LIGHTHOUSE in hit.snippet and hit.text[slice(*hit.passage)] in hit.snippet
    assert hit.snippet.startswith("…") and not hit.snippet.endswith("…")


def test_without_any_query_word_the_passage_is_the_window_closest_in_meaning(searcher):
    hit = searcher.search("ancient maritime beacon", k=1, mode="vector", floor=False)[0]
    assert hit.passage != (0, len(hit.text)) and not hit.highlights
    assert "Hook Head" in hit.snippet


def test_a_chunk_found_by_meaning_holding_few_query_words_shows_the_window_closest_in_meaning(searcher):
    """"coast" is in every day of the trip, "ancient" and "beacon" nowhere: one word of three is no sign of
    the passage, so the window closest in meaning is shown, the lighthouse."""
    hit = searcher.search("an ancient beacon on the coast", k=1, mode="vector", floor=False)[0]
    assert hit.conversation_id == "trip" and "Hook Head" in hit.snippet


def test_a_chunk_found_by_meaning_holding_most_query_words_shows_the_window_holding_them(searcher):
    hit = searcher.search("coast road beaches cliffs", k=1, mode="vector", floor=False)[0]
    assert hit.conversation_id == "trip" and "Hook Head" not in hit.snippet
    assert {hit.snippet[a:b].casefold() for a, b in hit.highlights} == {"coast", "road", "beaches", "cliffs"}


def test_the_passage_is_whole_sentences_and_marks_the_query_words(searcher):
    hit = searcher.search("Hook Head lighthouse", k=1, mode="keyword")[0]
    assert hit.snippet.endswith("built about 800 years ago.")
    assert {hit.snippet[a:b].casefold() for a, b in hit.highlights} == {"hook", "head", "lighthouse"}


# Exchanges

def test_a_hit_on_a_question_comes_with_its_answer_and_the_pair_is_one_result(searcher):
    results = searcher.search("Give my pet quokka a name and a home", k=5, mode="keyword")
    pets = [r for r in results if r.conversation_id == "pet"]
    assert len(pets) == 1
    pet = pets[0]
    assert pet.question.text.startswith("Give my pet quokka") and pet.answer.text.startswith("Meet Bramblethorn")
    assert pet.key in (pet.question.key, pet.answer.key)
    both = searcher.search("Give my pet quokka a name and a home", k=5, mode="keyword", exchanges=False)
    assert [r.conversation_id for r in both].count("pet") == 2


def test_a_hit_on_an_answer_comes_with_its_question(searcher):
    hit = searcher.search("Bramblethorn", k=1, mode="keyword")[0]
    assert hit.role == "assistant" and hit.answer.key == hit.key
    assert hit.question.text == "Give my pet quokka a name and a home."


def test_the_exchange_is_in_the_json_document(store_path):
    result = run(store_path, "Bramblethorn", "--format", "json", "--mode", "keyword")
    first = json.loads(result.output)["results"][0]
    assert first["question"]["text"].startswith("Give my pet") and first["question"]["created_at"].endswith("Z")
    assert first["answer"]["key"] == first["key"] and first["passage"] == [0, len(first["text"])]


# Fusion: a keyword hit on common words does not bury the answer found by meaning

def test_common_words_do_not_push_the_answer_out_of_hybrid_results(searcher):
    query = "what name did I give my small Australian marsupial"
    assert any(r.conversation_id == "docs" for r in searcher.search(query, k=3, mode="keyword"))
    assert searcher.search(query, k=1)[0].conversation_id == "pet"


# The relevance floor

def test_a_query_about_nothing_stored_finds_no_good_match(searcher, store_path):
    assert searcher.search("quantum chromodynamics gluon") == []
    assert len(searcher.search("quantum chromodynamics gluon", k=3, floor=False)) == 3
    result = run(store_path, "quantum chromodynamics gluon")
    assert result.exit_code == 0 and result.stdout == "" and "No good match" in result.stderr
    assert "[1]" in run(store_path, "quantum chromodynamics gluon", "--all").stdout


def test_min_score_replaces_the_floor(searcher, store_path):
    weak = searcher.search("quantum chromodynamics gluon", k=3, floor=False)
    assert searcher.search("quantum chromodynamics gluon", k=3, min_score=weak[-1].score) == weak
    shown = run(store_path, "quantum chromodynamics gluon", "-k", "3", "--min-score", str(weak[0].score - 1e-6))
    assert shown.stdout.count("\n[") == 0 and shown.stdout.startswith("[1] ")


# Output off a terminal: plain text, nothing cut, nothing wrapped

def test_plain_output_has_no_borders_and_long_lines_stay_whole(store_path):
    result = run(store_path, "which lighthouse is the oldest still working", "-k", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "[1] Ireland road trip"
    assert lines[1].startswith("    ") and "matched the answer" in lines[1]
    assert "    user: Plan me a two-week road trip along the Irish coast." in lines
    assert any(line.endswith(LIGHTHOUSE) and len(line) > 80 for line in lines)
    assert not re.search("[┃│┏━╇─]", result.stdout) and "\x1b" not in result.stdout


def test_full_prints_whole_messages(store_path):
    result = run(store_path, "which lighthouse is the oldest still working", "-k", "1", "--full")
    assert TRIP_DAYS.splitlines()[0] in result.stdout and LIGHTHOUSE in result.stdout


def test_the_prompt_block_holds_the_exchange_once(store_path):
    result = run(store_path, "Bramblethorn", "--format", "context", "-k", "1", "--context", "1")
    assert result.output.splitlines()[1:] == ["user: Give my pet quokka a name and a home.",
                                             f"assistant: {CONVERSATIONS[1][2][1][1]}"]


# Output on a terminal: wrapped to its width by cell widths, every character kept

@pytest.mark.parametrize("width", [30, 41, 80])
def test_cjk_and_emoji_wrap_by_cell_width_and_keep_every_character(searcher, width):
    results = searcher.search("생성형 AI 모델", k=1, mode="keyword")
    assert results[0].answer.text == KOREAN
    screen = rendered(results, "생성형 AI 모델", width)
    lines = screen.splitlines()
    assert max(cell_len(line) for line in lines) <= width
    assert "".join(KOREAN.split()) in "".join(screen.split())
    assert all(line.startswith("    ") for line in lines[1:] if line)  # wrapped lines keep the indent


def test_the_query_words_are_marked_on_a_terminal(searcher):
    results = searcher.search("Bramblethorn", k=1, mode="keyword")
    out = io.StringIO()
    print_results(Console(file=out, force_terminal=True, width=100, color_system="standard"), results,
                  "Bramblethorn", "keyword", False)
    assert "\x1b[1;33mBramblethorn\x1b[0m" in out.getvalue()


def test_a_long_passage_is_wrapped_on_a_terminal_never_cut(searcher):
    results = searcher.search("which lighthouse is the oldest still working", k=1)
    screen = rendered(results, "which lighthouse is the oldest still working", 60)
    assert max(cell_len(line) for line in screen.splitlines()) <= 60
    assert " ".join(LIGHTHOUSE.split()) in " ".join(line.strip() for line in screen.splitlines())


def test_the_pieces_of_an_unspaced_query_are_marked_where_they_matched():
    """A Korean word with its particle, or a Japanese sentence, is marked by the pieces the keyword side
    matched (bigrams, trigrams), inside longer runs, overlapping ones as one span; other words only as whole
    words."""
    from sparky.search.snippets import make_snippet, query_terms

    text = "맛있는 김치찌개를 끓였어요. 東京でラーメンを食べた"
    snippet, spans = make_snippet(text, (0, len(text)), query_terms("찌개에 東京のラーメン ramen"))
    assert [snippet[a:b] for a, b in spans] == ["찌개", "ラーメン"]
