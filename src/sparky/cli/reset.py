"""``sparky reset`` (and ``--reset`` of ingest and progress): forget an export, after asking."""

from __future__ import annotations

from pathlib import Path

import click

from ..words import plural
from .options import db_option, friendly_errors, progress_file_option, store_url

CANCELLED = "Reset cancelled; nothing was deleted."


def run_reset(export: Path | None, progress_file: Path, url: str, yes: bool) -> bool:
    """The one implementation of --reset: confirm, then remove the export's data and progress file.

    False when the user said no (or closed the input): a cancel, not an error, and nothing is deleted."""
    from ..pipeline.reset import reset_export
    from ..stores import open_store, redact

    what = f"the progress file {progress_file} and this export's messages in {redact(url)}"
    if not yes and not confirmed(f"Delete {what}?"):
        click.echo(CANCELLED)
        return False
    store = open_store(url)
    try:
        result = reset_export(export if export and export.exists() else None, progress_file, store)
    finally:
        store.close()
    click.echo(f"Reset: removed {plural(result.removed_messages, 'stored message')}"
               f"{' and the progress file' if result.removed_progress_file else ''}.")
    return True


def confirmed(question: str) -> bool:
    """Ask on stderr; no answer (end of input or Ctrl+C at the prompt) is a no."""
    try:
        return click.confirm(question, default=False, err=True)
    except click.Abort:
        click.echo(err=True)  # end the prompt's line
        return False


@click.command("reset")
@click.argument("export", type=click.Path(path_type=Path), required=False)
@progress_file_option
@db_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask first.")
@friendly_errors
def reset_command(export: Path | None, progress_file: Path, db: str | None, yes: bool) -> None:
    """Forget an export: its progress file and the messages it put in the store."""
    run_reset(export, progress_file, store_url(db, progress_file), yes)
