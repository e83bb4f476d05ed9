"""``sparky ingest``: read an export, embed what the store lacks, resumable at any moment."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import click
from rich.console import Console
from rich.markup import escape

from ..errors import SparkyError
from ..pipeline.progress import DEFAULT_NAME
from ..words import plural
from .options import (EXIT_INTERRUPTED, confirm_sending, console, db_option, friendly_errors, network_options,
                      progress_file_option, retry_options, retry_policy, store_url)
from .reset import run_reset

PRUNE_LISTED = 20

if TYPE_CHECKING:
    from typing import Callable

    from ..embedders import Embedder, RetryPolicy
    from ..pipeline.ingest import IngestResult, StopRequest
    from .display import Display
    from ..readers import ExportReader
    from ..stores import Store
    from ..stores.records import StoredConversation


@click.command("ingest")
@click.argument("export", type=click.Path(path_type=Path))
@progress_file_option
@db_option
@click.option("--embedder", help="Embedding model: minilm (default), minilm-fp32, minilm-int8, wordllama or minilm-static, all "
              "local and offline; or openai (opt-in, sends the texts: see --model). A store keeps its model.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1, 4096),
              help="Chunks per embedding batch.")
@click.option("--reset", is_flag=True, help="Forget this export's progress and stored messages, then start over.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --reset deletes anything.")
@click.option("--format", "export_format", type=click.Choice(["chatgpt", "claude"]), default=None,
              help="Read the export as this format (default: detected from its structure).")
@click.option("--include-do-not-remember", is_flag=True,
              help="Also ingest the conversations the export marks 'do not remember' (skipped by default).")
@retry_options
@network_options
@click.option("--prune", is_flag=True, help="Remove the stored conversations this export no longer holds (they are "
              "kept by default: a partial export never deletes memory); shows them and asks first (--yes skips).")
@click.option("--progressive", is_flag=True, help="Two passes: a static model first (--static; the whole memory "
              "searchable in seconds), then the transformer (--embedder, default minilm) over the same chunks, "
              "made the primary space once complete. Resumable: the next ingest or reembed finishes it.")
@click.option("--static", "static", metavar="NAME", help="The static model of --progressive's first pass: "
              "wordllama (default where installed) or minilm-static (MiniLM distilled into static embeddings on "
              "first use; the default elsewhere).")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems and the final summary.")
@click.option("--verbose", "-v", is_flag=True, help="Print every conversation as it is processed.")
@click.pass_context
@friendly_errors
def ingest_command(ctx: click.Context, export: Path, progress_file: Path, db: str | None, embedder: str | None,
                   batch_size: int, reset: bool, yes: bool, export_format: str | None, include_do_not_remember: bool,
                   retries: int, retry_delay: float, max_retry_delay: float, model: str | None, base_url: str | None,
                   api_key_env: str, dimensions: int | None, concurrency: int, prune: bool, progressive: bool,
                   static: str | None, quiet: bool, verbose: bool) -> None:
    """Ingest a chat export (folder, .zip or conversations.json); stop any time, rerun to resume."""
    from ..crashpoints import crashpoint
    from ..embedders import resolve_embedder
    from ..folders import ensure_parent
    from ..pipeline.ingest import Ingestion, Interrupted, StopRequest
    from ..readers import ExportReader
    from ..stores import open_store
    from .display import Display
    from .indexing import index_for_search
    from .summary import print_summary

    out, err = console(), console(stderr=True)  # results and the summary; progress, warnings and errors
    if static is not None and not progressive:
        raise click.UsageError("--static names the first pass of --progressive")
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
            transformer = _progressive_transformer(store, embedder, progressive, err)
            if transformer is not None:
                retry = retry_policy(retries, retry_delay, max_retry_delay)
                run_progressive(ctx, export, progress_file, db, store, static, transformer, reader, display, stop,
                                retry, batch_size,
                                (lambda absent: _confirm_pruning(absent, yes, err)) if prune else None,
                                out, err, quiet)
                return
            try:
                name = resolve_embedder(embedder, store.meta().get("model"))
            except SparkyError as exc:
                raise SparkyError(f"{store.url}: {exc}; ingest into another --db") from None
            crashpoint("loading_model")
            network = NetworkOptions(model, base_url, api_key_env, dimensions, concurrency)
            embedder_ = _embedder(name, network)
            if hasattr(embedder_, "bind_stop"):  # a network model: say what is sent where, and ask
                _confirm_sending(embedder_, reader, store, yes, err)
            retry = retry_policy(retries, retry_delay, max_retry_delay)
            ingestion = Ingestion(export, progress_file, store, embedder_, display, batch_chunks=batch_size, stop=stop,
                                  retry=retry, reader=reader,
                                  prune=(lambda absent: _confirm_pruning(absent, yes, err)) if prune else None)
            try:
                result = ingestion.run()
            except Interrupted:
                saved = f"Progress saved to {escape(str(progress_file))}." if progress_file.exists() else (
                    "Nothing was stored yet.")
                out.print(f"[yellow]Interrupted.[/] {saved}")
                _exit_with_resume_hint(out, ctx, export, progress_file, db)
            if not result.interrupted:
                index_for_search(store, err, quiet)
        finally:
            store.close()
    finally:
        stop.restore()
    print_summary(out, result, progress_file, ingestion.reader.files, quiet=quiet)
    if result.interrupted:
        _exit_with_resume_hint(out, ctx, export, progress_file, db)
    if not result.complete:
        sys.exit(1)


def _progressive_transformer(store: "Store", embedder: str | None, progressive: bool, err: Console) -> str | None:
    """The transformer of a progressive run (asked for, or one left to finish), else None: a plain ingest."""
    from ..pipeline.progressive import pending_space, transformer_name

    if not progressive and pending_space(store) is None:
        return None
    name = transformer_name(store, embedder)
    if name is None:
        err.print(f"The store's primary space is {escape(store.meta()['model'])}, a transformer already: "
                  "--progressive is a plain ingest.")
    return name


def run_progressive(ctx: click.Context, export: Path, progress_file: Path, db: str | None, store: "Store",
                    static: str | None, transformer: str, reader: "ExportReader", display: "Display",
                    stop: "StopRequest",
                    retry: "RetryPolicy", batch_size: int,
                    prune: "Callable[[list[tuple[str, StoredConversation]]], bool] | None", out: Console,
                    err: Console, quiet: bool) -> None:
    """Pass 1 (the static model ``static_name`` picks for ``static``, then searchable) and pass 2
    (``transformer``, then primary); exits 130 when stopped."""
    from ..crashpoints import crashpoint
    from ..embedders import get_embedder
    from ..pipeline.ingest import Interrupted
    from ..pipeline.progressive import ProgressiveIngestion, static_name
    from .indexing import index_for_search
    from .reembed import ReembedDisplay, print_result
    from .summary import print_summary

    crashpoint("loading_model")
    fast, model = get_embedder(static_name(store, static)), get_embedder(transformer)

    def between(first: "IngestResult") -> None:
        index_for_search(store, err, quiet)  # the static space, searched while pass 2 runs
        print_summary(out, first, progress_file, reader.files, quiet=quiet)
        out.print(f"Pass 1 done: searchable now ({escape(fast.model)}). Pass 2: {escape(model.model)} over the "
                  "stored chunks (Ctrl+C stops it; the next ingest resumes it).")

    run = ProgressiveIngestion(export, progress_file, store, fast, model, display, ReembedDisplay(err, quiet=quiet),
                               batch_chunks=batch_size, stop=stop, retry=retry, reader=reader, prune=prune,
                               between=between)
    try:
        result = run.run()
    except Interrupted:
        out.print("[yellow]Interrupted.[/] Nothing was stored yet." if not progress_file.exists() else
                  f"[yellow]Interrupted.[/] Progress saved to {escape(str(progress_file))}.")
        _exit_with_resume_hint(out, ctx, export, progress_file, db)
    if result.reembed is None:
        if result.ingest.interrupted:
            print_summary(out, result.ingest, progress_file, reader.files, quiet=quiet)
        _exit_with_resume_hint(out, ctx, export, progress_file, db)
    print_result(out, result.reembed, True)
    if result.stopped:
        _exit_with_resume_hint(out, ctx, export, progress_file, db)
    if result.complete:
        index_for_search(store, err, quiet)
    if not result.complete:
        sys.exit(1)


@dataclass(frozen=True)
class NetworkOptions:
    """What ``--embedder openai`` is told on the command line."""

    model: str | None
    base_url: str | None
    api_key_env: str
    dimensions: int | None
    concurrency: int


def _embedder(name: str, network: NetworkOptions) -> "Embedder":
    """The local model called ``name``, or the OpenAI-compatible one (new, or the one a store recorded)."""
    from ..embedders import OPENAI_EMBEDDER, get_embedder, is_recorded_openai, openai_embedder, \
        openai_embedder_from_recorded

    if name == OPENAI_EMBEDDER:
        if not network.model:
            raise click.UsageError("--embedder openai needs --model (e.g. text-embedding-3-small)")
        return openai_embedder(network.model, network.base_url, api_key_env=network.api_key_env,
                               dimensions=network.dimensions, concurrency=network.concurrency)
    if is_recorded_openai(name):
        return openai_embedder_from_recorded(name, api_key_env=network.api_key_env, concurrency=network.concurrency)
    return get_embedder(name)


def _confirm_sending(embedder: "Embedder", reader: "ExportReader", store: "Store", yes: bool, err: Console) -> None:
    """Say what the export's texts the store lacks would send where, and ask (``options.confirm_sending``)."""
    from ..pipeline.plan import texts_to_embed

    confirm_sending(embedder, texts_to_embed(reader, store), yes, err)


def _confirm_pruning(absent: list[tuple[str, "StoredConversation"]], yes: bool, err: Console) -> bool:
    """Show the stored conversations the export no longer holds, then ask on a terminal unless --yes; without
    a terminal, --yes is required: nothing is deleted unless the user said so."""
    messages = sum(conversation.messages for _, conversation in absent)
    err.print(f"--prune removes {plural(len(absent), 'stored conversation')} ({plural(messages, 'message')}) this "
              "export no longer holds:")
    for source, conversation in absent[:PRUNE_LISTED]:
        err.print(f"  {escape(conversation.title or '(untitled)')}  [dim]{source} {escape(conversation.conversation_id)}, "
                  f"{plural(conversation.messages, 'message')}[/]")
    if len(absent) > PRUNE_LISTED:
        err.print(f"  ... and {len(absent) - PRUNE_LISTED:,} more")
    if yes:
        return True
    if not sys.stdin.isatty():
        raise SparkyError("nothing was pruned or ingested: pass --yes to confirm removing these conversations "
                          "(no terminal to ask on)")
    return click.confirm("Remove them?", default=False, err=True)


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
