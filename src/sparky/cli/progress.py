"""``sparky progress``: where an ingestion stands, safe to run while one is running."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from .options import db_option, friendly_errors, progress_file_option, store_url
from .reset import run_reset
from ..errors import InputError, SparkyError
from ..pipeline.progress import DEFAULT_NAME, load_progress
from ..stores import redact, store_path
from ..words import plural

EXIT_NOT_STARTED = 1


@click.command("progress")
@click.option("--estimate-time", is_flag=True, help="Also estimate the time left, from the sessions so far.")
@click.option("--reset", is_flag=True, help="Forget this export's progress and stored messages (as ingest --reset).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --reset deletes anything.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--rebuild", is_flag=True, help="Rebuild the progress file from the store, the source of truth.")
@click.option("--export", type=click.Path(path_type=Path), default=None,
              help="The export, when it is not where the progress file says (matched by content, not path).")
@progress_file_option
@db_option
@friendly_errors
def progress_command(estimate_time: bool, reset: bool, yes: bool, as_json: bool, rebuild: bool,
                     export: Path | None, progress_file: Path, db: str | None) -> None:
    """Show how far an ingestion has got; safe to run while one is running."""
    if reset and rebuild:
        raise click.UsageError("--reset and --rebuild cannot be used together")
    url = store_url(db, progress_file)
    if reset:
        export = export or _recorded_export(progress_file)
        if run_reset(export, progress_file, url, yes):
            click.echo(f"Start again with: {_ingest_hint(progress_file, export)}")
        return
    if rebuild:
        _rebuild(progress_file, url, export)
    progress = _load(progress_file)
    if progress is None:
        stored = _store_stats(url)
        _without_progress_file(progress_file, url, stored, export, estimate_time, as_json)
        if stored is None:
            sys.exit(EXIT_NOT_STARTED)
        return
    _print_report(progress_file, progress, export, estimate_time, as_json, url)


def _print_report(progress_file: Path, progress: dict[str, Any], export: Path | None, estimate_time: bool,
                  as_json: bool, url: str) -> None:
    from ..pipeline.estimate import estimate_time as estimate
    from ..pipeline.rebuild import open_matching_export
    from ..pipeline.report import build_report, render_text, to_json

    report = build_report(progress_file, progress)
    if estimate_time:
        report.estimate = estimate(progress, lambda: open_matching_export(progress, export, progress_file))
    report.passes = _passes(url, estimate_time)
    click.echo(to_json(report) if as_json else render_text(report))


def _passes(url: str, estimate_time: bool) -> list:
    """A progressive ingestion's two passes, read from the store (none when there is no store file)."""
    from ..pipeline.report import progressive_passes
    from ..search import open_for_search

    path = store_path(url)
    if path is not None and not path.is_file():
        return []
    try:
        store = open_for_search(url)
    except SparkyError:  # a server down: the report is the progress file's, the passes are extra
        return []
    try:
        return progressive_passes(store, estimate_time)
    finally:
        store.close()


def _load(progress_file: Path) -> dict[str, Any] | None:
    try:
        return load_progress(progress_file)
    except InputError as exc:
        raise InputError(f"{exc} (to rebuild it from the store: {_rebuild_hint(progress_file)})") from None


def _rebuild(progress_file: Path, url: str, export: Path | None) -> None:
    from ..pipeline.rebuild import open_existing_store, rebuild_progress

    store = open_existing_store(url)
    try:
        result = rebuild_progress(progress_file, store, export)
    finally:
        store.close()
    lost = "" if result.kept_history else " (the old file was unreadable: its session history is lost)"
    click.echo(f"Rebuilt {progress_file} from the store: {result.stored_messages:,} of "
               f"{result.total_messages:,} messages stored{lost}.", err=True)


def _store_stats(url: str) -> dict[str, Any] | None:
    """What the store at ``url`` holds (opened without creating anything), or None when there is none."""
    from ..search import open_for_search

    path = store_path(url)
    if path is None or not path.is_file():
        return None
    store = open_for_search(url)
    try:
        return store.stats()
    finally:
        store.close()


def _without_progress_file(progress_file: Path, url: str, stored: dict[str, Any] | None, export: Path | None,
                           estimate_time: bool, as_json: bool) -> None:
    """Report what the store holds, or say how to start; with --estimate-time and --export, estimate the
    whole job by calibration."""
    from ..pipeline.estimate import estimate_time as estimate
    from ..readers import ExportReader
    from ..pipeline.report import estimate_lines

    result = estimate(None, lambda: ExportReader(export)) if estimate_time and export else None
    if as_json:
        click.echo(json.dumps({"progress_file": str(progress_file), "exists": False,
                               "store": redact(url) if stored else None, "store_holds": stored,
                               "start": _ingest_hint(progress_file, export),
                               "rebuild": _rebuild_hint(progress_file, export) if stored else None,
                               "estimate": asdict(result) if result else None}, indent=2))
        return
    lines = _store_lines(progress_file, url, stored, export) if stored else [
        f"No progress file at {progress_file}: no ingestion has started with it yet.",
        f"Start one with: {_ingest_hint(progress_file, export)}"]
    if result is not None:
        lines += ["", *estimate_lines(result)]
    click.echo("\n".join(lines))


def _store_lines(progress_file: Path, url: str, stored: dict[str, Any], export: Path | None) -> list[str]:
    """The report from the store alone: what it holds, and how to get a progress report back."""
    model = f"{stored['model']} ({stored['dimensions']} dimensions)" if stored["model"] else "not recorded"
    return [
        f"No progress file at {progress_file} (a finished ingestion's can be deleted); reporting from the store.",
        f"Memory store {redact(url)} holds {plural(stored['conversations'], 'conversation')}, "
        f"{plural(stored['messages'], 'message')} in {plural(stored['chunks'], 'chunk')}.",
        f"Embedder: {model}",
        f"To see an export's progress, rebuild its progress file from the store (no re-embedding): "
        f"{_rebuild_hint(progress_file, export)}",
    ]


def _recorded_export(progress_file: Path) -> Path | None:
    """The export the progress file records, when it is still there with the same content."""
    from ..pipeline.rebuild import open_matching_export

    try:
        return open_matching_export(load_progress(progress_file), None, progress_file).path
    except InputError:
        return None


def _file_args(progress_file: Path) -> str:
    return "" if str(progress_file) == DEFAULT_NAME else f" --progress-file {progress_file}"


def _ingest_hint(progress_file: Path, export: Path | None) -> str:
    return f"sparky ingest {export or 'EXPORT'}{_file_args(progress_file)}"


def _rebuild_hint(progress_file: Path, export: Path | None = None) -> str:
    return f"sparky progress --rebuild --export {export or 'EXPORT'}{_file_args(progress_file)}"



