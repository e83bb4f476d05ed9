"""The closing message of an ingestion run, in the words the original tool used; it goes to stdout."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..pipeline.ingest import IngestResult
from ..words import ordinal, plural

RULE = "=" * 80
POSITION_LABEL = re.compile(r"#(\d+)")  # the reader's label for a skipped item without an id


def print_summary(console: Console, result: IngestResult, progress_file: Path, export_files: list[str],
                  quiet: bool = False) -> None:
    """What was stored, skipped and failed; the seed's INGESTION COMPLETE! when everything is in."""
    console.print(RULE)
    if result.complete:
        console.print("[bold green]INGESTION COMPLETE![/]")
    elif result.interrupted:
        console.print("[bold yellow]INGESTION PAUSED[/]")
    else:
        console.print(f"[bold yellow]INGESTION FINISHED WITH {plural(result.failed, 'FAILED MESSAGE')}[/]")
    console.print(f"Conversations: {result.total_conversations:,}   "
                  f"Meaningful messages: {result.total_messages:,}   Stored: {result.stored_messages:,}")
    console.print(f"This session: stored {result.processed:,}, skipped (already stored) {result.skipped:,}, "
                  f"failed {result.failed:,}")
    versions = result.versions
    if versions and (versions["changed"] or versions["superseded"] or versions["pruned"] or result.previous_export):
        console.print(f"Messages: new {versions['new']:,}, changed {versions['changed']:,}, unchanged "
                      f"{versions['unchanged']:,}; superseded {versions['superseded']:,} (kept, hidden from search: "
                      f"--include-superseded), pruned {plural(versions['pruned'], 'conversation')}")
    if versions.get("absent"):
        console.print(f"Kept {plural(versions['absent'], 'stored conversation')} this export no longer holds "
                      "(--prune removes them, after showing them).")
    if result.previous_export:
        console.print(f"The progress file followed {escape(result.previous_export)} before; it now follows this "
                      "export (the store keeps the messages of both).")
    if not quiet and result.dropped:
        dropped = ", ".join(f"{name} {count:,}" for name, count in sorted(result.dropped.items()))
        console.print(f"Left out (not meaningful): {dropped}")
    for label, reason in result.skipped_conversations:
        console.print(f"[yellow]Skipped malformed conversation {escape(_skipped_label(label, export_files))}: "
                      f"{escape(reason)}[/]")
    for conversation_id, reason in result.failed_conversations:
        console.print(f"[red]Failed conversation {escape(conversation_id)}: {escape(reason)}[/]")
    if result.failed:
        console.print("Failed messages are kept in the progress file and retried by the next run.")
    if result.complete:
        console.print(f"You can delete: {escape(str(progress_file))}")
    console.print(RULE)


def _skipped_label(label: str, export_files: list[str]) -> str:
    """A skipped conversation's id; for an item without one ("#0"), also where it is in the export."""
    position = POSITION_LABEL.fullmatch(label)
    if position is None:
        return label
    item = ordinal(int(position.group(1)) + 1)
    if len(export_files) == 1:
        return f"{label} (the {item} item of {export_files[0]})"
    return f"{label} (the {item} item of the export, counted across its {len(export_files)} files)"
