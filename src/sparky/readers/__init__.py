"""Read an export (folder, .zip or JSON file) as a stream of Conversations, never loading a whole file.

The format is detected from the content, or forced with ``format=``: an array of objects with ``mapping``
is a ChatGPT export, one with ``chat_messages`` a Claude.ai export. Anything else is one clear InputError.
Only conversations.json and its shards (conversations-000.json ...) are read, plus ChatGPT's
export_manifest.json and conversations.json.index to find missing shards: the other files beside them
(user.json, chat.html, projects.json, users.json, memories.json) are ignored.

Shards beside a stray conversations.json: both are read, the shards first in number order, so no
conversation is lost whichever file holds it. A conversation whose id was already read from another file is
the same conversation exported twice: it is skipped (``repeated_ids``, content_counts
"repeated_conversation"), so the shard copy (the newer, 2026 format) wins. Within one file a repeated id is
a different conversation and is renamed "<id>#2" (``duplicate_ids``). A copy that could not be read does
not count as read, so another file's copy still is; a do-not-remember copy does count, so an older copy
elsewhere cannot bring it back.

Missing shards: shards are numbered from 0. A gap in the numbers, or a shard that export_manifest.json or
conversations.json.index names or counts but that is absent, is listed in ``missing_shards`` and reported
in ``warnings``; the shards present are read. Their schema is not assumed: any shard file name in them
counts, and so do integers under keys such as shard_count, num_shards (a count) or shard (an index).

Conversations marked ``is_do_not_remember`` are skipped and counted (content_counts "do_not_remember")
unless ``include_do_not_remember=True``.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import re
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import ijson

from ..errors import InputError
from ..models import Conversation
from . import chatgpt, claude
from .chatgpt import MalformedConversation

__all__ = ["ExportReader", "read_export"]

EXPORT_FILE = re.compile(r"conversations(?:-(\d+))?\.json")
SHARD_FILE = re.compile(r"conversations-(\d+)\.json")
MANIFEST_FILES = ("export_manifest.json", "conversations.json.index")
MANIFEST_LIMIT = 8 * 1024 * 1024  # bytes of a manifest read at most (an index can be large)
MAX_SHARDS = 10_000  # shard numbers checked for gaps; a larger count or index in a manifest is not believed
SHARD_COUNT_KEYS = frozenset({"shards", "shardcount", "shardscount", "numshards", "numberofshards", "totalshards",
                              "nshards", "shardtotal"})  # lowercased, without "_" and "-"
SHARD_INDEX_KEYS = frozenset({"shard", "shardindex", "shardnumber", "shardno", "shardid"})
LISTED_NAMES = 10  # missing shards named in a warning; the rest are counted
FORMAT_KEYS = {"chatgpt": "mapping", "claude": "chat_messages"}
READ_SIZE = 64 * 1024
FINGERPRINT_SPAN = 64 * 1024
PROBE_ITEMS = 10  # this many unrecognised items before any conversation: not an export
READS = "Sparky reads ChatGPT and Claude.ai exports (the folder, its .zip, or conversations.json)"
NOT_AN_EXPORT = {  # by the format asked for
    "chatgpt": "not a ChatGPT export (its items have no 'mapping')",
    "claude": "not a Claude export (its items have no 'chat_messages')",
    None: "not a ChatGPT or Claude export (its items have neither 'mapping' nor 'chat_messages')",
}
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


@dataclass
class _Layout:
    """The export files to read, in order, and what their names and the manifests say about shards."""

    parts: list[_Part]
    notes: list[str] = field(default_factory=list)
    missing_shards: list[str] = field(default_factory=list)


def _choose(names: Iterable[str]) -> list[str]:
    """The export file(s) of the shallowest folder (root or one level down) holding any.

    Shards come first, ordered by their number, then a single conversations.json beside them.
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
    return [name for _, name in sorted(groups[shallowest], key=lambda file: (file[0] < 0, file))]


def _manifests(names: Iterable[str], chosen: list[str]) -> list[str]:
    """The manifest files in the folder of the chosen export files."""
    folder = chosen[0].rpartition("/")[0]
    return sorted({f"{folder}/{name}" if folder else name for name in MANIFEST_FILES}.intersection(names))


def _locate(path: Path, display: str) -> _Layout:
    """The JSON files to read, in order, for a folder, a zip archive or a JSON file."""
    if not path.exists():
        raise InputError(f"{display}: no such file or folder")
    if path.is_dir():
        return _in_folder(path, display)
    if zipfile.is_zipfile(path):
        return _in_zip(path, display)
    if path.suffix.lower() == ".zip":
        raise InputError(f"{display}: not a readable zip archive (truncated or damaged?)")
    return _Layout([_Part(display, path.name, path)])


def _in_folder(path: Path, display: str) -> _Layout:
    """The export files of a folder (or of the export folder inside it), and its manifests."""
    names = _folder_names(path)
    chosen = _choose(names)
    if not chosen:
        raise InputError(f"{display}: no conversations.json or conversations-000.json in this folder; {READS}")
    def part(name: str) -> _Part:
        return _Part(os.path.join(display, name), name, path / name)
    return _layout([part(name) for name in chosen], [part(name) for name in _manifests(names, chosen)])


def _in_zip(path: Path, display: str) -> _Layout:
    """The export members of a zip archive (at its root or in one folder), and its manifests."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename.replace("\\", "/"): info for info in archive.infolist() if not info.is_dir()}
    chosen = _choose(members)
    if not chosen:
        raise InputError(f"{display}: no conversations.json or conversations-000.json in this zip archive; {READS}")
    def part(name: str) -> _Part:
        return _Part(f"{display}:{name}", name, path, members[name])
    return _layout([part(name) for name in chosen], [part(name) for name in _manifests(members, chosen)])


def _folder_names(path: Path) -> list[str]:
    """Export and manifest file names in a folder and in its immediate subfolders ("sub/conversations.json")."""
    names = []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_file() and _wanted(entry.name):
                names.append(entry.name)
            elif entry.is_dir():
                with os.scandir(entry.path) as inner:
                    names += [f"{entry.name}/{e.name}" for e in inner if e.is_file() and _wanted(e.name)]
    return names


def _wanted(name: str) -> bool:
    return EXPORT_FILE.fullmatch(name) is not None or name in MANIFEST_FILES


def _layout(parts: list[_Part], manifests: list[_Part]) -> _Layout:
    """The parts, with notes on the shards read and the shard files missing.

    Shards are numbered from 0 without gaps, so every number up to the highest one known (from the file
    names or a manifest) should be present.
    """
    found = _shard_numbers(parts)
    notes = _shard_notes(parts, found)
    highest = max(found, default=-1)
    for manifest in manifests:
        listed, note = _highest_listed(manifest)
        highest = max(highest, listed)
        notes.append(note)
    width = min((len(digits) for digits in found.values()), default=3)
    missing = [f"conversations-{n:0{width}d}.json" for n in range(min(highest, MAX_SHARDS) + 1) if n not in found]
    return _Layout(parts, notes, missing)


def _shard_notes(parts: list[_Part], found: dict[int, str]) -> list[str]:
    """What was found: the shard files read, and a stray conversations.json beside them."""
    if not found:
        return []
    names = [f"conversations-{digits}.json" for digits in found.values()]
    notes = [f"{len(names)} shard file{'s' if len(names) > 1 else ''} read: "
             + (names[0] if len(names) == 1 else f"{names[0]} to {names[-1]}")]
    if any(part.key.rpartition("/")[2] == "conversations.json" for part in parts):
        notes.append("conversations.json beside the shards is read after them; a conversation already read "
                     "from a shard is skipped there")
    return notes


def _shard_numbers(parts: list[_Part]) -> dict[int, str]:
    """The shard number of each shard part, with its digits as written ("001")."""
    numbers: dict[int, str] = {}
    for part in parts:
        match = SHARD_FILE.fullmatch(part.key.rpartition("/")[2])
        if match:
            numbers.setdefault(int(match.group(1)), match.group(1))
    return numbers


def _highest_listed(manifest: _Part) -> tuple[int, str]:
    """The highest shard number a manifest implies in its first MANIFEST_LIMIT bytes (-1: none), and a note."""
    highest = -1
    base = manifest.key.rpartition("/")[2]
    try:
        with manifest.open() as raw:
            stream = _CleanJson(raw)
            for prefix, event, value in ijson.parse(stream):
                highest = max(highest, _shard_in(prefix, event, value))
                if stream.consumed > MANIFEST_LIMIT:
                    break
    except (ijson.JSONError, *ZIP_PROBLEMS) as error:
        return highest, f"{base} could not be read to the end ({type(error).__name__}); what came before was used"
    return highest, f"{base} names shards up to number {highest}" if highest >= 0 else f"{base} names no shards"


def _shard_in(prefix: str, event: str, value: object) -> int:
    """The highest shard number one parse event implies (-1: none): a shard file name, or an integer under
    a shard count key (count - 1) or a shard index key."""
    if event in ("string", "map_key"):
        match = SHARD_FILE.fullmatch(str(value).replace("\\", "/").rpartition("/")[2])
        return int(match.group(1)) if match and int(match.group(1)) <= MAX_SHARDS else -1
    if event != "number" or not 0 <= value <= MAX_SHARDS or value != int(value):
        return -1
    key = prefix.rpartition(".")[2].lower().replace("_", "").replace("-", "")
    if key in SHARD_COUNT_KEYS:
        return int(value) - 1
    return int(value) if key in SHARD_INDEX_KEYS else -1


def _missing_warning(display: str, missing: list[str]) -> str:
    """One line naming the missing shard files (the first LISTED_NAMES of them)."""
    names = ", ".join(missing[:LISTED_NAMES])
    if len(missing) > LISTED_NAMES:
        names += f" and {len(missing) - LISTED_NAMES} more"
    return (f"{display}: {len(missing)} shard file{'s' if len(missing) > 1 else ''} missing ({names}); "
            "the conversations in them are not read: download or extract the export again")


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


def _kind(item: object, forced: str | None = None) -> str | None:
    """The item's format by its structure ("chatgpt", "claude"); with `forced`, that format or None."""
    if not isinstance(item, dict):
        return None
    if forced is not None:
        return forced if FORMAT_KEYS[forced] in item else None
    return next((kind for kind, key in FORMAT_KEYS.items() if key in item), None)


def _label(item: object, index: int) -> str:
    """A skipped item's conversation id when it has one, else its index in the export ("#12")."""
    if isinstance(item, dict):
        for field_name in LABEL_FIELDS[_kind(item)]:
            if isinstance(item.get(field_name), str) and item[field_name]:
                return chatgpt.clean(item[field_name])
    return f"#{index}"


class ExportReader:
    """Streams an export's conversations and keeps what it left out.

    From the start: ``files`` are the files read, in order; ``notes`` say what was found (shards, a stray
    conversations.json, manifests); ``missing_shards`` names the shard files missing and ``warnings`` holds
    one line per problem for the user (a missing shard). After (or during) ``conversations()``: ``skipped``
    lists (conversation id or "#index", reason) of malformed conversations, ``content_counts`` counts the
    kinds of nodes and blocks left out (thoughts, tool, hidden, thinking, tool_use, ...) and the
    conversations left out whole (do_not_remember, repeated_conversation), ``duplicate_ids`` lists (id, new
    id) of conversations renamed because their id was already used in the same file, ``repeated_ids`` lists
    (id, file) of conversations skipped in a file because an earlier file held them, ``withheld_ids`` the ids
of the conversations left out as not to be remembered. Each call of
    ``conversations()`` starts these afresh.

    ``format`` ("chatgpt" or "claude") reads only that format's items (the others are skipped as not a
    conversation); None detects it by structure. ``include_do_not_remember`` reads conversations marked
    is_do_not_remember too.
    """

    def __init__(self, path: str | os.PathLike[str], *, format: str | None = None,
                 include_do_not_remember: bool = False) -> None:
        if format is not None and format not in FORMAT_KEYS:
            raise InputError(f"unknown export format {format!r}: expected 'chatgpt' or 'claude'")
        self.path = Path(path)
        self.display_path = str(path)
        self.format = format
        self.include_do_not_remember = include_do_not_remember
        try:
            layout = _locate(self.path, self.display_path)
        except ZIP_PROBLEMS as error:
            raise InputError(f"{self.display_path}: cannot be read ({error})") from None
        self._parts = layout.parts
        self.files = [part.name for part in self._parts]
        self.notes = layout.notes
        self.missing_shards = layout.missing_shards
        self.warnings = [_missing_warning(self.display_path, self.missing_shards)] if self.missing_shards else []
        self.skipped: list[tuple[str, str]] = []
        self.content_counts: Counter[str] = Counter()
        self.duplicate_ids: list[tuple[str, str]] = []
        self.repeated_ids: list[tuple[str, str]] = []
        self.withheld_ids: list[str] = []

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
        """Every readable conversation, in export order; what is left out is recorded (see the class)."""
        self.skipped, self.content_counts, self.duplicate_ids, self.repeated_ids = [], Counter(), [], []
        self.withheld_ids = []
        seen: dict[str, int] = {}
        origin: dict[str, int] = {}  # conversation id -> the number of the file it was read from
        index = -1
        found = 0
        last_kind = self.format
        for number, part in enumerate(self._parts):
            for item in _items(part):
                index += 1
                kind = _kind(item, self.format)
                if kind is None:
                    if not found and index + 1 >= PROBE_ITEMS:
                        raise InputError(f"{part.name}: {NOT_AN_EXPORT[self.format]}")
                    self.skipped.append((_label(item, index), NOT_A_CONVERSATION[last_kind]))
                    continue
                found += 1
                last_kind = kind
                conversation = self._take(item, kind, index, number, origin)
                if conversation is not None:
                    yield self._unique(conversation, seen)
        name = self.files[0] if len(self.files) == 1 else self.display_path
        if index < 0:
            raise InputError(f"{name}: the export holds no conversations (empty array)")
        if not found:
            raise InputError(f"{name}: {NOT_AN_EXPORT[self.format]}")

    def _take(self, item: dict, kind: str, index: int, number: int, origin: dict[str, int]) -> Conversation | None:
        """The item as a Conversation; None (recorded) when an earlier file held it, when it is not to be
        remembered, or when it cannot be read. `number` is its file's, `origin` the file of each id read."""
        try:
            conversation_id = CONVERTERS[kind].conversation_id_of(item)
            if origin.get(conversation_id, number) != number:
                self.repeated_ids.append((conversation_id, self.files[number]))
                self.content_counts["repeated_conversation"] += 1
                return None
            if item.get("is_do_not_remember") is True and not self.include_do_not_remember:
                origin[conversation_id] = number
                self.content_counts["do_not_remember"] += 1
                self.withheld_ids.append(conversation_id)
                return None
            conversation = CONVERTERS[kind].convert(item, self.content_counts)
        except Exception as error:  # one odd conversation never stops a run, whatever its oddity
            reason = str(error) if isinstance(error, MalformedConversation) else (
                f"unreadable ({type(error).__name__}: {error})")
            self.skipped.append((_label(item, index), reason))
            return None
        origin[conversation_id] = number
        return conversation

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


def read_export(path: str | os.PathLike[str], *, format: str | None = None,
                include_do_not_remember: bool = False) -> Iterator[Conversation]:
    """Stream the conversations of an export (folder, .zip or JSON file); options as ExportReader's."""
    return ExportReader(path, format=format, include_do_not_remember=include_do_not_remember).conversations()
