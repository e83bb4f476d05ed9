"""``sparky reembed``: add another model's vectors to a store from the chunk texts it holds, resumable."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..words import plural
from .display import STOPPED_NOW, STOPPING
from .indexing import index_for_search
from .ingest import NetworkOptions, _embedder
from .options import (EXIT_INTERRUPTED, DEFAULT_DB_NAME, confirm_sending, console, friendly_errors, network_options,
                      retry_options, retry_policy)

if TYPE_CHECKING:
    from ..pipeline.reembed import ReembedResult
    from ..stores import Space


@click.command("reembed")
@click.option("--embedder", required=True, help="The model of the new embedding space: minilm, minilm-fp32, "
              "minilm-int8 or wordllama (local), or openai (opt-in, sends the chunk texts: see --model).")
@click.option("--db", "db", envvar="SPARKY_DB", default=DEFAULT_DB_NAME, show_default=True,
              help="Memory store: a SQLite file path or a postgresql:// URL.")
@click.option("--replace", is_flag=True, help="Make the new space the store's primary one (what ingest and search "
              "use) once every chunk has its vector; the other spaces' vectors are kept.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1, 4096),
              help="Chunks per embedding batch (one commit each).")
@retry_options
@network_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask before sending texts to a network embedder.")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems and the final line.")
@friendly_errors
def reembed_command(embedder: str, db: str, replace: bool, batch_size: int, retries: int, retry_delay: float,
                    max_retry_delay: float, model: str | None, base_url: str | None, api_key_env: str,
                    dimensions: int | None, concurrency: int, yes: bool, quiet: bool) -> None:
    """Embed the chunks a store holds with another model, as a space of its own; stop any time, rerun to resume."""
    from ..crashpoints import crashpoint
    from ..embedders import resolve_embedder
    from ..pipeline.ingest import Interrupted, StopRequest
    from ..pipeline.reembed import Reembedding, texts_to_reembed
    from ..stores import open_store

    out, err = console(), console(stderr=True)
    name = resolve_embedder(embedder, None)  # an unknown name is one line, before anything is opened
    stop = StopRequest()  # from here on a Ctrl+C or SIGTERM is a clean stop (exit 130), even while the model loads
    stop.install()
    try:
        display = ReembedDisplay(err, quiet=quiet)
        stop.display = display
        store = open_store(db, create=False)
        try:
            crashpoint("loading_model")
            embedder_ = _embedder(name, NetworkOptions(model, base_url, api_key_env, dimensions, concurrency))
            if hasattr(embedder_, "bind_stop"):  # a network model: say what is sent where, and ask
                confirm_sending(embedder_, texts_to_reembed(store, embedder_.model), yes, err)
            retry = retry_policy(retries, retry_delay, max_retry_delay)
            run = Reembedding(store, embedder_, display, batch_chunks=batch_size, stop=stop, retry=retry,
                              replace=replace)
            try:
                result = run.run()
            except Interrupted:
                out.print("[yellow]Interrupted[/] before anything was embedded.")
                sys.exit(EXIT_INTERRUPTED)
            if result.complete:
                index_for_search(store, err, quiet, result.space)
        finally:
            store.close()
    finally:
        stop.restore()
    print_result(out, result, replace)
    if result.interrupted:
        out.print("Resume with the same command.")
        sys.exit(EXIT_INTERRUPTED)
    if not result.complete:
        sys.exit(1)


def print_result(out: Console, result: "ReembedResult", replace: bool) -> None:
    """One line: what the run wrote, where the space stands, whether it is the primary one."""
    space = f"{escape(result.space.model)} ({result.space.dimensions} dimensions)"
    status = "complete" if result.complete else "incomplete"
    line = (f"{'Interrupted' if result.interrupted else 'Done'}: {space} holds {result.vectors:,}/"
            f"{plural(result.chunks, 'chunk')} ({status}); this run wrote {plural(result.written, 'vector')}")
    if result.written != result.embedded:
        line += f" from {plural(result.embedded, 'distinct text')}"
    if result.failed:
        line += f", {plural(result.failed, 'chunk')} failed (retried by the next run)"
    primary = "the primary space" if result.primary else (
        "not primary: rerun with --replace once complete" if replace else "not primary (--replace makes it so)")
    out.print(f"{line}; {primary}.")


class ReembedDisplay:
    """The live progress of a re-embedding on stderr: a rich bar over the chunks, redrawn only when told
    (no refresh thread), as ``display.Display`` does for an ingestion."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._bar: Progress | None = None
        self._task = None

    def start(self, space: "Space", chunks: int, held: int) -> None:
        if self.quiet:
            return
        self.console.print(f"{'Resuming' if held else 'Starting'}: {escape(space.model)} ({space.dimensions} "
                           f"dimensions), {held:,}/{plural(chunks, 'chunk')} embedded")
        self._bar = Progress(TextColumn("Re-embedding"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"),
                             TimeRemainingColumn(), console=self.console, transient=False, auto_refresh=False)
        self._task = self._bar.add_task("reembed", total=chunks, completed=held)
        self._bar.start()

    def batch_stored(self, stored: int, failed: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=stored, refresh=True)
        if failed and not self.quiet:
            self.console.print(f"[yellow]  {plural(failed, 'chunk')} failed (retried by the next run)[/]")

    def stopping(self, immediate: bool) -> None:
        """Say at once that a stop was asked for (even when quiet)."""
        self.finish()
        self.console.print(STOPPED_NOW if immediate else STOPPING, markup=False, highlight=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
