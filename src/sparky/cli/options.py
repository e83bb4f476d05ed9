"""What every ``sparky`` command shares: the store and progress-file options, one-line errors."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable

import click
from rich.console import Console

from ..errors import SparkyError
from ..pipeline.progress import DEFAULT_NAME

EXIT_INTERRUPTED = 130
DEFAULT_DB_NAME = "sparky_memory.db"
UNWRAPPED_WIDTH = 1_000_000  # a pipe or a file is never wrapped: paths and commands stay whole, for copying


def console(stderr: bool = False) -> Console:
    """A rich console on stdout (results) or stderr (progress, warnings): wrapped at a terminal's width,
    and never wrapped when it is not a terminal."""
    made = Console(stderr=stderr)
    if not made.is_terminal:
        made.soft_wrap = True
        made.width = UNWRAPPED_WIDTH
    return made


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
