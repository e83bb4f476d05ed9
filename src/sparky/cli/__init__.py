"""The ``sparky`` command line: one module per command, thin over the library; shared options in ``options``."""

from __future__ import annotations

import click

from .copy import copy_command
from .ingest import ingest_command
from .mcp import mcp_command
from .progress import progress_command
from .reembed import reembed_command
from .reset import reset_command
from .search import search_command
from .spaces import spaces_command
from .web import web_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sparky-memory")
def cli() -> None:
    """Sparky Memory: a private, searchable long-term memory from your AI chat history."""


for command in (ingest_command, progress_command, search_command, reset_command, copy_command, mcp_command,
                web_command, reembed_command, spaces_command):
    cli.add_command(command)
