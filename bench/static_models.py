"""The static models of progressive ingestion side by side: wordllama and minilm-static (all-MiniLM-L6-v2
distilled the model2vec way), in one run on the generated 13,719-message export.

    .venv/bin/python bench/static_models.py [--conversations 544] [--messages 13719] [--rounds 3]

First, in a subprocess with an empty SPARKY_CACHE_DIR, minilm-static's one-off distillation (the fp32 graph
built before the clock starts) and each model's load from a warm cache. Then in this process, round by round
with the two models interleaved (load from other processes affects both alike; the best round is kept):
``--progressive``'s pass 1 of the export chunked for minilm into a fresh store (stopped between the passes,
as bench/progressive.py), and a bare encode of the stored chunk texts in batches of 256 (texts/s). Last, the
sample export's pass 1 into the last round's stores: static-only hybrid and vector recall@1/@5 of the labelled
queries (bench/queries.json), per class.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_description  # noqa: E402
from progressive import Quiet  # noqa: E402
from search_quality import SAMPLE, labelled_queries, quality  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("wordllama", "minilm-static")
TRANSFORMER = "minilm"
COLD = """
import time
from sparky.embedders import distilled, local
local.fp32_path()
started = time.perf_counter()
distilled.load_table()
print(f"{time.perf_counter() - started:.2f}")
"""
WARM = """
import time
started = time.perf_counter()
from sparky.embedders import get_embedder
get_embedder({name!r}).embed(["warm"])
print(f"{{time.perf_counter() - started:.2f}}")
"""


def child(code: str, env: dict[str, str] | None = None) -> float:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=544)
    parser.add_argument("--messages", type=int, default=13719)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    from rich.console import Console

    from sparky.cli.display import Display
    from sparky.embedders import get_embedder
    from sparky.pipeline.ingest import StopRequest
    from sparky.pipeline.progressive import ProgressiveIngestion
    from sparky.search import Searcher, open_for_search
    from sparky.stores import Space, open_store

    print(cpu_description())
    print(f"load average at start: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    work = Path(tempfile.mkdtemp(prefix="sparky-bench-static-"))
    try:
        distillation = child(COLD, {"SPARKY_CACHE_DIR": str(work / "cache")})
        loads = {name: min(child(WARM.format(name=name)) for _ in range(3)) for name in MODELS}
        export = work / "export"
        subprocess.run([sys.executable, str(ROOT / "sample" / "generate.py"), "--conversations",
                        str(args.conversations), "--messages", str(args.messages), "--out", str(export)],
                       check=True, capture_output=True)
        quiet = Display(Console(file=io.StringIO()), quiet=True)
        transformer = get_embedder(TRANSFORMER)
        fast = {name: get_embedder(name) for name in MODELS}

        def pass_one(store, name: str, export_path: Path, progress: Path) -> None:
            stop = StopRequest()
            ProgressiveIngestion(export_path, progress, store, fast[name], transformer, quiet, Quiet(),
                                 batch_chunks=args.batch_size, stop=stop, between=lambda _: stop.event.set()).run()

        first: dict[str, list[tuple[float, float]]] = {name: [] for name in MODELS}
        encode: dict[str, list[tuple[float, float]]] = {name: [] for name in MODELS}
        chunks: dict[str, int] = {}
        for round_ in range(args.rounds):
            for name in MODELS:
                db = work / f"{name}.db"
                db.unlink(missing_ok=True)
                (work / f"{name}.json").unlink(missing_ok=True)
                store = open_store(str(db))
                try:
                    wall, cpu = time.perf_counter(), time.process_time()
                    pass_one(store, name, export, work / f"{name}.json")
                    first[name].append((time.perf_counter() - wall, time.process_time() - cpu))
                    texts = [text for _, text in store.chunks_missing_vectors(Space("none", 0), 0, 10 ** 9)]
                    chunks[name] = len(texts)
                    if round_ == args.rounds - 1:
                        pass_one(store, name, SAMPLE, work / f"{name}-sample.json")
                finally:
                    store.close()
                wall, cpu = time.perf_counter(), time.process_time()
                for start in range(0, len(texts), args.batch_size):
                    fast[name].embed(texts[start : start + args.batch_size])
                encode[name].append((time.perf_counter() - wall, time.process_time() - cpu))
        load_after = os.getloadavg()

        print(f"\n{args.messages:,} generated messages, chunked for {TRANSFORMER} (up to {transformer.max_tokens} "
              f"tokens); best of {args.rounds} interleaved rounds; CPU: all threads of the process")
        print(f"minilm-static distillation on first use (cold cache, fp32 graph already built): {distillation:.1f} s")
        print("| model | load (warm cache, subprocess) | pass 1 of the export | CPU | bare encode of its chunks "
              "| texts/s |\n| --- | --- | --- | --- | --- | --- |")
        for name in MODELS:
            best_first, best_encode = min(first[name]), min(encode[name])
            print(f"| {name} | {loads[name]:.2f} s | {best_first[0]:.1f} s | {best_first[1]:.1f} s | "
                  f"{best_encode[0]:.2f} s ({chunks[name]:,} chunks) | {chunks[name] / best_encode[0]:,.0f} |")
        ratio = min(first["minilm-static"])[0] / min(first["wordllama"])[0]
        speed = min(encode["minilm-static"])[0] / min(encode["wordllama"])[0]
        print(f"ratio minilm-static / wordllama: pass 1 {ratio:.2f}, bare encode {speed:.2f}")
        print(f"load average after: {' '.join(f'{value:.1f}' for value in load_after)}")

        print("\nstatic-only recall of the labelled queries (the sample among the generated export), r@1 / r@5")
        header = " | ".join(f"{name} {mode}" for name in MODELS for mode in ("hybrid", "vector"))
        print(f"| class | {header} |\n| --- |{' --- |' * 2 * len(MODELS)}")
        rows: dict[str, list[str]] = {}
        for name in MODELS:
            store = open_for_search(str(work / f"{name}.db"))
            try:
                searcher, queries = Searcher(store), labelled_queries(work / f"{name}.db")
                for kind in ["all", *dict.fromkeys(query["kind"] for query in queries)]:
                    chosen = [query for query in queries if kind in ("all", query["kind"])]
                    for mode in ("hybrid", "vector"):
                        scores = quality(searcher, chosen, mode)
                        rows.setdefault(kind, []).append(f"{scores['recall@1']:.3f} / {scores['recall@5']:.3f}")
            finally:
                store.close()
        for kind, cells in rows.items():
            print(f"| {kind} | {' | '.join(cells)} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
