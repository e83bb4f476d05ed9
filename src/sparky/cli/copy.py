"""``sparky copy``: move a memory between stores (SQLite file <-> PostgreSQL) without embedding anything again."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from .options import console, friendly_errors


@click.command("copy")
@click.option("--from", "source_url", required=True, metavar="STORE", help="The store to copy from (path or URL).")
@click.option("--to", "target_url", required=True, metavar="STORE",
              help="The store to copy into (created if missing); messages it holds already are skipped.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000),
              help="Messages per transaction in the target.")
@friendly_errors
def copy_command(source_url: str, target_url: str, batch_size: int) -> None:
    """Copy every message, chunk and vector of one store into another. Resumable: run it again after a stop,
    and it copies only what the target lacks (twice in a row copies nothing the second time)."""
    from ..stores import open_store
    from ..pipeline.store_retry import with_store_retries
    from ..stores.copy import copy_store
    from .indexing import index_for_search

    out, err = console(), console(stderr=True)
    source = open_store(source_url, create=False)
    try:
        target = open_store(target_url)
        try:
            with Progress(TextColumn("Copying"), BarColumn(), MofNCompleteColumn(), TextColumn("messages"),
                          console=err, auto_refresh=False, disable=not err.is_terminal) as bar:
                task = bar.add_task("copy", total=source.message_count())
                result = copy_store(source, target, batch_size=batch_size, retrying=with_store_retries,
                                    on_batch=lambda p: bar.update(task, completed=p.done, refresh=True))
            index_for_search(target, err)
        finally:
            target.close()
    finally:
        source.close()
    out.print(f"Copied {result.copied:,} of {result.total:,} messages from {escape(source.url)} to "
              f"{escape(target.url)} ({result.skipped:,} were there already; model {escape(result.model)}, "
              f"{result.dimensions} dimensions). Nothing was embedded again.")
