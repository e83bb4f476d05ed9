"""The crash suite's shared machinery: a small export and its clean reference run, running ingesters as real
processes, a thread watching the progress file, reading the phase trace, and the checks every crash must pass.

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
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import generate_export, sparky_subprocess, store_health
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


@dataclass
class Workdir:
    """One ingestion's files: its progress file, store and phase trace."""

    root: Path
    temp_owners: set[int] = field(default_factory=set)  # pids whose temp files may still be there

    @property
    def progress(self) -> Path:
        return self.root / "progress.json"

    @property
    def db(self) -> Path:
        return self.root / "store.db"

    @property
    def trace(self) -> Path:
        return self.root / "trace.txt"

    def args(self, export: Path) -> list[str]:
        return ["ingest", str(export), "--batch-size", str(BATCH), "--quiet",
                "--progress-file", str(self.progress), "--db", str(self.db)]

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


@pytest.fixture(scope="session")
def reference(tmp_path_factory, crash_export) -> Reference:
    work = Workdir(tmp_path_factory.mktemp("clean"))
    process = work.start(crash_export)
    _, err = process.communicate(timeout=RUN_TIMEOUT)
    assert process.returncode == 0, err
    keys = stored_keys(work.db)
    assert keys == sorted(scan_export(ExportReader(crash_export)).all_keys()) and len(keys) == MESSAGES
    trace = work.trace_of(process.pid)
    batches = [int(parts[1]) for parts in trace if parts[0] == "after_embed"]
    sites = [parts[0] for parts in trace]
    first_checkpoint = sites.index("after_replace") + 1
    ranking = top10(work.db)
    assert all(len(hits) == 10 for hits in ranking.values())
    return Reference(keys, ranking, sum(batches), max(batches), Counter(sites[:first_checkpoint]),
                     Counter(sites[first_checkpoint:]))


def stored_keys(db: Path) -> list[str]:
    with sqlite3.connect(db) as connection:
        return [row[0] for row in connection.execute("SELECT key FROM messages ORDER BY key")]


def top10(db: Path) -> dict[str, list[tuple[str, float]]]:
    """The hybrid top-10 (message key, score) of every fixed query, as `sparky search` ranks them."""
    from sparky.search import Searcher, open_for_search

    store = open_for_search(str(db))
    try:
        searcher = Searcher(store)
        return {query: [(hit.key, round(hit.score, 6)) for hit in searcher.search(query, k=10)] for query in QUERIES}
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


def assert_consistent(work: Workdir, reference: Reference, dead_pid: int) -> int:
    """The checks after every crash; returns how many messages are stored.

    The store is checked on a copy (database and WAL), so the next ingester still has to do the recovery
    itself, exactly as it would after a real crash.
    """
    stored = _check_store_copy(work.db) if work.db.exists() else []
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
    for path, what in ((work.progress, "progress file"), (work.db, "store")):
        FileLock(path, what).acquire().release()  # a killed holder's flock is gone
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


def assert_matches_reference(work: Workdir, reference: Reference) -> None:
    assert stored_keys(work.db) == reference.keys
    health = store_health(work.db)
    assert (health["integrity"], health["fts_consistent"], health["messages_without_chunks"],
            health["orphan_chunks"], health["bad_vectors"]) == ("ok", True, 0, 0, 0), health
    assert top10(work.db) == reference.top10
    assert not work.temp_files()


def assert_rework_bounded(work: Workdir, reference: Reference, kills: int) -> None:
    """A kill throws away at most the batch being stored: texts embedded <= total + batch size x kills."""
    embedded = work.embedded_texts()
    assert reference.texts <= embedded <= reference.texts + reference.largest_batch * kills, (
        embedded, reference.texts, kills)


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
