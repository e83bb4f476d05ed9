"""``sparky reembed`` of a stored memory against the bare encode of its chunks: the overhead of reading the
chunks, committing a batch at a time and tracking progress (target: at most 1.05x the bare encode).

    .venv/bin/python bench/reembed.py [--messages 2000] [--embedder minilm] [--base wordllama] [--rounds 2]

A generated export is ingested once with ``--base`` (fast: the stored memory to start from); then, round by
round and interleaved so that load from other processes affects both alike, the same model embeds every
stored chunk text in batches of ``--batch-size`` (bare), and ``Reembedding`` adds its space to a fresh copy of
the store (reembed). The best round of each is kept; process CPU time (every thread) is less sensitive to
other load than wall time. Chunks are the base model's: texts longer than ``--embedder``'s window are
truncated alike on both sides.
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

ROOT = Path(__file__).resolve().parent.parent
MESSAGES_PER_CONVERSATION = 13719 / 544  # the export


def timed(work) -> tuple[float, float]:
    """Wall and process CPU seconds of ``work()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--embedder", default="minilm", help="the model of the new space")
    parser.add_argument("--base", default="wordllama", help="the model the memory is ingested with first")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from rich.console import Console

    from sparky.cli.display import Display
    from sparky.cli.reembed import ReembedDisplay
    from sparky.embedders import get_embedder
    from sparky.pipeline.ingest import Ingestion
    from sparky.pipeline.reembed import Reembedding, texts_to_reembed
    from sparky.stores import open_store

    print(cpu_description())
    work = Path(tempfile.mkdtemp(prefix="sparky-bench-reembed-"))
    try:
        conversations = max(1, round(args.messages / MESSAGES_PER_CONVERSATION))
        subprocess.run([sys.executable, str(ROOT / "sample" / "generate.py"), "--conversations", str(conversations),
                        "--messages", str(args.messages), "--out", str(work / "export")], check=True,
                       capture_output=True)
        base_db = work / "base.db"
        store = open_store(str(base_db))
        try:
            Ingestion(work / "export", work / "progress.json", store, get_embedder(args.base),
                      Display(Console(file=io.StringIO()), quiet=True)).run()
            texts = texts_to_reembed(store, get_embedder(args.embedder).model)
        finally:
            store.close()
        embedder = get_embedder(args.embedder)
        embedder.embed(texts[:8])  # warm: the first call sets up the runtime
        print(f"{args.messages:,} messages, {len(texts):,} chunks (chunked for {args.base}); new space "
              f"{embedder.model}, batches of {args.batch_size}")

        def bare() -> None:
            for start in range(0, len(texts), args.batch_size):
                embedder.embed(texts[start : start + args.batch_size])

        def reembed(round_: int) -> None:
            copy = work / f"round-{round_}.db"
            shutil.copy(base_db, copy)
            target = open_store(str(copy), create=False)
            try:
                result = Reembedding(target, embedder, ReembedDisplay(Console(file=io.StringIO()), quiet=True),
                                     batch_chunks=args.batch_size).run()
                assert result.complete and result.written == len(texts), result
            finally:
                target.close()

        bests = {"bare": (float("inf"), float("inf")), "reembed": (float("inf"), float("inf"))}
        for round_ in range(args.rounds):
            for name, run in (("bare", bare), ("reembed", lambda: reembed(round_))):
                wall, cpu = timed(run)
                print(f"  round {round_ + 1} {name:8} {wall:7.2f} s wall {cpu:7.2f} s CPU")
                bests[name] = (min(bests[name][0], wall), min(bests[name][1], cpu))
        (bare_wall, bare_cpu), (re_wall, re_cpu) = bests["bare"], bests["reembed"]
        print(f"best: bare {bare_wall:.2f} s wall / {bare_cpu:.2f} s CPU; reembed {re_wall:.2f} s wall / "
              f"{re_cpu:.2f} s CPU")
        print(f"ratio reembed / bare: wall {re_wall / bare_wall:.3f}, CPU {re_cpu / bare_cpu:.3f} (target <= 1.05)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
