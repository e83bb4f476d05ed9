"""Warm ``search_memory`` latency through the MCP server over stdio, as an assistant sees it.

    python bench/mcp_latency.py [--chunks 23000] [--queries 200] [--warmup 20] [--k 5] [--db PATH] [--keep DIR]

Without ``--db``, builds a SQLite store of ``--chunks`` one-chunk messages (the clustered synthetic corpus
of ``search_scale.py``, recorded as built with the default model, so the server embeds each query with the
real model and searches both sides). Starts ``sparky mcp`` as a subprocess and talks to it with the SDK's
own stdio client: the time from start to the first answer (model load included), then, after
``--warmup`` calls, each ``search_memory`` call's round trip (embedding, hybrid search, exchanges, JSON-RPC
over the pipes). Queries alternate between the natural queries of ``queries.json`` and the corpus' own
words (so the keyword side finds something too). Phases go to stderr; the table to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_description  # noqa: E402
from search_scale import Corpus, phase  # noqa: E402

from sparky.embedders import DEFAULT_EMBEDDER, get_embedder  # noqa: E402
from sparky.stores import open_store  # noqa: E402

BATCH = 2000


def build(path: Path, chunks: int) -> list[str]:
    """A store of ``chunks`` synthetic messages recorded as the default model's; returns word queries for it."""
    embedder = get_embedder(DEFAULT_EMBEDDER)
    corpus = Corpus(chunks, embedder.dimensions)
    store = open_store(str(path))
    try:
        store.ensure_schema(embedder.model, embedder.dimensions)
        for start in range(0, chunks, BATCH):
            store.upsert(corpus.records(start, min(chunks, start + BATCH)))
    finally:
        store.close()
    return corpus.queries(500)[1]


async def measure(db: Path, queries: list[str], count: int, warmup: int, k: int) -> tuple[float, list[float], int]:
    """Seconds from start to the first answer, the warm calls' round trips (ms), and the store's chunks."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "sparky", "mcp", "--db", str(db)])
    started = time.perf_counter()
    with open(db.parent / "server-stderr.txt", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                first = await session.call_tool("search_memory", {"query": queries[0], "k": k})
                cold = time.perf_counter() - started
                if first.is_error:
                    raise SystemExit(f"search_memory failed: {first.content[0].text}")
                chunks = (await session.call_tool("memory_stats", {})).structured_content["chunks"]
                timings = []
                for number in range(warmup + count):
                    query = queries[(number + 1) % len(queries)]
                    begun = time.perf_counter()
                    result = await session.call_tool("search_memory", {"query": query, "k": k})
                    if result.is_error:
                        raise SystemExit(f"search_memory failed: {result.content[0].text}")
                    if number >= warmup:
                        timings.append((time.perf_counter() - begun) * 1000)
    return cold, timings, chunks


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=23_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--db", type=Path, help="measure an existing store instead of building one")
    parser.add_argument("--keep", type=Path, help="build the store in this folder and keep it")
    args = parser.parse_args()

    natural = [item["query"] for item in json.loads((Path(__file__).parent / "queries.json").read_text())["queries"]]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="sparky-mcp-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        db = args.db.resolve() if args.db else folder / "memory.db"
        words: list[str] = []
        if args.db is None:
            phase(f"building a store of {args.chunks:,} chunks in {folder}")
            words = build(db, args.chunks)
        queries = [query for pair in zip(itertools.cycle(natural), words) for query in pair] if words else natural
        phase(f"starting sparky mcp over stdio; {args.warmup} warm-up calls, then {args.queries} measured")
        cold, timings, chunks = anyio.run(measure, db, queries, args.queries, args.warmup, args.k)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"CPU: {cpu_description()}")
    print(f"store: {chunks:,} chunks; k={args.k}; {len(timings)} warm calls over stdio")
    print("| measure | ms |")
    print("| --- | ---: |")
    print(f"| start to first answer (model load included) | {cold * 1000:.0f} |")
    print(f"| warm search_memory p50 | {statistics.median(timings):.1f} |")
    print(f"| warm search_memory p95 | {percentile(timings, 0.95):.1f} |")
    print(f"| warm search_memory max | {max(timings):.1f} |")


if __name__ == "__main__":
    main()
