"""Compare the local embedding models: throughput (by token budget where they batch), cold start, peak memory,
agreement with fp32.

    .venv/bin/python bench/embedders.py [--texts 600] [--rounds 3] [--budgets 128,256,512,1024,4096]

Texts are generated deterministically (chat-like, mean ~145 words). Throughput is measured in one process,
runtimes and budgets interleaved round by round and the best round kept, so load from other processes
affects them alike; CPU ms/text (process CPU time, best round) is less sensitive to such load. Cold start
(one query, interpreter start included; best of 3) and peak RSS (of that query, and of one bulk run at the
default budget) are measured in fresh subprocesses.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_description  # noqa: E402

RUNTIMES = ("minilm-fp32", "minilm", "minilm-int8", "wordllama")  # the first is the reference for cosines
WORDS = (
    "the a to and of in is it you that for on with this can be as are have not your or but if will i we "
    "python function error code file data model table query index memory export message conversation user "
    "assistant question answer example test run build install version config server request response api "
    "time date list string number value key return import class object method loop variable database "
    "search vector embedding token chunk batch progress store result output input help please thanks "
    "recipe garden travel budget plan week morning meeting email draft summary idea project design"
).split()
COLD_START = "from sparky.embedders import get_embedder; get_embedder({name!r}).embed(['what did I plan in May?'])"


def chat_texts(count: int, seed: int = 7, mean_words: int = 141) -> list[str]:
    """Deterministic chat-like messages: sentences, paragraphs, some inline code; lengths exponential."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        left, sentences = max(3, int(rng.expovariate(1 / mean_words))), []
        while left > 0:
            size = min(left, rng.randint(4, 22))
            left -= size
            sentence = " ".join(rng.choice(WORDS) for _ in range(size))
            if rng.random() < 0.1:
                sentence += f" `step_{rng.randint(0, 999)}()`"
            sentences.append(sentence.capitalize() + rng.choice(".?!."))
        paragraphs = []
        while sentences:
            take = rng.randint(1, 5)
            paragraphs.append(" ".join(sentences[:take]))
            sentences = sentences[take:]
        texts.append("\n\n".join(paragraphs))
    return texts


def run_child(*args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a fresh interpreter run with ``args``."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, *args])
    _, status, usage = os.wait4(child.pid, 0)
    if status:
        raise SystemExit(f"benchmark child failed: {args}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budgets", default="128,256,512,1024,4096", help="padded tokens per model call")
    parser.add_argument("--bulk-child", metavar="RUNTIME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from sparky.embedders import get_embedder
    from sparky.embedders.local import TOKEN_BUDGET

    texts = chat_texts(args.texts)
    if args.bulk_child:
        get_embedder(args.bulk_child).embed(texts)
        return
    budgets = sorted({int(b) for b in args.budgets.split(",")} | {TOKEN_BUDGET})
    # Children first: a child forked from a process holding the models would inherit its peak RSS.
    cold, bulk = {}, {}
    for name in RUNTIMES:
        run_child("-c", COLD_START.format(name=name))  # builds the fp32 cache if missing, warms the page cache
        cold[name] = min(run_child("-c", COLD_START.format(name=name)) for _ in range(3))
        bulk[name] = run_child(__file__, "--texts", str(args.texts), "--bulk-child", name)[1]
    embedders = {name: get_embedder(name) for name in RUNTIMES}
    tokens = embedders["minilm-fp32"].count_tokens(texts)
    print(f"{len(texts)} texts, mean {np.mean([len(t.split()) for t in texts]):.0f} words, "
          f"mean {np.mean(np.minimum(tokens, 256)):.0f} tokens after truncation to 256; CPU: {cpu_description()}")
    # Batching models are swept over token budgets; the others (q8: one text per call; static) run as they are.
    settings = {name: budgets if getattr(embedder, "token_budget", 0) else [None] for name, embedder in embedders.items()}
    best: dict[tuple[str, int | None], float] = {}
    cpu: dict[tuple[str, int | None], float] = {}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, embedder in embedders.items():
            for budget in settings[name]:
                if budget is not None:
                    embedder.token_budget = budget
                started, cpu_started = time.perf_counter(), time.process_time()
                result = embedder.embed(texts)
                rate = len(texts) / (time.perf_counter() - started)
                cpu_ms = (time.process_time() - cpu_started) * 1000 / len(texts)
                best[name, budget] = max(best.get((name, budget), 0.0), rate)
                cpu[name, budget] = min(cpu.get((name, budget), float("inf")), cpu_ms)
                if budget in (None, TOKEN_BUDGET):
                    vectors[name] = result
            if settings[name] != [None]:
                embedder.token_budget = TOKEN_BUDGET
    print(f"{'runtime':<13}{'budget':>7}{'texts/s':>9}{'CPU ms/text':>12}{'cold start s':>13}{'cold RSS MB':>12}"
          f"{'bulk RSS MB':>12}{'cos to fp32':>12}")
    for name in RUNTIMES:
        for budget in settings[name]:
            row = f"{name:<13}{budget or '-':>7}{best[name, budget]:>9.1f}{cpu[name, budget]:>12.1f}"
            if budget in (None, TOKEN_BUDGET):
                cosine = (f"{np.mean(np.sum(vectors[name] * vectors[RUNTIMES[0]], axis=1)):>12.5f}"
                          if vectors[name].shape == vectors[RUNTIMES[0]].shape else f"{'-':>12}")
                row += f"{cold[name][0]:>13.2f}{cold[name][1]:>12.0f}{bulk[name]:>12.0f}{cosine}  (as used)"
            print(row)


if __name__ == "__main__":
    main()
