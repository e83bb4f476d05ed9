"""The ``sparky`` command line: thin click commands over the library."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable

import click
from rich.console import Console

from .errors import SparkyError
from .progress import DEFAULT_NAME

EXIT_INTERRUPTED = 130
DEFAULT_DB_NAME = "sparky_memory.db"


def friendly_errors(command: Callable) -> Callable:
    """Turn a SparkyError into one line on stderr and its exit code, never a traceback; a Ctrl+C that
    arrives before the pipeline's own handler is installed still exits 130 (nothing was started)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SparkyError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def progress_file_option(command: Callable) -> Callable:
    return click.option(
        "--progress-file", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_NAME,
        show_default=True, help="Where the progress checkpoint is kept.",
    )(command)


def db_option(command: Callable) -> Callable:
    return click.option(
        "--db", "db", envvar="SPARKY_DB", default=None,
        help=f"Memory store: a SQLite file path (default: {DEFAULT_DB_NAME} beside the progress file).",
    )(command)


def store_url(db: str | None, progress_file: Path) -> str:
    """The store the user named, or the default file beside the progress file."""
    return db or str(progress_file.parent / DEFAULT_DB_NAME)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sparky-memory")
def cli() -> None:
    """Sparky Memory: a private, searchable long-term memory from your AI chat history."""


@cli.command("ingest")
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
    from .embedders import get_embedder, resolve_embedder
    from .folders import ensure_parent
    from .ingest import Ingestion, Interrupted
    from .live import Display
    from .stores import open_store
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


def run_reset(export: Path | None, progress_file: Path, url: str, yes: bool, console: Console) -> None:
    """The one implementation of --reset: confirm, then remove the export's data and progress file."""
    from .reset import reset_export
    from .stores import open_store, redact

    what = f"the progress file {progress_file} and this export's messages in {redact(url)}"
    if not yes and not click.confirm(f"Delete {what}?", default=False, err=True):
        raise SparkyError("reset cancelled; nothing was deleted")
    store = open_store(url)
    try:
        result = reset_export(export if export and export.exists() else None, progress_file, store)
    finally:
        store.close()
    console.print(f"Reset: removed {result.removed_messages:,} stored messages"
                  f"{' and the progress file' if result.removed_progress_file else ''}.")


@cli.command("reset")
@click.argument("export", type=click.Path(path_type=Path), required=False)
@progress_file_option
@db_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask first.")
@friendly_errors
def reset_command(export: Path | None, progress_file: Path, db: str | None, yes: bool) -> None:
    """Forget an export: its progress file and the messages it put in the store."""
    run_reset(export, progress_file, store_url(db, progress_file), yes, Console(stderr=True))


from . import search_cli  # noqa: E402,F401  (registers `sparky search`; imported last: it uses this module)
from . import progress_cli  # noqa: E402,F401  (registers `sparky progress`; imported last: it uses this module)
