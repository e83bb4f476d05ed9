"""The progress report: the facts of a progress file, as the seed's text report or as JSON.

Reading never takes the ingester's locks: the progress file is replaced atomically, so a plain read
always sees one whole checkpoint, even while an ingestion is running.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .estimate import Estimate, format_duration
from .progress import DEFAULT_NAME
from .stores import redact

RULE = "=" * 80
FAILED_SHOWN = 5


@dataclass
class Counts:
    """Done and left of one kind of item."""

    total: int
    processed: int
    remaining: int
    percent: float

    @classmethod
    def of(cls, total: int, processed: int) -> "Counts":
        return cls(total, processed, max(total - processed, 0), round(100.0 * processed / total, 1) if total else 0.0)


@dataclass
class FailedMessage:
    """A message the last runs could not store, and why."""

    key: str
    error: str


@dataclass
class Report:
    """Everything the report says, in one record (also the JSON object of ``--json``)."""

    progress_file: str
    last_updated: str | None
    running_pid: int | None
    conversations: Counts
    messages: Counts
    last_session: dict[str, int]
    failed_messages: int
    failed_examples: list[FailedMessage]
    failed_conversations: list[list[str]]
    resume_command: str
    export: dict[str, Any]
    store: str | None
    embedder: dict[str, Any]
    sessions: int
    complete: bool
    estimate: Estimate | None = field(default=None)


def build_report(progress_path: Path, progress: dict[str, Any]) -> Report:
    """Collect the report's facts from a loaded progress document."""
    stats = progress["stats"]
    failed = progress.get("failed_messages") or {}
    messages = Counts.of(stats["total_messages"], stats["processed_messages"])
    return Report(
        progress_file=str(progress_path),
        last_updated=progress.get("last_updated"),
        running_pid=running_ingester(progress_path),
        conversations=Counts.of(stats["total_conversations"], len(progress.get("processed_conversations") or [])),
        messages=messages,
        last_session={
            "processed": stats["current_session_processed"],
            "skipped": stats["current_session_skipped"],
            "failed": stats["current_session_failed"],
        },
        failed_messages=len(failed),
        failed_examples=[FailedMessage(key, str(error)) for key, error in list(failed.items())[:FAILED_SHOWN]],
        failed_conversations=[list(item) for item in progress.get("failed_conversations") or []],
        resume_command=ingest_command_line(progress_path, (progress.get("export") or {}).get("path")),
        export=dict(progress.get("export") or {}),
        store=redact(progress["store"]) if progress.get("store") else None,
        embedder=dict(progress.get("embedder") or {}),
        sessions=len(progress.get("sessions") or []),
        complete=messages.total > 0 and messages.remaining == 0 and not failed,
    )


def running_ingester(progress_path: Path) -> int | None:
    """The pid of a live ingester holding this progress file, read from its lock file without locking."""
    try:
        text = Path(f"{progress_path}.lock").read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def ingest_command_line(progress_path: Path, export_path: str | None) -> str:
    """The command that resumes this ingestion; it also retries the failed messages."""
    parts = ["sparky", "ingest", export_path or "EXPORT"]
    if str(progress_path) != DEFAULT_NAME:
        parts += ["--progress-file", str(progress_path)]
    return " ".join(parts)


def to_json(report: Report) -> str:
    """The report as one JSON object."""
    return json.dumps({"exists": True, **asdict(report)}, ensure_ascii=False, indent=2)


def render_text(report: Report) -> str:
    """The seed's report, line for line, followed by the sections added since."""
    lines = [
        RULE,
        "SPARKY INGESTION PROGRESS REPORT",
        RULE,
        f"Last updated: {_timestamp(report.last_updated)}",
        "",
        "OVERALL PROGRESS:",
        f"Total conversations: {report.conversations.total:,}",
        f"Processed conversations: {report.conversations.processed:,}",
        f"Conversation progress: {report.conversations.percent:.1f}%",
        f"Remaining conversations: {report.conversations.remaining:,}",
        "",
        "MESSAGE PROCESSING:",
        f"Total messages found: {report.messages.total:,}",
        f"Messages processed: {report.messages.processed:,}",
        f"Message progress: {report.messages.percent:.1f}%",
        "",
        "LAST SESSION:",
        f"Processed: {report.last_session['processed']:,}",
        f" Skipped: {report.last_session['skipped']:,}",
        f"Failed: {report.last_session['failed']:,}",
        RULE,
    ]
    lines += _status_lines(report)
    lines += _failure_lines(report)
    lines += _setup_lines(report)
    if report.estimate is not None:
        lines += ["", *estimate_lines(report.estimate)]
    lines.append(RULE)
    return "\n".join(lines)


def _status_lines(report: Report) -> list[str]:
    if report.running_pid is not None:
        return [f"An ingestion is running (pid {report.running_pid}); figures are from its last checkpoint."]
    if report.complete:
        return ["INGESTION COMPLETE!", f" You can delete: {report.progress_file}"]
    return [f"Resume with: {report.resume_command}"]


def _failure_lines(report: Report) -> list[str]:
    if not report.failed_messages and not report.failed_conversations:
        return []
    lines = ["", f"FAILED MESSAGES: {report.failed_messages:,}"]
    lines += [f"  {item.key[:12]}  {item.error}" for item in report.failed_examples]
    if report.failed_messages > len(report.failed_examples):
        lines.append(f"  ... and {report.failed_messages - len(report.failed_examples):,} more in {report.progress_file}")
    lines += [f"Failed conversation {cid}: {reason}" for cid, reason in report.failed_conversations]
    lines.append("Every run retries them: run the resume command above.")
    return lines


def _setup_lines(report: Report) -> list[str]:
    embedder = report.embedder
    model = f"{embedder['model']} ({embedder.get('dimensions')} dimensions)" if embedder.get("model") else "not recorded"
    return [
        "",
        "SETUP:",
        f"Export: {report.export.get('path') or 'not recorded'}",
        f"Store: {report.store or 'not recorded'}",
        f"Embedder: {model}",
        f"Sessions so far: {report.sessions:,}",
    ]


def estimate_lines(estimate: Estimate) -> list[str]:
    """The TIME ESTIMATE section."""
    lines = ["TIME ESTIMATE:", f"Remaining messages: {estimate.remaining_messages:,}"]
    if estimate.seconds_low is not None and estimate.seconds_high is not None:
        lines += [
            f"Based on: {estimate.basis_text()}",
            f"Throughput: {estimate.rate_low:,.1f}-{estimate.rate_high:,.1f} messages/second",
            f"Total estimated time: {format_duration(estimate.seconds_low)} - {format_duration(estimate.seconds_high)}",
            f"Can be run in sessions: 1-2 hours each ({_session_count(estimate)})",
        ]
    if estimate.api_tokens is not None:
        lines.append(f"Tokens still to send to the embedding API: ~{estimate.api_tokens:,}")
    if estimate.note:
        lines.append(estimate.note)
    return lines


def _session_count(estimate: Estimate) -> str:
    low, high = estimate.sessions_low, estimate.sessions_high
    count = f"{low}" if low == high else f"{low}-{high}"
    return f"{count} session{'' if count == '1' else 's'}"


def _timestamp(value: str | None) -> str:
    if not value:
        return "never"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value
