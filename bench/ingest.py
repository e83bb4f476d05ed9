"""Ingestion benchmark: full ingest, bare model encode of the same chunks, no-op resume, RSS as the export grows.

    python bench/ingest.py [--conversations 544] [--messages 13719] [--growth 10] [--growth-seconds 90]

Every figure comes from this one run on this machine; ratios are measured side by side.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def generate(out: Path, conversations: int, messages: int) -> Path:
    subprocess.run([sys.executable, str(ROOT / "sample" / "generate.py"), "--conversations", str(conversations),
                    "--messages", str(messages), "--out", str(out)], check=True)
    return out


def timed_ingest(export: Path, workdir: Path, *extra: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one `sparky ingest` child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sparky", "ingest", str(export), "--quiet", *extra], cwd=workdir,
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024


def bare_encode_seconds(db: Path, batch_size: int) -> tuple[float, int]:
    """Seconds for the embedder alone on exactly the chunks the pipeline stored, in its batch size."""
    from sparky.embedders import get_embedder

    with sqlite3.connect(db) as connection:
        texts = [row[0] for row in connection.execute("SELECT text FROM chunks ORDER BY id")]
    embedder = get_embedder("minilm")
    embedder.embed(texts[:8])  # load and warm the model outside the timing, as the pipeline's ratio is ours
    start = time.perf_counter()
    for offset in range(0, len(texts), batch_size):
        embedder.embed(texts[offset : offset + batch_size])
    return time.perf_counter() - start, len(texts)


def peak_rss_during(export: Path, workdir: Path, seconds: float) -> tuple[float, int]:
    """Peak RSS (MiB) of an ingest child sampled for ``seconds``, then stopped with SIGINT; messages stored."""
    child = subprocess.Popen([sys.executable, "-m", "sparky", "ingest", str(export), "--quiet"], cwd=workdir,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process = psutil.Process(child.pid)
    peak = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and child.poll() is None:
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    child.wait()
    with sqlite3.connect(workdir / "sparky_memory.db") as connection:
        stored = connection.execute("SELECT count(*) FROM messages").fetchone()[0]
    return peak / 2**20, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=544)
    parser.add_argument("--messages", type=int, default=13719)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--growth", type=int, default=10, help="size factor of the large export for the RSS check")
    parser.add_argument("--growth-seconds", type=float, default=90)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sparky-bench-") as tmp:
        tmp_path = Path(tmp)
        export = generate(tmp_path / "export", args.conversations, args.messages)
        size_mb = (export / "conversations.json").stat().st_size / 1e6
        run = tmp_path / "run"
        run.mkdir()
        wall, rss = timed_ingest(export, run, "--batch-size", str(args.batch_size))
        encode, chunk_count = bare_encode_seconds(run / "sparky_memory.db", args.batch_size)
        noop, _ = timed_ingest(export, run)
        with sqlite3.connect(run / "sparky_memory.db") as connection:
            stored = connection.execute("SELECT count(*) FROM messages").fetchone()[0]

        rows = [
            ("export", f"{args.conversations} conversations, {args.messages:,} messages, {size_mb:.1f} MB"),
            ("messages stored / chunks", f"{stored:,} / {chunk_count:,}"),
            ("full ingest wall time", f"{wall:.1f} s"),
            ("messages/s", f"{stored / wall:.1f}"),
            ("peak RSS (full ingest)", f"{rss:.0f} MiB"),
            ("bare encode of the same chunks", f"{encode:.1f} s"),
            ("pipeline / bare encode", f"{wall / encode:.3f}"),
            ("no-op resume", f"{noop:.2f} s"),
        ]
        if args.growth > 1:
            big = generate(tmp_path / "big", args.conversations * args.growth, args.messages * args.growth)
            big_run = tmp_path / "big-run"
            big_run.mkdir()
            big_rss, big_stored = peak_rss_during(big, big_run, args.growth_seconds)
            big_mb = (big / "conversations.json").stat().st_size / 1e6
            rows.append((f"peak RSS, {args.growth}x export ({big_mb:.0f} MB), first {args.growth_seconds:.0f} s",
                         f"{big_rss:.0f} MiB ({big_stored:,} messages stored)"))

    width = max(len(name) for name, _ in rows)
    print(f"\nSparky ingest benchmark — {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"| {'-' * width} | ----- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
