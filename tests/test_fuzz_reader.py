"""Fuzz the export reader at the byte level: whatever the file holds, reading it (and the first pass the
pipeline makes over it: selection and message keys) yields conversations or raises InputError, nothing else.

tests/test_readers.py fuzzes field values inside a parsed conversation and the escape repair; here the
mutations hit the raw bytes of a whole file (JSON or zip), so the JSON parser, the UTF-8 cleaning and the
zip handling are in the loop too.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparky.errors import InputError
from sparky.readers import ExportReader
from sparky.pipeline.scan import scan_export

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def node(node_id: str, parent: str | None, role: str | None = None, parts: list | None = None,
         children: tuple[str, ...] = (), **message_fields: object) -> dict:
    message = None
    if role is not None:
        message = {"id": f"msg-{node_id}", "author": {"role": role}, "create_time": 1700000000.5,
                   "content": {"content_type": "text", "parts": parts or []}, "recipient": "all",
                   **message_fields}
    return {"id": node_id, "message": message, "parent": parent, "children": list(children)}


def seed_export() -> bytes:
    """A small valid export touching most of what the reader handles (branches, hidden nodes, escapes)."""
    first = {
        "id": "conv-1", "title": "Caf\u00e9 \U0001f600 \\ quotes \"x\"", "create_time": 1700000000,
        "update_time": 1700000100.25, "current_node": "a2",
        "mapping": {
            "root": node("root", None, children=("sys",)),
            "sys": node("sys", "root", "system", ["You are ChatGPT"], ("q",), weight=0.0),
            "q": node("q", "sys", "user", ["How do I rotate logs with logrotate?", {"content_type": "image"}],
                      ("a1", "a2")),
            "a1": node("a1", "q", "assistant", ["older answer"]),
            "a2": node("a2", "q", "assistant", ["Use a weekly rule \u30104:0\u2020source\u3011 and compress."]),
        },
    }
    second = {
        "conversation_id": "conv-2", "title": None, "current_node": "c",
        "mapping": {
            "r": node("r", None, children=("u",)),
            "u": node("u", "r", "user", ["Tab\there, newline\nthere, nul-free \u00e9\u00e8"], ("c",)),
            "c": {"id": "c", "parent": "u", "children": [], "message": {
                "id": "mc", "author": {"role": "assistant"},
                "content": {"content_type": "code", "language": "python", "text": "print('hi')"}}},
        },
    }
    return json.dumps([first, second], ensure_ascii=True).encode()


SEED = seed_export()
FRAGMENTS = [b'"', b"\\", b"\\u", b"\\ud800", b"\\udc00", b"\\u0000", b"\x00", b"\xff", b"\xed\xa0\x80",
             b"\xef\xbb\xbf", b"[", b"]", b"{", b"}", b",", b":", b"null", b"true", b"1e999", b"-0",
             b"99999999999999999999999999", b'"mapping"', b'"parent"', b'"children"', b'"current_node"',
             b'"parts"', b'"content"', b'"root"', b'"q"', b"[[[[[[[[", b"{}", b"[]", b" \n\t"]

MUTATION = st.one_of(
    st.tuples(st.just("replace"), st.integers(0), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("insert"), st.integers(0), st.binary(min_size=1, max_size=8) | st.sampled_from(FRAGMENTS)),
    st.tuples(st.just("delete"), st.integers(0), st.integers(1, 200)),
    st.tuples(st.just("duplicate"), st.integers(0), st.integers(1, 300)),
    st.tuples(st.just("truncate"), st.integers(0), st.just(0)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, object]]) -> bytes:
    for kind, position, arg in mutations:
        at = position % (len(data) + 1)
        if kind == "replace":
            data = data[:at] + arg + data[at + len(arg):]
        elif kind == "insert":
            data = data[:at] + arg + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + arg:]
        elif kind == "duplicate":
            data = data[:at] + data[at:at + arg] + data[at:]
        else:
            data = data[:at]
    return data


def read_like_the_pipeline(path: Path) -> int:
    """Everything the ingester does with an export before embedding; returns the messages found."""
    reader = ExportReader(path)
    reader.fingerprint()
    count = 0
    for conversation in reader.conversations():
        for message in conversation.messages:
            assert isinstance(message.text, str) and isinstance(message.id, str)
            (message.text + message.id + conversation.id + conversation.title).encode("utf-8")
            count += 1
    scan = scan_export(reader)
    for key in scan.all_keys():
        assert len(key) == 64
    return count


def outcome(path: Path) -> str:
    try:
        read_like_the_pipeline(path)
    except InputError as error:
        text = str(error)
        assert text and "\n" not in text, text
        return "error"
    return "read"


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="sparky-fuzz-") as folder:
        yield Path(folder)


def test_the_seed_export_is_read(scratch):
    path = scratch / "seed.json"
    path.write_bytes(SEED)
    assert read_like_the_pipeline(path) == 4  # q, a2 (branch), u, c


@FUZZ
@given(mutations=st.lists(MUTATION, min_size=1, max_size=6))
def test_mutated_json_export_is_read_or_one_input_error(scratch, mutations):
    path = scratch / "conversations.json"
    path.write_bytes(mutate(SEED, mutations))
    outcome(path)


@FUZZ
@given(data=st.binary(max_size=2048), opening=st.sampled_from([b"", b"[", b"[{", b'[{"mapping":{']))
def test_random_bytes_are_read_or_one_input_error(scratch, data, opening):
    path = scratch / "random.json"
    path.write_bytes(opening + data)
    outcome(path)


def zipped(payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export/conversations.json", payload)
        archive.writestr("export/user.json", b'{"id": "user-1"}')
    return buffer.getvalue()


ZIP_SEED = zipped(SEED)
ZIP_HEADERS = [match.start() for match in re.finditer(rb"PK\x03\x04|PK\x01\x02|PK\x05\x06", ZIP_SEED)]

# A field of a zip header: which header, the field's offset in it (flags, method, sizes, name length ...).
ZIP_FIELD = st.tuples(st.just("field"), st.sampled_from(ZIP_HEADERS), st.tuples(st.integers(4, 45), st.binary(
    min_size=1, max_size=2)))


def mutate_zip(data: bytes, mutations: list[tuple[str, int, object]]) -> bytes:
    for mutation in mutations:
        if mutation[0] == "field":
            _, header, (offset, value) = mutation
            data = data[:header + offset] + value + data[header + offset + len(value):]
        else:
            data = mutate(data, [mutation])
    return data


@FUZZ
@given(mutations=st.lists(MUTATION | ZIP_FIELD, min_size=1, max_size=4))
def test_mutated_zip_export_is_read_or_one_input_error(scratch, mutations):
    path = scratch / "export.zip"
    path.write_bytes(mutate_zip(ZIP_SEED, mutations))
    outcome(path)
