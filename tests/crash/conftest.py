"""The crash suite's shared machinery: a small export and its clean reference run, running ingesters as real
processes, a thread watching the progress file, reading the phase trace, and the checks every crash must pass.

Every test that takes ``reference`` runs once per backend (``BACKENDS``): a SQLite file in the test's folder,
and a PostgreSQL store in a schema of its own (tests/support/postgres.py) for each ``Workdir``. A ``Backend``
holds what differs between them: the store's location, how its keys and health are read, how its ingester's
lock is seen to be free.

The phase trace is ``SPARKY_TRACE_FILE`` (see src/sparky/crashpoints.py): each process appends
"<pid> <site> [detail]" lines at the crash sites, so a test knows where a kill landed and how many texts
were embedded in all (the ``after_embed`` lines carry the count). The clean run's trace also says which sites
a run visits and how often, so kills can be aimed at them (SPARKY_CRASH_AT) instead of at moments in time.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conftest import generate_export, sparky_subprocess, store_health
from support.postgres import (HEALTHY, admin, fresh_schema, postgres_database, postgres_health,  # noqa: F401
                              postgres_keys, postgres_server)
from sparky.locking import FileLock
from sparky.readers import ExportReader
from sparky.pipeline.scan import scan_export

BATCH = 8
MESSAGES = 50
RUN_TIMEOUT = 300
START = "start"  # traced when the pipeline's modules are imported; not a crash point: a kill there is a SIGKILL
QUERIES = [
    "how do I rebuild a docker image", "sourdough starter feeding schedule", "kubernetes pod keeps restarting",
    "index fund versus bonds", "night train itinerary", "postgres query plan is slow", "pruning tomato plants",
    "heart rate zones for a long run", "python virtualenv problems", "react hydration error",
    "budget spreadsheet tips", "compose file volumes", "rebalance my portfolio", "how to proof dough",
    "helm chart rollback", "deadlock in a transaction", "compost heap too wet", "photography exposure",
    "learning a new language vocabulary", "cache invalidation",
]
BACKENDS = ["sqlite", "postgres"]
LOCK_RELEASE_TIMEOUT = 30  # seconds; only guards against a hang: the server ends a dead client's session at once


@dataclass
class Workdir:
    """One ingestion's files: its progress file, store (a path or a URL) and phase trace."""

    root: Path
    store: str
    temp_owners: set[int] = field(default_factory=set)  # pids whose temp files may still be there

    @property
    def progress(self) -> Path:
        return self.root / "progress.json"

    @property
    def trace(self) -> Path:
        return self.root / "trace.txt"

    def args(self, export: Path) -> list[str]:
        return ["ingest", str(export), "--batch-size", str(BATCH), "--quiet",
                "--progress-file", str(self.progress), "--db", self.store]

    def start(self, export: Path, env: dict | None = None) -> subprocess.Popen:
        return sparky_subprocess(self.args(export), cwd=self.root,
                                 env={"SPARKY_TRACE_FILE": str(self.trace), **(env or {})})

    def trace_of(self, pid: int) -> list[list[str]]:
        """The trace lines one process wrote: [site, detail...] each."""
        return [line.split()[1:] for line in self.trace_lines() if line.split()[0] == str(pid)]

    def trace_lines(self) -> list[str]:
        return self.trace.read_text().splitlines() if self.trace.exists() else []

    def embedded_texts(self) -> int:
        """Texts embedded by every process so far (including work a kill threw away)."""
        return sum(int(parts[2]) for parts in map(str.split, self.trace_lines()) if parts[1] == "after_embed")

    def temp_files(self) -> list[Path]:
        return sorted(self.root.glob(f".{self.progress.name}.tmp-*"))

    def ended(self, pid: int) -> None:
        """Note a finished or killed run: one that wrote a checkpoint had removed earlier runs' temp files first."""
        if any(parts[0] == "progress_tmp_written" for parts in self.trace_of(pid)):
            self.temp_owners.clear()
        self.temp_owners.add(pid)


@dataclass
class Reference:
    """What a clean, uninterrupted run of the crash export produces."""

    keys: list[str]
    top10: dict[str, list[tuple[str, float]]]
    texts: int  # texts embedded by the clean run
    largest_batch: int  # the most texts one embedding call took
    startup: Counter  # arrivals at each site up to the first progress checkpoint (after_replace) included
    later: Counter  # arrivals at each site after it: batches, their checkpoints, the last checkpoint

    def kill_target(self, rng: random.Random, stored: int) -> tuple[str, int]:
        """A random site a run visits and a random arrival there, for a run that starts with ``stored`` messages
        in the store: the site uniformly (every phase as often), the arrival uniformly over those a clean run
        makes at start-up plus its later ones in proportion to what is left (a run may make fewer, and then
        outlives its kill)."""
        sites = sorted(site for site in self.startup + self.later if site != "schema" or not stored)
        site = rng.choice(sites)
        left = 1 - stored / len(self.keys)
        return site, rng.randint(1, max(1, self.startup[site] + math.ceil(self.later[site] * left)))


@pytest.fixture(scope="session")
def crash_export(tmp_path_factory) -> Path:
    """12 conversations, 50 meaningful messages: 87 chunks, 11 batches of 8."""
    return generate_export(tmp_path_factory.mktemp("crash-export") / "chat-history", 12, MESSAGES, seed=7)


class SQLiteBackend:
    """A store file in the work folder, checked on a copy."""

    name = "sqlite"

    def location(self, root: Path, stack: ExitStack) -> str:
        return str(root / "store.db")

    def keys(self, store: str) -> list[str]:
        """Every message key stored, duplicates included, in key order."""
        return stored_keys(Path(store))

    def check_after_crash(self, store: str) -> list[str]:
        """The store's keys, after asserting it is consistent as the next ingester will find it."""
        return _check_store_copy(Path(store)) if Path(store).exists() else []

    def assert_healthy(self, store: str) -> None:
        health = store_health(Path(store))
        assert (health["integrity"], health["fts_consistent"], health["messages_without_chunks"],
                health["orphan_chunks"], health["bad_vectors"]) == ("ok", True, 0, 0, 0), health

    def assert_lock_free(self, store: str) -> None:
        """The killed ingester's lock on the store is gone (it is released when its holder dies)."""
        FileLock(Path(store), "store").acquire().release()  # a killed holder's flock is gone


class PostgresBackend:
    """A schema of its own per store, in the session's database; read on the server itself (a killed client's
    open transaction is rolled back by the server, which is the recovery being tested)."""

    name = "postgres"

    def __init__(self, database: str) -> None:
        self.database = database

    def location(self, root: Path, stack: ExitStack) -> str:
        return stack.enter_context(fresh_schema(self.database))

    def keys(self, store: str) -> list[str]:
        return postgres_keys(store) if _postgres_version(store) else []

    def check_after_crash(self, store: str) -> list[str]:
        if not _postgres_version(store):
            with admin(store) as conn:
                tables = conn.execute("SELECT count(*) FROM pg_class"
                                      " WHERE relnamespace = current_schema()::regnamespace").fetchone()[0]
            assert tables == 0, "a half-applied schema migration"
            return []
        self.assert_healthy(store)
        return postgres_keys(store)

    def assert_healthy(self, store: str) -> None:
        health = postgres_health(store)
        assert {name: health[name] for name in HEALTHY} == HEALTHY, health

    def assert_lock_free(self, store: str) -> None:
        """The killed ingester's advisory lock is released: taken here, waiting (on the server, not a clock) for
        the server to end the dead client's session; ``lock_timeout`` only guards against a hang."""
        from sparky.stores.postgres.store import LOCK_CLASS

        key = "(%s, hashtext('ingest:' || current_schema()))"
        with admin(store) as conn:
            conn.execute(f"SET lock_timeout = '{LOCK_RELEASE_TIMEOUT}s'")
            conn.execute(f"SELECT pg_advisory_lock{key}", (LOCK_CLASS,))
            conn.execute(f"SELECT pg_advisory_unlock{key}", (LOCK_CLASS,))


Backend = SQLiteBackend | PostgresBackend


def _postgres_version(store: str) -> int:
    """The schema version recorded in a PostgreSQL store; 0 when it has none (yet)."""
    with admin(store) as conn:
        if conn.execute("SELECT to_regclass('sparky_schema')").fetchone()[0] is None:
            return 0
        return conn.execute("SELECT coalesce(max(version), 0) FROM sparky_schema").fetchone()[0]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> Backend:
    """The kind of store the test runs against."""
    if request.param == "sqlite":
        return SQLiteBackend()
    return PostgresBackend(request.getfixturevalue("postgres_database"))


@pytest.fixture
def workdir(backend) -> Iterator[Callable[[Path], Workdir]]:
    """``workdir(folder)``: a Workdir in ``folder`` with a new, empty store of the test's backend."""
    with ExitStack() as stack:
        yield lambda root: Workdir(root, backend.location(root, stack))


@pytest.fixture(scope="session")
def reference(tmp_path_factory, crash_export, backend) -> Iterator[Reference]:
    root = tmp_path_factory.mktemp(f"clean-{backend.name}")
    with ExitStack() as stack:
        work = Workdir(root, backend.location(root, stack))
        process = work.start(crash_export)
        _, err = process.communicate(timeout=RUN_TIMEOUT)
        assert process.returncode == 0, err
        keys = backend.keys(work.store)
        assert keys == sorted(scan_export(ExportReader(crash_export)).all_keys()) and len(keys) == MESSAGES
        trace = work.trace_of(process.pid)
        batches = [int(parts[1]) for parts in trace if parts[0] == "after_embed"]
        sites = [parts[0] for parts in trace]
        first_checkpoint = sites.index("after_replace") + 1
        ranking = top10(work.store)
        assert all(len(hits) == 10 for hits in ranking.values())
        yield Reference(keys, ranking, sum(batches), max(batches), Counter(sites[:first_checkpoint]),
                        Counter(sites[first_checkpoint:]))


def stored_keys(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT key FROM messages ORDER BY key")]


def top10(url: str) -> dict[str, list[tuple[str, float]]]:
    """The hybrid top-10 (message key, score) of every fixed query, as `sparky search` ranks them (without the
    relevance floor: the ten best, however weak, so that every rank is compared)."""
    from sparky.search import Searcher, open_for_search

    store = open_for_search(url)
    try:
        searcher = Searcher(store)
        return {query: [(hit.key, round(hit.score, 6)) for hit in searcher.search(query, k=10, floor=False)]
                for query in QUERIES}
    finally:
        store.close()


class ProgressWatcher(threading.Thread):
    """Reads the progress file every 10 ms while ingesters run: it must always parse, and the stored-message
    counter must never go backwards."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.reads = 0
        self.problems: list[str] = []
        self.counts: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.poll()
            time.sleep(0.01)

    def poll(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        self.reads += 1
        try:
            data = json.loads(raw)
            count = data["stats"]["processed_messages"]
        except (ValueError, KeyError, TypeError) as exc:
            self.problems.append(f"unparseable progress file ({exc}): {raw[:80]!r}")
            return
        if self.counts and count < self.counts[-1]:
            self.problems.append(f"processed_messages went back from {self.counts[-1]} to {count}")
        if not self.counts or count != self.counts[-1]:
            self.counts.append(count)

    def finish(self) -> None:
        self._halt.set()
        self.join()
        self.poll()
        assert not self.problems, self.problems[:5]
        assert self.reads > 0, "the progress file was never seen"


@pytest.fixture
def watch():
    """Start a ProgressWatcher on a path; every watcher started is checked when the test ends."""
    watchers: list[ProgressWatcher] = []

    def start(path: Path) -> ProgressWatcher:
        watcher = ProgressWatcher(path)
        watcher.start()
        watchers.append(watcher)
        return watcher

    yield start
    for watcher in watchers:
        watcher.finish()


def assert_consistent(work: Workdir, reference: Reference, backend: Backend, dead_pid: int) -> int:
    """The checks after every crash; returns how many messages are stored.

    A SQLite store is checked on a copy (database and WAL), so the next ingester still has to do the recovery
    itself, exactly as it would after a real crash; a PostgreSQL store is read as the server has it.
    """
    stored = backend.check_after_crash(work.store)
    assert len(stored) == len(set(stored)), "duplicate message keys"
    assert set(stored) <= set(reference.keys), "keys that a clean run does not make"
    if work.progress.exists():
        progress = json.loads(work.progress.read_text(encoding="utf-8"))
        claimed = progress["processed_messages"]
        assert set(claimed) <= set(stored), "the progress file claims messages the store does not hold"
        assert progress["stats"]["processed_messages"] == len(claimed)
    work.ended(dead_pid)
    leftovers = [path for path in work.temp_files() if int(path.name.rsplit("-", 1)[1]) not in work.temp_owners]
    assert not leftovers, f"stale temp files of earlier runs were not cleaned: {leftovers}"
    FileLock(work.progress, "progress file").acquire().release()  # a killed holder's flock is gone
    backend.assert_lock_free(work.store)
    return len(stored)


def _check_store_copy(db: Path) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="sparky-check-") as scratch:
        copy = Path(scratch) / db.name
        for suffix in ("", "-wal"):
            if Path(f"{db}{suffix}").exists():
                shutil.copyfile(f"{db}{suffix}", f"{copy}{suffix}")
        with sqlite3.connect(copy) as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version == 0:
            assert tables == 0, "a half-applied schema migration"
            return []
        health = store_health(copy)
        assert health["integrity"] == "ok", health
        assert health["fts_consistent"], health
        assert (health["messages_without_chunks"], health["orphan_chunks"], health["bad_vectors"]) == (0, 0, 0), health
        return stored_keys(copy)


def assert_matches_reference(work: Workdir, reference: Reference, backend: Backend) -> None:
    assert backend.keys(work.store) == reference.keys
    backend.assert_healthy(work.store)
    assert top10(work.store) == reference.top10
    assert not work.temp_files()


# A kill throws away at most the batch being written and the one embedding meanwhile (the store's writes overlap
# the next batch since the writer thread: 1.2x faster ingests on both stores), never more.
LOST_BATCHES_PER_KILL = 2


def assert_rework_bounded(work: Workdir, reference: Reference, kills: int) -> None:
    """Texts embedded <= total + LOST_BATCHES_PER_KILL x batch size x kills."""
    embedded = work.embedded_texts()
    bound = reference.texts + LOST_BATCHES_PER_KILL * reference.largest_batch * kills
    assert reference.texts <= embedded <= bound, (embedded, reference.texts, kills)


@dataclass
class Landing:
    """Where one kill landed, from the killed process's trace lines."""

    phase: str
    trace: list[list[str]] = field(default_factory=list)


def landing(trace: list[list[str]], resumed: bool) -> Landing:
    """Start-up lasts until the first progress checkpoint (after the scan and the reconciliation) is in place."""
    sites = [parts[0] for parts in trace]
    if not sites:
        return Landing("interpreter start", trace)
    last = sites[-1]
    if last in ("progress_tmp_written", "before_replace"):
        return Landing("progress file replace", trace)
    if "after_replace" not in sites:
        return Landing("recovery/start-up" if resumed else "start-up", trace)
    if last == "before_commit":
        return Landing("open transaction", trace)
    return Landing("embedding/between batches", trace)


def phases(landings: list[Landing]) -> Counter:
    return Counter(item.phase for item in landings)
