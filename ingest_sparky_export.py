#!/usr/bin/env python3
"""The original command line: ``python ingest_sparky_export.py chat-history [--reset] [--progress-file F]``."""

from sparky.cli.ingest import ingest_command

if __name__ == "__main__":
    ingest_command.main(prog_name="python ingest_sparky_export.py")
