"""The progress file: a checkpoint and a report of an ingestion, always written atomically.

The store is the source of truth; this file is reconciled with it at every start. Its fields are the
original tool's (``processed_conversations``, ``processed_messages``, ``last_updated``, ``stats``) with
new ones beside them (``version``, ``export``, ``store``, ``embedder``, ``failed_messages``, ``sessions``).

What a checkpoint writes does not grow with what is done. The file itself is rewritten whole (temp file,
fsync, ``os.replace``) only at a session's start, at its end and on a stop. In between, each checkpoint
appends one line to the journal beside it, ``<progress file>.journal``: a JSON object with only what
changed since the previous checkpoint (newly stored message keys, newly completed conversations,
failed-message changes, the current stats and session counters, ``last_updated``) and ``base``, the
``last_updated`` of the file it extends. ``load_progress`` replays the journal onto the file, so every
reader sees the latest checkpoint. A line is complete only with its newline (a torn last line is
ignored), keys are set-unioned (replaying is idempotent), and lines whose ``base`` is not the file's are
left over from before a rewrite and ignored; a rewrite deletes the journal once the new file is in place.
A new file and its temp files are owner-only (0o600), an existing file keeps its mode, and the journal
takes the file's mode (its facts are the same).
"""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..crashpoints import crashpoint
from ..errors import InputError, SparkyError

if TYPE_CHECKING:
    from .scan import ExportScan

DEFAULT_NAME = "sparky_ingestion_progress.json"
VERSION = 1
_TMP_MARK = ".tmp-"
JOURNAL_SUFFIX = ".journal"
OWNER_ONLY = 0o600
_READ_ATTEMPTS = 3
_FIELD_TYPES = {"processed_conversations": list, "processed_messages": list, "stats": dict, "export": dict,
                "embedder": dict, "failed_messages": dict, "sessions": list}
_JSON_NAMES = {list: "array", dict: "object"}


def empty_progress() -> dict[str, Any]:
    """A progress document with every field present and nothing done."""
    return {
        "processed_conversations": [],
        "processed_messages": [],
        "last_updated": None,
        "stats": {
            "total_conversations": 0,
            "total_messages": 0,
            "processed_messages": 0,
            "current_session_processed": 0,
            "current_session_skipped": 0,
            "current_session_failed": 0,
        },
        "version": VERSION,
        "export": {},
        "store": None,
        "embedder": {},
        "failed_messages": {},
        "sessions": [],
    }


def reconcile(
    progress: dict[str, Any],
    scan: "ExportScan",
    stored: set[str],
    session: dict[str, int] | None = None,
    failed_conversations: list[tuple[str, str]] | None = None,
) -> None:
    """Make ``progress`` say what the store holds for this export (the store wins)."""
    session = session or {"processed": 0, "skipped": 0, "failed": 0}
    all_keys = scan.all_keys()
    progress["processed_messages"] = [key for key in all_keys if key in stored]
    progress["processed_conversations"] = [
        cid for cid, keys in scan.conversation_keys.items() if all(key in stored for key in keys)
    ]
    progress["failed_messages"] = {k: e for k, e in progress["failed_messages"].items() if k not in stored}
    stats = progress["stats"]
    stats["total_conversations"] = len(scan.conversation_keys)
    stats["total_messages"] = len(all_keys)
    stats["processed_messages"] = len(progress["processed_messages"])
    stats["current_session_processed"] = session["processed"]
    stats["current_session_skipped"] = session["skipped"]
    stats["current_session_failed"] = session["failed"]
    progress["selection"] = {"dropped": dict(scan.dropped)}
    progress["skipped_conversations"] = [list(item) for item in scan.skipped_conversations]
    progress["failed_conversations"] = [list(item) for item in failed_conversations or []]


def journal_path(path: Path) -> Path:
    """The journal beside a progress file: one line per checkpoint since the file was last rewritten."""
    return path.with_name(f"{path.name}{JOURNAL_SUFFIX}")


def load_progress(path: Path) -> dict[str, Any] | None:
    """Read the progress file with its journal replayed, or None when there is none.

    A damaged or foreign file is an InputError; a damaged journal line ends the replay (what the store
    holds is reconciled at the next start anyway)."""
    raw, journal = _read_consistent(path)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path}: the progress file is damaged (not valid JSON)") from None
    if not isinstance(data, dict) or not {"processed_conversations", "processed_messages"} & data.keys():
        raise InputError(f"{path}: not a Sparky progress file")
    for name, kind in _FIELD_TYPES.items():
        if data.get(name) is None:
            data.pop(name, None)
        elif not isinstance(data[name], kind):
            raise InputError(f"{path}: not a Sparky progress file ('{name}' is not a JSON {_JSON_NAMES[kind]})")
    version = data.get("version", VERSION)
    if not isinstance(version, int) or version > VERSION:
        raise InputError(f"{path}: written by a newer Sparky (progress version {version}); upgrade sparky")
    merged = empty_progress()
    merged.update(data)
    merged["stats"] = {**empty_progress()["stats"], **data.get("stats", {})}
    _replay(merged, journal)
    check_fields(path, merged)
    return merged


def _read_consistent(path: Path) -> tuple[bytes | None, bytes]:
    """The file's bytes and its journal's, read so that the journal belongs to that file: when the file is
    replaced while the journal is read (a rewrite, which then deletes the journal), both are read again."""
    for _ in range(_READ_ATTEMPTS):
        try:
            with open(path, "rb") as handle:
                before = os.fstat(handle.fileno())
                raw = handle.read()
            journal = journal_path(path).read_bytes()
        except FileNotFoundError as exc:
            if exc.filename is not None and Path(exc.filename) == path:
                return None, b""
            journal = b""
        except OSError as exc:
            raise InputError(f"{exc.filename or path}: cannot read the progress file ({exc.strerror})") from None
        if _same_file(before, path):
            break
    return raw, journal


def _same_file(before: os.stat_result, path: Path) -> bool:
    try:
        after = os.stat(path)
    except OSError:
        return False
    return (before.st_dev, before.st_ino, before.st_mtime_ns, before.st_size) == (
        after.st_dev, after.st_ino, after.st_mtime_ns, after.st_size)


def _replay(progress: dict[str, Any], journal: bytes) -> None:
    """Apply the journal's complete lines written on top of this file, in order."""
    base = progress.get("last_updated")
    if not journal or not isinstance(base, str):
        return
    done, conversations = set(progress["processed_messages"]), set(progress["processed_conversations"])
    failed = progress["failed_messages"]
    applied = False
    for line in journal.split(b"\n")[:-1]:  # what follows the last newline is torn or still being written
        entry = _journal_entry(line)
        if entry is None:
            break  # a damaged line: the lines after it cannot be trusted to follow it
        if entry["base"] != base:
            continue  # left over from before the file was last rewritten: the file already holds it
        applied = True
        _union(progress["processed_messages"], done, entry["processed_messages"])
        _union(progress["processed_conversations"], conversations, entry["processed_conversations"])
        for key in entry["failed_removed"]:
            failed.pop(key, None)
        failed.update(entry["failed_messages"])
        if entry["failed_conversations"]:
            known = progress.get("failed_conversations")
            known = known if isinstance(known, list) else []
            progress["failed_conversations"] = known + [
                item for item in entry["failed_conversations"] if item not in known]
        progress["stats"].update(entry["stats"])
        if progress["sessions"] and isinstance(progress["sessions"][-1], dict):
            progress["sessions"][-1].update(entry["session"])
        progress["last_updated"] = entry["last_updated"]
    if applied:
        for key in [key for key in failed if key in done]:
            del failed[key]  # stored since it failed: the store wins
        progress["stats"]["processed_messages"] = len(progress["processed_messages"])


def _union(items: list[str], seen: set[str], new: list[str]) -> None:
    for item in new:
        if item not in seen:
            seen.add(item)
            items.append(item)


def _journal_entry(line: bytes) -> dict[str, Any] | None:
    """A journal line's object when it has every field with its JSON type, else None."""
    try:
        entry = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict):
        return None
    strings = lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value)  # noqa: E731
    whole = lambda value: isinstance(value, int) and not isinstance(value, bool)  # noqa: E731
    checks = {
        "base": lambda value: isinstance(value, str),
        "last_updated": lambda value: isinstance(value, str),
        "processed_messages": strings,
        "processed_conversations": strings,
        "failed_removed": strings,
        "failed_messages": lambda value: isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
        "failed_conversations": lambda value: isinstance(value, list) and all(strings(item) for item in value),
        "stats": lambda value: isinstance(value, dict) and all(whole(v) for v in value.values()),
        "session": lambda value: isinstance(value, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()),
    }
    return entry if all(name in entry and check(entry[name]) for name, check in checks.items()) else None


def save_progress(path: Path, data: dict[str, Any]) -> None:
    """Write the whole file atomically: a temp file in the same folder, fsync, os.replace, fsync of the
    folder; then delete the journal, which the new file holds. A new file is owner-only (0o600); an
    existing one keeps its mode."""
    data["last_updated"] = datetime.now().isoformat()
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    payload = json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8")
    try:
        mode = _mode_of(path)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY), "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # not the umask's, nor a stale temp file's
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        crashpoint("progress_tmp_written")
        crashpoint("before_replace")
        os.replace(tmp, path)
        crashpoint("after_replace")
        _fsync_folder(path.parent)
        journal_path(path).unlink(missing_ok=True)  # a crash before this: its lines' base is not the new file's
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SparkyError(f"{path}: cannot write the progress file ({exc.strerror})") from None


def append_journal(path: Path, line: bytes) -> None:
    """Append one checkpoint line to the file's journal: one O_APPEND write, then fsync.

    The journal is created with the file's mode (owner-only for a new file)."""
    journal = journal_path(path)
    try:
        mode = _mode_of(path)
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, OWNER_ONLY)
        try:
            created = os.fstat(fd).st_size == 0
            if created:
                os.fchmod(fd, mode)
            view = memoryview(line)
            while view:  # one write in practice; a short write continues where it stopped
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_folder(path.parent)
    except OSError as exc:
        raise SparkyError(f"{path}: cannot write the progress file ({exc.strerror})") from None
    crashpoint("journal_written")


def _mode_of(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return OWNER_ONLY


class ProgressCheckpoint:
    """The checkpoints of one session over one in-memory progress document.

    ``rewrite`` writes the whole file (at the session's start, at its end, on a stop). ``append`` writes
    one journal line with what changed since the previous checkpoint, so its size depends on the work of
    the last few batches, never on what is done; it updates the document the same way."""

    def __init__(self, path: Path, progress: dict[str, Any]) -> None:
        self.path = path
        self.progress = progress
        self._base: str | None = None
        self._failed: dict[str, str] = {}
        self._failed_conversations = 0

    def rewrite(self) -> None:
        save_progress(self.path, self.progress)
        self._base = self.progress["last_updated"]
        self._failed = dict(self.progress["failed_messages"])
        self._failed_conversations = len(self.progress.get("failed_conversations") or [])

    def append(self, new_keys: Sequence[str], new_conversations: Sequence[str],
               failed_conversations: Sequence[Sequence[str]], session: dict[str, int], seconds: float) -> None:
        """Checkpoint what changed since the last one: ``new_keys`` were stored and ``new_conversations``
        completed since then (none of them already in the document), ``failed_conversations`` is the
        session's whole list (only its new tail is written), ``progress["failed_messages"]`` is current."""
        if self._base is None:
            self.rewrite()
            return
        progress = self.progress
        keys = list(dict.fromkeys(new_keys))
        conversations = list(dict.fromkeys(new_conversations))
        failed = progress["failed_messages"]
        added = {key: error for key, error in failed.items() if self._failed.get(key) != error}
        removed = [key for key in self._failed if key not in failed]
        new_failed_conversations = [list(item) for item in failed_conversations[self._failed_conversations:]]
        stats = {**progress["stats"], "processed_messages": len(progress["processed_messages"]) + len(keys),
                 "current_session_processed": session["processed"], "current_session_skipped": session["skipped"],
                 "current_session_failed": session["failed"]}
        now = datetime.now().isoformat()
        line = json.dumps({
            "base": self._base, "last_updated": now, "processed_messages": keys,
            "processed_conversations": conversations, "failed_messages": added, "failed_removed": removed,
            "failed_conversations": new_failed_conversations, "stats": stats,
            "session": {"processed": session["processed"], "seconds": seconds},
        }, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        append_journal(self.path, line)
        progress["processed_messages"].extend(keys)
        progress["processed_conversations"].extend(conversations)
        if new_failed_conversations:
            progress["failed_conversations"] = list(progress.get("failed_conversations") or []) + new_failed_conversations
        progress["stats"] = stats
        if progress["sessions"]:
            progress["sessions"][-1].update(processed=session["processed"], seconds=seconds)
        progress["last_updated"] = now
        self._failed = dict(failed)
        self._failed_conversations = len(failed_conversations)


def remove_stale_temp_files(path: Path) -> int:
    """Delete temp files left by writers that were killed (their pid is gone), and a journal without its
    progress file (left by a reset killed half-way). Returns how many."""
    removed = 0
    if not path.exists() and journal_path(path).exists():
        journal_path(path).unlink(missing_ok=True)
        removed += 1
    for candidate in path.parent.glob(f".{path.name}{_TMP_MARK}*"):
        pid = candidate.name.rsplit(_TMP_MARK, 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            candidate.unlink(missing_ok=True)
            removed += 1
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_fields(path: Path, data: dict[str, Any]) -> None:
    """Raise InputError when the numbers the report reads are not numbers (a foreign or hand-edited file).

    ``load_progress`` checks the fields' JSON types; this checks the counts in ``stats`` and ``sessions``.
    """
    for name, value in data["stats"].items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{path}: not a Sparky progress file (stats '{name}' is not a whole number)")
    for session in data["sessions"]:
        if not isinstance(session, dict) or not all(
            isinstance(session.get(name, 0), (int, float)) for name in ("processed", "seconds")
        ):
            raise InputError(f"{path}: not a Sparky progress file (a session is not a record of numbers)")
