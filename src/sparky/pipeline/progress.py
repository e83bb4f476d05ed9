"""The progress file: a checkpoint and a report of an ingestion, always written atomically.

The store is the source of truth; this file is reconciled with it at every start. Its fields are the
original tool's (``processed_conversations``, ``processed_messages``, ``last_updated``, ``stats``) with
new ones beside them (``version``, ``export``, ``store``, ``embedder``, ``failed_messages``, ``sessions``).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..crashpoints import crashpoint
from ..errors import InputError, SparkyError

if TYPE_CHECKING:
    from .scan import ExportScan

DEFAULT_NAME = "sparky_ingestion_progress.json"
VERSION = 1
_TMP_MARK = ".tmp-"
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


def load_progress(path: Path) -> dict[str, Any] | None:
    """Read the progress file, or None when there is none. A damaged or foreign file is an InputError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the progress file ({exc.strerror})") from None
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
    check_fields(path, merged)
    return merged


def save_progress(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a temp file in the same folder, fsync, os.replace, fsync of the folder."""
    data["last_updated"] = datetime.now().isoformat()
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    payload = json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        crashpoint("progress_tmp_written")
        crashpoint("before_replace")
        os.replace(tmp, path)
        crashpoint("after_replace")
        _fsync_folder(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SparkyError(f"{path}: cannot write the progress file ({exc.strerror})") from None


def remove_stale_temp_files(path: Path) -> int:
    """Delete temp files left by writers that were killed (their pid is gone). Returns how many."""
    removed = 0
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
