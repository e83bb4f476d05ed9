"""Compare the local embedding models: throughput (by token budget where they batch), cold start, peak memory,
agreement with fp32.

    .venv/bin/python bench/embedders.py [--texts 600] [--rounds 3] [--budgets 128,256,512,1024,4096]
    .venv/bin/python bench/embedders.py --settings [--texts 300] [--rounds 2]

Texts are generated deterministically (chat-like, mean ~145 words). Throughput is measured in one process,
runtimes and budgets interleaved round by round and the best round kept, so load from other processes
affects them alike; CPU ms/text (process CPU time, best round) is less sensitive to such load. Cold start
(one query, interpreter start included; best of 3) and peak RSS (of that query, and of one bulk run at the
default budget) are measured in fresh subprocesses.

``--settings`` sweeps the runtime settings (model calls at once, threads per call, spinning, graph
optimisation, execution mode) of ``minilm`` (int8 arithmetic) and ``minilm-fp32``, quiet and beside one competing busy process
(``python -c "while True: pass"``), all interleaved in one run; the best round of each is kept.
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


def sweep_settings() -> dict[str, object]:
    """The session settings compared by ``--settings``: the first-ever default first (one call on every core,
    spinning), then the default (a worker per core, one thread each) and its variants."""
    from sparky.embedders.runtime import RuntimeSettings, physical_cores

    cores = physical_cores()
    every = f"1 call x {cores} threads"
    return {f"{every}, spin": RuntimeSettings(workers=1, threads=cores, spinning=True),
            every: RuntimeSettings(workers=1, threads=cores),
            "1 call x 1 thread": RuntimeSettings(workers=1, threads=1),
            f"{cores} workers x 1 thread": RuntimeSettings(workers=cores, threads=1),
            f"{cores} workers x 1 thread, spin": RuntimeSettings(workers=cores, threads=1, spinning=True),
            f"{cores} workers, opt basic": RuntimeSettings(workers=cores, optimization="basic"),
            f"{cores} workers, opt extended": RuntimeSettings(workers=cores, optimization="extended"),
            f"{every}, parallel": RuntimeSettings(workers=1, threads=cores, parallel=True)}


def settings_table(texts: list[str], rounds: int) -> None:
    """Texts/s and CPU ms/text of each model under each session setting, quiet and loaded, side by side."""
    from sparky.embedders import local
    from sparky.embedders.runtime import cpu_class, cpu_flags, machine_settings

    models = {"minilm": (local.Q8_MODEL, local.q8_path(), 0), "minilm-fp32": (local.FP32_MODEL, local.fp32_path(),
                                                                                local.TOKEN_BUDGET)}
    configs = sweep_settings()
    sessions = {(model, label): local.OnnxMiniLM(name, path, budget, settings)
                for model, (name, path, budget) in models.items() for label, settings in configs.items()}
    for embedder in sessions.values():
        embedder.embed(texts[:8])  # warm: first-run allocations
    print(f"{len(texts)} texts, {rounds} rounds; CPU: {cpu_description()}; class {cpu_class(cpu_flags())}; "
          f"chosen here: {machine_settings()}; load average before {os.getloadavg()[0]:.2f}")
    rate: dict[tuple[str, str, str], float] = {}
    cpu: dict[tuple[str, str, str], float] = {}
    for _ in range(rounds):
        for load in ("quiet", "loaded"):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "loaded" else None
            try:
                for (model, label), embedder in sessions.items():
                    started, cpu_started = time.perf_counter(), time.process_time()
                    embedder.embed(texts)
                    key = (model, label, load)
                    rate[key] = max(rate.get(key, 0.0), len(texts) / (time.perf_counter() - started))
                    cpu[key] = min(cpu.get(key, float("inf")), (time.process_time() - cpu_started) * 1000 / len(texts))
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(f"{'model':<12}{'settings':<30}{'quiet texts/s':>14}{'CPU ms':>8}{'loaded texts/s':>15}{'CPU ms':>8}"
          f"{'quiet / fp32 former':>20}{'loaded / fp32 former':>21}")
    first = next(iter(configs))
    for model, label in sessions:
        row = f"{model:<12}{label:<30}"
        for load in ("quiet", "loaded"):
            row += f"{rate[model, label, load]:>14.1f}{cpu[model, label, load]:>8.1f}" if load == "quiet" else \
                f"{rate[model, label, load]:>15.1f}{cpu[model, label, load]:>8.1f}"
        for load, width in (("quiet", 20), ("loaded", 21)):
            row += f"{rate[model, label, load] / rate['minilm-fp32', first, load]:>{width}.2f}"
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budgets", default="128,256,512,1024,4096", help="padded tokens per model call")
    parser.add_argument("--settings", action="store_true", help="sweep the onnxruntime session settings")
    parser.add_argument("--bulk-child", metavar="RUNTIME", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.settings:
        settings_table(chat_texts(args.texts), args.rounds)
        return
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
