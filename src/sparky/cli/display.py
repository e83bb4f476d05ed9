"""The live display of an ingestion: the seed's progress lines with a rich progress bar and ETA, on stderr."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..models import Conversation
from ..words import plural
from .options import console as make_console

STOPPING = "Stopping after the current batch… (Ctrl+C again to stop now)"
STOPPED_NOW = ("Stopped now. Nothing is half-written: every stored message is complete. "
               "Resume with the same command.")


class Display:
    """Prints what the pipeline is doing; ``quiet`` shows nothing but problems, ``verbose`` every conversation.

    All of it is called on the main thread, the signal handler's ``stopping`` too. The bar redraws only
    when told (no refresh thread), so no other thread ever holds the bar's or the console's locks.
    """

    def __init__(self, console: Console | None = None, quiet: bool = False, verbose: bool = False) -> None:
        self.console = console or make_console(stderr=True)
        self.quiet = quiet
        self.verbose = verbose
        self._bar: Progress | None = None
        self._task = None
        self._total_conversations = 0
        self._done_conversations = 0
        self._session_conversations = 0
        self._remaining_at_start = 0

    def scanning(self, path: Path | str) -> None:
        if not self.quiet:
            self.console.print(f"Reading export: {escape(str(path))}")

    def start(self, total_conversations: int, done_conversations: int, total_messages: int,
              done_messages: int) -> None:
        self._total_conversations = total_conversations
        self._done_conversations = done_conversations
        self._remaining_at_start = total_conversations - done_conversations
        if self.quiet:
            return
        self.console.print(
            f"Resuming: {done_messages:,}/{plural(total_messages, 'message')} already stored" if done_messages
            else f"Starting: {plural(total_messages, 'meaningful message')} in "
                 f"{plural(total_conversations, 'conversation')}"
        )
        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("messages"),
            TimeRemainingColumn(), console=self.console, transient=False, auto_refresh=False,
        )
        self._task = self._bar.add_task(self._headline(), total=total_messages, completed=done_messages)
        self._bar.start()

    def _headline(self) -> str:
        return (f"Progress: {self._done_conversations:,}/{plural(self._total_conversations, 'conversation')} "
                f"(Session: {self._session_conversations:,}/{self._remaining_at_start:,})")

    def conversation(self, conversation: Conversation, found: int, skipped: int) -> None:
        if not self.verbose:
            return
        self.console.print(f"Processing: '{escape(conversation.title)}' ({escape(conversation.id)})")
        self.console.print(f"  Found {plural(found, 'meaningful message')}")
        if skipped:
            self.console.print(f"     {skipped:,} already processed, skipping")

    def conversation_failed(self, conversation: Conversation, error: BaseException) -> None:
        self.console.print(
            f"[red]Conversation '{escape(conversation.title)}' ({escape(conversation.id)}) failed:[/] "
            f"{escape(str(error))}"
        )

    def conversation_completed(self) -> None:
        self._done_conversations += 1
        self._session_conversations += 1
        if self._bar is not None:
            self._bar.update(self._task, description=self._headline(), refresh=True)

    def batch_stored(self, stored: int, failed: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=stored, refresh=True)
        if failed and not self.quiet:
            self.console.print(f"[yellow]  {plural(failed, 'message')} failed (retried by the next run)[/]")

    def stopping(self, immediate: bool) -> None:
        """Say at once that a stop was asked for (from the pipeline's signal handler, even when quiet):
        the first Ctrl+C or SIGTERM stops after the batch in flight, a second Ctrl+C stops now."""
        was_drawn = self._bar is not None
        self.finish()
        # on a terminal the "^C" echo is left where the cursor was; the bar's last redraw erases it
        lead = "\n" if self.console.is_terminal and not was_drawn else ""
        self.console.print(lead + (STOPPED_NOW if immediate else STOPPING), markup=False, highlight=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
