"""``sparky ingest``: read an export, embed what the store lacks, resumable at any moment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console

from ..errors import SparkyError
from ..pipeline.progress import DEFAULT_NAME
from .options import EXIT_INTERRUPTED, db_option, friendly_errors, progress_file_option, store_url
from .reset import run_reset


@click.command("ingest")
@click.argument("export", type=click.Path(path_type=Path))
@progress_file_option
@db_option
@click.option("--embedder", help="Embedding model, local and offline: minilm (default), minilm-fp32, "
              "minilm-int8 or wordllama. A store keeps the one it was built with.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1, 4096),
              help="Chunks per embedding batch.")
@click.option("--reset", is_flag=True, help="Forget this export's progress and stored messages, then start over.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --reset deletes anything.")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems and the final summary.")
@click.option("--verbose", "-v", is_flag=True, help="Print every conversation as it is processed.")
@click.pass_context
@friendly_errors
def ingest_command(ctx: click.Context, export: Path, progress_file: Path, db: str | None, embedder: str | None,
                   batch_size: int, reset: bool, yes: bool, quiet: bool, verbose: bool) -> None:
    """Ingest a chat export (folder, .zip or conversations.json); stop any time, rerun to resume."""
    from ..embedders import get_embedder, resolve_embedder
    from ..folders import ensure_parent
    from ..pipeline.ingest import Ingestion, Interrupted
    from ..stores import open_store
    from .display import Display
    from .summary import print_summary

    console = Console(stderr=True, quiet=False)
    url = store_url(db, progress_file)
    if reset:
        run_reset(export, progress_file, url, yes, console)
    if not export.exists():
        raise SparkyError(f"{export}: no such file or folder")
    ensure_parent(progress_file)
    store = open_store(url)
    try:
        try:
            name = resolve_embedder(embedder, store.meta().get("model"))
        except SparkyError as exc:
            raise SparkyError(f"{store.url}: {exc}; ingest into another --db") from None
        model = get_embedder(name)
        ingestion = Ingestion(export, progress_file, store, model,
                              Display(console, quiet=quiet, verbose=verbose), batch_chunks=batch_size)
        try:
            result = ingestion.run()
        except Interrupted:
            console.print(f"\n[yellow]Interrupted.[/] Progress saved to {progress_file}.")
            console.print(f"Resume with the same command: {resume_hint(ctx, export, progress_file, db)}")
            sys.exit(EXIT_INTERRUPTED)
    finally:
        store.close()
    print_summary(console, result, progress_file, quiet=quiet)
    if result.interrupted:
        console.print(f"Resume with the same command: {resume_hint(ctx, export, progress_file, db)}")
        sys.exit(EXIT_INTERRUPTED)
    if not result.complete:
        sys.exit(1)


def resume_hint(ctx: click.Context, export: Path, progress_file: Path, db: str | None) -> str:
    parts = [ctx.find_root().info_name or "sparky"]
    if ctx.parent is not None:
        parts.append(ctx.info_name or "ingest")
    parts.append(str(export))
    if str(progress_file) != DEFAULT_NAME:
        parts += ["--progress-file", str(progress_file)]
    if db and "SPARKY_DB" not in os.environ:
        parts += ["--db", db]
    return " ".join(parts)
