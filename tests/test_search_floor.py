"""The relevance floor's two levels (issue 13): hybrid mode's floor, and the lower one of a message both sides
found (in the vector side's hits, and with keyword evidence above ``fusion.CORROBORATION``), on a real store:
the sample export, 400 generated messages and four of the bench's conversations, ingested by the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT, linear_mapping
from sparky.cli import cli
from sparky.search import FLOORS, Searcher, keyword_terms, open_for_search
from sparky.search.fusion import CORROBORATION, keyword_evidence

BENCH_CONVERSATIONS = ("bench-ireland", "bench-homelab", "bench-cello", "bench-quokka")
BEACON = "the really ancient beacon we wanted to visit on the south-east coast"  # Hook Head, at the answer's end


def bench_export(folder: Path, ids: tuple[str, ...]) -> Path:
    """Those of bench/queries.json's conversations as a ChatGPT export."""
    document = json.loads((ROOT / "bench" / "queries.json").read_text(encoding="utf-8"))
    conversations = []
    for number, conversation in enumerate(c for c in document["conversations"] if c["id"] in ids):
        created = 1.72e9 + number * 86400
        mapping, last = linear_mapping(tuple(
            {"id": f"{conversation['id']}-{index}", "author": {"role": role}, "create_time": created + index * 60,
             "content": {"content_type": "text", "parts": [text]}, "status": "finished_successfully"}
            for index, (role, text) in enumerate(conversation["messages"], 1)))
        conversations.append({"id": conversation["id"], "conversation_id": conversation["id"],
                              "title": conversation["title"], "create_time": created, "update_time": created,
                              "mapping": mapping, "current_node": last})
    folder.mkdir(parents=True)
    (folder / "conversations.json").write_text(json.dumps(conversations), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def memory(tmp_path_factory, sample_export, small_generated_export) -> Searcher:
    folder = tmp_path_factory.mktemp("floor")
    db = folder / "memory.db"
    for number, export in enumerate((sample_export, small_generated_export,
                                     bench_export(folder / "bench", BENCH_CONVERSATIONS))):
        result = CliRunner().invoke(cli, ["ingest", str(export), "--quiet", "--db", str(db),
                                          "--progress-file", str(folder / f"progress-{number}.json")])
        assert result.exit_code == 0, result.output
    store = open_for_search(str(db))
    yield Searcher(store)
    store.close()


def evidence(searcher: Searcher, query: str, keyword_score: float) -> float:
    return keyword_evidence(keyword_score, searcher.documents, len(keyword_terms(query)))


def test_a_fact_both_sides_found_is_shown_under_the_hybrid_floor(memory):
    """The beacon shares one rare word with the answer's last paragraph and little meaning with its start:
    under the hybrid floor, above the corroborated one, and found by both sides, so it is shown."""
    [best, *_] = memory.search(BEACON, k=3, floor=False)
    assert best.title == "Ireland road trip" and best.found_by_both
    assert FLOORS["corroborated"] <= best.score < FLOORS["hybrid"]
    assert evidence(memory, BEACON, best.keyword_score) > CORROBORATION and best.vector_score is not None
    [shown] = memory.search(BEACON, k=3)
    assert shown.key == best.key


def test_a_trace_of_shared_words_does_not_corroborate(memory):
    """"pike fishing in autumn" has no answer; the road trip is near it in meaning and shares the word
    "best" ("best done clockwise"): in both sides' hits, above the lower floor, but with too little keyword
    evidence to count as found by both, so nothing is shown."""
    query = "best bait for pike fishing in autumn"
    [best, *_] = memory.search(query, k=3, floor=False)
    assert best.title == "Ireland road trip" and best.vector_score is not None and best.keyword_score is not None
    assert 0.0 < evidence(memory, query, best.keyword_score) <= CORROBORATION and not best.found_by_both
    assert FLOORS["corroborated"] <= best.score < FLOORS["hybrid"]
    assert memory.search(query, k=3) == []


def test_a_message_only_one_side_found_needs_the_hybrid_floor(memory):
    """The cello lessons are near "tune a concert harp" in meaning, above the lower floor, but share no word
    with it: nothing is shown."""
    query = "how do I tune a concert harp"
    [best, *_] = memory.search(query, k=3, floor=False)
    assert best.title == "Learning cello as an adult" and best.keyword_score is None and not best.found_by_both
    assert FLOORS["corroborated"] <= best.score < FLOORS["hybrid"]
    assert memory.search(query, k=3) == []


def test_a_floor_the_user_sets_applies_to_every_result(memory):
    assert memory.search(BEACON, k=3, min_score=FLOORS["hybrid"]) == []
    assert [result.title for result in memory.search(BEACON, k=1, min_score=FLOORS["corroborated"])] == \
        ["Ireland road trip"]


def test_the_cli_shows_the_corroborated_fact_and_says_so_in_json(memory):
    result = CliRunner().invoke(cli, ["search", BEACON, "--db", memory.store.url, "--format", "json", "-k", "3"])
    assert result.exit_code == 0, result.output
    [hit] = json.loads(result.output)["results"]
    assert hit["title"] == "Ireland road trip" and hit["found_by_both"] is True
