"""The ``sparky`` command line: one module per command, thin over the library; shared options in ``options``."""

from __future__ import annotations

import click

from .copy import copy_command
from .ingest import ingest_command
from .progress import progress_command
from .reset import reset_command
from .search import search_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sparky-memory")
def cli() -> None:
    """Sparky Memory: a private, searchable long-term memory from your AI chat history."""


for command in (ingest_command, progress_command, search_command, reset_command, copy_command):
    cli.add_command(command)
