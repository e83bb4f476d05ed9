"""The openai embedder at full speed against a server-enforced rate limit (issue 11's benchmark).

    python bench/ingest_openai.py [--conversations 544] [--messages 13719] [--latency 0.3]
                                  [--tiers tier3,tier1] [--concurrency 4] [--batch-size 256] [--burst 2]

The generated export goes through ``tests/support/fake_openai.py`` run as its own process: an
OpenAI-compatible server on 127.0.0.1, ``--latency`` seconds per answer, requests/min and tokens/min
enforced as budgets refilled continuously (up to a minute's worth, as OpenAI documents them) that start
with ``--burst`` seconds' worth, 429 with ``retry-after-ms`` and OpenAI's ``x-ratelimit-*`` headers. Model
text-embedding-3-small (cl100k_base tokens; 256 dimensions to keep the answers small). The pipeline runs
in this process, as ``sparky ingest`` does.

Per tier: wall time of the ingestion (from the start of the run, its scan included), requests, 429s,
retries, peak requests in flight, and the floor the limits set: the earliest the server could have
admitted every token and request, max((tokens - start) / TPM, (requests - start) / RPM) minutes, with
tokens as the server counted them and ``start`` the budget it starts with. Target: wall ≤ 1.15 × floor,
every 429 handled and nothing lost (every message stored, every chunk answered exactly once).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from machine import cpu_description
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
TIERS = {  # OpenAI's limits for text-embedding-3-small
    "tier3": (5_000, 5_000_000),
    "tier1": (3_000, 1_000_000),
}
TARGET = 1.15


def phase(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def generate(out: Path, conversations: int, messages: int) -> Path:
    phase(f"generating an export of {conversations:,} conversations, {messages:,} messages")
    subprocess.run([sys.executable, str(ROOT / "sample" / "generate.py"), "--conversations", str(conversations),
                    "--messages", str(messages), "--out", str(out)], check=True, stdout=sys.stderr)
    return out


def start_server(work: Path, latency: float, rpm: float | None, tpm: float | None, burst: float
                 ) -> tuple[subprocess.Popen, str, Path]:
    port_file, stats_file = work / "server.url", work / "server.json"
    command = [sys.executable, str(ROOT / "tests" / "support" / "fake_openai.py"), "--port-file", str(port_file),
               "--stats-file", str(stats_file), "--latency", str(latency), "--burst", str(burst)]
    if rpm:
        command += ["--rpm", str(rpm)]
    if tpm:
        command += ["--tpm", str(tpm)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    server = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text():
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the fake server did not start")
        time.sleep(0.05)
    return server, port_file.read_text(), stats_file


def stop_server(server: subprocess.Popen, stats_file: Path) -> dict:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    return json.loads(stats_file.read_text())


def run_tier(name: str, export: Path, work: Path, args: argparse.Namespace) -> dict:
    from sparky.cli.display import Display
    from sparky.embedders import RetryPolicy, openai_embedder
    from sparky.pipeline.ingest import Ingestion, StopRequest
    from sparky.stores.sqlite import SQLiteStore

    rpm, tpm = TIERS[name] if name in TIERS else (None, None)
    folder = work / name
    folder.mkdir()
    server, url, stats_file = start_server(folder, args.latency, rpm, tpm, args.burst)
    try:
        embedder = openai_embedder("text-embedding-3-small", base_url=url, api_key_env=None, dimensions=256,
                                   concurrency=args.concurrency)
        stop = StopRequest()
        embedder.bind_stop(stop.event)
        store = SQLiteStore(folder / "m.db")
        phase(f"{name}: ingesting through {url} ({rpm or '∞'} requests/min, {tpm or '∞'} tokens/min, "
              f"{args.latency:g}s a request)")
        started, started_wall = time.perf_counter(), time.time()
        try:
            result = Ingestion(export, folder / "p.json", store, embedder,
                               Display(Console(file=io.StringIO()), quiet=True), batch_chunks=args.batch_size,
                               stop=stop, retry=RetryPolicy()).run()
        finally:
            store.close()
        wall = time.perf_counter() - started
    finally:
        stats = stop_server(server, stats_file)
    with sqlite3.connect(folder / "m.db") as db:
        chunks = db.execute("SELECT count(*) FROM chunks").fetchone()[0]
    statuses = Counter({int(k): v for k, v in stats["statuses"].items()})
    start = args.burst / 60  # minutes of budget the server starts with
    floor = max(stats["tokens"] / tpm - start, stats["answered"] / rpm - start, 0) * 60 if tpm else None
    row = {
        "tier": name, "rpm": rpm, "tpm": tpm, "wall": wall, "floor": floor,
        "before_first_request": (stats["first_wall"] - started_wall) if stats["first_wall"] else None,
        "ratio": wall / floor if floor else None, "requests": stats["requests"], "answered": stats["answered"],
        "rate_limited": statuses[429], "retries": stats["requests"] - stats["answered"],
        "peak_in_flight": stats["peak_in_flight"], "gate_peak": embedder.gate.stats.peak_in_flight,
        "lowest_limit": embedder.gate.stats.lowest_limit, "paced_seconds": embedder.gate.stats.paced_seconds,
        "tokens": stats["tokens"], "texts": stats["texts"], "chunks": chunks,
        "stored": result.stored_messages, "total": result.total_messages, "failed": result.failed,
        "lost": result.total_messages - result.stored_messages, "complete": result.complete,
    }
    phase(f"{name}: {wall:.1f}s wall" + (f", floor {floor:.1f}s, ratio {row['ratio']:.2f}" if floor else "")
          + f"; {row['requests']} requests, {row['rate_limited']} answered 429, peak {row['peak_in_flight']} in flight")
    return row


def table(rows: list[dict], export_note: str, args: argparse.Namespace) -> str:
    lines = [f"CPU: {cpu_description()}", "", f"Export: {export_note}; model text-embedding-3-small (256 dimensions), {args.latency:g} s a request, "
             f"--concurrency {args.concurrency}, --batch-size {args.batch_size}; the server's budgets start with "
             f"{args.burst:g} s' worth.", "",
             "| limits | wall | of which before the first request | floor | wall ÷ floor | requests | 429s | retries "
             "| peak in flight | lowest limit | stored | chunks sent once |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        limits = (f"{row['rpm']:,} req/min + {row['tpm'] / 1e6:g}M tok/min" if row["tpm"] else "none")
        floor = f"{row['floor']:.1f} s" if row["floor"] else "—"
        ratio = f"{row['ratio']:.2f} {'✓' if row['ratio'] <= TARGET else '✗'}" if row["ratio"] else "—"
        once = "yes" if row["texts"] == row["chunks"] else f"no ({row['texts']:,} sent for {row['chunks']:,})"
        before = f"{row['before_first_request']:.1f} s" if row["before_first_request"] is not None else "—"
        lines.append(f"| {limits} | {row['wall']:.1f} s | {before} | {floor} | {ratio} | {row['requests']:,} | "
                     f"{row['rate_limited']:,} | {row['retries']:,} | {row['peak_in_flight']} | "
                     f"{row['lowest_limit']} | "
                     f"{row['stored']:,} / {row['total']:,} | {once} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=544)
    parser.add_argument("--messages", type=int, default=13_719)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--tiers", default="tier3,tier1", help="comma-separated: tier3, tier1, none")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--burst", type=float, default=2.0)
    parser.add_argument("--export", type=Path, help="an existing export instead of a generated one")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sparky-bench-openai-") as temp:
        work = Path(temp)
        export = args.export or generate(work / "chat-history", args.conversations, args.messages)
        size = sum(path.stat().st_size for path in export.rglob("*.json")) if export.is_dir() else export.stat().st_size
        note = (f"{args.messages:,} messages in {args.conversations:,} conversations (generated), "
                f"{size / 1e6:.1f} MB" if not args.export else f"{export} ({size / 1e6:.1f} MB)")
        rows = [run_tier(name.strip(), export, work, args) for name in args.tiers.split(",") if name.strip()]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    print(table(rows, note, args))
    if not all(row["complete"] and row["texts"] == row["chunks"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
