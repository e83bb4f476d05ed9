"""``python -m sparky`` is the ``sparky`` command."""

from .cli import cli

cli()
