"""Cold vector load benchmark: a new search process reading every blob out of SQLite, against one mapping
the vector file beside the store, against a process that kept its matrix.

    python bench/vector_load.py [--chunks 200000] [--dimensions 384] [--added 1000] [--repeats 3] [--keep DIR]

Builds a store of random unit vectors through ``SQLiteStore.upsert`` in a temp folder, then times, in
fresh child processes, ``load_vectors`` and the first unfiltered ``vector_hits`` after it; last, the ANN
index is built (``ensure_index``, timed) and the cold and warm search timed again through it. Every figure is
the median of ``--repeats`` children, measured side by side in this run; the store and the vector file
are in the page cache (as they are for a second search a minute later), not on a cold disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_description  # noqa: E402
from sparky.models import Conversation, Message
from sparky.stores import MessageRecord
from sparky.stores.sqlite import SQLiteStore, ann

CHILD = """
import json, sys, time
import numpy as np
from sparky.stores import StoreFilters
from sparky.stores.sqlite import SQLiteStore, search
reads = []
real = search._read_vectors
def counting(db, path, space, dimensions, after, up_to):
    reads.append(up_to - after)
    return real(db, path, space, dimensions, after, up_to)
search._read_vectors = counting
store = SQLiteStore(sys.argv[1], create=False)
query = np.random.default_rng(1).normal(size=int(sys.argv[2])).astype(np.float32)
times = []
for _ in range(2):  # cold, then warm (kept in this process)
    start = time.perf_counter()
    store.load_vectors()
    loaded = time.perf_counter()
    store.vector_hits(query, StoreFilters(), 10)
    times.append((loaded - start, time.perf_counter() - loaded))
print(json.dumps({"times": times, "rows_read": sum(reads)}))
"""
PER_MESSAGE = 2  # chunks
BATCH = 1000  # messages per upsert


def phase(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build(path: Path, chunks: int, dimensions: int) -> None:
    """Add ``chunks`` random unit vectors to the store (two chunks a message, 100 messages a conversation)."""
    store = SQLiteStore(path)
    store.ensure_schema("bench-model", dimensions)
    first = store.message_count()
    rng = np.random.default_rng(first)
    for start in range(first, first + chunks // PER_MESSAGE, BATCH):
        count = min(BATCH, first + chunks // PER_MESSAGE - start)
        vectors = rng.normal(size=(count, PER_MESSAGE, dimensions)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
        store.upsert([record(start + offset, vectors[offset]) for offset in range(count)])
    store.close()


def record(number: int, vectors: np.ndarray) -> MessageRecord:
    conversation = Conversation("chatgpt", f"c{number // 100}", f"conversation {number // 100}", 1.0, 2.0)
    message = Message(conversation.id, f"m{number}", ("user", "assistant")[number % 2], 1.0 + number,
                      f"message {number}", number % 100)
    texts = tuple(f"message {number} part {part}" for part in range(PER_MESSAGE))
    return MessageRecord(message.key("chatgpt"), conversation, message, texts, vectors)


def ensure_index(db: Path) -> tuple[int, bool] | None:
    """Build the store's ANN index, as the end of an ingest does."""
    store = SQLiteStore(db, create=False)
    try:
        return store.ensure_index()
    finally:
        store.close()


def child(db: Path, dimensions: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(db), str(dimensions)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


def measure(db: Path, dimensions: int, repeats: int, prepare) -> tuple[list[float], list[float], int]:
    """Median (load, first search) of the cold and the warm call over ``repeats`` children, and rows read
    from SQLite by the last child; ``prepare()`` runs before each child."""
    runs = []
    for _ in range(repeats):
        prepare()
        runs.append(child(db, dimensions))
    cold = [statistics.median(run["times"][0][i] for run in runs) for i in range(2)]
    warm = [statistics.median(run["times"][1][i] for run in runs) for i in range(2)]
    return cold, warm, runs[-1]["rows_read"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--added", type=int, default=1000, help="chunks an ingestion adds for the growth row")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the store in this folder and leave it there")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="sparky-vector-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "memory.db"
    folder = Path(f"{db}.vectors")
    try:
        if not db.exists():
            phase(f"building a store of {args.chunks:,} random {args.dimensions}-d chunks in {db}")
            build(db, args.chunks, args.dimensions)
        rows = []

        def no_file_unwritable() -> None:  # a file in the way: the vector folder cannot be made
            shutil.rmtree(folder, ignore_errors=True)
            folder.write_text("")

        def no_file() -> None:
            if folder.is_file():
                folder.unlink()
            shutil.rmtree(folder, ignore_errors=True)

        phase("cold: read from SQLite (no vector file, none can be written)")
        cold, _, read = measure(db, args.dimensions, args.repeats, no_file_unwritable)
        rows.append(("cold: read every blob from SQLite", cold, read))
        phase("cold: read from SQLite and write the vector file")
        cold, _, read = measure(db, args.dimensions, args.repeats, no_file)
        rows.append(("cold: read from SQLite, write the vector file", cold, read))
        phase("cold: map the vector file")
        cold, warm, read = measure(db, args.dimensions, args.repeats, lambda: None)
        rows.append(("cold: map the vector file", cold, read))
        rows.append(("warm: kept in the process", warm, 0))
        phase(f"cold after an ingestion of {args.added:,} chunks: map, read the new rows, append them")
        cold, _, read = measure(db, args.dimensions, args.repeats, lambda: build(db, args.added, args.dimensions))
        rows.append((f"cold after {args.added:,} chunks were added: map + append", cold, read))
        phase("building the ANN index (ensure_index), then cold: map the vector file and the index")
        started = time.perf_counter()
        built = ensure_index(db)
        seconds = time.perf_counter() - started
        cold, warm, read = measure(db, args.dimensions, args.repeats, lambda: None)
        rows.append(("cold: map the vector file and the ANN index" if built else
                     f"cold: map the vector file (below {ann.MIN_ROWS:,} rows: no ANN index)", cold, read))
        rows.append(("warm: kept in the process, through the ANN index" if built else "warm: kept, exact", warm, 0))
        print(f"Vector load, {rows[0][2]:,} chunks x {args.dimensions} dimensions (median of {args.repeats} "
              f"fresh processes)\nCPU: {cpu_description()}\n")
        print("| load | seconds | first search (s) | rows read from SQLite |\n|---|---:|---:|---:|")
        for name, (load, search), read in rows:
            print(f"| {name} | {load:.3f} | {search:.3f} | {read:,} |")
        print(f"\nANN index build (ensure_index, {os.cpu_count()} threads): {seconds:.0f} s; "
              f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
