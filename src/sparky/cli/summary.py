"""The closing message of an ingestion run, in the words the original tool used."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..pipeline.ingest import IngestResult

RULE = "=" * 80


def print_summary(console: Console, result: IngestResult, progress_file: Path, quiet: bool = False) -> None:
    """What was stored, skipped and failed; the seed's INGESTION COMPLETE! when everything is in."""
    console.print(RULE)
    if result.complete:
        console.print("[bold green]INGESTION COMPLETE![/]")
    elif result.interrupted:
        console.print("[bold yellow]INGESTION PAUSED[/]")
    else:
        console.print(f"[bold yellow]INGESTION FINISHED WITH {result.failed} FAILED MESSAGE(S)[/]")
    console.print(f"Conversations: {result.total_conversations:,}   "
                  f"Meaningful messages: {result.total_messages:,}   Stored: {result.stored_messages:,}")
    console.print(f"This session: stored {result.processed:,}, skipped (already stored) {result.skipped:,}, "
                  f"failed {result.failed:,}")
    if not quiet and result.dropped:
        dropped = ", ".join(f"{name} {count:,}" for name, count in sorted(result.dropped.items()))
        console.print(f"Left out (not meaningful): {dropped}")
    for conversation_id, reason in result.skipped_conversations:
        console.print(f"[yellow]Skipped malformed conversation {escape(str(conversation_id))}: {escape(reason)}[/]")
    for conversation_id, reason in result.failed_conversations:
        console.print(f"[red]Failed conversation {escape(conversation_id)}: {escape(reason)}[/]")
    if result.failed:
        console.print("Failed messages are kept in the progress file and retried by the next run.")
    if result.complete:
        console.print(f" You can delete: {progress_file}")
    console.print(RULE)
