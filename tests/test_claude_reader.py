"""The Claude.ai reader: fields, text taken once, left-out blocks, attachments, branches, and odd inputs."""

from __future__ import annotations

import json
import shutil
import signal
import zipfile
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta, timezone
from pathlib import Path
from time import monotonic
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from sparky.errors import InputError
from sparky.models import Conversation
from sparky.readers import ExportReader, claude
from sparky.readers.chatgpt import MalformedConversation

DATA = ROOT / "tests" / "data" / "claude"
EXPORT_FILES = ("conversations.json", "projects.json", "users.json", "memories.json")
ROOT_PARENT = "00000000-0000-4000-8000-000000000000"
NO_LINK = object()  # a message without the parent_message_uuid key
BRANCHED, TOOLS, MIXED = (f"c0ffee00-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))


def msg(uuid: str, sender: object = "human", text: object = None, *, parent: object = NO_LINK,
        time: object = None, **fields: object) -> dict:
    """A Claude message; its text is in `text` only, unless `content` is given."""
    message = {"uuid": uuid, "sender": sender, "text": f"text of {uuid}" if text is None else text,
               "created_at": time, **fields}
    if parent is not NO_LINK:
        message["parent_message_uuid"] = parent
    return message


def conv(*messages: object, uuid: object = "c1", **fields: object) -> dict:
    return {"uuid": uuid, "name": "T", "created_at": "2025-01-01T00:00:00Z", "chat_messages": list(messages),
            **fields}


def read(raw: dict) -> tuple[list[str], Counter[str]]:
    """The kept messages' ids and the counts of what was left out."""
    counts: Counter[str] = Counter()
    conversation = claude.convert(raw, counts)
    assert [m.position for m in conversation.messages] == list(range(len(conversation.messages)))
    return [m.id for m in conversation.messages], counts


def texts(raw: dict) -> list[str]:
    return [m.text for m in claude.convert(raw, Counter()).messages]


def at(second: int) -> str:
    return f"2025-01-01T00:00:{second:02d}Z"


def by_id(path: Path) -> dict[str, Conversation]:
    return {c.id: c for c in ExportReader(path).conversations()}


def copy_export(folder: Path) -> Path:
    folder.mkdir()
    for name in EXPORT_FILES:
        shutil.copy(DATA / name, folder / name)
    return folder


def claude_zip(path: Path, prefix: str = "") -> Path:
    """An official-style export zip (conversations.json, projects.json, users.json, memories.json)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in EXPORT_FILES:
            archive.write(DATA / name, prefix + name)
    return path


# --- conversation fields --------------------------------------------------------------------------

def test_conversation_fields():
    raw = json.loads((DATA / "conversations.json").read_text(encoding="utf-8"))[0]
    conversation = claude.convert(raw, Counter())
    assert (conversation.source, conversation.id, conversation.title) == ("claude", BRANCHED, "Sourdough starter")
    assert conversation.created_at == 1735722000.0  # 2025-01-01T09:00:00Z
    assert conversation.updated_at == 1735722180.5  # 2025-01-01T10:03:00.500+01:00
    first = conversation.messages[0]
    assert (first.conversation_id, first.id, first.role, first.created_at, first.hidden) == (
        BRANCHED, "b1000000-0000-4000-8000-000000000001", "user", 1735722000.0, False)


@pytest.mark.parametrize("value, expected", [
    ("2025-01-01T00:00:00Z", 1735689600.0),
    ("2025-01-01T00:00:00.5Z", 1735689600.5),
    ("2025-01-01T00:00:00.123456Z", 1735689600.123456),
    ("2025-01-01T00:00:00.123456789Z", 1735689600.123456),  # beyond microseconds: truncated
    ("2025-01-01T01:00:00+01:00", 1735689600.0),
    ("2024-12-31T18:30:00.250-05:30", 1735689600.25),
    ("2025-01-01T00:00:00", 1735689600.0),  # no offset: UTC
    (" 2025-01-01T00:00:00Z\n", 1735689600.0),
    ("2025-01-01", 1735689600.0),
    ("", None), ("yesterday", None), ("2025-13-01T00:00:00Z", None), ("\ud800", None),
    (None, None), (1735689600, None), (1735689600.0, None), (True, None), ([], None), ({}, None),
])
def test_timestamps(value, expected):
    assert claude.timestamp(value) == expected
    conversation = claude.convert(conv(msg("m1", time=value), created_at=value, updated_at=value), Counter())
    assert conversation.created_at == conversation.updated_at == conversation.messages[0].created_at == expected


@pytest.mark.parametrize("name, title", [
    ("Plans", "Plans"), ("  Plans \n", "Plans"), ("", "Untitled"), ("   ", "Untitled"), (None, "Untitled"),
    (7, "Untitled"), (["Plans"], "Untitled"), ("a\x00b", "ab"),
])
def test_title(name, title):
    assert claude.convert(conv(name=name), Counter()).title == title


def test_conversation_id_falls_back_to_a_stable_hash():
    assert claude.convert(conv(uuid=42), Counter()).id == "42"
    anonymous = [claude.convert(conv(msg("m1"), uuid=uuid), Counter()).id for uuid in (None, "", "  ", True)]
    assert anonymous[0].startswith("anon-") and len(anonymous[0]) == len("anon-") + 16
    again = claude.convert(json.loads(json.dumps(conv(msg("m1"), uuid=None))), Counter())
    other = claude.convert(conv(msg("m2"), uuid=None), Counter())
    assert again.id == anonymous[0] != other.id
    assert all(item.startswith("anon-") for item in anonymous)
    assert again.messages[0].conversation_id == again.id


def test_message_id_falls_back_to_its_index_in_chat_messages():
    raw = conv("junk", msg("m1"), {"sender": "assistant", "text": "no uuid"}, msg(None, text="null uuid"),
               msg(7, text="int uuid"))
    assert read(raw)[0] == ["m1", "message-2", "message-3", "7"]


# --- senders ----------------------------------------------------------------------------------------

def test_senders_map_to_roles_and_others_are_counted():
    raw = conv(msg("m1", "human"), msg("m2", "system"), msg("m3", "assistant"), msg("m4", "tool"),
               msg("m5", None), msg("m6", 5), msg("m7", ""), msg("m8", "Human"), msg("m9", ["human"]))
    conversation = claude.convert(raw, counts := Counter())
    assert [(m.id, m.role, m.position) for m in conversation.messages] == [
        ("m1", "user", 0), ("m3", "assistant", 1)]
    assert counts == {"system": 1, "tool": 1, "Human": 1, "unknown_sender": 4}


def test_items_that_are_not_objects_are_counted_and_skipped():
    raw = conv(5, msg("m1"), None, "text", [msg("m2")], msg("m3", "assistant", parent="m1"))
    assert read(raw) == (["m1", "m3"], Counter({"malformed_message": 4}))


# --- text -------------------------------------------------------------------------------------------

def test_text_blocks_win_and_the_text_field_is_not_repeated():
    raw = conv(msg("m1", "assistant", "First.\n\nSecond.", content=[
        {"type": "text", "text": "First."}, {"type": "text", "text": "Second."}]))
    assert texts(raw) == ["First.\n\nSecond."]


def test_only_text_blocks_with_text_count():
    raw = conv(msg("m1", "assistant", "field", content=[{"type": "text", "text": ""}, {"type": "text"},
                                                         {"type": "text", "text": 5}, {"type": "text", "text": "kept"}]))
    assert texts(raw) == ["kept"]


@pytest.mark.parametrize("content", [
    [], None, "a string", {"type": "text", "text": "a dict"}, [{"type": "text", "text": ""}],
    [{"type": "thinking", "thinking": "hmm"}], [None, 3],
])
def test_text_field_when_no_block_has_text(content):
    assert texts(conv(msg("m1", text="from the field", content=content))) == ["from the field"]


@pytest.mark.parametrize("text", [None, 5, ["a"], {}])
def test_no_text_anywhere_is_empty_text(text):
    raw = conv({"uuid": "m1", "sender": "human", "text": text, "content": [{"type": "tool_use"}]})
    assert texts(raw) == [""]


def test_left_out_blocks_are_counted_by_type():
    raw = conv(msg("m1", "assistant", "field", content=[
        {"type": "thinking", "thinking": "Let me think."},
        {"type": "text", "text": "Answer."},
        {"type": "tool_use", "name": "web_search", "input": {"query": "q"}},
        {"type": "tool_result", "content": [{"type": "text", "text": "result text"}]},
        {"type": "thinking", "thinking": "Again."},
        {"type": "image", "source": {}},
        {"type": "x" * 60},
        {"text": "no type"}, {"type": None}, {"type": ""}, "a string", None,
    ]))
    conversation = claude.convert(raw, counts := Counter({"thoughts": 3}))
    assert [m.text for m in conversation.messages] == ["Answer."]
    assert counts == {"thoughts": 3, "thinking": 2, "tool_use": 1, "tool_result": 1, "image": 1, "x" * 40: 1,
                      "unknown_content": 5}


def test_only_the_kept_branch_and_senders_are_counted():
    thinking = [{"type": "thinking", "thinking": "t"}, {"type": "text", "text": "answer"}]
    raw = conv(msg("m1", parent=ROOT_PARENT, time=at(1)),
               msg("old", "assistant", parent="m1", time=at(2), content=thinking),
               msg("new", "assistant", parent="m1", time=at(3), content=thinking),
               msg("sys", "system", parent="new", time=at(4), content=thinking))
    assert read(raw) == (["m1", "new"], Counter({"thinking": 1, "system": 1}))


def test_text_is_cleaned():
    assert texts(conv(msg("m1", text="a\x00b\ud800c"))) == ["ab?c"]  # chatgpt.clean: NUL out, lone surrogate "?"


# --- attachments ------------------------------------------------------------------------------------

def test_attachments_with_extracted_content_are_appended_in_order():
    raw = conv(msg("m1", text="Look at these.", attachments=[
        {"file_name": "a.txt", "file_type": "text/plain", "file_size": 3, "extracted_content": "AAA"},
        {"file_name": "empty.txt", "extracted_content": ""},
        {"file_name": "blank.txt", "extracted_content": " \n "},
        {"file_name": "image.png", "file_type": "image/png"},
        {"file_name": "none.txt", "extracted_content": None},
        {"file_name": "b.md", "extracted_content": "# B\nbody"},
        "not an object",
    ], files=[{"file_name": "image.png"}, {"file_name": "a.txt"}]))
    assert texts(raw) == ["Look at these.\n\n[Attachment: a.txt]\nAAA\n\n[Attachment: b.md]\n# B\nbody"]


def test_attachment_without_text_or_name():
    raw = conv(msg("m1", text="", attachments=[{"extracted_content": "pasted"}]),
               msg("m2", text="", attachments=[{"file_name": " two\nlines ", "extracted_content": "x"}]),
               msg("m3", text="", attachments=[{"file_name": 9, "extracted_content": "y"}]))
    assert texts(raw) == ["[Attachment: unnamed]\npasted", "[Attachment: two lines]\nx", "[Attachment: unnamed]\ny"]


def test_attachments_follow_text_blocks_too():
    raw = conv(msg("m1", text="dup", content=[{"type": "text", "text": "dup"}],
                   attachments=[{"file_name": "n.md", "extracted_content": "notes"}]))
    assert texts(raw) == ["dup\n\n[Attachment: n.md]\nnotes"]


@pytest.mark.parametrize("attachments", [None, "x", {"file_name": "a", "extracted_content": "b"}, [None, 1, []]])
def test_odd_attachments_are_ignored(attachments):
    assert texts(conv(msg("m1", text="t", attachments=attachments))) == ["t"]


# --- branches ---------------------------------------------------------------------------------------

def test_edited_and_regenerated_branch_keeps_the_newest():
    conversation = by_id(DATA)[BRANCHED]
    assert [m.id[-1] for m in conversation.messages] == ["1", "2", "5", "7"]
    assert [m.text for m in conversation.messages][2:] == [
        "It has a grey liquid layer on top. Is my starter dead?",
        "Not dead at all: that hooch is alcohol from a hungry starter. Stir it in or pour it off, then feed."]


def test_newest_leaf_is_chosen_by_time_not_list_order():
    raw = conv(msg("m1", parent=ROOT_PARENT, time=at(1)), msg("late", "assistant", parent="m1", time=at(9)),
               msg("early", "assistant", parent="m1", time=at(5)))
    assert read(raw)[0] == ["m1", "late"]


def test_only_leaves_compete():
    raw = conv(msg("m1", parent=ROOT_PARENT, time=at(1)), msg("a", "assistant", parent="m1", time=at(50)),
               msg("b", "assistant", parent="m1", time=at(2)), msg("c", parent="b", time=at(3)))
    assert read(raw)[0] == ["m1", "a"]
    raw["chat_messages"][1]["created_at"] = at(2)
    assert read(raw)[0] == ["m1", "b", "c"]


@pytest.mark.parametrize("times, kept", [
    ((at(5), at(5)), "second"),  # tie: the last in list order
    ((None, None), "second"),
    ((at(5), None), "first"),  # a leaf without a readable time loses to one with
    ((at(5), "garbage"), "first"),
])
def test_newest_leaf_ties_and_missing_times(times, kept):
    raw = conv(msg("m1", parent=ROOT_PARENT), msg("first", "assistant", parent="m1", time=times[0]),
               msg("second", "assistant", parent="m1", time=times[1]))
    assert read(raw)[0] == ["m1", kept]


@pytest.mark.parametrize("parent", [ROOT_PARENT, "not-in-this-conversation"])
def test_sentinel_or_dangling_parent_is_a_root(parent):
    raw = conv(msg("m1", parent=ROOT_PARENT, time=at(1)), msg("m2", "assistant", parent="m1", time=at(2)),
               msg("m3", parent=parent, time=at(3)), msg("m4", "assistant", parent="m3", time=at(4)))
    assert read(raw)[0] == ["m3", "m4"]


def test_cycle_stops_the_walk():
    raw = conv(msg("m1", parent="m3", time=at(1)), msg("m2", "assistant", parent="m1", time=at(2)),
               msg("m3", parent="m2", time=at(3)), msg("m4", "assistant", parent="m3", time=at(4)))
    assert read(raw)[0] == ["m1", "m2", "m3", "m4"]


@pytest.mark.parametrize("messages, kept", [
    ([msg("m1", parent="m2", time=at(1)), msg("m2", "assistant", parent="m1", time=at(2))], ["m1", "m2"]),
    ([msg("m1", parent="m1", time=at(1))], ["m1"]),
    ([msg("m1", parent=ROOT_PARENT, time=at(1)), msg("m2", "assistant", parent="m2", time=at(2))], ["m1"]),
])
def test_self_parents_and_leafless_cycles_stop_the_walk(messages, kept):
    assert read(conv(*messages))[0] == kept


def test_duplicate_uuid_links_to_its_first_message():
    raw = conv(msg("m1", text="first", parent=ROOT_PARENT, time=at(1)),
               msg("m1", text="second", parent=ROOT_PARENT, time=at(2)),
               msg("m2", "assistant", parent="m1", time=at(3)))
    assert texts(raw) == ["first", "text of m2"]


def test_without_parent_links_list_order_is_kept():
    [eggs, anonymous] = list(ExportReader(DATA / "older-export.json").conversations())
    assert [(m.role, m.text) for m in eggs.messages] == [
        ("user", "How long should I boil an egg for a runny yolk?"),
        ("assistant", "Six minutes from boiling water."),
        ("assistant", "About six minutes, then straight into cold water."),  # a regeneration: both stay
        ("user", "And for a hard yolk?"),
        ("assistant", "Ten minutes."),
    ]
    assert [m.created_at for m in eggs.messages] == [1699162200.0, 1699162205.0, 1699162260.0, 1699162500.0, None]
    assert (anonymous.id[:5], anonymous.title, anonymous.created_at, anonymous.updated_at) == (
        "anon-", "Untitled", None, None)
    assert [m.id for m in anonymous.messages] == ["message-0", "message-1"]


def test_list_order_ignores_times():
    raw = conv(msg("m1", time=at(9)), msg("m2", "assistant", time=at(1)), msg("m3", time=None))
    assert read(raw)[0] == ["m1", "m2", "m3"]


def test_partial_parent_links_follow_the_previous_message():
    conversation = by_id(DATA)[MIXED]
    assert [m.text for m in conversation.messages] == [
        "How much protein does bread flour have?", "Usually 12 to 14 percent.", "And all-purpose flour?",
        "About 10 to 12 percent, depending on the brand."]


@pytest.mark.parametrize("link", [NO_LINK, None, "", 5, ["m3"]])
def test_a_message_without_a_usable_link_follows_the_previous_in_list_order(link):
    raw = conv(msg("m1", parent=ROOT_PARENT, time=at(1)), msg("m2", "assistant", parent="m1", time=at(2)),
               msg("m3", "assistant", parent="m1", time=at(3)), msg("m4", parent=link, time=at(4)))
    assert read(raw)[0] == ["m1", "m3", "m4"]


def test_a_long_chain_is_walked_without_recursion():
    count = 5000
    raw = conv(*(msg(f"m{i}", ("human", "assistant")[i % 2], parent=f"m{i - 1}" if i else ROOT_PARENT,
                     time=f"2025-01-01T00:00:00.{i:06d}Z") for i in range(count)))
    ids, _ = read(raw)
    assert ids == [f"m{i}" for i in range(count)]


# --- whole conversations that cannot be read ---------------------------------------------------------

@pytest.mark.parametrize("raw, problem", [
    ([], "conversation is not a JSON object"),
    ("conversation", "conversation is not a JSON object"),
    ({"uuid": "u"}, "'chat_messages' is not a list"),
    ({"uuid": "u", "chat_messages": None}, "'chat_messages' is not a list"),
    ({"uuid": "u", "chat_messages": {"m1": {}}}, "'chat_messages' is not a list"),
])
def test_unreadable_conversation_is_malformed(raw, problem):
    with pytest.raises(MalformedConversation, match=problem):
        claude.convert(raw, Counter())


def test_empty_chat_messages_is_an_empty_conversation():
    conversation = claude.convert(conv(), Counter())
    assert (conversation.id, conversation.messages) == ("c1", ())


# --- the export reader --------------------------------------------------------------------------------

def test_reading_the_export_folder_end_to_end():
    reader = ExportReader(DATA)
    conversations = list(reader.conversations())
    assert reader.files == [str(DATA / "conversations.json")]
    assert [(c.source, c.id, c.title, len(c.messages)) for c in conversations] == [
        ("claude", BRANCHED, "Sourdough starter", 4), ("claude", TOOLS, "Disk full and the weather", 5),
        ("claude", MIXED, "Bread flour protein", 4)]
    assert [(m.role, m.text) for m in conversations[1].messages] == [
        ("user", "Summarise the attached log and check the weather in Paris.\n\n"
                 "[Attachment: server.log]\nERROR disk full on /var\nWARN retrying"),
        ("assistant", "The log says the disk is full on /var.\n\nIt is 18 degrees and sunny in Paris."),
        ("user", "Thanks. And what do my notes say?\n\n[Attachment: notes.md]\n# Notes\nbuy rye flour"),
        ("assistant", "Your notes say to buy rye flour."),
        ("user", "Can you transcribe my voice memo?"),
    ]
    assert reader.content_counts == {"thinking": 2, "tool_use": 1, "tool_result": 1, "voice_note": 1}
    assert reader.skipped == [] and reader.duplicate_ids == []


def all_text(conversations: list[Conversation]) -> str:
    return "\n".join(f"{c.title}\n" + "\n".join(m.text for m in c.messages) for c in conversations)


def test_projects_users_and_memories_beside_are_ignored(tmp_path):
    folder = copy_export(tmp_path / "export")
    reader = ExportReader(folder)
    text = all_text(list(reader.conversations()))
    assert reader.files == [str(folder / "conversations.json")]
    for marker in ("MARKER", "Ada Example", "ada@example.com", "Baking"):
        assert marker not in text


def test_sibling_files_alone_are_not_an_export(tmp_path):
    folder = copy_export(tmp_path / "export")
    (folder / "conversations.json").unlink()
    with pytest.raises(InputError, match="no conversations.json"):
        ExportReader(folder)


@pytest.mark.parametrize("prefix", ["", "data-2025-01-01-00-00-00-batch-0000/"])
def test_official_zip_is_read_without_unpacking(tmp_path, prefix):
    archive = claude_zip(tmp_path / "data-2025-01-01-00-00-00-batch-0000.zip", prefix)
    reader = ExportReader(archive)
    conversations = list(reader.conversations())
    assert reader.files == [f"{archive}:{prefix}conversations.json"]
    assert conversations == list(ExportReader(DATA).conversations())
    assert "MARKER" not in all_text(conversations)
    assert sorted(path.name for path in tmp_path.iterdir()) == [archive.name]


def test_folder_holding_the_unzipped_export(tmp_path):
    copy_export(tmp_path / "data-2025-01-01-00-00-00-batch-0000")
    assert [c.id for c in ExportReader(tmp_path).conversations()] == [BRANCHED, TOOLS, MIXED]


def test_unreadable_claude_items_are_skipped_and_labelled_by_uuid(tmp_path):
    items = [conv(msg("m1"), uuid="ok-1"), {"uuid": "bad-1", "chat_messages": "nope"},
             {"uuid": "no-messages"}, 7, conv(msg("m1"), uuid="ok-2")]
    (tmp_path / "conversations.json").write_text(json.dumps(items), encoding="utf-8")
    reader = ExportReader(tmp_path)
    assert [c.id for c in reader.conversations()] == ["ok-1", "ok-2"]
    assert reader.skipped == [("bad-1", "'chat_messages' is not a list"),
                              ("no-messages", "not a Claude conversation (no 'chat_messages')"),
                              ("#3", "not a Claude conversation (no 'chat_messages')")]


def test_an_item_before_any_conversation_names_both_formats(tmp_path):
    (tmp_path / "conversations.json").write_text(json.dumps([{"uuid": "x"}, conv()]), encoding="utf-8")
    reader = ExportReader(tmp_path)
    assert [c.id for c in reader.conversations()] == ["c1"]
    assert reader.skipped == [
        ("x", "not a ChatGPT or Claude conversation (neither 'mapping' nor 'chat_messages')")]


def test_duplicate_claude_uuids_are_made_unique(tmp_path):
    (tmp_path / "conversations.json").write_text(json.dumps([conv(msg("m1")), conv(msg("m1"))]), encoding="utf-8")
    reader = ExportReader(tmp_path)
    second = list(reader.conversations())[1]
    assert (second.id, second.messages[0].conversation_id) == ("c1#2", "c1#2")
    assert reader.duplicate_ids == [("c1", "c1#2")]


# --- random conversations ------------------------------------------------------------------------------

@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Fail instead of hanging when the body runs longer than `seconds`."""
    def expire(signum: int, frame: object) -> None:
        raise AssertionError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
ODD_TEXT = st.sampled_from(["", " ", "\x00", "\ud800", "a\udfffb", "\n\n", "2025-01-01T00:00:00Z"])
IDS = st.sampled_from(["m0", "m1", "m2", "m3", "m4", "gone", ROOT_PARENT, ""])
OFFSETS = st.sampled_from([None, timezone.utc, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)),
                           timezone(timedelta(hours=5, minutes=30))])
TIMES = st.builds(lambda moment, zone: moment.replace(tzinfo=zone).isoformat(), st.datetimes(), OFFSETS)


def odd(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly (4 in 5) the expected kind of value, else any JSON value or an odd string."""
    return st.integers(0, 4).flatmap(lambda n: strategy if n else JSON | ODD_TEXT)


BLOCKS = odd(st.fixed_dictionaries({}, optional={
    "type": odd(st.sampled_from(["text", "thinking", "tool_use", "tool_result", "image"])),
    "text": odd(st.text(max_size=12)), "thinking": JSON}))
ATTACHMENTS = odd(st.fixed_dictionaries({}, optional={
    "file_name": odd(st.text(max_size=8)), "extracted_content": odd(st.text(max_size=12)), "file_size": JSON}))
MESSAGES = odd(st.fixed_dictionaries({  # a null or odd parent link stands for a missing one
    "uuid": odd(IDS), "sender": odd(st.sampled_from(["human", "assistant", "system"])),
    "parent_message_uuid": odd(IDS)}, optional={
    "text": odd(st.text(max_size=12)), "content": odd(st.lists(BLOCKS, max_size=4)), "created_at": odd(TIMES),
    "attachments": odd(st.lists(ATTACHMENTS, max_size=2)), "files": JSON}))
CONVERSATIONS = odd(st.fixed_dictionaries({"chat_messages": odd(st.lists(MESSAGES, max_size=16))}, optional={
    "uuid": odd(st.text(max_size=8)), "name": odd(st.text(max_size=8)), "created_at": odd(TIMES),
    "updated_at": odd(TIMES)}))


def check(raw: object) -> Conversation | None:
    """Convert within a time limit: a sound Conversation, or MalformedConversation (then None)."""
    counts: Counter[str] = Counter()
    with within(10):
        try:
            conversation = claude.convert(raw, counts)
        except MalformedConversation:
            return None
    assert conversation.source == "claude"
    (conversation.id + conversation.title).encode("utf-8")
    for position, message in enumerate(conversation.messages):
        assert (message.position, message.conversation_id, message.hidden) == (position, conversation.id, False)
        assert message.role in ("user", "assistant")
        (message.id + message.text).encode("utf-8")
        assert message.created_at is None or isinstance(message.created_at, float)
    assert all(isinstance(name, str) and value > 0 for name, value in counts.items())
    return conversation


@settings(max_examples=200, deadline=None, database=None)
@given(raw=CONVERSATIONS)
def test_random_conversations_are_read_or_malformed(raw):
    check(raw)


@st.composite
def long_chains(draw: st.DrawFn) -> tuple[dict, bool]:
    """A chain of 2000+ messages, some of whose parent links are rewired (cycles, dangling, nulls)."""
    count = draw(st.integers(2000, 2600))
    messages = [msg(f"m{i}", ("human", "assistant")[i % 2], parent=f"m{i - 1}" if i else ROOT_PARENT,
                    time=f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(count)]
    rewires = draw(st.lists(st.tuples(st.integers(0, count - 1),
                                      st.integers(0, count - 1).map(lambda i: f"m{i}") | odd(IDS)), max_size=4))
    for index, parent in rewires:
        messages[index]["parent_message_uuid"] = parent
    return conv(*messages), not rewires


@settings(max_examples=30, deadline=None, database=None)
@given(chain=long_chains())
def test_long_chains_with_cycles_and_dangling_parents_finish(chain):
    raw, intact = chain
    started = monotonic()
    conversation = check(raw)
    assert conversation is not None and monotonic() - started < 5
    count = len(raw["chat_messages"])
    assert 1 <= len(conversation.messages) <= count
    if intact:
        assert [m.id for m in conversation.messages] == [f"m{i}" for i in range(count)]
