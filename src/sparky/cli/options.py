"""What every ``sparky`` command shares: the store and progress-file options, one-line errors."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click
from rich.console import Console

from ..errors import SparkyError
from ..pipeline.progress import DEFAULT_NAME

if TYPE_CHECKING:
    from ..embedders import RetryPolicy
    from ..embedders.openai import OpenAIEmbedder

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


def retry_options(command: Callable) -> Callable:
    """--retries, --retry-delay and --max-retry-delay: the policy for transient embedder failures."""
    for option in reversed((
        click.option("--retries", default=3, show_default=True, type=click.IntRange(1, 100),
                     help="Tries per batch when the embedder fails transiently (rate limits get 4x as many)."),
        click.option("--retry-delay", default=0.5, show_default=True, type=click.FloatRange(0, 600),
                     help="Seconds of the first backoff; it doubles each retry, with full jitter."),
        click.option("--max-retry-delay", default=60.0, show_default=True, type=click.FloatRange(0, 3600),
                     help="The longest single wait between tries, whatever a service asks."),
    )):
        command = option(command)
    return command


def network_options(command: Callable) -> Callable:
    """--model, --base-url, --api-key-env, --dimensions and --concurrency, for ``--embedder openai``."""
    for option in reversed((
        click.option("--model", help="With --embedder openai: the model, e.g. text-embedding-3-small."),
        click.option("--base-url", help="With --embedder openai: an OpenAI-compatible server (Ollama, vLLM, "
                     "TEI...), default https://api.openai.com/v1."),
        click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="With --embedder "
                     "openai: the environment variable holding the key (the key is never shown)."),
        click.option("--dimensions", type=click.IntRange(1, 16384), help="With --embedder openai: ask for this "
                     "width."),
        click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64),
                     help="With --embedder openai: requests in flight at most (lowered on rate limits)."),
    )):
        command = option(command)
    return command


def retry_policy(retries: int, retry_delay: float, max_retry_delay: float) -> "RetryPolicy":
    """The policy the retry options name (rate limits get four times the tries)."""
    from ..embedders import RetryPolicy

    return RetryPolicy(attempts=retries, rate_limit_attempts=4 * retries, base_delay=retry_delay,
                       max_delay=max_retry_delay)


def confirm_sending(embedder: "OpenAIEmbedder", texts: list[str], yes: bool, err: Console) -> None:
    """Print what will be sent where (texts, tokens, cost), then ask on a terminal unless --yes; without a
    terminal, --yes is required: nothing leaves the machine unless the user said so."""
    from rich.markup import escape

    from ..embedders.openai import plan_text

    if not texts:
        return  # nothing to send
    err.print(escape(plan_text(embedder, len(texts), sum(embedder.count_tokens(texts)))))
    if yes:
        return
    if not sys.stdin.isatty():
        raise SparkyError("nothing was sent: pass --yes to confirm sending these texts (no terminal to ask on)")
    if not click.confirm("Send them?", default=False, err=True):
        raise click.exceptions.Exit(0)


def store_url(db: str | None, progress_file: Path) -> str:
    """The store the user named, or the default file beside the progress file."""
    return db or str(progress_file.parent / DEFAULT_DB_NAME)
