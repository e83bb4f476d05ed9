"""ChatGPT details seen on real exports: shards beside a stray conversations.json, missing shards, canvas
(writing) blocks, do-not-remember conversations, a forced format, short answers, and random mapping trees."""

from __future__ import annotations

import json
import signal
import zipfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import linear_mapping
from sparky.errors import InputError
from sparky.models import Conversation, Message
from sparky.pipeline.select import Selector
from sparky.readers import ExportReader, chatgpt


def message(role: str, text: str, **fields: object) -> dict:
    return {"id": f"m-{role}-{text[:20]}", "author": {"role": role}, "create_time": None,
            "content": {"content_type": "text", "parts": [text]}, "recipient": "all", **fields}


def chat(cid: str, *texts: str, **fields: object) -> dict:
    """A linear conversation of alternating user/assistant messages."""
    roles = ("user", "assistant")
    mapping, leaf = linear_mapping(tuple(message(roles[i % 2], text) for i, text in enumerate(texts)))
    return {"id": cid, "title": cid, "mapping": mapping, "current_node": leaf, **fields}


def claude_chat(uuid: str) -> dict:
    return {"uuid": uuid, "name": uuid, "chat_messages": [
        {"uuid": f"{uuid}-m", "sender": "human", "text": "A question for Claude"}]}


def write(folder: Path, name: str, data: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return folder


def ids(reader: ExportReader) -> list[str]:
    return [conversation.id for conversation in reader.conversations()]


def texts_of(conversation: Conversation) -> list[str]:
    return [m.text for m in conversation.messages]


# --- 1. shards, a stray conversations.json beside them, missing shards -------------------------------

def test_shards_and_a_stray_single_file_are_all_read_and_repeats_skipped(tmp_path):
    write(tmp_path, "conversations-000.json", [chat("a", "question a"), chat("b", "question b, shard copy")])
    write(tmp_path, "conversations-001.json", [chat("c", "question c")])
    write(tmp_path, "conversations.json", [chat("b", "question b, older copy"), chat("d", "question d")])
    reader = ExportReader(tmp_path)
    conversations = list(reader.conversations())
    assert [c.id for c in conversations] == ["a", "b", "c", "d"]
    assert texts_of(conversations[1]) == ["question b, shard copy"]
    assert [Path(name).name for name in reader.files] == [
        "conversations-000.json", "conversations-001.json", "conversations.json"]
    assert reader.repeated_ids == [("b", str(tmp_path / "conversations.json"))]
    assert reader.content_counts["repeated_conversation"] == 1
    assert reader.duplicate_ids == [] and reader.warnings == [] and reader.missing_shards == []
    assert any("conversations.json" in note and "shard" in note for note in reader.notes)


def test_a_stray_single_file_duplicating_the_shards_adds_nothing(tmp_path):
    shards = [[chat("a", "question a")], [chat("b", "question b")]]
    for number, shard in enumerate(shards):
        write(tmp_path, f"conversations-00{number}.json", shard)
    write(tmp_path, "conversations.json", shards[0] + shards[1])
    reader = ExportReader(tmp_path)
    assert ids(reader) == ["a", "b"]
    assert reader.content_counts == {"repeated_conversation": 2}


def test_repeats_across_files_are_skipped_but_duplicates_within_a_file_are_renamed(tmp_path):
    write(tmp_path, "conversations-000.json", [chat("x", "first x"), chat("x", "second x")])
    write(tmp_path, "conversations.json", [chat("x", "stray x")])
    reader = ExportReader(tmp_path)
    assert ids(reader) == ["x", "x#2"]
    assert reader.duplicate_ids == [("x", "x#2")]
    assert [conversation_id for conversation_id, _ in reader.repeated_ids] == ["x"]


def test_a_malformed_shard_copy_does_not_hide_the_readable_stray_copy(tmp_path):
    write(tmp_path, "conversations-000.json", [{"id": "b", "mapping": "broken"}])
    write(tmp_path, "conversations.json", [chat("b", "readable b")])
    reader = ExportReader(tmp_path)
    [conversation] = list(reader.conversations())
    assert texts_of(conversation) == ["readable b"] and reader.repeated_ids == []
    assert reader.skipped == [("b", "'mapping' is not an object")]


def test_a_zip_with_shards_and_a_stray_single_file(tmp_path):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("export/conversations-000.json", json.dumps([chat("a", "question a")]))
        out.writestr("export/conversations.json", json.dumps([chat("a", "question a"), chat("z", "question z")]))
    reader = ExportReader(archive)
    assert ids(reader) == ["a", "z"]
    assert reader.repeated_ids == [("a", f"{archive}:export/conversations.json")]


@pytest.mark.parametrize("present, missing", [
    (["000", "002"], ["conversations-001.json"]),
    (["001"], ["conversations-000.json"]),
    (["000", "003"], ["conversations-001.json", "conversations-002.json"]),
    (["1", "3"], ["conversations-0.json", "conversations-2.json"]),
])
def test_a_gap_in_the_shard_numbers_is_a_warning_naming_the_missing_files(tmp_path, present, missing):
    for digits in present:
        write(tmp_path, f"conversations-{digits}.json", [chat(f"c{digits}", f"question {digits}")])
    reader = ExportReader(tmp_path)
    assert reader.missing_shards == missing
    [warning] = reader.warnings
    assert all(name in warning for name in missing) and "\n" not in warning
    assert ids(reader) == [f"c{digits}" for digits in present]


def test_complete_shards_warn_about_nothing_and_note_what_was_read(tmp_path):
    for number in range(3):
        write(tmp_path, f"conversations-00{number}.json", [chat(f"c{number}", "question")])
    reader = ExportReader(tmp_path)
    assert reader.missing_shards == [] and reader.warnings == []
    assert any("3 shard files" in note for note in reader.notes)


@pytest.mark.parametrize("name, content", [
    ("export_manifest.json", {"shard_count": 4}),
    ("export_manifest.json", {"conversations": {"numShards": 4, "format": "sharded"}}),
    ("export_manifest.json", {"files": [{"name": f"conversations-00{n}.json", "size": 10} for n in range(4)]}),
    ("export_manifest.json", [f"export/conversations-00{n}.json" for n in range(4)]),
    ("conversations.json.index", {"conv-1": {"shard": 0}, "conv-9": {"shard": 3, "offset": 12}}),
    ("conversations.json.index", {"total_shards": 4.0}),
])
def test_a_manifest_or_index_reveals_missing_trailing_shards(tmp_path, name, content):
    write(tmp_path, "conversations-000.json", [chat("a", "question a")])
    write(tmp_path, "conversations-001.json", [chat("b", "question b")])
    write(tmp_path, name, content)
    reader = ExportReader(tmp_path)
    assert reader.missing_shards == ["conversations-002.json", "conversations-003.json"]
    assert ids(reader) == ["a", "b"]


@pytest.mark.parametrize("content", ["not json at all", "[1, 2", "", '{"shard_count": "many"}',
                                     '{"shard_count": -1}', '{"shard_count": 1e12}', '{"shard_count": true}',
                                     '{"shard_count": 2.5}', "[" * 40 + "]" * 40, '{"shard": 1e999999999}'])
def test_an_odd_manifest_is_ignored(tmp_path, content):
    write(tmp_path, "conversations-000.json", [chat("a", "question a")])
    write(tmp_path, "export_manifest.json", content)
    reader = ExportReader(tmp_path)
    assert reader.missing_shards == [] and reader.warnings == []
    assert ids(reader) == ["a"]


def test_a_manifest_inside_a_zip_is_read(tmp_path):
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("2026-export/conversations-000.json", json.dumps([chat("a", "question a")]))
        out.writestr("2026-export/export_manifest.json", json.dumps({"shard_count": 2}))
    assert ExportReader(archive).missing_shards == ["conversations-001.json"]


def test_a_manifest_beside_a_lone_conversations_json_still_reveals_missing_shards(tmp_path):
    write(tmp_path, "conversations.json", [chat("a", "question a")])
    write(tmp_path, "export_manifest.json", {"shard_count": 2})
    reader = ExportReader(tmp_path)
    assert reader.missing_shards == ["conversations-000.json", "conversations-001.json"]
    assert ids(reader) == ["a"]


def test_a_manifest_naming_only_conversations_json_warns_about_nothing(tmp_path):
    write(tmp_path, "conversations.json", [chat("a", "question a")])
    write(tmp_path, "export_manifest.json", {"files": ["conversations.json", "user.json"], "count": 7})
    assert ExportReader(tmp_path).warnings == []


def test_a_single_conversations_json_has_no_notes_or_warnings(tmp_path):
    reader = ExportReader(write(tmp_path, "conversations.json", [chat("a", "question a")]))
    assert (reader.notes, reader.warnings, reader.missing_shards) == ([], [], [])


# --- 2. canvas / writing blocks -----------------------------------------------------------------

def assistant_text(text: str) -> str:
    mapping, leaf = linear_mapping((message("assistant", text),))
    [only] = chatgpt.convert({"id": "w", "mapping": mapping, "current_node": leaf}, Counter()).messages
    return only.text


def test_writing_block_markers_are_dropped_and_the_document_kept():
    text = ('Here is your cover letter:\n:::writing{variant="document" id="61482"}\nDear Ms Smith,\n\n'
            'I am applying for the role.\n:::\nWant any changes?')
    assert assistant_text(text) == ("Here is your cover letter:\nDear Ms Smith,\n\nI am applying for the role.\n"
                                    "Want any changes?")


def test_writing_markers_with_other_attributes_indentation_and_trailing_spaces():
    text = '  :::writing{variant="email" id="7" subject="Hi {there}"}  \nHello Bob\n  :::  \nafter'
    assert assistant_text(text) == "Hello Bob\nafter"


def test_colons_inside_code_fences_are_left_alone():
    text = ('```markdown\n:::writing{variant="document" id="1"}\nexample\n:::\n```\n'
            ':::writing{variant="document" id="2"}\n~~~\n:::\n~~~\nbody\n:::')
    assert assistant_text(text) == ('```markdown\n:::writing{variant="document" id="1"}\nexample\n:::\n```\n'
                                    '~~~\n:::\n~~~\nbody')


def test_a_lone_closing_line_an_inline_marker_and_an_unclosed_block():
    assert assistant_text("a\n:::\nb") == "a\n:::\nb"
    assert assistant_text('Write :::writing{id="1"} here') == 'Write :::writing{id="1"} here'
    assert assistant_text(':::writing{variant="document" id="3"}\nunfinished draft') == "unfinished draft"


def test_writing_blocks_split_across_parts_are_cleaned_too():
    mapping, leaf = linear_mapping(({"id": "m", "author": {"role": "assistant"}, "recipient": "all", "content": {
        "content_type": "text", "parts": [':::writing{variant="document" id="9"}', "the doc", ":::"]}},))
    [only] = chatgpt.convert({"id": "w", "mapping": mapping, "current_node": leaf}, Counter()).messages
    assert only.text == "the doc"


# --- 3. do-not-remember conversations ----------------------------------------------------------------

def dnr_export(folder: Path) -> Path:
    return write(folder, "conversations.json", [
        chat("keep", "a normal question"), chat("forget", "a private question", is_do_not_remember=True),
        chat("flag-false", "another question", is_do_not_remember=False),
        chat("flag-null", "yet another question", is_do_not_remember=None)])


def test_do_not_remember_conversations_are_skipped_and_counted_by_default(tmp_path):
    reader = ExportReader(dnr_export(tmp_path))
    assert ids(reader) == ["keep", "flag-false", "flag-null"]
    assert reader.content_counts == {"do_not_remember": 1} and reader.skipped == []
    assert ids(reader) == ["keep", "flag-false", "flag-null"] and reader.content_counts == {"do_not_remember": 1}


def test_do_not_remember_conversations_can_be_included(tmp_path):
    reader = ExportReader(dnr_export(tmp_path), include_do_not_remember=True)
    assert ids(reader) == ["keep", "forget", "flag-false", "flag-null"]
    assert reader.content_counts == {}


def test_a_do_not_remember_shard_copy_hides_the_stray_copy_too(tmp_path):
    write(tmp_path, "conversations-000.json", [chat("p", "private", is_do_not_remember=True)])
    write(tmp_path, "conversations.json", [chat("p", "private, older copy")])
    reader = ExportReader(tmp_path)
    assert ids(reader) == []
    assert reader.content_counts == {"do_not_remember": 1, "repeated_conversation": 1}


def test_an_export_of_only_do_not_remember_conversations_is_not_an_error(tmp_path):
    write(tmp_path, "conversations.json", [chat("p", "private", is_do_not_remember=True)])
    assert ids(ExportReader(tmp_path)) == []


# --- 4. a forced format ------------------------------------------------------------------------

def mixed_export(folder: Path) -> Path:
    both = {**claude_chat("both"), "id": "both", "mapping": {}}
    return write(folder, "conversations.json", [chat("g1", "a ChatGPT question"), claude_chat("k1"), both])


def test_format_is_detected_by_default(tmp_path):
    reader = ExportReader(mixed_export(tmp_path))
    assert [(c.source, c.id) for c in reader.conversations()] == [
        ("chatgpt", "g1"), ("claude", "k1"), ("chatgpt", "both")]


def test_format_chatgpt_skips_claude_items(tmp_path):
    reader = ExportReader(mixed_export(tmp_path), format="chatgpt")
    assert [(c.source, c.id) for c in reader.conversations()] == [("chatgpt", "g1"), ("chatgpt", "both")]
    assert reader.skipped == [("k1", "not a ChatGPT conversation (no 'mapping')")]


def test_format_claude_skips_chatgpt_items(tmp_path):
    reader = ExportReader(mixed_export(tmp_path), format="claude")
    assert [(c.source, c.id) for c in reader.conversations()] == [("claude", "k1"), ("claude", "both")]
    assert reader.skipped == [("g1", "not a Claude conversation (no 'chat_messages')")]


@pytest.mark.parametrize("count", [1, 12])
def test_a_forced_format_that_matches_nothing_is_one_clear_error(tmp_path, count):
    write(tmp_path, "conversations.json", [claude_chat(f"k{n}") for n in range(count)])
    with pytest.raises(InputError, match="not a ChatGPT export"):
        list(ExportReader(tmp_path, format="chatgpt").conversations())


def test_an_unknown_format_is_an_input_error(tmp_path):
    write(tmp_path, "conversations.json", [chat("g1", "a question")])
    with pytest.raises(InputError, match="unknown export format 'gemini'"):
        ExportReader(tmp_path, format="gemini")


# --- 5. short answers ----------------------------------------------------------------------------

ASKS = "Which language will the service be written in: Python, Go or C#?"
TELLS = "Here is the Dockerfile with a multi-stage build."


def kept(*turns: tuple[str, str]) -> list[str]:
    messages = tuple(Message("c", f"m{i}", role, None, text, i) for i, (role, text) in enumerate(turns))
    return [m.text for m in Selector().select(Conversation("chatgpt", "c", "t", None, None, messages))]


@pytest.mark.parametrize("answer", ["C#", "Docker", "Go", "5", "R", "F#"])
def test_a_short_answer_to_an_assistant_question_is_kept(answer):
    assert kept(("assistant", ASKS), ("user", answer)) == [ASKS, answer]


@pytest.mark.parametrize("text", ["C#", "C++", "F#", "Docker"])
def test_a_short_name_is_kept_without_a_question_too(text):
    assert kept(("assistant", TELLS), ("user", text)) == [TELLS, text]
    assert kept(("user", text)) == [text]


@pytest.mark.parametrize("text", ["ok", "OK!", "thanks", "Thanks!", "yes", "no", "y", "k", "👍", "?!", "好的"])
def test_acknowledgements_are_dropped_even_after_a_question(text):
    assert kept(("assistant", ASKS), ("user", text)) == [ASKS]


@pytest.mark.parametrize("text", ["Go", "R", "hm", "5"])
def test_a_fragment_that_answers_no_question_is_dropped(text):
    assert kept(("assistant", TELLS), ("user", text)) == [TELLS]
    assert kept(("user", "Which language do you use?"), ("user", text)) == ["Which language do you use?"]


# --- 6. random mapping trees -----------------------------------------------------------------------

@contextmanager
def time_limit(seconds: float):
    """Fail the test instead of hanging: SIGALRM interrupts the code under test."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds}s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


JUNK = st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | st.text(max_size=3) | st.just([]) | st.just({})
ROLES = st.sampled_from(["user", "assistant", "system", "tool", None, 7, ""])
CONTENT = st.one_of(
    JUNK,
    st.fixed_dictionaries({"content_type": st.sampled_from(["text", "multimodal_text", "code", "thoughts", None]),
                           "parts": JUNK | st.lists(JUNK | st.text(max_size=20), max_size=3),
                           "text": JUNK | st.text(max_size=20)}),
)
MESSAGE = JUNK | st.fixed_dictionaries(
    {"id": JUNK, "author": JUNK | st.fixed_dictionaries({"role": ROLES}), "content": CONTENT},
    optional={"create_time": JUNK, "recipient": st.sampled_from(["all", "python", None]), "weight": JUNK,
              "metadata": JUNK, "channel": JUNK})


@st.composite
def mappings(draw) -> dict:
    """A mapping whose links point anywhere: to nodes, to themselves (cycles), to missing ids, or to junk."""
    count = draw(st.integers(0, 40))
    node_ids = [f"n{i}" for i in range(count)]
    link = st.sampled_from(node_ids + ["missing"]) if node_ids else st.just("missing")
    links = link | JUNK
    mapping: dict = {}
    for node_id in node_ids:
        node = draw(JUNK | st.fixed_dictionaries(
            {}, optional={"id": links, "message": MESSAGE, "parent": links,
                          "children": JUNK | st.lists(links, max_size=4)}))
        mapping[node_id] = node
    return mapping


@st.composite
def deep_chains(draw) -> dict:
    """Up to 3000 nodes in one chain, children missing or present, optionally closed into a cycle."""
    count = draw(st.integers(1, 3000))
    with_children = draw(st.booleans())
    mapping = {}
    for i in range(count):
        node = {"id": f"n{i}", "parent": f"n{i - 1}" if i else None,
                "message": {"id": f"m{i}", "author": {"role": ("user", "assistant")[i % 2]},
                            "content": {"content_type": "text", "parts": [f"message {i}"]}}}
        if with_children:
            node["children"] = [f"n{i + 1}"] if i + 1 < count else []
        mapping[f"n{i}"] = node
    if draw(st.booleans()):
        mapping["n0"]["parent"] = f"n{draw(st.integers(0, count - 1))}"
    return mapping


TREES = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def convert_or_malformed(raw: object) -> None:
    with time_limit(10):
        try:
            result = chatgpt.convert(raw, Counter())
        except chatgpt.MalformedConversation:
            return
    assert isinstance(result, Conversation)
    for position, item in enumerate(result.messages):
        assert item.position == position and isinstance(item.text, str) and isinstance(item.id, str)


@TREES
@given(mapping=mappings() | deep_chains(), current=JUNK | st.sampled_from(["n0", "n1", "n39", "n2999", "missing"]),
       extra=st.dictionaries(st.sampled_from(["id", "title", "create_time", "is_do_not_remember"]), JUNK))
def test_random_mapping_trees_convert_or_are_malformed_and_never_hang(mapping, current, extra):
    convert_or_malformed({**extra, "mapping": mapping, "current_node": current})


@TREES
@given(raw=JUNK | st.fixed_dictionaries({"mapping": JUNK}))
def test_a_conversation_that_is_not_a_tree_is_malformed(raw):
    convert_or_malformed(raw)


def test_a_3000_node_chain_without_children_or_current_node_is_walked_whole():
    mapping = {f"n{i}": {"id": f"n{i}", "parent": f"n{i - 1}" if i else None, "message": {
        "id": f"m{i}", "author": {"role": "user"}, "content": {"content_type": "text", "parts": [f"m {i}"]}}}
        for i in range(3000)}
    with time_limit(10):
        conversation = chatgpt.convert({"id": "deep", "mapping": mapping}, Counter())
    assert [m.text for m in conversation.messages] == [f"m {i}" for i in range(3000)]


def test_without_children_the_leaf_is_found_from_the_parents():
    """Shards may lack `children`: with no times either, the leaf is the node no other node names as parent."""
    mapping = {"root": {"id": "root", "message": None, "parent": None}}
    for index, text in enumerate(["question", "answer", "follow-up"], 1):
        parent = "root" if index == 1 else f"n{index - 1}"
        mapping[f"n{index}"] = {"id": f"n{index}", "parent": parent, "message": message(
            ("user", "assistant")[(index - 1) % 2], text)}
    mapping = {key: mapping[key] for key in ["n3", "root", "n1", "n2"]}  # the leaf is not last in mapping order
    conversation = chatgpt.convert({"id": "no-children", "mapping": mapping}, Counter())
    assert texts_of(conversation) == ["question", "answer", "follow-up"]
