"""Read an export (folder, .zip or JSON file) as a stream of Conversations, never loading a whole file.

The format is detected from the content: an array of objects with ``mapping`` is a ChatGPT export, one
with ``chat_messages`` a Claude.ai export. Anything else is one clear InputError. Only conversations.json
(or its shards, conversations-000.json ...) is read: the files beside it (ChatGPT's user.json and
chat.html, Claude's projects.json, users.json and memories.json) are ignored.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import ijson

from ..errors import InputError
from ..models import Conversation
from . import chatgpt, claude
from .chatgpt import MalformedConversation

__all__ = ["ExportReader", "read_export"]

EXPORT_FILE = re.compile(r"conversations(?:-(\d+))?\.json")
READ_SIZE = 64 * 1024
FINGERPRINT_SPAN = 64 * 1024
PROBE_ITEMS = 10  # this many unrecognised items before any conversation: not an export
_NOT_EXPORT = "not a ChatGPT or Claude export (its items have neither 'mapping' nor 'chat_messages')"
CONVERTERS = {"chatgpt": chatgpt, "claude": claude}  # modules, so their convert is looked up at each call
LABEL_FIELDS = {"chatgpt": ("id", "conversation_id"), "claude": ("uuid",), None: ("id", "conversation_id", "uuid")}
NOT_A_CONVERSATION = {  # why an item is skipped, by the format of the conversations read before it
    "chatgpt": "not a ChatGPT conversation (no 'mapping')",
    "claude": "not a Claude conversation (no 'chat_messages')",
    None: "not a ChatGPT or Claude conversation (neither 'mapping' nor 'chat_messages')",
}
ESCAPE_TOKEN = re.compile(r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\.?", re.S)
SURROGATE_ESCAPE = re.compile(
    r"\\\\|\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)


# zipfile raises RuntimeError for an encrypted member, NotImplementedError for an unsupported compression
# method, zip version or flag, and UnicodeDecodeError (a ValueError) for undecodable member names: all of
# them mean "this export cannot be read".
ZIP_PROBLEMS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, ValueError)


@dataclass(frozen=True)
class _Part:
    """One JSON file of the export: on disk, or a member of the export zip."""

    name: str  # for messages, e.g. "chat-history/conversations.json" or "export.zip:conversations.json"
    key: str  # its name inside the export, for the fingerprint
    path: Path
    member: zipfile.ZipInfo | None = None

    def open(self) -> BinaryIO:
        if self.member is None:
            return open(self.path, "rb")
        with zipfile.ZipFile(self.path) as archive:
            return archive.open(self.member)  # the member stream keeps its own handle on the file

    def fingerprint(self) -> bytes:
        """Name and size plus the CRC (zip) or the first and last 64 KiB (file): cheap for any size."""
        if self.member is not None:
            return f"{self.key}\0{self.member.file_size}\0{self.member.CRC}\0".encode()
        size = self.path.stat().st_size
        with open(self.path, "rb") as file:
            head = file.read(FINGERPRINT_SPAN)
            file.seek(max(size - FINGERPRINT_SPAN, 0))
            tail = file.read(FINGERPRINT_SPAN)
        return f"{self.key}\0{size}\0".encode() + hashlib.sha256(head + tail).digest()


class _CleanJson:
    """A file's bytes as UTF-8 yajl accepts: bad bytes become U+FFFD, a BOM is dropped and unpaired
    surrogate escapes (which crash ijson's C backend) become U+FFFD. Counts the bytes read."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.consumed = 0
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._carry = ""
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        while True:
            chunk = self.raw.read(READ_SIZE)
            self.consumed += len(chunk)
            text = self._carry + self._decoder.decode(chunk, final=not chunk)
            text, self._carry = _split_escape_tail(text) if chunk else (text, "")
            if text or not chunk:
                return _fix_surrogate_escapes(text).encode("utf-8")

    def first_byte(self) -> bytes:
        """The first non-whitespace byte (b"" for an empty file), left for the parser to read again."""
        while data := self.read():
            data = data.lstrip(b" \t\r\n")
            if data:
                self._pending = data
                return data[:1]
        return b""


def _split_escape_tail(text: str) -> tuple[str, str]:
    """Hold back the escapes that start in the last 12 characters (a surrogate pair is 12 long).

    The cut falls on an escape boundary: tokens are scanned from a backslash run found 40 characters
    before the end, which resynchronises within one token, well before the last 12 characters.
    """
    limit = len(text) - 12
    start = text.find("\\", max(limit - 28, 0))
    if start < 0:
        return text, ""
    while start > 0 and text[start - 1] == "\\":
        start -= 1
    for token in ESCAPE_TOKEN.finditer(text, start):
        if token.start() >= limit:
            return text[: token.start()], text[token.start():]
    return text, ""


def _fix_surrogate_escapes(text: str) -> str:
    if "\\ud" not in text and "\\uD" not in text:
        return text
    return SURROGATE_ESCAPE.sub(_surrogate_replacement, text)


def _surrogate_replacement(match: re.Match) -> str:
    if match.group(0) == "\\\\":
        return "\\\\"
    if match.group(1):
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    return "\ufffd"


def _choose(names: Iterable[str]) -> list[str]:
    """The export file(s) of the shallowest folder (root or one level down) holding any.

    A single conversations.json wins over shards beside it; shards are ordered by their number.
    """
    groups: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        folder, _, base = name.rpartition("/")
        match = EXPORT_FILE.fullmatch(base)
        if match and "/" not in folder:
            groups.setdefault(folder, []).append((-1 if match.group(1) is None else int(match.group(1)), name))
    if not groups:
        return []
    shallowest = min(groups, key=lambda folder: folder != "")
    if shallowest != "" and len(groups) > 1:
        raise InputError(f"several exports found ({', '.join(sorted(groups))}): point at one of them")
    files = sorted(groups[shallowest])
    return [files[0][1]] if files[0][0] == -1 else [name for _, name in files]


def _locate(path: Path, display: str) -> list[_Part]:
    """The JSON files to read, in order, for a folder, a zip archive or a JSON file."""
    if not path.exists():
        raise InputError(f"{display}: no such file or folder")
    if path.is_dir():
        chosen = _choose(_folder_names(path))
        if not chosen:
            raise InputError(f"{display}: no conversations.json or conversations-000.json in this folder")
        return [_Part(os.path.join(display, name), name, path / name) for name in chosen]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.replace("\\", "/"): info for info in archive.infolist() if not info.is_dir()}
        chosen = _choose(members)
        if not chosen:
            raise InputError(f"{display}: no conversations.json or conversations-000.json in this zip archive")
        return [_Part(f"{display}:{name}", name, path, members[name]) for name in chosen]
    if path.suffix.lower() == ".zip":
        raise InputError(f"{display}: not a readable zip archive (truncated or damaged?)")
    return [_Part(display, path.name, path)]


def _folder_names(path: Path) -> list[str]:
    """Export-file names in a folder and in its immediate subfolders ("sub/conversations.json")."""
    names = []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file() and EXPORT_FILE.fullmatch(entry.name):
                names.append(entry.name)
            elif entry.is_dir():
                with os.scandir(entry.path) as inner:
                    names += [f"{entry.name}/{e.name}" for e in inner if e.is_file() and EXPORT_FILE.fullmatch(e.name)]
    return names


def _items(part: _Part) -> Iterator[object]:
    """Stream the items of a part's top-level JSON array; any problem is one InputError naming the part."""
    try:
        with part.open() as raw:
            stream = _CleanJson(raw)
            first = stream.first_byte()
            if first != b"[":
                raise InputError(f"{part.name}: {_not_an_array(first)}")
            yield from ijson.items(stream, "item", use_float=True)
    except ijson.JSONError as error:
        raise InputError(f"{part.name}: {_json_problem(error, stream.consumed)}") from None
    except ZIP_PROBLEMS as error:
        raise InputError(f"{part.name}: cannot be read ({error})") from None


def _not_an_array(first: bytes) -> str:
    if not first:
        return "empty file"
    if first == b"{":
        return "top level is a JSON object, not an array of conversations"
    if first in b'"-0123456789tfn':
        return "top level is a single JSON value, not an array of conversations"
    return "not valid JSON"


def _json_problem(error: Exception, consumed: int) -> str:
    detail = error.args[0] if error.args else ""
    detail = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    detail = detail.strip().splitlines()[0] if detail.strip() else "parse error"
    if "premature EOF" in detail or "Incomplete JSON" in detail:
        return f"not valid JSON (truncated at byte {consumed:,})"
    return f"not valid JSON ({detail.rstrip('.')}, before byte {consumed:,})"


def _kind(item: object) -> str | None:
    if isinstance(item, dict):
        if "mapping" in item:
            return "chatgpt"
        if "chat_messages" in item:
            return "claude"
    return None


def _label(item: object, index: int) -> str:
    """A skipped item's conversation id when it has one, else its index in the export ("#12")."""
    if isinstance(item, dict):
        for field in LABEL_FIELDS[_kind(item)]:
            if isinstance(item.get(field), str) and item[field]:
                return chatgpt.clean(item[field])
    return f"#{index}"


class ExportReader:
    """Streams an export's conversations and keeps what it left out.

    After (or during) ``conversations()``: ``skipped`` lists (conversation id or "#index", reason) of
    malformed conversations, ``content_counts`` counts the kinds of nodes and blocks left out (thoughts,
    tool, hidden, thinking, tool_use, ...), ``duplicate_ids`` lists (id, new id) of conversations renamed
    because their id was already used. Each call of ``conversations()`` starts these afresh.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.display_path = str(path)
        try:
            self._parts = _locate(self.path, self.display_path)
        except ZIP_PROBLEMS as error:
            raise InputError(f"{self.display_path}: cannot be read ({error})") from None
        self.files = [part.name for part in self._parts]
        self.skipped: list[tuple[str, str]] = []
        self.content_counts: Counter[str] = Counter()
        self.duplicate_ids: list[tuple[str, str]] = []

    def fingerprint(self) -> str:
        """A stable, cheap sha256 of the export's files (names, sizes, and CRCs or first/last 64 KiB)."""
        digest = hashlib.sha256(b"sparky-export-v1\0")
        try:
            for part in sorted(self._parts, key=lambda part: part.key):
                digest.update(part.fingerprint())
        except OSError as error:
            raise InputError(f"{self.display_path}: cannot be read ({error})") from None
        return digest.hexdigest()

    def conversations(self) -> Iterator[Conversation]:
        """Every readable conversation, in export order; malformed ones are recorded in ``skipped``."""
        self.skipped, self.content_counts, self.duplicate_ids = [], Counter(), []
        seen: dict[str, int] = {}
        index = -1
        found = 0
        last_kind: str | None = None
        for part in self._parts:
            for item in _items(part):
                index += 1
                kind = _kind(item)
                if kind is None:
                    if not found and index + 1 >= PROBE_ITEMS:
                        raise InputError(f"{part.name}: {_NOT_EXPORT}")
                    self.skipped.append((_label(item, index), NOT_A_CONVERSATION[last_kind]))
                    continue
                found += 1
                last_kind = kind
                try:
                    conversation = CONVERTERS[kind].convert(item, self.content_counts)
                except Exception as error:  # one odd conversation never stops a run, whatever its oddity
                    reason = str(error) if isinstance(error, MalformedConversation) else (
                        f"unreadable ({type(error).__name__}: {error})")
                    self.skipped.append((_label(item, index), reason))
                    continue
                yield self._unique(conversation, seen)
        name = self.files[0] if len(self.files) == 1 else self.display_path
        if index < 0:
            raise InputError(f"{name}: the export holds no conversations (empty array)")
        if not found:
            raise InputError(f"{name}: {_NOT_EXPORT}")

    def _unique(self, conversation: Conversation, seen: dict[str, int]) -> Conversation:
        """The conversation, renamed "<id>#2", "#3", ... when its id was already used in this export."""
        count = seen.get(conversation.id, 0) + 1
        seen[conversation.id] = count
        if count == 1:
            return conversation
        new_id = f"{conversation.id}#{count}"
        while new_id in seen:
            count += 1
            new_id = f"{conversation.id}#{count}"
        seen[new_id] = 1
        self.duplicate_ids.append((conversation.id, new_id))
        messages = tuple(replace(message, conversation_id=new_id) for message in conversation.messages)
        return replace(conversation, id=new_id, messages=messages)


def read_export(path: str | os.PathLike[str]) -> Iterator[Conversation]:
    """Stream the conversations of an export (folder, .zip or JSON file)."""
    return ExportReader(path).conversations()
