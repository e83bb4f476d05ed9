"""The export reader: layouts, branch choice, what is left out, and every way an input can be wrong."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import tracemalloc
import zipfile
from collections import Counter
from pathlib import Path

import ijson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
import sparky.readers as readers
from conftest import linear_mapping
from sparky.errors import InputError
from sparky.readers import ExportReader, chatgpt, read_export
from sparky.pipeline.select import Selector


def message(role: str, text: str | None = None, *, content: dict | None = None, time: float | None = None,
            **fields: object) -> dict:
    content = content if content is not None else {"content_type": "text", "parts": [text]}
    return {"id": f"m-{role}-{text}", "author": {"role": role}, "create_time": time, "content": content,
            "recipient": "all", **fields}


def chat(*messages: dict, cid: str | None = "c1", **fields: object) -> dict:
    """A linear conversation: client-created-root -> n1 -> n2 ..., current_node on the last node."""
    mapping, leaf = linear_mapping(messages)
    conversation = {"title": "T", "create_time": 1700000000.0, "update_time": 1700000100.0,
                    "mapping": mapping, "current_node": leaf, **fields}
    if cid is not None:
        conversation["id"] = cid
    return conversation


def write(folder: Path, data: object, name: str = "conversations.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return folder


def texts(path: Path) -> list[list[str]]:
    return [[m.text for m in conversation.messages] for conversation in read_export(path)]


def error_of(path: Path) -> str:
    with pytest.raises(InputError) as caught:
        list(read_export(path))
    text = str(caught.value)
    assert "\n" not in text
    return text


QA = [message("user", "How do I fix error 42?"), message("assistant", "Restart the flux capacitor.")]


# --- layouts -----------------------------------------------------------------------------------

def test_folder_with_conversations_json(tmp_path):
    folder = write(tmp_path / "export", [chat(*QA)])
    reader = ExportReader(folder)
    [conversation] = list(reader.conversations())
    assert conversation.source == "chatgpt" and conversation.id == "c1" and conversation.title == "T"
    assert [(m.role, m.text, m.position) for m in conversation.messages] == [
        ("user", "How do I fix error 42?", 0), ("assistant", "Restart the flux capacitor.", 1)]
    assert reader.files == [str(folder / "conversations.json")]


def test_json_file_directly(tmp_path):
    folder = write(tmp_path, [chat(*QA)], name="my-export.json")
    assert texts(folder / "my-export.json") == [["How do I fix error 42?", "Restart the flux capacitor."]]


def test_sharded_parts_are_read_in_numeric_order(tmp_path):
    for number in (10, 2, 1):
        write(tmp_path, [chat(message("user", f"part {number} question"), cid=f"c{number}")],
              name=f"conversations-{number}.json")
    (tmp_path / "conversations.json.index").write_text("{}")
    reader = ExportReader(tmp_path)
    assert [c.id for c in reader.conversations()] == ["c1", "c2", "c10"]
    assert [Path(f).name for f in reader.files] == ["conversations-1.json", "conversations-2.json",
                                                    "conversations-10.json"]


def test_shards_are_read_before_a_single_file_beside_them(tmp_path):
    write(tmp_path, [chat(*QA, cid="whole")])
    write(tmp_path, [chat(*QA, cid="shard")], name="conversations-000.json")
    assert [c.id for c in read_export(tmp_path)] == ["shard", "whole"]  # details: tests/test_chatgpt_details.py


def test_folder_holding_the_unzipped_export_folder(tmp_path):
    write(tmp_path / "chat-history", [chat(*QA)])
    assert texts(tmp_path) == [["How do I fix error 42?", "Restart the flux capacitor."]]


def make_zip(path: Path, members: dict[str, object]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data if isinstance(data, str) else json.dumps(data))
    return path


def test_zip_with_conversations_json(tmp_path):
    archive = make_zip(tmp_path / "export.zip", {"conversations.json": [chat(*QA)], "user.json": {"id": "u"},
                                                 "chat.html": "<html></html>"})
    reader = ExportReader(archive)
    assert [len(c.messages) for c in reader.conversations()] == [2]
    assert reader.files == [f"{archive}:conversations.json"]
    assert not (tmp_path / "conversations.json").exists()


def test_zip_with_top_level_folder_and_shards(tmp_path):
    archive = make_zip(tmp_path / "export.zip", {
        "2026-01-02-export/conversations-001.json": [chat(*QA, cid="second")],
        "2026-01-02-export/conversations-000.json": [chat(*QA, cid="first")],
        "__MACOSX/2026-01-02-export/._conversations-000.json": "junk",
    })
    assert [c.id for c in read_export(archive)] == ["first", "second"]


def test_zip_with_no_export_inside(tmp_path):
    archive = make_zip(tmp_path / "photos.zip", {"a.txt": "hello"})
    with pytest.raises(InputError, match="photos.zip: no conversations.json"):
        ExportReader(archive)


def test_damaged_zip(tmp_path):
    path = tmp_path / "export.zip"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="not a readable zip archive"):
        ExportReader(path)


# --- branch choice -------------------------------------------------------------------------------

def branching(current: str | None, times: tuple[float | None, float | None] = (10.0, 20.0)) -> dict:
    """root -> q -> (a1 | a2): two answers to one question."""
    mapping = {
        "root": {"id": "root", "message": None, "parent": None, "children": ["q"]},
        "q": {"id": "q", "message": message("user", "question", time=1.0), "parent": "root", "children": ["a1", "a2"]},
        "a1": {"id": "a1", "message": message("assistant", "first answer", time=times[0]), "parent": "q",
               "children": []},
        "a2": {"id": "a2", "message": message("assistant", "second answer", time=times[1]), "parent": "q",
               "children": []},
    }
    conversation = {"id": "b", "title": "branches", "mapping": mapping}
    if current is not None:
        conversation["current_node"] = current
    return conversation


@pytest.mark.parametrize("current, expected", [("a1", "first answer"), ("a2", "second answer")])
def test_current_node_picks_the_branch(tmp_path, current, expected):
    assert texts(write(tmp_path, [branching(current)])) == [["question", expected]]


@pytest.mark.parametrize("current", [None, "no-such-node"])
def test_missing_or_dangling_current_node_takes_the_newest_leaf(tmp_path, current):
    assert texts(write(tmp_path, [branching(current, times=(30.0, 20.0))])) == [["question", "first answer"]]


def test_newest_leaf_ties_go_to_the_last_in_mapping_order(tmp_path):
    assert texts(write(tmp_path, [branching(None, times=(None, None))])) == [["question", "second answer"]]


def test_cycle_in_parents_stops_the_walk(tmp_path):
    conversation = chat(*QA)
    conversation["mapping"]["n1"]["parent"] = "n2"  # n2 -> n1 -> n2 -> ...
    assert texts(write(tmp_path, [conversation])) == [["How do I fix error 42?", "Restart the flux capacitor."]]


def test_dangling_parent_stops_the_walk(tmp_path):
    conversation = chat(*QA)
    conversation["mapping"]["n2"]["parent"] = "deleted-node"
    assert texts(write(tmp_path, [conversation])) == [["Restart the flux capacitor."]]


# --- what is left out ------------------------------------------------------------------------------

def read_with_counts(tmp_path: Path, *messages: dict) -> tuple[list[str], dict]:
    reader = ExportReader(write(tmp_path, [chat(*messages)]))
    [conversation] = list(reader.conversations())
    return [m.text for m in conversation.messages], dict(reader.content_counts)


def test_hidden_system_tool_and_custom_instructions_are_left_out(tmp_path):
    kept, counts = read_with_counts(
        tmp_path,
        message("system", "You are ChatGPT", weight=0.0),
        message("user", None, content={"content_type": "user_editable_context", "user_profile": "dev"},
                metadata={"is_user_system_message": True, "is_visually_hidden_from_conversation": True}),
        message("user", "custom instructions as text", metadata={"is_user_system_message": True}),
        message("user", "visible question"),
        message("assistant", "hidden by flag", metadata={"is_visually_hidden_from_conversation": True}),
        message("assistant", "hidden by weight", weight=0),
        message("tool", "tool output"),
        message("assistant", "visible answer", metadata=None),
    )
    assert kept == ["visible question", "visible answer"]
    assert counts == {"system": 1, "user_editable_context": 1, "user_system_message": 1, "hidden": 2, "tool": 1}


def test_reasoning_tool_calls_and_channels_are_left_out(tmp_path):
    kept, counts = read_with_counts(
        tmp_path,
        message("user", "search the web for flights to Lisbon"),
        message("assistant", None, content={"content_type": "thoughts", "thoughts": [{"summary": "s"}]}),
        message("assistant", None, content={"content_type": "reasoning_recap", "content": "Thought for 12s"}),
        message("assistant", None, content={"content_type": "code", "text": "search('Lisbon flights')"},
                recipient="web.run"),
        message("tool", None, content={"content_type": "tether_browsing_display", "result": "..."}),
        message("tool", None, content={"content_type": "execution_output", "text": "42"}),
        message("assistant", "thinking out loud", channel="analysis"),
        message("assistant", "calling a tool", channel="commentary"),
        message("assistant", None, content={"content_type": "brand_new_widget", "x": 1}),
        message("assistant", None, content={"content_type": None}),
        message("assistant", "TAP flies daily from Berlin.", channel="final"),
    )
    assert kept == ["search the web for flights to Lisbon", "TAP flies daily from Berlin."]
    assert counts == {"thoughts": 1, "reasoning_recap": 1, "tool_call": 1, "tether_browsing_display": 1,
                      "execution_output": 1, "analysis": 1, "commentary": 1, "brand_new_widget": 1,
                      "unknown_content": 1}


def test_code_addressed_to_the_user_is_kept(tmp_path):
    kept, _ = read_with_counts(
        tmp_path,
        message("user", "show me a loop"),
        message("assistant", None, content={"content_type": "code", "language": "python",
                                             "text": "for i in range(3): print(i)"}),
    )
    assert kept == ["show me a loop", "for i in range(3): print(i)"]


def test_multimodal_parts_keep_strings_and_transcriptions(tmp_path):
    kept, _ = read_with_counts(tmp_path, message("user", None, content={"content_type": "multimodal_text", "parts": [
        {"content_type": "image_asset_pointer", "asset_pointer": "file-service://file-1"},
        "What plant is this?",
        {"content_type": "audio_transcription", "text": "and how often should I water it"},
        {"content_type": "audio_asset_pointer", "asset_pointer": "sediment://file_2"},
    ]}))
    assert kept == ["What plant is this?\nand how often should I water it"]


def test_parts_of_any_json_type_do_not_crash(tmp_path):
    kept, _ = read_with_counts(
        tmp_path,
        message("user", None, content={"content_type": "text", "parts": [1, 2.5, None, True, [1], {"a": 1}, "real"]}),
        message("assistant", None, content={"content_type": "text", "parts": "a bare string"}),
        message("assistant", None, content={"content_type": "text", "parts": {"odd": 1}}),
        message("assistant", None, content={"content_type": "text"}),
        message("assistant", None, content="not a dict"),
    )
    assert kept == ["real", "a bare string", "", ""]


def test_citation_markers_are_stripped_from_assistant_text(tmp_path):
    kept, _ = read_with_counts(
        tmp_path,
        message("user", "quote 【keep†me】 verbatim"),
        message("assistant", "Oslo has 709,000 people 【4:0†source】. It grew \ue200cite\ue202turn0\ue201 fast."),
    )
    assert kept == ["quote 【keep†me】 verbatim", "Oslo has 709,000 people. It grew fast."]


# --- identity, titles, times ----------------------------------------------------------------------

def test_ids_fall_back_to_conversation_id_then_a_stable_hash(tmp_path):
    by_conversation_id = chat(*QA, cid=None, conversation_id="from-conversation-id")
    anonymous = chat(message("user", "nobody knows my id"), cid=None)
    first = [c.id for c in read_export(write(tmp_path / "a", [by_conversation_id, anonymous]))]
    second = [c.id for c in read_export(write(tmp_path / "b", [by_conversation_id, anonymous]))]
    assert first[0] == "from-conversation-id"
    assert first[1].startswith("anon-") and len(first[1]) == len("anon-") + 16
    assert first == second


def test_message_id_falls_back_to_the_node_id(tmp_path):
    conversation = chat(message("user", "no id here"))
    del conversation["mapping"]["n1"]["message"]["id"]
    [[only]] = [c.messages for c in read_export(write(tmp_path, [conversation]))]
    assert only.id == "n1"


def test_duplicate_conversation_ids_are_made_unique(tmp_path):
    reader = ExportReader(write(tmp_path, [chat(*QA, cid="same"), chat(*QA, cid="same"), chat(*QA, cid="same")]))
    conversations = list(reader.conversations())
    assert [c.id for c in conversations] == ["same", "same#2", "same#3"]
    assert {m.conversation_id for m in conversations[1].messages} == {"same#2"}
    assert reader.duplicate_ids == [("same", "same#2"), ("same", "same#3")]


def test_null_title_and_missing_times(tmp_path):
    conversation = chat(*QA, title=None, create_time=None)
    del conversation["update_time"]
    [result] = list(read_export(write(tmp_path, [conversation])))
    assert (result.title, result.created_at, result.updated_at) == ("Untitled", None, None)
    assert [m.created_at for m in result.messages] == [None, None]


def test_timestamps_are_floats(tmp_path):
    conversation = chat(message("user", "hi there", time=1700000000.25), create_time=17)
    [result] = list(read_export(write(tmp_path, [conversation])))
    assert result.created_at == 17.0 and isinstance(result.created_at, float)
    assert result.messages[0].created_at == 1700000000.25


# --- malformed conversations ---------------------------------------------------------------------

def test_malformed_conversation_is_skipped_and_reported(tmp_path):
    broken = {"id": "broken-1", "title": "x", "mapping": "not a mapping"}
    reader = ExportReader(write(tmp_path, [chat(*QA, cid="ok-1"), broken, chat(*QA, cid="ok-2"),
                                           {"no": "mapping here"}]))
    assert [c.id for c in reader.conversations()] == ["ok-1", "ok-2"]
    assert reader.skipped == [("broken-1", "'mapping' is not an object"),
                              ("#3", "not a ChatGPT conversation (no 'mapping')")]


def test_an_unforeseen_error_in_one_conversation_skips_only_that_one(tmp_path, monkeypatch):
    convert = chatgpt.convert

    def fussy(raw, counts):
        if raw.get("id") == "odd":
            raise TypeError("unhashable type: 'list'")
        return convert(raw, counts)

    monkeypatch.setattr(chatgpt, "convert", fussy)
    reader = ExportReader(write(tmp_path, [chat(*QA, cid="odd"), chat(*QA, cid="fine")]))
    assert [c.id for c in reader.conversations()] == ["fine"]
    assert reader.skipped == [("odd", "unreadable (TypeError: unhashable type: 'list')")]


def test_diagnostics_start_afresh_on_each_pass(tmp_path):
    reader = ExportReader(write(tmp_path, [chat(message("system", "sys"), *QA), {"mapping": []}]))
    for _ in range(2):
        list(reader.conversations())
        assert reader.content_counts == {"system": 1}
        assert len(reader.skipped) == 1


# --- inputs that are not exports ------------------------------------------------------------------

def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="nowhere: no such file or folder"):
        ExportReader(tmp_path / "nowhere")


def test_directory_with_no_export(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="no conversations.json or conversations-000.json in this folder; Sparky "
                                         r"reads ChatGPT and Claude.ai exports \(the folder, its .zip, or "):
        ExportReader(tmp_path)


def test_two_exports_one_level_down_are_ambiguous(tmp_path):
    write(tmp_path / "a", [chat(*QA)])
    write(tmp_path / "b", [chat(*QA)])
    with pytest.raises(InputError, match="several exports found"):
        ExportReader(tmp_path)


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"  \n\t ", "empty file"),
    (b"hello, I am plain text", "not valid JSON"),
    (b'{"conversations": []}', "top level is a JSON object, not an array of conversations"),
    (b'"just a string"', "top level is a single JSON value"),
    (b"[]", "the export holds no conversations"),
    (b'[{"name": "a"}, {"name": "b"}]', "not a ChatGPT or Claude export"),
    (b"[1, 2, 3]", "not a ChatGPT or Claude export"),
    (b'[{"mapping": {}}] trailing', "not valid JSON (parse error: trailing garbage"),
    (b'[{"mapping": {}}, {"mapping": {"a": tru}}]', "not valid JSON"),
])
def test_not_an_export_is_one_clear_line_naming_the_file(tmp_path, content, problem):
    (tmp_path / "conversations.json").write_bytes(content)
    text = error_of(tmp_path)
    assert text.startswith(str(tmp_path / "conversations.json") + ": ")
    assert problem in text


def test_a_long_array_of_other_objects_fails_fast(tmp_path):
    (tmp_path / "conversations.json").write_text(json.dumps([{"n": i} for i in range(20)] + [chat(*QA)]))
    assert "not a ChatGPT or Claude export" in error_of(tmp_path)


def test_truncation_after_some_conversations_raises_after_yielding_them(tmp_path):
    whole = json.dumps([chat(*QA, cid="first"), chat(*QA, cid="second")])
    cut = whole[: whole.rindex('"mapping"') + 30]
    (tmp_path / "conversations.json").write_text(cut)
    seen = []
    with pytest.raises(InputError, match=rf"not valid JSON \(truncated at byte {len(cut.encode())}\)"):
        for conversation in read_export(tmp_path):
            seen.append(conversation.id)
    assert seen == ["first"]


# --- odd text ---------------------------------------------------------------------------------------

def raw_export(tmp_path: Path, text_json: bytes) -> list[str]:
    """An export whose single user message's text is the given raw JSON string literal."""
    template = json.dumps([chat(message("user", "PLACEHOLDER"))]).encode()
    (tmp_path / "conversations.json").write_bytes(template.replace(b'"PLACEHOLDER"', text_json))
    [conversation] = list(read_export(tmp_path))
    return [m.text for m in conversation.messages]


def test_invalid_utf8_is_replaced_not_fatal(tmp_path):
    assert raw_export(tmp_path, b'"caf\xe9 \xff\xfe ok"') == ["caf\ufffd \ufffd\ufffd ok"]


@pytest.mark.parametrize("escaped, expected", [
    (rb'"low \udc00 alone"', "low \ufffd alone"),
    (rb'"high \ud800 alone"', "high \ufffd alone"),
    (rb'"two highs \ud800\ud800"', "two highs \ufffd\ufffd"),
    (rb'"pair \ud83d\ude00 ok"', "pair \U0001f600 ok"),
    (rb'"escaped backslash \\udc00 stays"', "escaped backslash \\udc00 stays"),
])
def test_lone_surrogate_escapes_become_replacement_characters(tmp_path, escaped, expected):
    [text] = raw_export(tmp_path, escaped)
    assert text == expected
    text.encode("utf-8")


def test_surrogate_escape_split_across_read_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "READ_SIZE", 7)
    assert raw_export(tmp_path, rb'"x \ud83d\ude00 \udc00 \\\\udc00 y"') == ["x \U0001f600 \ufffd \\\\udc00 y"]


def test_nul_characters_are_stripped(tmp_path):
    assert raw_export(tmp_path, rb'"nul\u0000 inside"') == ["nul inside"]


def test_byte_order_mark_is_accepted(tmp_path):
    (tmp_path / "conversations.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([chat(*QA)]).encode())
    assert len(list(read_export(tmp_path))) == 1


# --- fingerprint ------------------------------------------------------------------------------------

def test_fingerprint_is_stable_and_tracks_content(tmp_path):
    folder = write(tmp_path / "export", [chat(*QA)])
    first = ExportReader(folder).fingerprint()
    assert first == ExportReader(folder).fingerprint() == ExportReader(str(folder) + "/").fingerprint()
    write(folder, [chat(*QA, cid="c2")])
    assert ExportReader(folder).fingerprint() != first


def test_fingerprint_of_a_zip_reads_only_its_directory(tmp_path):
    archive = make_zip(tmp_path / "export.zip", {"conversations.json": [chat(*QA)]})
    first = ExportReader(archive).fingerprint()
    assert first == ExportReader(archive).fingerprint()
    make_zip(archive, {"conversations.json": [chat(*QA, cid="other")]})
    assert ExportReader(archive).fingerprint() != first


# --- the sample and large exports -----------------------------------------------------------------

def test_sample_export(sample_export):
    reader = ExportReader(sample_export)
    conversations = {c.title: c for c in reader.conversations()}
    assert len(conversations) == 30
    assert reader.skipped == [("b7e0c9d4-0000-4bad-9ea1-55aa55aa55aa", "'mapping' is not an object")]
    cover = " ".join(m.text for m in conversations["Cover letter Senior Data Engineer"].messages)
    assert "Helios Energy" in cover and "Northwind" not in cover
    terraform = conversations["Terraform state lock error"].messages
    assert "force-unlock" in terraform[-1].text and "(older answer)" not in terraform[-1].text
    assert "Untitled" in conversations
    long_answer = conversations["Upgrade plan Django 3.2 to 5.0"].messages[1].text
    assert len(long_answer.split()) >= 3000
    selector = Selector()
    assert sum(len(selector.select(c)) for c in conversations.values()) == 97


def load_generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "sample" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reading_streams_without_holding_the_file(tmp_path):
    [path] = load_generator().write_export(tmp_path, 5000, 10000, seed=3)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_export(tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 5000
    assert peak < size / 10, (peak, size)


SEGMENTS = ["plain", " ", "é", "😀", "\\ud83d\\ude00", "\\udc00", "\\ud800", "\\uDBFF", "\\\\", "\\\\\\\\",
            "\\n", "\\u00e9", '\\"', "\\\\ud800", "ud800", "\\/"]


@settings(max_examples=300, deadline=None, database=None)
@given(segments=st.lists(st.sampled_from(SEGMENTS), max_size=30), read_size=st.integers(1, 20))
def test_escape_repair_matches_json_for_any_chunking(segments, read_size):
    literal = '"' + "".join(segments) + '"'
    expected = re.sub("[\ud800-\udfff]", "\ufffd", json.loads(literal))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(readers, "READ_SIZE", read_size)
        stream = readers._CleanJson(io.BytesIO(f"[{literal}]".encode()))
        assert list(ijson.items(stream, "item")) == [expected]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)


def slots(value: object) -> list[tuple[object, object]]:
    """Every (container, key) in a JSON value, so a test can overwrite any field at any depth."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found.append((value, key))
        found += slots(child)
    return found


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_any_odd_field_value_is_read_or_reported_never_a_crash(data):
    conversation = json.loads(json.dumps(chat(
        message("system", "sys", weight=0), *QA,
        message("assistant", None, content={"content_type": "multimodal_text", "parts": ["x", {}]}))))
    for _ in range(data.draw(st.integers(1, 4))):
        container, key = data.draw(st.sampled_from(slots(conversation)))
        container[key] = data.draw(JSON_VALUES)
    try:
        result = chatgpt.convert(conversation, Counter())
    except chatgpt.MalformedConversation:
        return
    for item in result.messages:
        assert isinstance(item.text, str) and isinstance(item.id, str)
        (item.text + item.id + result.id + result.title).encode("utf-8")
