"""Bad inputs through the real CLI: each is a one-line error (exit 2, naming the file), a counted and reported
skip, or read as well as it can be; never a traceback, and never lost work: every case runs against a store
that already holds an earlier ingestion, and those messages must still be there afterwards.

Reader-level details of many of these cases (exact reasons, branch choice, escape repair) are covered in
tests/test_readers.py; test_ingest.py covers not-json, a truncated first item, not-an-export, an empty array,
a missing path, a store built with another model and a progress file of another export through the CLI.
Here the point is the end-to-end contract of each case.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner, Result

from conftest import linear_mapping, read_progress, store_health, store_keys
from sparky.cli import cli

# --- building exports ------------------------------------------------------------------------------


def msg(role: str, text: object, **fields: object) -> dict:
    content = fields.pop("content", {"content_type": "text", "parts": [text]})
    return {"id": f"m-{role}-{str(text)[:24]}", "author": {"role": role}, "create_time": 1700000000.0,
            "content": content, "recipient": "all", **fields}


def conv(cid: object, *messages: dict, **fields: object) -> dict:
    """A linear conversation root -> n1 -> n2 ..., current_node on the last node."""
    mapping, leaf = linear_mapping(messages)
    return {"id": cid, "title": f"Title {cid}", "create_time": 1700000000.0, "update_time": 1700000100.0,
            "mapping": mapping, "current_node": leaf, **fields}


def qa(cid: str, topic: str) -> dict:
    return conv(cid, msg("user", f"How should I think about {topic} in practice?"),
                msg("assistant", f"For {topic}, start small, measure, and write down what you learn."))


VALID = [qa("v1", "sourdough hydration"), qa("v2", "database indexes"),
         conv("v3", msg("user", "Explain caf\u00e9 cr\u00e8me \u2615 and \u6f22\u5b57 please"),
              msg("assistant", "A caf\u00e9 cr\u00e8me is coffee with cream; \u6f22\u5b57 are kanji."))]
VALID_BYTES = json.dumps(VALID, ensure_ascii=False).encode()


def write(data: bytes | object | Callable[[], object], name: str = "conversations.json") -> Callable[[Path], Path]:
    """A builder writing ``data`` (bytes, a value to serialise, or a function making either: for the big
    cases, built only when their test runs) as the export file in the case folder."""

    def build(folder: Path) -> Path:
        value = data() if callable(data) else data
        path = folder / name
        path.write_bytes(value if isinstance(value, bytes) else json.dumps(value, ensure_ascii=False).encode())
        return path

    return build


RAW_QUESTION = "A question in an oddly encoded conversation?"
RAW_ANSWER = "A plain answer to an oddly encoded question."


def raw(literal: bytes, field: str = "text") -> Callable[[Path], Path]:
    """An export whose user text (or conversation id, title or message id) is this raw JSON literal."""
    data = conv("CID", msg("user", "TEXT"), msg("assistant", RAW_ANSWER), title="TITLE")
    data["mapping"]["n1"]["message"]["id"] = "MID"
    template = json.dumps([data]).encode()
    placeholder = {"text": b'"TEXT"', "id": b'"CID"', "title": b'"TITLE"', "message-id": b'"MID"'}[field]
    if field != "text":
        template = template.replace(b'"TEXT"', json.dumps(RAW_QUESTION).encode())
    assert template.count(placeholder) == 1
    return write(template.replace(placeholder, literal))


def truncated(fraction: float | None = None, at: int | None = None) -> Callable[[Path], Path]:
    cut = at if at is not None else int(len(VALID_BYTES) * fraction)
    return write(VALID_BYTES[:cut])


def zipped(members: dict[str, bytes | object], name: str = "export.zip") -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for member, data in members.items():
                archive.writestr(member, data if isinstance(data, bytes) else json.dumps(data))
        return path

    return build


def patched_zip(offset_in_local_header: int, offset_in_central: int, value: bytes) -> Callable[[Path], Path]:
    """A valid export zip with one header field of its member overwritten (flags, method, ...)."""

    def build(folder: Path) -> Path:
        path = zipped({"conversations.json": VALID})(folder)
        data = bytearray(path.read_bytes())
        for signature, offset in ((b"PK\x03\x04", offset_in_local_header), (b"PK\x01\x02", offset_in_central)):
            start = data.index(signature)
            data[start + offset:start + offset + len(value)] = value
        path.write_bytes(bytes(data))
        return path

    return build


def corrupted_zip_member(folder: Path) -> Path:
    path = zipped({"conversations.json": VALID})(folder)
    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x03\x04") + 30 + len("conversations.json")
    data[start + 20] ^= 0xFF  # inside the deflated data: a CRC or inflate error when read
    path.write_bytes(bytes(data))
    return path


def folder_with(files: dict[str, bytes]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        export = folder / "chat-history"
        export.mkdir()
        for name, data in files.items():
            (export / name).parent.mkdir(parents=True, exist_ok=True)
            (export / name).write_bytes(data)
        return export

    return build


def cycle_conversation() -> dict:
    data = conv("cyc", msg("user", "What is a cyclic graph exactly?"),
                msg("assistant", "A graph where you can walk back to where you started."))
    data["mapping"]["n1"]["parent"] = "n2"  # n1 <-> n2, the root is cut off
    return data


def full_cycle_without_current_node() -> dict:
    data = cycle_conversation()
    data["mapping"]["n2"]["children"] = ["n1"]
    data["mapping"]["n1"]["children"] = ["n2"]
    del data["current_node"]
    return data


def self_parent() -> dict:
    data = qa("selfp", "recursion")
    data["mapping"]["n2"]["parent"] = "n2"
    return data


def dangling(parent: object) -> dict:
    data = qa("dang", "orphaned nodes")
    data["mapping"]["n2"]["parent"] = parent
    return data


def every_part_type() -> dict:
    return conv("parts",
                msg("user", None, content={"content_type": "text",
                                           "parts": [1, 2.5, None, True, [1, "x"], {"a": 1}, "Real question here?"]}),
                msg("assistant", None, content={"content_type": "text", "parts": "A bare string answer."}),
                msg("user", None, content={"content_type": "text", "parts": {"odd": "dict"}}),
                msg("assistant", None, content={"content_type": "text", "parts": 42}),
                msg("user", None, content={"content_type": "text", "parts": None}),
                msg("assistant", None, content={"content_type": "multimodal_text",
                                                "parts": [{"content_type": "audio_transcription",
                                                           "text": "Transcribed spoken answer."}, 7]}))


def odd_fields() -> dict:
    data = conv(12345,
                msg("user", "A question with odd fields around it.", create_time="yesterday", weight="heavy",
                    metadata=["not", "a", "dict"], recipient=None),
                msg("assistant", "A role that is not a string is left out.", author={"role": 7}),
                msg("assistant", "An answer with a numeric conversation id.", author="not a dict"),
                msg("assistant", "An answer in a conversation with odd fields."),
                title=["not", "a", "string"], create_time={"no": 1}, update_time=1e300)
    data["mapping"]["extra"] = "a node that is not an object"
    return data


def huge_timestamps(value: int) -> dict:
    return conv("bigtime", msg("user", "When did this conversation happen?", create_time=value),
                msg("assistant", "Long after the heat death of the universe."), create_time=value)


def big_message(text: str, role: str = "user") -> dict:
    return conv("big", msg("user", "Here comes something big."), msg(role, text),
                msg("assistant", "That was a lot; here is a short reply."))


def big_abandoned_branch(text: str) -> dict:
    data = qa("branch", "abandoned branches")
    data["mapping"]["alt"] = {"id": "alt", "message": msg("assistant", text), "parent": "n1", "children": []}
    data["mapping"]["n1"]["children"].append("alt")
    return data


def long_conversation(count: int) -> dict:
    """``count`` nodes in one chain; all but three are acknowledgements that selection drops."""
    messages = [msg("user" if i % 2 == 0 else "assistant", "ok") for i in range(count)]
    for position, text in ((0, "Start of a very long chat about sailing knots."),
                           (count // 2, "Halfway there: the bowline is the king of knots."),
                           (count - 1, "Last message: practise the clove hitch daily.")):
        messages[position] = msg("user" if position % 2 == 0 else "assistant", text)
    for index, item in enumerate(messages):
        item["id"] = f"long-{index}"
    return conv("long", *messages)


def deeply_nested_parts(depth: int) -> bytes:
    data = conv("deep", msg("user", None, content={"content_type": "text", "parts": ["Deep question?", "NEST"]}),
                msg("assistant", "Deep answer."))
    return json.dumps([data]).encode().replace(b'"NEST"', b"[" * depth + b"]" * depth)


# --- progress files and stores placed before the run ------------------------------------------------


def progress_file(data: bytes | object) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())

    return build


def original_tool_progress(path: Path) -> None:
    """A progress file as the original script wrote it: no version, export or sessions."""
    path.write_text(json.dumps({
        "processed_conversations": ["v1"], "processed_messages": ["msg-id-1", "msg-id-2"],
        "last_updated": "2025-01-15T14:30:22.123456",
        "stats": {"total_conversations": 3, "total_messages": 6, "processed_messages": 2,
                  "current_session_processed": 2, "current_session_skipped": 0, "current_session_failed": 0},
    }))


def store_file(data: bytes) -> Callable[[Path], None]:
    def build(db: Path) -> None:
        db.unlink()
        db.write_bytes(data)

    return build


def store_folder(db: Path) -> None:
    db.unlink()
    db.mkdir()


def newer_store(db: Path) -> None:
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA user_version = 99")


def foreign_sqlite(db: Path) -> None:
    db.unlink()
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
        connection.execute("INSERT INTO messages (body) VALUES ('someone else''s data')")


def truncated_store(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])


def scribbled_store(db: Path) -> None:
    data = bytearray(db.read_bytes())
    for page in range(1, len(data) // 4096):  # every page but the header's
        data[page * 4096: page * 4096 + 300] = b"\xa5" * 300
    db.write_bytes(bytes(data))


# --- the cases ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    make: Callable[[Path], Path]  # builds the input inside the case folder; returns the path to ingest
    error: str | None = None  # exit 2 with one "Error:" line containing this (and naming ``names``)
    names: str = "conversations.json"
    stored: tuple[str, ...] | None = None  # exit 0, and exactly these texts were added to the store
    skipped: str | None = None  # also: this reason is reported and recorded in the progress file
    progress: Callable[[Path], None] | None = None  # writes the progress file before the run
    store: Callable[[Path], None] | None = None  # damages or replaces the store before the run
    check: Callable[[Path, Result], None] | None = None


VALID_TEXTS = ("How should I think about sourdough hydration in practice?",
               "For sourdough hydration, start small, measure, and write down what you learn.",
               "How should I think about database indexes in practice?",
               "For database indexes, start small, measure, and write down what you learn.",
               "Explain caf\u00e9 cr\u00e8me \u2615 and \u6f22\u5b57 please",
               "A caf\u00e9 cr\u00e8me is coffee with cream; \u6f22\u5b57 are kanji.")
ANSWER = "For PLACEHOLDER, start small, measure, and write down what you learn."


def five_mb() -> str:
    """5 MB of prose in which no sentence repeats (so every chunk can be found at exactly one place)."""
    lines = (f"Item {i}: the committee debates budget line {i * 7919 % 100003} and adjourns at {i % 24}h."
             for i in range(80_000))
    return " ".join(lines)[:5_000_000]

TRUNCATED = "not valid JSON (truncated at byte"
NOT_EXPORT = "not a ChatGPT or Claude export"


def dropped(rule: str, at_least: int) -> Callable[[Path, Result], None]:
    def check(folder: Path, result: Result) -> None:
        assert read_progress(folder / "progress.json")["selection"]["dropped"].get(rule, 0) >= at_least

    return check


def nothing_outside(folder: Path, result: Result) -> None:
    """The zip's members are read in memory: nothing is extracted, least of all outside the folder."""
    for base in (folder, Path.cwd()):
        assert not (base.parent / "conversations.json").exists()
        assert not (base.parent.parent / "evil").exists()


def renamed_duplicates(folder: Path, result: Result) -> None:
    ids = {row[0] for row in sqlite3.connect(folder / "store.db").execute("SELECT conversation_id FROM conversations")}
    assert {"dup", "dup#2", "dup#3"} <= ids


CASES: dict[str, Case] = {
    # truncated JSON at many offsets (the scan finds it before any embedding)
    **{f"truncated-at-{int(f * 100)}%": Case(truncated(f), error=TRUNCATED)
       for f in (0.02, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.99)},
    "truncated-after-the-opening-bracket": Case(truncated(at=1), error=TRUNCATED),
    "truncated-before-the-closing-bracket": Case(truncated(at=len(VALID_BYTES) - 1), error=TRUNCATED),
    "truncated-inside-a-multibyte-character": Case(
        truncated(at=VALID_BYTES.index("\u6f22".encode()) + 1), error=TRUNCATED),
    # wrong top-level type
    "top-level-object-wrapper": Case(write({"conversations": VALID}), error="top level is a JSON object"),
    "top-level-string": Case(write("conversations"), error="top level is a single JSON value"),
    "top-level-number": Case(write(b"-12.5e3"), error="top level is a single JSON value"),
    "top-level-true": Case(write(b"true"), error="top level is a single JSON value"),
    "top-level-null": Case(write(b"null"), error="top level is a single JSON value"),
    "array-of-strings": Case(write(["a", "b", "c"]), error=NOT_EXPORT),
    "array-of-arrays": Case(write([[1], [2]]), error=NOT_EXPORT),
    "array-of-nulls": Case(write([None, None]), error=NOT_EXPORT),
    "only-nul-bytes": Case(write(b"\x00" * 4096), error="not valid JSON"),
    # items of the wrong type among conversations: counted, reported skips
    "a-number-among-conversations": Case(write([VALID[0], 7, VALID[1]]), stored=VALID_TEXTS[:4],
                                         skipped="not a ChatGPT conversation (no 'mapping')"),
    "mapping-is-a-list": Case(write([VALID[0], {"id": "badmap", "mapping": [1, 2]}]), stored=VALID_TEXTS[:2],
                              skipped="'mapping' is not an object"),
    # mapping structure
    "mapping-cycle": Case(write([cycle_conversation()]), stored=(
        "What is a cyclic graph exactly?", "A graph where you can walk back to where you started.")),
    "mapping-cycle-without-current-node": Case(write([full_cycle_without_current_node(), VALID[0]]),
                                               stored=VALID_TEXTS[:2]),
    "node-is-its-own-parent": Case(write([self_parent()]), stored=(ANSWER.replace("PLACEHOLDER", "recursion"),)),
    "dangling-parent": Case(write([dangling("deleted-node")]),
                            stored=(ANSWER.replace("PLACEHOLDER", "orphaned nodes"),)),
    "parent-of-the-wrong-type": Case(write([dangling(["n1"])]),
                                     stored=(ANSWER.replace("PLACEHOLDER", "orphaned nodes"),)),
    "current-node-dangling": Case(write([qa("cur", "current nodes") | {"current_node": "gone"}]), stored=(
        "How should I think about current nodes in practice?", ANSWER.replace("PLACEHOLDER", "current nodes"))),
    "empty-mapping": Case(write([{"id": "empty", "mapping": {}}, VALID[1]]), stored=VALID_TEXTS[2:4]),
    # field values of every JSON type
    "parts-of-every-json-type": Case(write([every_part_type()]), stored=(
        "Real question here?", "A bare string answer.", "Transcribed spoken answer.")),
    "odd-field-types": Case(write([odd_fields()]), stored=(
        "A question with odd fields around it.", "An answer in a conversation with odd fields.")),
    "deeply-nested-parts": Case(write(lambda: deeply_nested_parts(10_000)), stored=("Deep question?", "Deep answer.")),
    "integer-timestamp-beyond-64-bits": Case(write([huge_timestamps(10 ** 30)]),
                                             error="not valid JSON (parse error: integer overflow"),
    "float-timestamp-beyond-double-range": Case(write(lambda: json.dumps([huge_timestamps(7)]).replace(
        '"create_time": 7', '"create_time": 1e400').encode()), error="not valid JSON (parse error: numeric"),
    # size
    "5-MB-whitespace-message": Case(write(lambda: [big_message(" \n" * 2_500_000)]), stored=(
        "Here comes something big.", "That was a lot; here is a short reply."), check=dropped("whitespace_only", 1)),
    "5-MB-system-message": Case(write(lambda: [big_message(five_mb(), role="system")]), stored=(
        "Here comes something big.", "That was a lot; here is a short reply.")),
    "5-MB-message-on-an-abandoned-branch": Case(write(lambda: [big_abandoned_branch(five_mb())]), stored=(
        "How should I think about abandoned branches in practice?",
        ANSWER.replace("PLACEHOLDER", "abandoned branches"))),
    "100k-message-conversation": Case(write(lambda: [long_conversation(100_000)]), stored=(
        "Start of a very long chat about sailing knots.", "Halfway there: the bowline is the king of knots.",
        "Last message: practise the clove hitch daily."), check=dropped("trivially_short", 99_997)),
    # encodings
    "invalid-utf8-in-text": Case(raw(b'"caf\xe9 au lait \xff\xfe please"'),
                                 stored=("caf\ufffd au lait \ufffd\ufffd please", RAW_ANSWER)),
    "overlong-utf8-and-cesu-surrogates": Case(raw(b'"slash \xc0\xaf and \xed\xa0\x80 here"'),
                                              stored=("slash \ufffd\ufffd and \ufffd\ufffd\ufffd here", RAW_ANSWER)),
    "invalid-utf8-in-conversation-id": Case(raw(b'"id-\xff-x"', "id"), stored=(RAW_QUESTION, RAW_ANSWER)),
    "lone-surrogate-in-text": Case(raw(rb'"low \udc00 and high \ud800 alone"'),
                                   stored=("low \ufffd and high \ufffd alone", RAW_ANSWER)),
    "lone-surrogate-in-title": Case(raw(rb'"T \ud800"', "title"), stored=(RAW_QUESTION, RAW_ANSWER)),
    "lone-surrogate-in-message-id": Case(raw(rb'"m-\udfff"', "message-id"), stored=(RAW_QUESTION, RAW_ANSWER)),
    "nul-escapes-in-text": Case(raw(rb'"nul\u0000 inside\u0000 text"'), stored=("nul inside text", RAW_ANSWER)),
    "raw-nul-byte-inside-a-string": Case(raw(b'"raw\x00nul"'), error="not valid JSON"),
    "raw-nul-byte-between-items": Case(write(VALID_BYTES.replace(b"}, {", b"},\x00{", 1)), error="not valid JSON"),
    # identity
    "duplicate-conversation-ids": Case(
        write([qa("dup", "first copy"), qa("dup", "second copy"), qa("dup", "first copy")]),
        stored=("How should I think about first copy in practice?", ANSWER.replace("PLACEHOLDER", "first copy"),
                "How should I think about second copy in practice?", ANSWER.replace("PLACEHOLDER", "second copy"),
                "How should I think about first copy in practice?", ANSWER.replace("PLACEHOLDER", "first copy")),
        check=renamed_duplicates),
    # zip archives
    "zip-with-path-traversal-entry": Case(
        zipped({"../../evil/conversations.json": [qa("evil", "traversal")], "conversations.json": VALID[:1]}),
        stored=VALID_TEXTS[:2], check=nothing_outside),
    "zip-with-only-a-parent-folder-entry": Case(
        zipped({"../conversations.json": VALID[:1]}), stored=VALID_TEXTS[:2], check=nothing_outside),
    "zip-with-only-an-absolute-entry": Case(zipped({"/tmp/x/conversations.json": VALID}),
                                            error="no conversations.json", names="export.zip"),
    "empty-zip": Case(zipped({}), error="no conversations.json", names="export.zip"),
    "zero-byte-zip": Case(write(b"", name="export.zip"), error="not a readable zip archive", names="export.zip"),
    "zip-with-corrupted-member": Case(corrupted_zip_member, error="cannot be read", names="export.zip"),
    "zip-with-encrypted-member": Case(patched_zip(6, 8, b"\x01"), error="export.zip", names="export.zip"),
    "zip-with-unsupported-compression": Case(patched_zip(8, 10, b"\x63"), error="export.zip", names="export.zip"),
    # folders and files
    "folder-with-no-export": Case(folder_with({"notes.txt": b"hello", "photos/a.jpg": b"\xff\xd8"}),
                                  error="no conversations.json", names="chat-history"),
    "empty-folder": Case(folder_with({}), error="no conversations.json", names="chat-history"),
    "empty-file": Case(write(b""), error="empty file"),
    "empty-file-in-export-folder": Case(folder_with({"conversations.json": b""}), error="empty file"),
    "second-shard-truncated": Case(folder_with({"conversations-000.json": json.dumps(VALID[:1]).encode(),
                                                "conversations-001.json": VALID_BYTES[:100]}),
                                   error=TRUNCATED, names="conversations-001.json"),
    # progress files
    "foreign-progress-file": Case(write(VALID), progress=progress_file({"theme": "dark", "recent": []}),
                                  error="not a Sparky progress file", names="progress.json"),
    "progress-file-is-a-list": Case(write(VALID), progress=progress_file([1, 2]),
                                    error="not a Sparky progress file", names="progress.json"),
    "progress-file-not-json": Case(write(VALID), progress=progress_file(b"{\"processed_messages\": [\"ab"),
                                   error="damaged", names="progress.json"),
    "progress-file-empty": Case(write(VALID), progress=progress_file(b""), error="damaged", names="progress.json"),
    "progress-file-from-a-newer-version": Case(
        write(VALID), progress=progress_file({"processed_conversations": [], "processed_messages": [], "version": 99}),
        error="newer Sparky", names="progress.json"),
    "progress-file-with-stats-of-the-wrong-type": Case(
        write(VALID), progress=progress_file({"processed_conversations": [], "processed_messages": [], "stats": [1]}),
        error="'stats' is not a JSON object", names="progress.json"),
    "progress-file-with-sessions-of-the-wrong-type": Case(
        write(VALID), progress=progress_file({"processed_conversations": [], "processed_messages": [],
                                              "sessions": {"a": 1}}),
        error="'sessions' is not a JSON array", names="progress.json"),
    "progress-file-with-failed-messages-of-the-wrong-type": Case(
        write(VALID), progress=progress_file({"processed_conversations": [], "processed_messages": [],
                                              "failed_messages": ["k"]}),
        error="'failed_messages' is not a JSON object", names="progress.json"),
    "progress-file-of-the-original-tool": Case(write(VALID), progress=original_tool_progress, stored=VALID_TEXTS),
    # stores
    "store-is-not-a-database": Case(write(VALID), store=store_file(b"just some text, not SQLite" * 100),
                                    error="file is not a database", names="store.db"),
    "store-is-a-folder": Case(write(VALID), store=store_folder, error="is a folder", names="store.db"),
    "store-from-a-newer-version": Case(write(VALID), store=newer_store, error="newer Sparky", names="store.db"),
    "store-of-another-application": Case(write(VALID), store=foreign_sqlite, error="not a Sparky memory store",
                                         names="store.db"),
    "store-truncated": Case(write(VALID), store=truncated_store, error="malformed", names="store.db"),
    "store-with-scribbled-pages": Case(write(VALID), store=scribbled_store, error="malformed", names="store.db"),
}

# --- running them ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def previous_store(tmp_path_factory) -> tuple[Path, list[str]]:
    """A store holding an earlier, unrelated ingestion (with its own progress file)."""
    folder = tmp_path_factory.mktemp("previous")
    export = folder / "earlier" / "conversations.json"
    export.parent.mkdir()
    export.write_text(json.dumps([qa("earlier-1", "tomato seedlings"), qa("earlier-2", "bike chains")]))
    result = CliRunner().invoke(cli, ["ingest", str(export.parent), "--progress-file", str(folder / "earlier.json"),
                                      "--db", str(folder / "store.db"), "--quiet"])
    assert result.exit_code == 0, result.output
    keys = store_keys(folder / "store.db")
    assert len(keys) == 4
    return folder / "store.db", keys


def stored_texts(db: Path, keys: set[str]) -> list[str]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT key, text FROM messages").fetchall()
    return sorted(text for key, text in rows if key not in keys)


def describe(result: Result) -> str:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return result.output + "".join(traceback.format_exception(*result.exc_info))
    return result.output


SLOW_CASES = {"100k-message-conversation", "5-MB-whitespace-message"}


def marks(name: str) -> list:
    found = [pytest.mark.slow] if name in SLOW_CASES else []
    return found


@pytest.mark.parametrize("name", [pytest.param(name, marks=marks(name)) for name in CASES])
def test_bad_input(tmp_path, previous_store, name):
    case = CASES[name]
    folder = tmp_path / "case"
    folder.mkdir()
    template_db, earlier_keys = previous_store
    db = folder / "store.db"
    shutil.copy(template_db, db)
    if case.store:
        case.store(db)
    progress = folder / "progress.json"
    if case.progress:
        case.progress(progress)
    export = case.make(folder)

    result = CliRunner().invoke(cli, ["ingest", str(export), "--progress-file", str(progress), "--db", str(db)])
    output = describe(result)
    assert isinstance(result.exception, SystemExit) or result.exception is None, output
    assert "Traceback" not in output

    if case.error is not None:
        assert result.exit_code == 2, output
        errors = [line for line in output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, output
        assert case.error in errors[0] and case.names in errors[0], output
    else:
        assert result.exit_code == 0, output
        assert sorted(case.stored) == stored_texts(db, set(earlier_keys)), output
        health = store_health(db)
        assert (health["integrity"], health["fts_consistent"], health["messages_without_chunks"],
                health["orphan_chunks"], health["bad_vectors"]) == ("ok", True, 0, 0, 0)
    if case.skipped is not None:
        assert case.skipped in output, output
        assert any(case.skipped in reason for _, reason in read_progress(progress)["skipped_conversations"])
    if case.check is not None:
        case.check(folder, result)
    if case.store is None:
        assert set(earlier_keys) <= set(store_keys(db)), "an earlier ingestion's messages were lost"


CHUNK_IN_A_CHILD = """
import json, sys
from sparky.pipeline.chunking import chunk_messages
from sparky.embedders import get_embedder
embedder = get_embedder("minilm")
text = open(sys.argv[1], encoding="utf-8").read()
chunks = [chunk.text for chunk in chunk_messages([("key", text)], embedder)]
json.dump({"chunks": chunks, "most_tokens": max(embedder.count_tokens(chunks))}, open(sys.argv[2], "w"))
"""


@pytest.mark.slow
def test_a_5_MB_message_is_read_whole_and_chunked_without_loss(tmp_path):
    """Embedding 5 MB (about 5,000 chunks) would take minutes, so this stops before the model: the reader and
    selection keep the whole text, and its chunks cover it within the model's window. The chunking runs in a
    child process with a time limit, so a slow tokenizer fails the test instead of hanging it."""
    from sparky.readers import ExportReader
    from sparky.pipeline.select import Selector

    text = five_mb()
    [conversation] = list(ExportReader(write(lambda: [big_message(text)])(tmp_path)).conversations())
    assert text in [m.text for m in Selector().select(conversation)]
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    try:
        subprocess.run([sys.executable, "-c", CHUNK_IN_A_CHILD, str(tmp_path / "text.txt"), str(tmp_path / "out.json")],
                       check=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("chunking a 5 MB message did not finish in 30 s")
    result = json.loads((tmp_path / "out.json").read_text())
    chunks = result["chunks"]
    assert len(chunks) > 1000 and result["most_tokens"] <= 256
    assert text.startswith(chunks[0]) and text.endswith(chunks[-1])
    position = 0
    for chunk in chunks:  # each chunk starts inside or right at the end of the one before: nothing skipped
        start = text.find(chunk, max(position - len(chunk), 0))
        assert 0 <= start <= position, "a gap between chunks"
        position = start + len(chunk)
    assert position == len(text)
