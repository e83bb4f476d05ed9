"""The progress report: the facts of a progress file, as the seed's text report or as JSON.

Reading never takes the ingester's locks: the progress file is replaced atomically, so a plain read
always sees one whole checkpoint, even while an ingestion is running.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .estimate import SESSION_HOURS, Estimate, PassEstimate, estimate_pass, format_duration
from ..embedders.pricing import format_cost
from .progress import DEFAULT_NAME
from .progressive import is_static, is_transformer
from ..stores import Store, redact
from ..words import plural

RULE = "=" * 80
FAILED_SHOWN = 5
KEYS_SHOWN = 3


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
class FailureGroup:
    """Failed messages that share their last error: how many, and the keys of the first few."""

    error: str
    count: int
    keys: list[str]


@dataclass
class PassState:
    """One pass of a progressive ingestion: its embedding space, the chunks holding a vector in it."""

    number: int
    model: str
    dimensions: int
    vectors: int
    chunks: int
    primary: bool
    estimate: PassEstimate | None = None  # the time left (pass 2, with --estimate-time)


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
    failed_errors: list[FailureGroup]
    failed_conversations: list[list[str]]
    resume_command: str
    export: dict[str, Any]
    store: str | None
    embedder: dict[str, Any]
    sessions: int
    complete: bool
    estimate: Estimate | None = None
    passes: list[PassState] = field(default_factory=list)  # a progressive ingestion's two passes


def build_report(progress_path: Path, progress: dict[str, Any]) -> Report:
    """Collect the report's facts from a loaded progress document."""
    stats = progress["stats"]
    failed = progress["failed_messages"]
    messages = Counts.of(stats["total_messages"], stats["processed_messages"])
    return Report(
        progress_file=str(progress_path),
        last_updated=progress.get("last_updated"),
        running_pid=running_ingester(progress_path),
        conversations=Counts.of(stats["total_conversations"], len(progress["processed_conversations"])),
        messages=messages,
        last_session={
            "processed": stats["current_session_processed"],
            "skipped": stats["current_session_skipped"],
            "failed": stats["current_session_failed"],
        },
        failed_messages=len(failed),
        failed_errors=failure_groups(failed),
        failed_conversations=[list(item) for item in progress.get("failed_conversations", [])],
        resume_command=ingest_command_line(progress_path, progress["export"].get("path")),
        export=dict(progress["export"]),
        store=redact(progress["store"]) if progress["store"] else None,
        embedder=dict(progress["embedder"]),
        sessions=len(progress["sessions"]),
        complete=messages.total > 0 and messages.remaining == 0 and not failed,
    )


def progressive_passes(store: Store, estimate: bool = False) -> list[PassState]:
    """Both passes of a progressive ingestion (the static space and the transformer's, pass 2 with its time
    left when ``estimate``), or [] for a store that holds no such pair of spaces."""
    counts, chunks = store.space_vectors(), store.stats()["chunks"]
    meta = store.meta()
    static = [space for space in counts if is_static(space.model)]
    transformers = [space for space in counts if is_transformer(space.model)]
    if not static or not transformers:
        return []
    second = max(transformers, key=lambda space: counts[space])
    passes = []
    for number, space in ((1, static[0]), (2, second)):
        primary = (meta.get("model"), meta.get("dimensions")) == (space.model, str(space.dimensions))
        passes.append(PassState(number, space.model, space.dimensions, counts[space], chunks, primary))
    if estimate:
        passes[1].estimate = estimate_pass(store, second)
    return passes


def failure_groups(failed: dict[str, str]) -> list[FailureGroup]:
    """The most common last errors first, at most ``FAILED_SHOWN`` of them."""
    groups: dict[str, FailureGroup] = {}
    for key, error in failed.items():
        group = groups.setdefault(str(error), FailureGroup(str(error), 0, []))
        group.count += 1
        if len(group.keys) < KEYS_SHOWN:
            group.keys.append(key)
    return sorted(groups.values(), key=lambda group: -group.count)[:FAILED_SHOWN]


def running_ingester(progress_path: Path) -> int | None:
    """The pid of the ingester holding this progress file now (0 when it left no pid), else None.

    Asks the lock itself: a pid left in the lock file by a killed process may since belong to another."""
    from ..locking import FileLock

    return FileLock(progress_path, f"progress file {progress_path}").holder()


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
        f"Skipped: {report.last_session['skipped']:,}",
        f"Failed: {report.last_session['failed']:,}",
        RULE,
    ]
    lines += _status_lines(report)
    lines += _failure_lines(report)
    lines += _pass_lines(report)
    lines += _setup_lines(report)
    if report.estimate is not None:
        lines += ["", *estimate_lines(report.estimate)]
    lines.append(RULE)
    return "\n".join(lines)


def _status_lines(report: Report) -> list[str]:
    if report.running_pid is not None:
        return [f"An ingestion is running (pid {report.running_pid}); figures are from its last checkpoint."]
    if report.complete:
        return ["INGESTION COMPLETE!", f"You can delete: {report.progress_file}"]
    return [f"Resume with: {report.resume_command}"]


def _failure_lines(report: Report) -> list[str]:
    if not report.failed_messages and not report.failed_conversations:
        return []
    lines = ["", f"FAILED MESSAGES: {report.failed_messages:,}"]
    for group in report.failed_errors:
        keys = ", ".join(key[:12] for key in group.keys) + (", ..." if group.count > len(group.keys) else "")
        lines.append(f"  {group.count:,} x {group.error}  (keys {keys})")
    shown = sum(group.count for group in report.failed_errors)
    if report.failed_messages > shown:
        lines.append(f"  {report.failed_messages - shown:,} more with other errors, listed in {report.progress_file}")
    lines += [f"Failed conversation {cid}: {reason}" for cid, reason in report.failed_conversations]
    lines.append(f"The next run retries them: {report.resume_command}")
    return lines


def _pass_lines(report: Report) -> list[str]:
    """The PASSES section: stored messages, then each space's vectors over the chunks."""
    if not report.passes:
        return []
    lines = ["", "PASSES (progressive ingestion):"]
    for state in report.passes:
        percent = 100.0 * state.vectors / state.chunks if state.chunks else 0.0
        role = "static, searchable at once" if state.number == 1 else "transformer"
        status = "the primary space" if state.primary else (
            "complete" if state.vectors >= state.chunks else "becomes primary once complete")
        stored = f"{report.messages.processed:,}/{report.messages.total:,} messages stored; " if state.number == 1 else ""
        lines.append(f"Pass {state.number} ({role}, {state.model}): {stored}{state.vectors:,}/"
                     f"{plural(state.chunks, 'chunk')} with vectors ({percent:.1f}%); {status}")
        if state.estimate is not None:
            lines.append(f"Pass {state.number} time left: {format_duration(state.estimate.seconds_low)} - "
                         f"{format_duration(state.estimate.seconds_high)} (calibration: "
                         f"{plural(state.estimate.measured_chunks, 'chunk')} in "
                         f"{state.estimate.measured_seconds:.1f}s)")
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
            _session_line(estimate),
        ]
    if estimate.api_tokens is not None:
        counted = "" if estimate.api_tokens_exact else "~"
        lines.append(f"Tokens still to send to the embedding API: {counted}{estimate.api_tokens:,}")
        lines.append(f"Cost still to pay at the list price: {format_cost(estimate.api_cost)}"
                     + ("" if estimate.api_cost is not None else " (no list price for this model and host)"))
    if estimate.note:
        lines.append(estimate.note)
    return lines


def _session_line(estimate: Estimate) -> str:
    """How the work splits into sessions of 1-2 hours; a job shorter than the shortest session is one."""
    shortest, longest = SESSION_HOURS
    if estimate.seconds_high <= shortest * 3600:
        return f"Fits in one session (under {plural(shortest, 'hour')})."
    low, high = estimate.sessions_low, estimate.sessions_high
    count = plural(low, "session") if low == high else f"{low}-{high} sessions"
    return f"Can be run in sessions: {shortest}-{longest} hours each ({count})"


def _timestamp(value: object) -> str:
    if not value:
        return "never"
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)
