"""Start over: remove what an export put in the store, and its progress file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..locking import FileLock
from .progress import journal_path, load_progress
from ..readers import ExportReader
from .scan import scan_export
from ..stores import Store


@dataclass
class ResetResult:
    removed_messages: int
    removed_progress_file: bool


def reset_export(export: Path | None, progress_path: Path, store: Store) -> ResetResult:
    """Delete the export's messages (by key, from the export and from the progress file) with every earlier
    version of its conversations' messages (superseded by a re-import), and the file."""
    with FileLock(progress_path, f"progress file {progress_path}"), store.lock():
        keys: set[str] = set()
        try:
            progress = load_progress(progress_path)
        except InputError:  # a damaged progress file is what a reset is for: delete it all the same
            progress = None
        if progress is not None:
            keys.update(progress.get("processed_messages", []))
            keys.update(progress.get("failed_messages", {}))
        if export is not None:
            try:
                scan = scan_export(ExportReader(export))
                keys.update(scan.all_keys())
                keys.update(store.keys_of_conversations((source, cid) for cid, source in scan.sources.items()))
            except InputError:
                if progress is None and not progress_path.exists():
                    raise
        removed = store.delete_keys(keys)
        existed = progress_path.exists()
        progress_path.unlink(missing_ok=True)
        journal_path(progress_path).unlink(missing_ok=True)
        return ResetResult(removed, existed)
