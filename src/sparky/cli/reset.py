"""``sparky reset`` (and ``--reset`` of ingest and progress): forget an export, after asking."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from ..errors import SparkyError
from .options import db_option, friendly_errors, progress_file_option, store_url


def run_reset(export: Path | None, progress_file: Path, url: str, yes: bool, console: Console) -> None:
    """The one implementation of --reset: confirm, then remove the export's data and progress file."""
    from ..pipeline.reset import reset_export
    from ..stores import open_store, redact

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


@click.command("reset")
@click.argument("export", type=click.Path(path_type=Path), required=False)
@progress_file_option
@db_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask first.")
@friendly_errors
def reset_command(export: Path | None, progress_file: Path, db: str | None, yes: bool) -> None:
    """Forget an export: its progress file and the messages it put in the store."""
    run_reset(export, progress_file, store_url(db, progress_file), yes, Console(stderr=True))
