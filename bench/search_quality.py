#!/usr/bin/env python3
"""Search quality and latency: recall@1, recall@5 and MRR per query class and mode on the labelled queries
(on the sample and the bench's own conversations alone, then among the 13,719 messages of a generated
export as distractors), before (reciprocal rank fusion, messages) and after (combined scores, exchanges,
relevance floor) in the same run; the fusion sweep and the floor calibration; warm latency at 14k messages
and at 200k chunks (synthetic rows added), and the cold start of ``retrieve_similar.py``.

    .venv/bin/python bench/search_quality.py [--sweep] [--quality-only] [--no-distractors] [--no-floor]
                                             [--passage-cost] [--exchange-units] [--work DIR]
                                             [--embedder NAME]

With ``--work DIR`` the stores are kept and reused (embedding the distractors takes minutes): the
generated store is built once, and each labelled store is rebuilt only when bench/queries.json changed.
Answers in bench/queries.json name a conversation id and a distinctive substring of the answering
message; they are resolved to message keys in the freshly ingested store, so they survive key changes.
Its ``conversations`` (long answers whose fact is in the last paragraph, six languages) are written as a
ChatGPT export and ingested beside the sample; a ``fact`` is a string the passage shown must hold;
no-answer queries have no answers: they count as said when the search returns nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparky.embedders import get_embedder
from sparky.search import MODES, SIDE_DEPTH, SearchResult, Searcher, combine, fuse, keyword_terms, \
    open_for_search
from sparky.search.fusion import (CORROBORATION, EVIDENCE_FLOOR, KEYWORD_OFFSET, KEYWORD_SCALE, VECTOR_WEIGHT,
                                  evidence_of, keyword_evidence)
from sparky.search.query import unlike_english
from sparky.stores import StoreFilters

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_description  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample" / "chat-history"
QUERIES = Path(__file__).with_name("queries.json")
SAMPLE_KINDS = ("exact", "paraphrase", "non-english")  # the queries answered by the sample export alone
K = 10
# the search as it was (before issue 13) and as it is now
BEFORE = {"fusion": "rrf", "floor": False, "exchanges": False}
AFTER: dict = {}


def ingest(export: Path, folder: Path, embedder: str = "minilm", progress: str = "progress.json") -> None:
    """Ingest an export with the real CLI into ``folder``/sparky_memory.db (resuming an interrupted one)."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sparky", "ingest", str(export), "--progress-file",
                           str(folder / progress), "--embedder", embedder, "--quiet"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ingesting {export} failed:\n{done.stdout}{done.stderr}")
    print(f"  ingested {export} in {time.perf_counter() - started:.0f} s")


def bench_document() -> dict:
    return json.loads(QUERIES.read_text(encoding="utf-8"))


def query_texts() -> list[str]:
    """The sample's labelled queries' strings alone."""
    return [query["query"] for query in bench_document()["queries"] if query["kind"] in SAMPLE_KINDS]


def chatgpt_conversation(conversation_id: str, title: str, created: float,
                         messages: list[tuple[str, str, float]]) -> dict:
    """One conversation of a ChatGPT export: ``messages`` (role, text, time) as one linear branch."""
    mapping = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
    parent = "root"
    for index, (role, text, when) in enumerate(messages, 1):
        node = f"{conversation_id}-{index}"
        mapping[node] = {"id": node, "parent": parent, "children": [], "message": {
            "id": node, "author": {"role": role}, "create_time": when,
            "content": {"content_type": "text", "parts": [text]}, "status": "finished_successfully"}}
        mapping[parent]["children"].append(node)
        parent = node
    return {"id": conversation_id, "conversation_id": conversation_id, "title": title, "create_time": created,
            "update_time": created, "mapping": mapping, "current_node": parent}


def write_export(folder: Path, conversations: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conversations.json").write_text(json.dumps(conversations, ensure_ascii=False), encoding="utf-8")
    return folder


def write_bench_export(folder: Path) -> Path:
    """The bench's own conversations as a ChatGPT export (one linear branch each); returns its folder."""
    conversations = []
    for number, conversation in enumerate(bench_document()["conversations"]):
        created = 1.72e9 + number * 86400
        messages = [(role, text, created + index * 60)
                    for index, (role, text) in enumerate(conversation["messages"], 1)]
        conversations.append(chatgpt_conversation(conversation["id"], conversation["title"], created, messages))
    return write_export(folder, conversations)


def message_count(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT count(*) FROM messages").fetchone()[0]


def labelled_store(work: Path, name: str, base: Path | None, embedder: str) -> Path:
    """``work/name``: ``base`` (a store of distractors, or nothing) with the sample and the bench's own
    conversations ingested; rebuilt when bench/queries.json or the base's size changed since."""
    db = work / name / "sparky_memory.db"
    stamp = db.with_name("built-from.sha256")
    base_size = message_count(base) if base else 0
    digest = hashlib.sha256(QUERIES.read_bytes() + f"{base}:{base_size}".encode()).hexdigest()
    if db.exists() and stamp.exists() and stamp.read_text() == digest:
        return db
    shutil.rmtree(db.parent, ignore_errors=True)
    db.parent.mkdir(parents=True)
    if base is not None:
        with sqlite3.connect(base) as source, sqlite3.connect(db) as target:
            source.backup(target)
        os.chmod(db, 0o600)
    ingest(SAMPLE, db.parent, embedder, "progress-sample.json")
    ingest(write_bench_export(work / "bench-export" / "chat-history"), db.parent, embedder, "progress-bench.json")
    stamp.write_text(digest)
    return db


def labelled_queries(db: Path, kinds: tuple[str, ...] | None = SAMPLE_KINDS) -> list[dict]:
    """The queries of these kinds (all with None) with each answer resolved to exactly one stored message
    key; a no-answer query has none."""
    queries = [query for query in bench_document()["queries"] if kinds is None or query["kind"] in kinds]
    with sqlite3.connect(db) as conn:
        for query in queries:
            query["keys"] = set()
            for answer in query["answers"]:
                keys = [row[0] for row in conn.execute(
                    "SELECT m.key FROM messages m JOIN conversations v ON v.id = m.conversation"
                    " WHERE v.conversation_id = ? AND instr(m.text, ?) > 0",
                    (answer["conversation"], answer["contains"]))]
                if len(keys) != 1:
                    raise SystemExit(f"{query['query']!r}: answer {answer} matches {len(keys)} messages, not 1")
                query["keys"].update(keys)
    return queries


def covered(result: SearchResult, unit: str) -> set[str]:
    """The message keys a result shows: the hit alone, or (``exchange``) its question and answer too."""
    if unit == "message":
        return {result.key}
    return {result.key} | {item.key for item in (result.question, result.answer) if item is not None}


def scores_of(ranked: list[set[str]], wanted: set[str]) -> tuple[float, float, float]:
    """recall@1, recall@5 (answers in the top 5 over min(5, answers)) and reciprocal rank of one query."""
    top1, top5 = ranked[:1], ranked[:5]
    recall1 = float(bool(wanted & set().union(*top1)))
    recall5 = len(wanted & set().union(*top5)) / min(5, len(wanted))
    rank = next((i for i, keys in enumerate(ranked, 1) if keys & wanted), None)
    return recall1, recall5, 1 / rank if rank else 0.0


def run_queries(searcher: Searcher, queries: list[dict], mode: str, **tuning) -> list[list[SearchResult]]:
    """Each query's top K results."""
    return [searcher.search(query["query"], k=K, mode=mode, **tuning) for query in queries]


def summarise(queries: list[dict], runs: list[list[SearchResult]], unit: str) -> dict[str, float]:
    """Mean recall@1, recall@5 and MRR (1 / rank of the first result showing an answer in the top K, else 0)
    over the answerable queries, a result showing its ``covered`` keys; with no-answer queries, also the
    share said as such (nothing returned)."""
    rows, silent = [], []
    for query, results in zip(queries, runs):
        if query["keys"]:
            rows.append(scores_of([covered(result, unit) for result in results], query["keys"]))
        else:
            silent.append(not results)
    found = {name: statistics.mean(column) for name, column in zip(("recall@1", "recall@5", "MRR"), zip(*rows))} \
        if rows else {}
    return {**found, **({"no match said": statistics.mean(silent)} if silent else {})}


def quality(searcher: Searcher, queries: list[dict], mode: str, unit: str = "exchange",
            **tuning) -> dict[str, float]:
    """``summarise`` of one run of the queries."""
    return summarise(queries, run_queries(searcher, queries, mode, **tuning), unit)


def passages(searcher: Searcher, queries: list[dict]) -> float:
    """Share of the queries with a ``fact`` whose answer is a hit in the top 5 with the fact in its passage."""
    held = []
    for query in (query for query in queries if "fact" in query):
        results = searcher.search(query["query"], k=5, **AFTER)
        held.append(any(result.key in query["keys"] and query["fact"] in result.snippet for result in results))
    return statistics.mean(held)


def print_quality(searcher: Searcher, queries: list[dict], label: str) -> None:
    """Before and after, per class and mode: r@1 / r@5 / MRR (and the no-answer share said as such)."""
    kinds = list(dict.fromkeys(query["kind"] for query in queries))
    print(f"\nQuality on {len(queries)} labelled queries, {label}")
    floor = "relevance floor" if AFTER.get("floor", True) else "no floor"
    print(f"  before: RRF (k=20, depth 50), no floor, messages; after: combined scores, {floor}, one result"
          " per exchange.\n  'msg': a result shows its message; 'exch': its exchange (question and answer)")
    header = "".join(f"{name:>20}" for name in ("before (msg)", "before (exch)", "after (msg)", "after (exch)"))
    print(f"  {'class':<20}{'mode':<9}{header}   (r@1/r@5/MRR)")
    runs = {(mode, name): run_queries(searcher, queries, mode, **tuning)
            for mode in MODES for name, tuning in (("before", BEFORE), ("after", AFTER))}
    for subset in ["all", *kinds]:
        at = [i for i, query in enumerate(queries) if subset in ("all", query["kind"])]
        chosen = [queries[i] for i in at]
        for mode in MODES:
            cells = [summarise(chosen, [runs[mode, name][i] for i in at], unit)
                     for name in ("before", "after") for unit in ("message", "exchange")]
            print(f"  {subset + f' ({len(chosen)})':<20}{mode:<9}" + "".join(_cell(cell) for cell in cells))
    print(f"  facts at the end of long answers in the passage shown (hybrid, top 5): "
          f"{passages(searcher, queries):.3f}")
    for mode in MODES:
        answered = [any(covered(result, "exchange") & query["keys"] for result in results)
                    for query, results in zip(queries, runs[mode, "after"]) if query["keys"]]
        print(f"  answerable queries still answered after the floor ({mode}, top {K}): {statistics.mean(answered):.3f}")


def _cell(scores: dict[str, float]) -> str:
    if "recall@1" not in scores:
        return f"{'said ' + format(scores['no match said'], '.2f'):>20}"
    return f"{scores['recall@1']:>8.3f}/{scores['recall@5']:.3f}/{scores['MRR']:.3f}"


@dataclass
class Sides:
    """One query's vector and keyword hits (the top SIDE_DEPTH of each), for sweeping fusions offline."""

    query: dict
    vector: list
    keyword: list
    terms: int  # keyword terms in the query


def side_hits(searcher: Searcher, queries: list[dict], embedder: str) -> list[Sides]:
    model = get_embedder(embedder)
    found = []
    for query in queries:
        vector = np.asarray(getattr(model, "embed_query", model.embed)([query["query"]]), dtype=np.float32)[0]
        terms = keyword_terms(query["query"])
        found.append(Sides(query, searcher.store.vector_hits(vector, StoreFilters(), SIDE_DEPTH),
                           searcher.store.keyword_hits(terms, StoreFilters(), SIDE_DEPTH), len(terms)))
    return found


def exchange_keys(db: Path, ids: set[int]) -> dict[int, set[str]]:
    """Each message's key with the key of the other half of its exchange (the assistant message right after
    a user message, the user message right before an assistant one), as ``Searcher`` pairs them."""
    with closing(sqlite3.connect(db)) as conn:
        rows = {row[0]: row[1:] for row in conn.execute(
            "SELECT id, key, conversation, position, role FROM messages WHERE superseded_at IS NULL")}
        by_place = {(conversation, position): (key, role) for key, conversation, position, role in rows.values()}
        ordered: dict[int, list[int]] = {}
        for key, conversation, position, role in rows.values():
            ordered.setdefault(conversation, []).append(position)
    found = {}
    for message in ids:
        key, conversation, position, role = rows[message]
        places = sorted(ordered[conversation])
        at = places.index(position)
        step = 1 if role == "user" else -1
        other = places[at + step] if 0 <= at + step < len(places) else None
        partner = by_place.get((conversation, other)) if other is not None else None
        wanted = "assistant" if role == "user" else "user"
        found[message] = {key} | ({partner[0]} if partner and partner[1] == wanted else set())
    return found


def sweep(searcher: Searcher, queries: list[dict], embedder: str, db: Path) -> None:
    """r@1 / r@5 / MRR per class of the fusions over cached side hits, a result showing its exchange: each
    side alone, RRF, and the combined score over a grid of (vector weight, keyword offset, keyword scale).
    A setting is admissible when hybrid r@5 is at least the better side's on every class; the settings are
    printed best first (admissible, then the smallest shortfall, then MRR)."""
    answerable = [query for query in queries if query["keys"]]
    cached = side_hits(searcher, answerable, embedder)
    keys = exchange_keys(db, {hit.message for sides in cached for hit in (*sides.vector, *sides.keyword)})
    kinds = list(dict.fromkeys(query["kind"] for query in answerable))
    documents = searcher.documents

    def shown(ranking: list[tuple[int, float]]) -> list[set[str]]:  # one result per exchange, as searched
        results: list[set[str]] = []
        for message, _ in ranking:
            if keys[message] not in results:
                results.append(keys[message])
            if len(results) == K:
                break
        return results

    def table(rank) -> dict[str, tuple[float, float, float]]:
        per: dict[str, list] = {}
        for sides in cached:
            row = scores_of(shown(rank(sides)), sides.query["keys"])
            per.setdefault(sides.query["kind"], []).append(row)
            per.setdefault("all", []).append(row)
        return {kind: tuple(map(statistics.mean, zip(*rows))) for kind, rows in per.items()}

    vector = table(lambda s: [(h.message, h.score) for h in s.vector])
    keyword = table(lambda s: [(h.message, h.score) for h in s.keyword])
    rrf = table(lambda s: fuse([s.vector, [h for h in s.keyword if h.score > 1e-4]]))
    best_side = {kind: max(vector[kind][1], keyword[kind][1]) for kind in ["all", *kinds]}
    print("\nFusion sweep, exchange level (one result per exchange), r@1 / r@5 / MRR per class")
    print("  " + f"{'fusion':<28}" + "".join(f"{kind[:12]:>22}" for kind in ["all", *kinds]))
    for name, scores in (("vector", vector), ("keyword", keyword), ("RRF k=20 (before)", rrf)):
        print(f"  {name:<28}" + "".join(f"{'%.3f/%.3f/%.3f' % scores[kind]:>22}" for kind in ["all", *kinds]))
    results = []
    for weight, offset, scale in itertools.product((0.3, 0.4, 0.5, 0.6, 0.7, 0.8), (0.1, 0.2, 0.3, 0.4, 0.5),
                                                   (0.2, 0.4, 0.7, 1.0)):
        scores = table(lambda s: combine(s.vector, s.keyword, documents, s.terms, weight, offset, scale))
        worst = min(scores[kind][1] - best_side[kind] for kind in ["all", *kinds])
        results.append((worst >= 0, scores["all"][2], scores["all"][1], (weight, offset, scale), scores, worst))
    results.sort(key=lambda item: (item[0], min(item[5], 0), item[1], item[2]), reverse=True)
    for admissible, _, _, (weight, offset, scale), scores, worst in results[:8]:
        name = f"w={weight} off={offset} sc={scale}" + ("" if admissible else " ✗")
        print(f"  {name:<28}" + "".join(f"{'%.3f/%.3f/%.3f' % scores[kind]:>22}" for kind in ["all", *kinds])
              + f"   worst r@5 gap to the better side {worst:+.3f}")
    current = table(lambda s: combine(s.vector, s.keyword, documents, s.terms))
    print(f"  {'in use: w=%s off=%s sc=%s' % (VECTOR_WEIGHT, KEYWORD_OFFSET, KEYWORD_SCALE):<28}"
          + "".join(f"{'%.3f/%.3f/%.3f' % current[kind]:>22}" for kind in ["all", *kinds]))


def calibrate(searcher: Searcher, queries: list[dict]) -> None:
    """For candidate floors per mode: the share of no-answer queries said as such, and of answerable queries
    whose first answer still shows (exchange level, top 10)."""
    print("\nRelevance floor calibration (exchange level): no-answer said / answerable still answered")
    for mode in ("hybrid", "vector"):
        runs = [(query, searcher.search(query["query"], k=K, mode=mode, floor=False)) for query in queries]
        used = searcher.floor_for(mode)  # the model's own (MiniLM's, or e5's), set around it
        floors = [round(used + step, 2) for step in (-0.07, -0.05, -0.02, 0.0, 0.03, 0.06, 0.09)]
        cells = []
        for floor in floors:
            cells.append(f"{floor:g}: " + said_and_kept([(query, [r for r in results if r.score >= floor])
                                                         for query, results in runs]))
        print(f"  {mode:<8}" + "  ".join(cells) + f"   (in use: {used:g})")
    calibrate_corroborated(searcher, queries)
    calibrate_evidence(searcher, queries)


def said_and_kept(shown: list[tuple[dict, list[SearchResult]]]) -> str:
    """"said/kept": the share of the no-answer queries shown nothing, and of the answerable ones shown an
    answer (exchange level)."""
    said = [not results for query, results in shown if not query["keys"]]
    kept = [any(covered(r, "exchange") & query["keys"] for r in results) for query, results in shown if query["keys"]]
    return f"{statistics.mean(said):.2f}/{statistics.mean(kept):.2f}"


def calibrate_corroborated(searcher: Searcher, queries: list[dict]) -> None:
    """For candidate lower floors of the hybrid results both sides found (and the least keyword evidence that
    counts as found), beside the hybrid floor in use: the share of no-answer queries said as such and of
    answerable queries whose first answer still shows, and the best no-answer result such a floor would face."""
    used, lower = searcher.floor_for("hybrid"), searcher.floor_for("hybrid", corroborated=True)
    runs = []
    for query in queries:
        terms = len(keyword_terms(query["query"]))
        runs.append((query, [(result, keyword_evidence(result.keyword_score, searcher.documents, terms)
                              if result.vector_score is not None and result.keyword_score is not None else None)
                             for result in searcher.search(query["query"], k=K, floor=False)]))
    print(f"  hybrid, found by both sides (beside {used:g}; in use: {lower:g} above evidence {CORROBORATION:g}):")
    for least in sorted({0.0, 0.05, 0.1, 0.15, CORROBORATION}):
        cells = []
        for floor in sorted({round(used - step, 2) for step in (0.0, 0.03, 0.05, 0.07, 0.09, 0.11)} | {lower}):
            shown = [(query, [r for r, evidence in results
                              if r.score >= (floor if evidence is not None and evidence > least else used)])
                     for query, results in runs]
            cells.append(f"{floor:g}: {said_and_kept(shown)}")
        best = max((r.score for query, results in runs if not query["keys"]
                    for r, evidence in results if evidence is not None and evidence > least), default=0.0)
        print(f"    evidence > {least:<5g}" + "  ".join(cells) + f"   best no-answer result so found: {best:.3f}")


def calibrate_evidence(searcher: Searcher, queries: list[dict]) -> None:
    """For candidate evidence floors on the queries ``unlike_english`` (hybrid, above its floor, exchange
    level): the share of those no-answer queries said as such and of those answerable whose first answer
    still shows, then the same over all the queries."""
    ids = {key: message for key, message in searcher.store.db.execute("SELECT key, id FROM messages")}
    runs = []
    for query in queries:
        terms = keyword_terms(query["query"])
        held = evidence_of(searcher.store.keyword_hits(terms, StoreFilters(), 2 * SIDE_DEPTH), searcher.documents,
                           len(terms))
        floors = searcher.floor_for("hybrid"), searcher.floor_for("hybrid", corroborated=True)
        results = [result for result in searcher.search(query["query"], k=K, floor=False)  # those floors alone
                   if result.score >= (floors[1] if result.found_by_both else floors[0])]
        runs.append((query, unlike_english(query["query"]),
                     [(result, max(held.get(ids[key], 0.0) for key in covered(result, "exchange")))
                      for result in results]))
    print("  evidence floor for the queries unlike English (hybrid): said / answered, those queries | all")
    cells = []
    for least in (None, 0.0, 0.05, 0.1, 0.2, 0.3):
        said: dict[bool, list[bool]] = {True: [], False: []}
        kept: dict[bool, list[bool]] = {True: [], False: []}
        for query, foreign, results in runs:
            shown = [result for result, evidence in results if least is None or not foreign or evidence > least]
            if query["keys"]:
                kept[foreign].append(any(covered(result, "exchange") & query["keys"] for result in shown))
            else:
                said[foreign].append(not shown)
        cells.append(f"{'none' if least is None else format(least, 'g')}: {statistics.mean(said[True]):.2f}/"
                     f"{statistics.mean(kept[True]):.2f} | {statistics.mean(said[True] + said[False]):.2f}/"
                     f"{statistics.mean(kept[True] + kept[False]):.2f}")
    print("    " + "   ".join(cells) + f"   (in use: {EVIDENCE_FLOOR:g})")


@dataclass
class Latency:
    """Warm search latency on one store: (p50, p95) milliseconds per mode, after a first, loading search."""

    messages: int
    chunks: int
    first_ms: float
    searches: int  # per mode
    percentiles: dict[str, tuple[float, float]]


def measure_latency(db: Path, queries: list[str], rounds: int = 3, modes: tuple[str, ...] = MODES,
                    embedder: str = "minilm") -> Latency:
    """Warm per-query latency per mode (model and matrix loaded by a first search)."""
    store = open_for_search(str(db))
    try:
        searcher = Searcher(store, embedder)
        started = time.perf_counter()
        searcher.search(queries[0], k=K)
        first = (time.perf_counter() - started) * 1000
        percentiles = {}
        for mode in modes:
            times = []
            for _ in range(rounds):
                for query in queries:
                    started = time.perf_counter()
                    searcher.search(query, k=K, mode=mode)
                    times.append((time.perf_counter() - started) * 1000)
            p50, p95 = np.percentile(times, [50, 95])
            percentiles[mode] = (float(p50), float(p95))
        chunks = store.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        messages = store.db.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        store.close()
    return Latency(messages, chunks, first, rounds * len(queries), percentiles)


def latency(db: Path, queries: list[str], label: str, rounds: int = 3, embedder: str = "minilm") -> None:
    """Print the warm per-query latency per mode."""
    result = measure_latency(db, queries, rounds, embedder=embedder)
    print(f"\nWarm latency, {label}: {result.messages:,} messages, {result.chunks:,} chunks "
          f"(first search, loading model and vectors: {result.first_ms:.0f} ms; "
          f"load average {os.getloadavg()[0]:.1f})")
    for mode, (p50, p95) in result.percentiles.items():
        print(f"  {mode:<8} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   ({result.searches} searches)")


def passage_cost(db: Path, queries: list[str], rounds: int = 3, embedder: str = "minilm") -> None:
    """Warm hybrid latency with the passages of chunks found by meaning, holding few of the query's words,
    rated by meaning (the default, ``search.FEW_TERMS``) and by the words alone (0), query by query in turn."""
    import sparky.search as search

    default = search.FEW_TERMS
    store = open_for_search(str(db))
    try:
        searcher = Searcher(store, embedder)
        searcher.search(queries[0], k=K)
        times: dict[float, list[float]] = {default: [], 0.0: []}
        for _ in range(rounds):
            for query in queries:
                for few in times:
                    search.FEW_TERMS = few
                    started = time.perf_counter()
                    searcher.search(query, k=K)
                    times[few].append((time.perf_counter() - started) * 1000)
    finally:
        search.FEW_TERMS = default
        store.close()
    print(f"\nWarm hybrid latency, {len(queries)} labelled queries x {rounds}, {db} (load average "
          f"{os.getloadavg()[0]:.1f})")
    for few, label in ((default, f"passages rated by meaning under {default:g} of the words (default)"),
                       (0.0, "passages by the words alone")):
        p50, p95 = np.percentile(times[few], [50, 95])
        print(f"  {label:<58} p50 {p50:6.1f} ms   p95 {p95:6.1f} ms")


def cold_start(db: Path, query: str, runs: int = 5, embedder: str = "minilm") -> None:
    """Wall time of ``python retrieve_similar.py QUERY`` in a fresh process, per mode."""
    print(f"\nCold process `retrieve_similar.py {query!r}` ({runs} runs; load average {os.getloadavg()[0]:.1f})")
    for mode in ("hybrid", "keyword"):
        times, cpu = [], []
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "retrieve_similar.py"), query, "--db", str(db), "--mode",
                            mode, "--embedder", embedder], check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        print(f"  {mode:<8} wall median {statistics.median(times):.2f} s, max {max(times):.2f} s"
              f"   (CPU time median {statistics.median(cpu):.2f} s)")


def synthesise(db: Path, target_chunks: int, seed: int = 1) -> None:
    """Add generated messages up to the target: random unit vectors, and text drawn from the store's own
    words with their own frequencies (so rare terms stay rare and common ones common)."""
    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(db, isolation_level=None)
    count, dimensions = conn.execute("SELECT count(*), length(vector) / 4 FROM chunks").fetchone()
    words = np.array([w for (t,) in conn.execute("SELECT text FROM chunks LIMIT 20000") for w in t.split()])
    conn.execute("BEGIN")
    conversation = None
    for number in range(target_chunks - count):
        if number % 25 == 0:
            conversation = conn.execute(
                "INSERT INTO conversations (source, conversation_id, title, created_at, updated_at)"
                " VALUES ('chatgpt', ?, ?, ?, NULL)",
                (f"synthetic-{number}", " ".join(rng.choice(words, 4)), 1.6e9 + number * 60)).lastrowid
        text = " ".join(rng.choice(words, int(rng.integers(20, 150))))
        message = conn.execute(
            "INSERT INTO messages (key, conversation, message_id, role, created_at, position, text, ingested_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            (f"synthetic-{number}", conversation, str(number), "user" if number % 2 else "assistant",
             1.6e9 + number * 60, number % 25, text)).lastrowid
        vector = rng.standard_normal(dimensions).astype(np.float32)
        chunk = conn.execute("INSERT INTO chunks (message, idx, text, vector) VALUES (?, 0, ?, ?)",
                             (message, text, (vector / np.linalg.norm(vector)).tobytes())).lastrowid
        conn.execute("INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)", (chunk, text))
    conn.execute("COMMIT")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="Also sweep the fusion and calibrate the floor.")
    parser.add_argument("--quality-only", action="store_true", help="Only the quality tables: no latency runs.")
    parser.add_argument("--no-distractors", action="store_true", help="Only the labelled conversations alone.")
    parser.add_argument("--only-distractors", action="store_true", help="Not the labelled conversations alone.")
    parser.add_argument("--no-floor", action="store_true",
                        help="'after' without the relevance floor (to compare embedders whose cosines differ).")
    parser.add_argument("--distractors", type=Path, metavar="DB",
                        help="A store to use as the distractors instead of the generated export's.")
    parser.add_argument("--work", type=Path, help="Keep stores here (reused when present) instead of a temp dir.")
    parser.add_argument("--embedder", default="minilm", help="Embedding model to ingest and search with.")
    parser.add_argument("--exchange-units", action="store_true",
                        help="Only the retrieval unit among the distractors: messages against stored exchanges.")
    parser.add_argument("--passage-cost", action="store_true",
                        help="Only the warm hybrid latency among the distractors with and without passages rated"
                             " by meaning.")
    args = parser.parse_args()
    embedder = args.embedder
    if args.no_floor:
        AFTER["floor"] = False
    print(cpu_description())
    work = args.work or Path(tempfile.mkdtemp(prefix="sparky-search-bench-"))
    try:
        if not (args.only_distractors or args.passage_cost or args.exchange_units):
            alone = labelled_store(work, f"labelled-{embedder}", None, embedder)
            evaluate(alone, "the sample and the bench conversations alone", args.sweep, embedder)
        if args.no_distractors:
            return
        big_db = args.distractors or work / ("generated" if embedder == "minilm" else f"generated-{embedder}") \
            / "sparky_memory.db"
        if args.distractors is None:  # built once, resumed when interrupted, a no-op when complete
            export = work / "generated-export" / "chat-history"
            if not export.exists():
                subprocess.run([sys.executable, str(ROOT / "sample" / "generate.py"), "--conversations", "544",
                                "--messages", "13719", "--out", str(export)], check=True, stdout=subprocess.DEVNULL)
            ingest(export, big_db.parent, embedder)
        distractors = message_count(big_db)
        mixed_db = labelled_store(work, f"mixed-{embedder}", big_db, embedder)
        if args.passage_cost:
            return passage_cost(mixed_db, [query["query"] for query in bench_document()["queries"]], embedder=embedder)
        if args.exchange_units:
            return exchange_units(work, mixed_db, embedder)
        evaluate(mixed_db, f"among {distractors:,} generated messages ({big_db})", args.sweep, embedder)
        if args.quality_only:
            return
        texts = query_texts()
        latency(big_db, texts, "generated export", embedder=embedder)
        cold_start(big_db, "how did I fix the docker permission error", embedder=embedder)
        huge_db = work / f"synthetic-{embedder}" / "sparky_memory.db"
        if not huge_db.exists():
            huge_db.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(big_db, huge_db)
            synthesise(huge_db, 200_000)
        latency(huge_db, texts, "generated export + synthetic rows", embedder=embedder)
        cold_start(huge_db, "how did I fix the docker permission error", runs=3, embedder=embedder)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def evaluate(db: Path, label: str, with_sweep: bool, embedder: str = "minilm") -> None:
    """The quality tables (and the sweep and the floor calibration) for the labelled queries on one store."""
    queries = labelled_queries(db, None)
    store = open_for_search(str(db))
    searcher = Searcher(store, embedder)
    print_quality(searcher, queries, f"{label}, {embedder}")
    if with_sweep:
        sweep(searcher, queries, embedder, db)
        calibrate(searcher, queries)
    store.close()


def exchange_export(db: Path, folder: Path) -> Path:
    """The store's conversations as a ChatGPT export whose messages are exchanges: a user message and the
    assistant reply after it as one message (the reply's role and time), any other message as it is."""
    conversations = []
    with closing(sqlite3.connect(db)) as conn:
        for row, conversation_id, title, created in conn.execute(
                "SELECT id, conversation_id, title, created_at FROM conversations ORDER BY id").fetchall():
            messages = conn.execute("SELECT role, text, created_at FROM messages WHERE conversation = ? AND"
                                    " superseded_at IS NULL ORDER BY position", (row,)).fetchall()
            units, at = [], 0
            while at < len(messages):
                pair = messages[at:at + 2]
                if len(pair) == 2 and (pair[0][0], pair[1][0]) == ("user", "assistant"):
                    units.append(("assistant", f"{pair[0][1]}\n\n{pair[1][1]}", pair[1][2] or created))
                    at += 2
                else:
                    units.append((messages[at][0], messages[at][1], messages[at][2] or created))
                    at += 1
            conversations.append(chatgpt_conversation(conversation_id, title, created, units))
    return write_export(folder, conversations)


def exchange_units(work: Path, mixed_db: Path, embedder: str) -> None:
    """The retrieval unit measured: messages (one result per exchange, as shipped) against exchanges stored as
    one message each, the same conversations, without the floor (calibrated on messages); r@1 / r@5 / MRR."""
    units_db = work / f"exchange-units-{embedder}" / "sparky_memory.db"
    if not units_db.exists():
        ingest(exchange_export(mixed_db, work / "exchange-units-export" / "chat-history"), units_db.parent, embedder)
    print(f"\nRetrieval unit, no floor, r@1 / r@5 / MRR ({message_count(mixed_db):,} messages; "
          f"{message_count(units_db):,} as exchanges)")
    kinds = ["all", "exact", "paraphrase", "paraphrase-hard", "long-answer", "non-english"]
    print(f"  {'unit':<30}{'mode':<9}" + "".join(f"{kind:>22}" for kind in kinds))
    for db, unit, label in ((mixed_db, "exchange", "messages, one per exchange"),
                            (units_db, "message", "exchanges stored as one")):
        queries = labelled_queries(db, None)
        store = open_for_search(str(db))
        searcher = Searcher(store, embedder)
        for mode in MODES:
            runs = run_queries(searcher, queries, mode, floor=False)
            cells = []
            for kind in kinds:
                at = [i for i, query in enumerate(queries) if kind in ("all", query["kind"])]
                scores = summarise([queries[i] for i in at], [runs[i] for i in at], unit)
                cells.append(f"{scores['recall@1']:.3f}/{scores['recall@5']:.3f}/{scores['MRR']:.3f}")
            print(f"  {label:<30}{mode:<9}" + "".join(f"{cell:>22}" for cell in cells))
        store.close()


if __name__ == "__main__":
    main()
