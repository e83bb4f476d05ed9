"""ANN libraries for the SQLite store's vector search: usearch against faiss-cpu HNSW, and the exact numpy scan.

    python bench/ann_libraries.py [--sizes 200000,1000000] [--exact-sizes 23000,100000,200000,1000000]
                                  [--dimensions 384] [--queries 100] [--ef 32,64,128,256] [--libraries usearch,faiss]

On ``bench/search_scale.py``'s clustered ``Corpus``, side by side in one run: for each library and size,
build time on every core (M=16, ef_construction=64), index size on disk, reopen time (usearch: a memory-
mapped view; faiss: read into memory), p50 of one query at a time (one thread) and recall@10 against exact
at each ef, and the time to add 1% more rows to the built graph. Then the exact scan's p50 (matrix product
and top-k) at each of ``--exact-sizes``, to find where it stops being fast. One table each, CPU line first.
faiss comes with the ``bench`` extra (``pip install -e '.[bench]'``); ``--libraries usearch`` needs nothing more.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_description  # noqa: E402
from search_scale import Corpus  # noqa: E402

K = 10
M = 16
EF_CONSTRUCTION = 64


def phase(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def exact_top(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    scores = vectors @ query
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])]


class Usearch:
    name = "usearch HNSW"

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.name = f"usearch HNSW ({dtype})"

    def build(self, vectors: np.ndarray) -> None:
        from usearch.index import Index

        self.index = Index(ndim=vectors.shape[1], metric="ip", dtype=self.dtype, connectivity=M,
                           expansion_add=EF_CONSTRUCTION)
        self.index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=os.cpu_count() or 1)

    def add(self, vectors: np.ndarray, first: int) -> None:
        self.index.add(np.arange(first, first + len(vectors), dtype=np.uint64), vectors,
                       threads=os.cpu_count() or 1)

    def save(self, path: Path) -> None:
        self.index.save(str(path))

    def reopen(self, path: Path) -> None:
        from usearch.index import Index

        self.index = Index.restore(str(path), view=True)

    def search(self, query: np.ndarray, ef: int) -> np.ndarray:
        self.index.expansion_search = ef
        return np.asarray(self.index.search(query, K, threads=1).keys, dtype=np.int64)


class Faiss:
    name = "faiss HNSWFlat (f32)"

    def build(self, vectors: np.ndarray) -> None:
        import faiss

        faiss.omp_set_num_threads(os.cpu_count() or 1)
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(vectors)

    def add(self, vectors: np.ndarray, first: int) -> None:
        self.index.add(vectors)

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))

    def reopen(self, path: Path) -> None:
        import faiss

        self.index = faiss.read_index(str(path))

    def search(self, query: np.ndarray, ef: int) -> np.ndarray:
        import faiss

        faiss.omp_set_num_threads(1)
        params = faiss.SearchParametersHNSW(efSearch=ef)
        return self.index.search(query[None, :], K, params=params)[1][0].astype(np.int64)


def measure(library, vectors: np.ndarray, queries: np.ndarray, truth: list[np.ndarray], efs: list[int],
            folder: Path) -> dict:
    extra = max(1, len(vectors) // 100)
    base, added = vectors[:-extra], vectors[-extra:]
    phase(f"  {library.name}: build {len(base):,}")
    started = time.perf_counter()
    library.build(base)
    built = time.perf_counter() - started
    started = time.perf_counter()
    library.add(added, len(base))
    grown = time.perf_counter() - started
    path = folder / "index.bin"
    library.save(path)
    started = time.perf_counter()
    library.reopen(path)
    reopened = time.perf_counter() - started
    by_ef = {}
    for ef in efs:
        for _ in range(2):  # a warm pass, then the timed one
            times, recalls = [], []
            for query, top in zip(queries, truth):
                started = time.perf_counter()
                found = library.search(query, ef)
                times.append(time.perf_counter() - started)
                recalls.append(len(set(found.tolist()) & set(top.tolist())) / K)
        by_ef[ef] = (statistics.median(times) * 1000, float(np.mean(recalls)))
    size = path.stat().st_size
    path.unlink()
    return {"build": built, "add": grown, "added": extra, "reopen": reopened, "size": size, "ef": by_ef}


def exact_p50(count: int, dimensions: int, queries: np.ndarray) -> float:
    vectors = Corpus(count, dimensions).vectors
    for _ in range(2):
        times = []
        for query in queries:
            started = time.perf_counter()
            exact_top(vectors, query)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200000,1000000")
    parser.add_argument("--exact-sizes", default="23000,100000,200000,1000000")
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--ef", default="32,64,128,256")
    parser.add_argument("--libraries", default="usearch-f16,usearch-i8,faiss",
                        help="comma-separated: usearch-f32, usearch-f16, usearch-i8, faiss")
    args = parser.parse_args()
    efs = [int(part) for part in args.ef.split(",")]
    print(f"CPU: {cpu_description()}")
    print(f"M={M}, ef_construction={EF_CONSTRUCTION}, k={K}, {args.queries} queries, one query at a time on one "
          f"thread; build and add on {os.cpu_count()} threads\n")
    print("| library | rows | build | add 1% | index file | reopen | " + " | ".join(
        f"ef {ef}: p50, recall@10" for ef in efs) + " | load avg |")
    print("| --- | --- | --- | --- | --- | --- |" + " --- |" * len(efs) + " --- |")
    for count in (int(part) for part in args.sizes.split(",") if part):
        phase(f"generating {count:,} vectors")
        corpus = Corpus(count, args.dimensions)
        queries = corpus.queries(args.queries)[0]
        truth = [exact_top(corpus.vectors, query) for query in queries]
        for name in args.libraries.split(","):
            library = Faiss() if name == "faiss" else Usearch(name.split("-")[1])
            with tempfile.TemporaryDirectory(prefix="sparky-ann-") as folder:
                row = measure(library, corpus.vectors, queries, truth, efs, Path(folder))
            del library
            cells = " | ".join(f"{p50:.2f} ms, {recall:.3f}" for p50, recall in row["ef"].values())
            print(f"| {name} | {count:,} | {row['build']:.0f} s | {row['add'] * 1000:.0f} ms ({row['added']:,} rows)"
                  f" | {row['size'] / 2**20:,.0f} MiB | {row['reopen'] * 1000:.0f} ms | {cells}"
                  f" | {os.getloadavg()[0]:.1f} |", flush=True)
        del corpus
    counts = [int(part) for part in args.exact_sizes.split(",") if part]
    if counts:
        print("\n| exact numpy scan | " + " | ".join(f"{count:,}" for count in counts) + " |")
        print("| --- |" + " --- |" * len(counts))
        queries = Corpus(1000, args.dimensions).queries(args.queries)[0]
        figures = [exact_p50(count, args.dimensions, queries) for count in counts]
        print("| p50 (matrix product + top 10) | " + " | ".join(f"{value:.1f} ms" for value in figures) + " |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end", flush=True)


if __name__ == "__main__":
    main()
