#!/usr/bin/env python3
"""The original retrieval script: ``python retrieve_similar.py "query" [options]`` is ``sparky search``."""

from sparky.cli.search import search_command

if __name__ == "__main__":
    search_command.main(prog_name="python retrieve_similar.py")
