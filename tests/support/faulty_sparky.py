"""Run the ``sparky`` CLI with every embedder wrapped in ``FaultyEmbedder(spec)``: ``faulty_sparky.py SPEC ARGS...``."""

import sys

import sparky.embedders as embedders
from sparky.embedders.testing import FaultyEmbedder

spec = sys.argv.pop(1)
real_get_embedder = embedders.get_embedder
embedders.get_embedder = lambda name=embedders.DEFAULT_EMBEDDER: FaultyEmbedder(real_get_embedder(name), spec)

from sparky.cli import cli  # noqa: E402  (imported after the wrap; the commands look get_embedder up when run)

cli(prog_name="sparky")
