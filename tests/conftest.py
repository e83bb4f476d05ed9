"""Shared fixtures: the sample export, generated exports, and helpers to run and inspect ingestions."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample" / "chat-history"


@pytest.fixture(scope="session")
def sample_export() -> Path:
    return SAMPLE


def linear_mapping(messages: tuple[dict, ...]) -> tuple[dict, str]:
    """A ChatGPT mapping root -> n1 -> n2 ... holding ``messages``, and the id of its last node."""
    mapping: dict = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
    parent = "root"
    for index, item in enumerate(messages, 1):
        node_id = f"n{index}"
        mapping[node_id] = {"id": node_id, "message": item, "parent": parent, "children": []}
        mapping[parent]["children"].append(node_id)
        parent = node_id
    return mapping, parent


def generate_export(out: Path, conversations: int, messages: int, seed: int = 7) -> Path:
    """Write a generated ChatGPT export with sample/generate.py and return its folder."""
    subprocess.run(
        [sys.executable, str(ROOT / "sample" / "generate.py"), "--conversations", str(conversations),
         "--messages", str(messages), "--out", str(out), "--seed", str(seed)],
        check=True, capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def small_generated_export(tmp_path_factory) -> Path:
    """40 conversations / 400 messages: enough batches to interrupt, quick to embed."""
    return generate_export(tmp_path_factory.mktemp("gen-small") / "chat-history", 40, 400)


def sparky_subprocess(args: list[str], cwd: Path, env: dict | None = None, faults: str | None = None,
                      **kwargs) -> subprocess.Popen:
    """Start ``python -m sparky`` as a real child process; with ``faults``, its embedders fail as that
    ``FaultyEmbedder`` spec says (tests/support/faulty_sparky.py)."""
    full_env = {**os.environ, **(env or {})}
    command = ["-m", "sparky"] if faults is None else [str(ROOT / "tests" / "support" / "faulty_sparky.py"), faults]
    return subprocess.Popen([sys.executable, *command, *args], cwd=cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture
def faulty_embedders(monkeypatch):
    """``install(spec)`` makes every embedder the CLI loads in this process a ``FaultyEmbedder(spec)``;
    it returns the list of wrappers made, to count their calls."""
    import sparky.embedders as embedders
    from sparky.embedders.testing import FaultyEmbedder

    made: list[FaultyEmbedder] = []
    real = embedders.get_embedder

    def install(spec: str) -> list[FaultyEmbedder]:
        def get(name: str = embedders.DEFAULT_EMBEDDER) -> FaultyEmbedder:
            made.append(FaultyEmbedder(real(name), spec))
            return made[-1]

        monkeypatch.setattr(embedders, "get_embedder", get)
        return made

    return install


def store_keys(db_path: Path) -> list[str]:
    """Every message key in a store, duplicates included (there must be none)."""
    with sqlite3.connect(db_path) as db:
        return [row[0] for row in db.execute("SELECT key FROM messages ORDER BY key")]


def fts_consistent(db: sqlite3.Connection) -> bool:
    """FTS5's own integrity check of the keyword indexes (words and, from schema 4, trigrams) against the
    chunks table."""
    indexes = [name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE name IN ('chunks_fts', 'chunks_trigram')")]
    try:
        for index in indexes:
            db.execute(f"INSERT INTO {index}({index}, rank) VALUES ('integrity-check', 1)")
    except sqlite3.DatabaseError:
        return False
    return True


def store_health(db_path: Path) -> dict:
    """Integrity facts a consistent store must satisfy (a store killed before its schema 2 migration
    committed holds schema 1 tables, whose chunks carry their own vectors)."""
    with sqlite3.connect(db_path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        vectors_check = (
            "SELECT count(*) FROM chunks c WHERE (SELECT count(*) FROM vectors v JOIN spaces s ON s.id = v.space"
            " WHERE v.chunk = c.id AND length(v.vector) = s.dimensions * 4) != 1" if "vectors" in tables else
            "SELECT count(*) FROM chunks WHERE length(vector) != 384 * 4")
        return {
            "fts_consistent": fts_consistent(db),
            "integrity": db.execute("PRAGMA integrity_check").fetchone()[0],
            "messages_without_chunks": db.execute(
                "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.message = m.id)"
            ).fetchone()[0],
            "orphan_chunks": db.execute(
                "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = c.message)"
            ).fetchone()[0],
            "chunks": db.execute("SELECT count(*) FROM chunks").fetchone()[0],
            "bad_vectors": db.execute(vectors_check).fetchone()[0],  # one vector of its space's width per chunk
        }


def wait_for_trace(trace_file: Path, site: str, count: int = 1, process: subprocess.Popen | None = None,
                   timeout: float = 300) -> None:
    """Wait until ``trace_file`` (SPARKY_TRACE_FILE, see src/sparky/crashpoints.py) records ``count`` arrivals
    at ``site``, counting only ``process``'s lines when it is given (and failing at once if it ends first).
    The timeout only guards against a hang: a test must never pass or fail on how fast the site came."""
    deadline = time.monotonic() + timeout
    pid = None if process is None else str(process.pid)
    while True:
        ended = process is not None and process.poll() is not None  # before reading: its last lines are in
        lines = [line.split() for line in (trace_file.read_text().splitlines() if trace_file.exists() else [])]
        if sum(1 for parts in lines if parts[1:2] == [site] and pid in (None, parts[0])) >= count:
            return
        if ended:
            raise AssertionError(f"the process ended (exit {process.returncode}) before arriving at {site} {count}x")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} arrival(s) at {site} in {timeout:.0f}s: the ingester hangs")
        time.sleep(0.01)


def read_progress(path: Path) -> dict:
    """What the progress file says: the file with its journal of checkpoints replayed, as every reader sees it."""
    from sparky.pipeline.progress import load_progress

    progress = load_progress(path)
    assert progress is not None, f"no progress file at {path}"
    return progress
