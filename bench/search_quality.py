#!/usr/bin/env python3
"""Search quality and latency: recall@1, recall@5 and MRR per mode on the labelled sample queries (on the
sample alone, then with the 13,719 messages of a generated export as distractors), warm latency at 14k
messages and at 200k chunks (synthetic rows added), and the cold start of ``retrieve_similar.py``.

    .venv/bin/python bench/search_quality.py [--sweep] [--quality-only] [--work DIR] [--embedder NAME]

Answers in bench/queries.json name a conversation id and a distinctive substring of the answering
message; they are resolved to message keys in the freshly ingested store, so they survive key changes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparky.search import MODES, RRF_K, SIDE_DEPTH, Searcher, open_for_search

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample" / "chat-history"
QUERIES = Path(__file__).with_name("queries.json")
K = 10


def ingest(export: Path, folder: Path, embedder: str = "minilm") -> None:
    """Ingest an export with the real CLI into ``folder``/sparky_memory.db."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sparky", "ingest", str(export), "--progress-file",
                           str(folder / "progress.json"), "--embedder", embedder, "--quiet"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ingesting {export} failed:\n{done.stdout}{done.stderr}")
    print(f"  ingested {export} in {time.perf_counter() - started:.0f} s")


def query_texts() -> list[str]:
    """The labelled queries' strings alone."""
    return [query["query"] for query in json.loads(QUERIES.read_text(encoding="utf-8"))]


def labelled_queries(db: Path) -> list[dict]:
    """The query set with each answer resolved to exactly one stored message key."""
    queries = json.loads(QUERIES.read_text(encoding="utf-8"))
    with sqlite3.connect(db) as conn:
        for query in queries:
            query["keys"] = set()
            for answer in query["answers"]:
                keys = [row[0] for row in conn.execute(
                    "SELECT m.key FROM messages m JOIN conversations v ON v.id = m.conversation"
                    " WHERE v.conversation_id = ? AND instr(m.text, ?) > 0",
                    (answer["conversation"], answer["contains"]))]
                if len(keys) != 1:
                    raise SystemExit(f"{query['query']!r}: answer {answer} matches {len(keys)} messages, not 1")
                query["keys"].update(keys)
    return queries


def quality(searcher: Searcher, queries: list[dict], mode: str, **tuning) -> dict[str, float]:
    """Mean recall@1 and recall@5 (answers in the top k over min(k, answers): 1.0 when the top k holds as
    many answers as fit) and MRR (1 / rank of the first answer in the top 10, else 0)."""
    recall1, recall5, reciprocal = [], [], []
    for query in queries:
        keys = [result.key for result in searcher.search(query["query"], k=K, mode=mode, **tuning)]
        wanted = query["keys"]
        recall1.append(len(wanted & set(keys[:1])))
        recall5.append(len(wanted & set(keys[:5])) / min(5, len(wanted)))
        rank = next((i for i, key in enumerate(keys, 1) if key in wanted), None)
        reciprocal.append(1 / rank if rank else 0.0)
    return {"recall@1": statistics.mean(recall1), "recall@5": statistics.mean(recall5),
            "MRR": statistics.mean(reciprocal)}


def print_quality(searcher: Searcher, queries: list[dict], label: str) -> None:
    kinds = sorted({query["kind"] for query in queries})
    print(f"\nQuality on {len(queries)} labelled queries, {label} (RRF k={RRF_K}, depth={SIDE_DEPTH})")
    print(f"  {'subset':<18}{'mode':<9}{'recall@1':>9}{'recall@5':>9}{'MRR':>7}")
    for subset in ["all", *kinds]:
        chosen = [q for q in queries if subset in ("all", q["kind"])]
        for mode in MODES:
            scores = quality(searcher, chosen, mode)
            print(f"  {subset + f' ({len(chosen)})':<18}{mode:<9}"
                  f"{scores['recall@1']:>9.3f}{scores['recall@5']:>9.3f}{scores['MRR']:>7.3f}")


def sweep(searcher: Searcher, queries: list[dict]) -> None:
    """Hybrid recall@5 / MRR over RRF k and per-side depth."""
    print("\nHybrid sweep (recall@5 / MRR)")
    depths = (10, 20, 30, 50, 100)
    print("  RRF k " + "".join(f"{f'depth {d}':>15}" for d in depths))
    for rrf_k in (1, 5, 10, 20, 30, 60, 100):
        cells = [quality(searcher, queries, "hybrid", depth=d, rrf_k=rrf_k) for d in depths]
        print(f"  {rrf_k:>5} " + "".join(f"{c['recall@5']:>8.3f} /{c['MRR']:.3f}" for c in cells))


@dataclass
class Latency:
    """Warm search latency on one store: (p50, p95) milliseconds per mode, after a first, loading search."""

    messages: int
    chunks: int
    first_ms: float
    searches: int  # per mode
    percentiles: dict[str, tuple[float, float]]


def measure_latency(db: Path, queries: list[str], rounds: int = 3, modes: tuple[str, ...] = MODES,
                    embedder: str = "minilm") -> Latency:
    """Warm per-query latency per mode (model and matrix loaded by a first search)."""
    store = open_for_search(str(db))
    try:
        searcher = Searcher(store, embedder)
        started = time.perf_counter()
        searcher.search(queries[0], k=K)
        first = (time.perf_counter() - started) * 1000
        percentiles = {}
        for mode in modes:
            times = []
            for _ in range(rounds):
                for query in queries:
                    started = time.perf_counter()
                    searcher.search(query, k=K, mode=mode)
                    times.append((time.perf_counter() - started) * 1000)
            p50, p95 = np.percentile(times, [50, 95])
            percentiles[mode] = (float(p50), float(p95))
        chunks = store.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        messages = store.db.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        store.close()
    return Latency(messages, chunks, first, rounds * len(queries), percentiles)


def latency(db: Path, queries: list[str], label: str, rounds: int = 3, embedder: str = "minilm") -> None:
    """Print the warm per-query latency per mode."""
    result = measure_latency(db, queries, rounds, embedder=embedder)
    print(f"\nWarm latency, {label}: {result.messages:,} messages, {result.chunks:,} chunks "
          f"(first search, loading model and vectors: {result.first_ms:.0f} ms; "
          f"load average {os.getloadavg()[0]:.1f})")
    for mode, (p50, p95) in result.percentiles.items():
        print(f"  {mode:<8} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   ({result.searches} searches)")


def cold_start(db: Path, query: str, runs: int = 5, embedder: str = "minilm") -> None:
    """Wall time of ``python retrieve_similar.py QUERY`` in a fresh process, per mode."""
    print(f"\nCold process `retrieve_similar.py {query!r}` ({runs} runs; load average {os.getloadavg()[0]:.1f})")
    for mode in ("hybrid", "keyword"):
        times, cpu = [], []
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "retrieve_similar.py"), query, "--db", str(db), "--mode",
                            mode, "--embedder", embedder], check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        print(f"  {mode:<8} wall median {statistics.median(times):.2f} s, max {max(times):.2f} s"
              f"   (CPU time median {statistics.median(cpu):.2f} s)")


def synthesise(db: Path, target_chunks: int, seed: int = 1) -> None:
    """Add generated messages up to the target: random unit vectors, and text drawn from the store's own
    words with their own frequencies (so rare terms stay rare and common ones common)."""
    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(db, isolation_level=None)
    count, dimensions = conn.execute("SELECT count(*), length(vector) / 4 FROM chunks").fetchone()
    words = np.array([w for (t,) in conn.execute("SELECT text FROM chunks LIMIT 20000") for w in t.split()])
    conn.execute("BEGIN")
    conversation = None
    for number in range(target_chunks - count):
        if number % 25 == 0:
            conversation = conn.execute(
                "INSERT INTO conversations (source, conversation_id, title, created_at, updated_at)"
                " VALUES ('chatgpt', ?, ?, ?, NULL)",
                (f"synthetic-{number}", " ".join(rng.choice(words, 4)), 1.6e9 + number * 60)).lastrowid
        text = " ".join(rng.choice(words, int(rng.integers(20, 150))))
        message = conn.execute(
            "INSERT INTO messages (key, conversation, message_id, role, created_at, position, text, ingested_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            (f"synthetic-{number}", conversation, str(number), "user" if number % 2 else "assistant",
             1.6e9 + number * 60, number % 25, text)).lastrowid
        vector = rng.standard_normal(dimensions).astype(np.float32)
        chunk = conn.execute("INSERT INTO chunks (message, idx, text, vector) VALUES (?, 0, ?, ?)",
                             (message, text, (vector / np.linalg.norm(vector)).tobytes())).lastrowid
        conn.execute("INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)", (chunk, text))
    conn.execute("COMMIT")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="Also sweep RRF k and per-side depth.")
    parser.add_argument("--quality-only", action="store_true", help="Only the sample alone: no 14k/200k stores.")
    parser.add_argument("--work", type=Path, help="Keep stores here (reused when present) instead of a temp dir.")
    parser.add_argument("--embedder", default="minilm", help="Embedding model to ingest and search with.")
    args = parser.parse_args()
    embedder = args.embedder
    work = args.work or Path(tempfile.mkdtemp(prefix="sparky-search-bench-"))
    try:
        sample_db = work / "sample" / "sparky_memory.db"
        if not sample_db.exists():
            ingest(SAMPLE, sample_db.parent, embedder)
        evaluate(sample_db, "the sample alone", args.sweep and args.quality_only, embedder)
        if args.quality_only:
            return
        big_db = work / "generated" / "sparky_memory.db"
        if not big_db.exists():
            export = work / "generated-export" / "chat-history"
            subprocess.run([sys.executable, str(ROOT / "sample" / "generate.py"), "--conversations", "544",
                            "--messages", "13719", "--out", str(export)], check=True, stdout=subprocess.DEVNULL)
            ingest(export, big_db.parent, embedder)
        mixed_db = work / "mixed" / "sparky_memory.db"
        if not mixed_db.exists():
            mixed_db.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(big_db, mixed_db)
            ingest(SAMPLE, mixed_db.parent, embedder)
        evaluate(mixed_db, "the sample among the 13,719 generated messages", args.sweep, embedder)
        texts = query_texts()
        latency(big_db, texts, "generated export", embedder=embedder)
        cold_start(big_db, "how did I fix the docker permission error", embedder=embedder)
        huge_db = work / "synthetic" / "sparky_memory.db"
        if not huge_db.exists():
            huge_db.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(big_db, huge_db)
            synthesise(huge_db, 200_000)
        latency(huge_db, texts, "generated export + synthetic rows", embedder=embedder)
        cold_start(huge_db, "how did I fix the docker permission error", runs=3, embedder=embedder)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def evaluate(db: Path, label: str, with_sweep: bool, embedder: str = "minilm") -> None:
    """The quality table (and the sweep) for the labelled queries on one store."""
    queries = labelled_queries(db)
    store = open_for_search(str(db))
    searcher = Searcher(store, embedder)
    print_quality(searcher, queries, f"{label}, {embedder}")
    if with_sweep:
        sweep(searcher, queries)
    store.close()


if __name__ == "__main__":
    main()
