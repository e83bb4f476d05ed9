#!/usr/bin/env python3
"""The original command line: ``python check_ingestion_progress.py [--estimate-time] [--reset]``."""

from sparky.cli.progress import progress_command

if __name__ == "__main__":
    progress_command.main(prog_name="python check_ingestion_progress.py")
