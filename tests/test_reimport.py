"""Re-importing a newer export of the same account: only new and changed texts are embedded, an edit
replaces the stored text (the old one kept, superseded), a regenerated answer supersedes the old one,
conversations the new export lacks are kept unless --prune, and every run reports what it did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import read_progress
from sparky.cli import cli
from sparky.search import Filters, Searcher
from sparky.stores import open_store


def node(node_id: str, parent: str | None, role: str | None, text: str | None, children: list[str]) -> dict:
    message = None if role is None else {"id": node_id, "author": {"role": role}, "create_time": 1_700_000_000,
                                         "content": {"content_type": "text", "parts": [text]}}
    return {"id": node_id, "message": message, "parent": parent, "children": children}


def conversation(conversation_id: str, title: str, turns: list[tuple[str, str, str]], update_time: float,
                 abandoned: dict[str, tuple[str, str, str]] | None = None) -> dict:
    """A ChatGPT conversation whose current branch is ``turns`` (node id, role, text); ``abandoned`` adds
    sibling branches: {parent node id: (node id, role, text)} that the current branch no longer follows."""
    mapping = {"root": node("root", None, None, None, [])}
    parent = "root"
    for node_id, role, text in turns:
        mapping[node_id] = node(node_id, parent, role, text, [])
        mapping[parent]["children"].append(node_id)
        parent = node_id
    for at, (node_id, role, text) in (abandoned or {}).items():
        mapping[node_id] = node(node_id, at, role, text, [])
        mapping[at]["children"].insert(0, node_id)
    return {"id": conversation_id, "title": title, "create_time": 1_700_000_000, "update_time": update_time,
            "mapping": mapping, "current_node": parent}


TRIP = [("t1", "user", "Plan a weekend in Wexford for me"),
        ("t2", "assistant", "Walk to the Hook Head lighthouse, then the Saltee ferry.")]
PETS_QUESTION = ("p1", "user", "Give my pet quokka a name and a home")
OLD_ANSWER = ("p2", "assistant", "Call the quokka Bramblethorn and give it a burrow.")
NEW_ANSWER = ("p3", "assistant", "Call the quokka Wombleton and give it a garden.")
EDIT_OLD = ("e1", "user", "My favourite colour is teal, remember that")
EDIT_NEW = ("e1", "user", "My favourite colour is crimson, remember that")
EDIT_REPLY = ("e2", "assistant", "Noted: your favourite colour, and I will remember it.")
GONE = [("g1", "user", "Explain monads in Haskell simply"), ("g2", "assistant", "A monad chains computations.")]
NEW = [("n1", "user", "Which telescope suits a beginner?"), ("n2", "assistant", "A 130 mm Dobsonian reflector.")]


def write_export(folder: Path, conversations: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "conversations.json").write_text(json.dumps(conversations), encoding="utf-8")
    return folder


@pytest.fixture
def exports(tmp_path) -> tuple[Path, Path]:
    first = write_export(tmp_path / "export-1", [
        conversation("trip", "Wexford weekend", TRIP, 1000),
        conversation("pets", "Quokka", [PETS_QUESTION, OLD_ANSWER], 1000),
        conversation("gone", "Monads", GONE, 1000),
        conversation("edit", "Colours", [EDIT_OLD, EDIT_REPLY], 1000),
    ])
    second = write_export(tmp_path / "export-2", [
        conversation("trip", "Wexford weekend", TRIP + [("t3", "user", "And where should we eat?"),
                                                        ("t4", "assistant", "Try the seafood at Kilmore Quay.")], 2000),
        conversation("pets", "Quokka", [PETS_QUESTION, NEW_ANSWER], 2000, abandoned={"p1": OLD_ANSWER}),
        conversation("edit", "Colours", [EDIT_NEW, EDIT_REPLY], 2000),
        conversation("new", "Telescopes", NEW, 2000),
    ])
    return first, second


def ingest(tmp_path: Path, export: Path, *extra: str):
    return CliRunner().invoke(cli, ["ingest", str(export), "--progress-file", str(tmp_path / "progress.json"),
                                    *extra], catch_exceptions=False)


def test_a_newer_export_embeds_only_new_and_changed_texts_and_reports_each_kind(tmp_path, exports, faulty_embedders):
    first, second = exports
    made = faulty_embedders("")
    assert ingest(tmp_path, first).exit_code == 0
    assert len(made[-1].answered) == 8
    result = ingest(tmp_path, second)
    assert result.exit_code == 0, result.output
    assert sorted(made[-1].answered) == sorted(
        ["And where should we eat?", "Try the seafood at Kilmore Quay.", NEW_ANSWER[2], EDIT_NEW[2], *[t for _, _, t in NEW]])
    assert ("Messages: new 5, changed 1, unchanged 4; superseded 2 (kept, hidden from search: --include-superseded), "
            "pruned 0 conversations") in result.output
    assert "Kept 1 stored conversation this export no longer holds" in result.output
    session = read_progress(tmp_path / "progress.json")["sessions"][-1]
    assert session["versions"] == {"new": 5, "changed": 1, "unchanged": 4, "superseded": 2, "pruned": 0, "absent": 1}
    again = ingest(tmp_path, second)
    assert again.exit_code == 0 and made[-1].answered == []  # nothing new: nothing embedded


def test_search_shows_current_versions_and_the_superseded_ones_only_when_asked(tmp_path, exports, faulty_embedders):
    first, second = exports
    faulty_embedders("")
    ingest(tmp_path, first)
    ingest(tmp_path, second)
    store = open_store(str(tmp_path / "sparky_memory.db"), create=False)
    try:
        searcher = Searcher(store)

        def found(word: str, **filters) -> set[str]:
            return {r.text for r in searcher.search(word, k=5, mode="keyword", filters=Filters(**filters))}

        assert EDIT_NEW[2] in found("crimson") and NEW_ANSWER[2] in found("Wombleton")
        assert GONE[0][2] in found("monads")  # its conversation is absent from the newer export: kept
        assert found("teal") == set() and found("Bramblethorn") == set()
        assert EDIT_OLD[2] in found("teal", include_superseded=True)
        assert OLD_ANSWER[2] in found("Bramblethorn", include_superseded=True)
        assert store.stats()["superseded"] == 2
    finally:
        store.close()
    shown = CliRunner().invoke(cli, ["search", "teal", "--mode", "keyword", "--db", str(tmp_path / "sparky_memory.db"),
                                     "--include-superseded", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert [r["text"] for r in json.loads(shown.output)["results"]] == [EDIT_OLD[2]]


def test_prune_shows_what_it_removes_asks_and_removes_only_absent_conversations(tmp_path, exports, faulty_embedders):
    first, second = exports
    faulty_embedders("")
    ingest(tmp_path, first)
    declined = CliRunner().invoke(cli, ["ingest", str(second), "--progress-file", str(tmp_path / "progress.json"),
                                        "--prune"], catch_exceptions=False)
    assert declined.exit_code == 2
    assert "--prune removes 1 stored conversation (2 messages) this export no longer holds:" in declined.output
    assert "Monads" in declined.output and "nothing was pruned" in declined.output
    store = open_store(str(tmp_path / "sparky_memory.db"), create=False)
    assert [c.conversation_id for c in store.stored_conversations("chatgpt")] == ["trip", "pets", "gone", "edit"]
    store.close()
    pruned = ingest(tmp_path, second, "--prune", "--yes")
    assert pruned.exit_code == 0, pruned.output
    assert "pruned 1 conversation" in pruned.output
    store = open_store(str(tmp_path / "sparky_memory.db"), create=False)
    try:
        assert sorted(c.conversation_id for c in store.stored_conversations("chatgpt")) == ["edit", "new", "pets", "trip"]
    finally:
        store.close()


def test_a_changed_conversation_the_progress_file_lists_as_done_is_checked_again(tmp_path, exports, faulty_embedders):
    first, _ = exports
    made = faulty_embedders("")
    assert ingest(tmp_path, first).exit_code == 0
    progress = read_progress(tmp_path / "progress.json")
    assert "edit" in progress["processed_conversations"]
    data = json.loads((first / "conversations.json").read_text())
    data[3] = conversation("edit", "Colours", [EDIT_NEW, EDIT_REPLY], 3000)  # the same export, edited in place
    (first / "conversations.json").write_text(json.dumps(data))
    result = ingest(tmp_path, first)
    assert result.exit_code == 0, result.output
    assert made[-1].answered == [EDIT_NEW[2]]


def test_reset_of_the_newer_export_removes_its_conversations_with_their_old_versions(tmp_path, exports,
                                                                                      faulty_embedders):
    first, second = exports
    faulty_embedders("")
    ingest(tmp_path, first)
    ingest(tmp_path, second)
    result = CliRunner().invoke(cli, ["reset", str(second), "--progress-file", str(tmp_path / "progress.json"),
                                      "--yes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    store = open_store(str(tmp_path / "sparky_memory.db"), create=False)
    try:
        assert [c.conversation_id for c in store.stored_conversations("chatgpt")] == ["gone"]  # only export 1 had it
        assert store.stats()["superseded"] == 0
    finally:
        store.close()
