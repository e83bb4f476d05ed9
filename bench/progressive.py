"""Progressive ingestion of the generated 13,719-message export: time to a searchable memory (the static pass),
the transformer pass against a bare encode of the same chunks, and hybrid recall@5 in each state.

    .venv/bin/python bench/progressive.py [--conversations 544] [--messages 13719] [--embedder minilm]
                                          [--static minilm-static]

One process, in the order a user meets them: the export is ingested with ``--progressive``'s pass 1
(``--static``, chunked for ``--embedder``) and stopped between the passes (a Ctrl+C there), the sample export
(the labelled queries' answers, bench/queries.json) likewise; pass 2 is then stopped at about half its
chunks (the mixed state: the sample's chunks, stored last, are all still static) and resumed to the end.
The bare encode embeds every stored chunk text with the same model in batches of the same size right
after, in the same process. Recall is measured at the end on copies of the store in each state (static,
mixed, full), with the static-to-MiniLM score mapping fitted on the full store (``--fit`` output) and with
the one shipped in ``sparky.search.spaces``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_description  # noqa: E402
from search_quality import SAMPLE, labelled_queries, quality, query_texts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEPTH = 50  # messages per query and space the score mapping is fitted on
KNOTS = 21


class Quiet:
    """A display of either pass that prints nothing; ``stop_at`` asks ``stop`` to stop after that many chunks."""

    def __init__(self, stop=None, stop_at: float | None = None) -> None:
        self.stop, self.stop_at, self.stored, self.target = stop, stop_at, 0, None

    def start(self, space, chunks: int, held: int) -> None:
        self.target = None if self.stop_at is None else int(chunks * self.stop_at) - held

    def batch_stored(self, stored: int, failed: int) -> None:
        self.stored += stored
        if self.target is not None and self.stored >= self.target:
            self.stop.event.set()

    def finish(self) -> None: ...
    def stopping(self, immediate: bool) -> None: ...


def snapshot(db: Path, to: Path) -> Path:
    with sqlite3.connect(db) as source, sqlite3.connect(to) as target:
        source.backup(target)
    return to


def fit_scale(db: Path, fast: str, better: str) -> tuple[list[float], list[float]]:
    """Quantile-to-quantile knots from ``fast``'s cosines to ``better``'s: the n-th best message's score of
    each query text of bench/queries.json in each space, pooled, then matched quantile by quantile."""
    from sparky.embedders import get_embedder
    from sparky.search.spaces import resolve_space
    from sparky.stores import StoreFilters, open_store

    store = open_store(str(db), create=False)
    pooled: dict[str, list[float]] = {fast: [], better: []}
    try:
        for name in (fast, better):
            space, embedder = resolve_space(store, name), get_embedder(name)
            for text in query_texts():
                vector = np.asarray(embedder.embed([text]), dtype=np.float32)[0]
                pooled[name] += [hit.score for hit in store.vector_hits(vector, StoreFilters(), DEPTH, space=space)]
    finally:
        store.close()
    levels = np.linspace(0, 1, KNOTS)
    xs, ys = np.quantile(pooled[fast], levels), np.quantile(pooled[better], levels)
    return [-1.0, *map(float, xs), 1.0], [-1.0, *map(float, ys), 1.0]


def recall5(db: Path, space: str | None = None) -> float:
    from sparky.search import Searcher, open_for_search

    store = open_for_search(str(db))
    try:
        searcher = Searcher(store)
        queries = labelled_queries(db)
        original = searcher.search
        searcher.search = lambda query, **tuning: original(query, space=space, **tuning)
        return quality(searcher, queries, "hybrid")["recall@5"]
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=544)
    parser.add_argument("--messages", type=int, default=13719)
    parser.add_argument("--embedder", default="minilm", help="the transformer of pass 2")
    parser.add_argument("--static", help="the static model of pass 1 (default: --progressive's, minilm-static)")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    from rich.console import Console

    from sparky.cli.display import Display
    from sparky.embedders import get_embedder, recorded_model
    from sparky.pipeline.ingest import Ingestion, StopRequest
    from sparky.pipeline.progressive import ProgressiveIngestion, default_static
    from sparky.pipeline.reembed import Reembedding
    from sparky.search import spaces
    from sparky.stores import Space, open_store

    args.static = args.static or default_static()
    print(cpu_description())
    print(f"load average at start: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    work = Path(tempfile.mkdtemp(prefix="sparky-bench-progressive-"))
    try:
        export = work / "export"
        subprocess.run([sys.executable, str(ROOT / "sample" / "generate.py"), "--conversations",
                        str(args.conversations), "--messages", str(args.messages), "--out", str(export)],
                       check=True, capture_output=True)
        db = work / "memory.db"
        store = open_store(str(db))
        quiet = Display(Console(file=io.StringIO()), quiet=True)
        try:
            started, cpu_started = time.perf_counter(), time.process_time()
            fast, model = get_embedder(args.static), get_embedder(args.embedder)
            searchable: dict[str, float] = {}

            def pass_one(export_path: Path, progress: str) -> None:
                stop = StopRequest()
                ProgressiveIngestion(export_path, work / progress, store, fast, model, quiet, Quiet(),
                                     batch_chunks=args.batch_size, stop=stop,
                                     between=lambda _: stop.event.set()).run()  # a Ctrl+C between the passes

            pass_one(export, "progress.json")
            searchable["export"], searchable["cpu"] = time.perf_counter() - started, time.process_time() - cpu_started
            plain_db = open_store(str(work / "plain.db"))  # side by side: a plain static ingest of the export
            try:
                wall, cpu = time.perf_counter(), time.process_time()
                Ingestion(export, work / "plain.json", plain_db, fast, quiet, batch_chunks=args.batch_size).run()
                plain = (time.perf_counter() - wall, time.process_time() - cpu, plain_db.stats()["chunks"])
            finally:
                plain_db.close()
            messages, chunks = store.message_count(), store.stats()["chunks"]
            pass_one(SAMPLE, "progress-sample.json")
            static_db = snapshot(db, work / "static.db")

            def pass_two(stop_at: float | None) -> tuple[float, float, int]:
                stop = StopRequest()
                wall, cpu = time.perf_counter(), time.process_time()
                result = Reembedding(store, model, Quiet(stop, stop_at), batch_chunks=args.batch_size, stop=stop,
                                     replace=True).run()
                return time.perf_counter() - wall, time.process_time() - cpu, result.written

            first = pass_two(0.5)
            mixed_db = snapshot(db, work / "mixed.db")
            vectors_at_stop = store.space_vectors()[Space(model.model, model.dimensions)]
            second = pass_two(None)
            total_chunks = store.stats()["chunks"]
            assert store.space_vectors()[Space(model.model, model.dimensions)] == total_chunks
            assert store.meta()["model"] == model.model
            texts = [text for _, text in store.chunks_missing_vectors(Space("none", 0), 0, 10 ** 9)]
        finally:
            store.close()
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(texts), args.batch_size):
            model.embed(texts[start : start + args.batch_size])
        bare = (time.perf_counter() - wall, time.process_time() - cpu)
        load_after = os.getloadavg()

        pass2 = (first[0] + second[0], first[1] + second[1])
        print(f"\n{args.messages:,} generated messages ({messages:,} stored, {chunks:,} chunks of up to "
              f"{model.max_tokens} {args.embedder} tokens) + the sample export: {total_chunks:,} chunks")
        print("| step | wall | CPU (all threads) |\n| --- | --- | --- |")
        print(f"| first searchable memory (models loaded, pass 1 of the export done) | {searchable['export']:.1f} s "
              f"| {searchable['cpu']:.1f} s (target <= 20 s wall: {'met' if searchable['export'] <= 20 else 'NOT met'}) |")
        print(f"| plain `--embedder {args.static}` ingest of the export ({plain[2]:,} chunks of up to "
              f"{fast.max_tokens} tokens) | "
              f"{plain[0]:.1f} s | {plain[1]:.1f} s |")
        print(f"| pass 2 ({args.embedder}), stopped at {vectors_at_stop:,} chunks and resumed | {pass2[0]:.1f} s "
              f"| {pass2[1]:.1f} s |")
        print(f"| bare encode of the same {len(texts):,} chunk texts, batches of {args.batch_size} | {bare[0]:.1f} s "
              f"| {bare[1]:.1f} s |")
        print(f"| ratio pass 2 / bare | {pass2[0] / bare[0]:.3f} | {pass2[1] / bare[1]:.3f} (target <= 1.05) |")
        print(f"load average after: {' '.join(f'{value:.1f}' for value in load_after)}")

        static_model = recorded_model(args.static)
        shipped = spaces.SCALES[static_model]
        fitted = fit_scale(db, args.static, args.embedder)
        print(f"\nfitted static -> {args.embedder} knots (--fit):\n  xs = {[round(x, 4) for x in fitted[0]]}\n"
              f"  ys = {[round(y, 4) for y in fitted[1]]}")
        identity = ((-1.0, 1.0), (-1.0, 1.0))
        states = [("static only", static_db, None), ("mixed (pass 2 at 50%)", mixed_db, None),
                  (f"mixed, --space {args.static}", mixed_db, args.static),
                  (f"mixed, --space {args.embedder}", mixed_db, args.embedder), ("full", db, None)]
        print("\n| state | hybrid recall@5, fitted mapping | shipped mapping | no mapping |\n| --- | --- | --- | --- |")
        for label, path, space in states:
            cells = []
            for scale in (fitted, shipped, identity):
                spaces.SCALES[static_model] = scale
                cells.append(f"{recall5(path, space):.3f}")
            print(f"| {label} | {' | '.join(cells)} |")
        spaces.SCALES[static_model] = shipped
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
