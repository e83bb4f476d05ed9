"""Rebuild a lost or damaged progress file from the store, which is the source of truth.

The export is the one named with ``--export`` or, failing that, the one the progress file records; it
is matched by fingerprint, never by path, so a progress file copied from another machine works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, StoreError
from ..locking import FileLock
from .progress import empty_progress, load_progress, reconcile, remove_stale_temp_files, save_progress
from ..readers import ExportReader
from .scan import scan_export
from ..stores import Store, open_store


@dataclass
class RebuildResult:
    """What the rebuilt progress file says, and whether the old one could be kept as a base."""

    total_messages: int
    stored_messages: int
    kept_history: bool


def open_matching_export(progress: dict[str, Any] | None, export: Path | None, progress_path: Path) -> ExportReader:
    """The export of this progress file: ``export`` if given, else the recorded path; same fingerprint."""
    recorded = (progress or {}).get("export") or {}
    path = export or (Path(recorded["path"]) if recorded.get("path") else None)
    if path is None:
        raise InputError(f"{progress_path}: does not record its export; name it with --export PATH")
    if not path.exists():
        raise InputError(f"{path}: export not found (was the progress file copied from another machine?); "
                         "name it with --export PATH")
    reader = ExportReader(path)
    if recorded.get("fingerprint") and reader.fingerprint() != recorded["fingerprint"]:
        raise InputError(f"{path}: not the export {progress_path} belongs to (its content differs); "
                         "name the right one with --export PATH")
    return reader


def open_existing_store(url: str) -> Store:
    """Open a store that must already exist (a rebuild never creates an empty one)."""
    return open_store(url, create=False)


def rebuild_progress(progress_path: Path, store: Store, export: Path | None) -> RebuildResult:
    """Write the progress file the store implies for the export, atomically, under the ingester's locks."""
    with FileLock(progress_path, f"progress file {progress_path}"), store.lock():
        remove_stale_temp_files(progress_path)
        try:
            progress = load_progress(progress_path)
        except InputError as exc:
            if export is None:
                raise InputError(f"{exc}; name its export with --export PATH to rebuild it") from None
            progress = None
        if progress is None and export is None:
            raise InputError(f"{progress_path}: no progress file to take the export from; name it with --export PATH")
        reader = open_matching_export(progress, export, progress_path)
        kept_history = progress is not None
        progress = progress or empty_progress()
        scan = scan_export(reader)
        stored = store.known(scan.all_keys())
        stats = progress["stats"]
        session = {"processed": stats["current_session_processed"], "skipped": stats["current_session_skipped"],
                   "failed": stats["current_session_failed"]}
        reconcile(progress, scan, stored, session, [tuple(item) for item in progress.get("failed_conversations") or []])
        progress["export"] = {"path": reader.display_path, "fingerprint": reader.fingerprint()}
        progress["store"] = store.url
        meta = store.stats()
        if meta.get("model"):
            progress["embedder"] = {"model": meta["model"], "dimensions": meta["dimensions"]}
        save_progress(progress_path, progress)
        return RebuildResult(scan.total_messages, len(stored), kept_history)
