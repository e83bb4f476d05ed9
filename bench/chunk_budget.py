#!/usr/bin/env python3
"""Chunk token budget: recall@5 on the labelled queries (no distractors) per CPU second of ingestion, for a
few budgets (the embedder's window, which chunking fills), side by side in one run.

    .venv/bin/python bench/chunk_budget.py [--budgets 128,192,256] [--embedder minilm]

Each budget ingests the sample and the bench's own conversations (bench/search_quality.py's labelled store)
in this process, into a fresh folder, with the embedder's ``max_tokens`` set to the budget; its CPU time
(all threads) is counted. Queries run with the search as shipped (combined scores, floor, exchanges).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import search_quality  # noqa: E402
from machine import cpu_description  # noqa: E402

from sparky.cli import cli  # noqa: E402
from sparky.embedders import get_embedder  # noqa: E402
from sparky.search import Searcher, open_for_search  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="128,192,256")
    parser.add_argument("--embedder", default="minilm")
    args = parser.parse_args()
    embedder = get_embedder(args.embedder)
    spent = {"cpu": 0.0, "wall": 0.0}

    def ingest(export: Path, folder: Path, name: str = "minilm", progress: str = "progress.json") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        started, cpu_started = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cli.main(["ingest", str(export), "--progress-file", str(folder / progress), "--embedder", name,
                      "--quiet"], standalone_mode=False)
        spent["cpu"] += time.process_time() - cpu_started
        spent["wall"] += time.perf_counter() - started

    search_quality.ingest = ingest  # in this process: the budget set on the shared embedder applies
    print(f"CPU: {cpu_description()}; load average before {os.getloadavg()[0]:.2f}; embedder {args.embedder}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sparky-chunk-budget-") as work:
        for budget in (int(b) for b in args.budgets.split(",")):
            embedder.max_tokens = budget
            spent.update(cpu=0.0, wall=0.0)
            db = search_quality.labelled_store(Path(work) / str(budget), f"labelled-{args.embedder}", None,
                                               args.embedder)
            queries = search_quality.labelled_queries(db, None)
            store = open_for_search(str(db))
            searcher = Searcher(store, args.embedder)
            recall = {mode: search_quality.quality(searcher, queries, mode, **search_quality.AFTER)["recall@5"]
                      for mode in ("hybrid", "vector")}
            chunks = store.stats()["chunks"]
            store.close()
            rows.append((budget, chunks, spent["cpu"], spent["wall"], recall["hybrid"], recall["vector"]))
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(f"{'budget':>7}{'chunks':>8}{'ingest CPU s':>13}{'wall s':>8}{'hybrid r@5':>11}{'vector r@5':>11}"
          f"{'hybrid r@5 / CPU s':>19}")
    for budget, chunks, cpu, wall, hybrid, vector in rows:
        print(f"{budget:>7}{chunks:>8}{cpu:>13.1f}{wall:>8.1f}{hybrid:>11.3f}{vector:>11.3f}{hybrid / cpu:>19.4f}")


if __name__ == "__main__":
    main()
