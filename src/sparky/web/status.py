"""The ingestion status page's facts: the progress file's report, built as ``sparky progress`` builds it
(the file is replaced atomically and its journal replayed, so a read mid-run sees one whole checkpoint),
and what the store holds now."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SparkyError
from ..pipeline.progress import load_progress
from ..pipeline.report import Report, build_report
from .memory import Memory


@dataclass(frozen=True)
class Status:
    """The report (None when there is no progress file, or it cannot be read: ``problem`` says which), and
    the store's counts (None when there is no store yet: ``store_problem`` says why)."""

    progress_file: str
    report: Report | None
    problem: str | None
    store: dict[str, Any] | None
    store_problem: str | None
    store_url: str


def current_status(progress_file: Path, memory: Memory) -> Status:
    """What the progress file and the store say now."""
    report = problem = None
    try:
        progress = load_progress(progress_file)
    except SparkyError as exc:
        problem = str(exc)
    else:
        if progress is None:
            problem = f"No progress file at {progress_file}: no ingestion has written one there yet."
        else:
            report = build_report(progress_file, progress)
    store = store_problem = None
    try:
        with memory.reading() as reads:
            store = reads.store.stats()
    except SparkyError as exc:
        store_problem = str(exc)
    return Status(str(progress_file), report, problem, store, store_problem, memory.display_url)
