#!/usr/bin/env python3
"""The original retrieval script: ``python retrieve_similar.py "query" [options]`` is ``sparky search``."""

from sparky.search_cli import search_command

if __name__ == "__main__":
    search_command.main(prog_name="python retrieve_similar.py")
