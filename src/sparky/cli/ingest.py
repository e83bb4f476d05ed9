"""``sparky ingest``: read an export, embed what the store lacks, resumable at any moment."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console
from rich.markup import escape

from ..errors import SparkyError
from ..pipeline.progress import DEFAULT_NAME
from .options import EXIT_INTERRUPTED, console, db_option, friendly_errors, progress_file_option, store_url
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
@click.option("--format", "export_format", type=click.Choice(["chatgpt", "claude"]), default=None,
              help="Read the export as this format (default: detected from its structure).")
@click.option("--include-do-not-remember", is_flag=True,
              help="Also ingest the conversations the export marks 'do not remember' (skipped by default).")
@click.option("--retries", default=3, show_default=True, type=click.IntRange(1, 100),
              help="Tries per batch when the embedder fails transiently (rate limits get 4x as many).")
@click.option("--retry-delay", default=0.5, show_default=True, type=click.FloatRange(0, 600),
              help="Seconds of the first backoff; it doubles each retry, with full jitter.")
@click.option("--max-retry-delay", default=60.0, show_default=True, type=click.FloatRange(0, 3600),
              help="The longest single wait between tries, whatever a service asks.")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems and the final summary.")
@click.option("--verbose", "-v", is_flag=True, help="Print every conversation as it is processed.")
@click.pass_context
@friendly_errors
def ingest_command(ctx: click.Context, export: Path, progress_file: Path, db: str | None, embedder: str | None,
                   batch_size: int, reset: bool, yes: bool, export_format: str | None, include_do_not_remember: bool,
                   retries: int, retry_delay: float, max_retry_delay: float, quiet: bool, verbose: bool) -> None:
    """Ingest a chat export (folder, .zip or conversations.json); stop any time, rerun to resume."""
    from ..crashpoints import crashpoint
    from ..embedders import RetryPolicy, get_embedder, resolve_embedder
    from ..folders import ensure_parent
    from ..pipeline.ingest import Ingestion, Interrupted, StopRequest
    from ..readers import ExportReader
    from ..stores import open_store
    from .display import Display
    from .summary import print_summary

    out, err = console(), console(stderr=True)  # results and the summary; progress, warnings and errors
    url = store_url(db, progress_file)
    if reset and not run_reset(export, progress_file, url, yes):
        return
    stop = StopRequest()  # from here on a Ctrl+C or SIGTERM is a clean stop (exit 130), even while the model loads
    stop.install()
    try:
        display = Display(err, quiet=quiet, verbose=verbose)
        stop.display = display
        reader = _readable_export(export, export_format, include_do_not_remember)
        for warning in reader.warnings:
            err.print(f"[yellow]Warning:[/] {escape(warning)}")
        ensure_parent(progress_file)
        store = open_store(url)
        try:
            try:
                name = resolve_embedder(embedder, store.meta().get("model"))
            except SparkyError as exc:
                raise SparkyError(f"{store.url}: {exc}; ingest into another --db") from None
            crashpoint("loading_model")
            model = get_embedder(name)
            retry = RetryPolicy(attempts=retries, rate_limit_attempts=4 * retries, base_delay=retry_delay,
                                max_delay=max_retry_delay)
            ingestion = Ingestion(export, progress_file, store, model, display, batch_chunks=batch_size, stop=stop,
                                  retry=retry, reader=reader)
            try:
                result = ingestion.run()
            except Interrupted:
                saved = f"Progress saved to {escape(str(progress_file))}." if progress_file.exists() else (
                    "Nothing was stored yet.")
                out.print(f"[yellow]Interrupted.[/] {saved}")
                _exit_with_resume_hint(out, ctx, export, progress_file, db)
        finally:
            store.close()
    finally:
        stop.restore()
    print_summary(out, result, progress_file, ingestion.reader.files, quiet=quiet)
    if result.interrupted:
        _exit_with_resume_hint(out, ctx, export, progress_file, db)
    if not result.complete:
        sys.exit(1)


def _readable_export(export: Path, export_format: str | None, include_do_not_remember: bool) -> "ExportReader":
    """The export's reader, after reading up to its first conversation: a path that is not an export is one
    clear error before anything (store, lock or progress file) is created."""
    from ..readers import ExportReader

    if not export.exists():
        raise SparkyError(f"{export}: no such file or folder")
    reader = ExportReader(export, format=export_format, include_do_not_remember=include_do_not_remember)
    next(iter(reader.conversations()), None)
    return reader


def _exit_with_resume_hint(out: Console, ctx: click.Context, export: Path, progress_file: Path,
                           db: str | None) -> NoReturn:
    out.print(f"Resume with the same command: {escape(resume_hint(ctx, export, progress_file, db))}")
    sys.exit(EXIT_INTERRUPTED)


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
