"""Memory search: vector k-NN and FTS5 keyword search, fused by a combination of their scores (``fusion``),
with filters, a relevance floor, exchanges and context.

Results are messages (a message's best chunk represents it; no message twice, and by default no exchange
twice: a question and its answer come as one result, with both). Results below the mode's calibrated floor
are not returned: an empty list means no good match. Filters are applied by the store before any top-k
cut. Dates are UTC. Keyword mode never loads the embedding model.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..embedders.openai_names import is_recorded_openai
from ..errors import SparkyError
from ..stores import ChunkHit, MessageRow, Store, StoreFilters
from .fusion import (EVIDENCE_FLOOR, RRF_K, SIDE_DEPTH, VECTOR_WEIGHT, combine, evidence_of, found_by_both, fuse,
                     keyword_evidence)
from .query import SearchError, clean_query, iso_date, keyword_terms, parse_when, unlike_english
from .snippets import make_snippet, passage_windows, query_terms
from .spaces import SpacePlanner, embedder_of, mixed_hits, on_scale_of

if TYPE_CHECKING:
    from ..embedders import Embedder

__all__ = ["FLOORS", "FUSIONS", "MODEL_FLOORS", "MODES", "RRF_K", "SIDE_DEPTH", "ContextMessage", "Filters", "SearchError",
           "SearchResult", "Searcher", "combine", "fuse", "iso_date", "keyword_terms", "open_for_search", "parse_when",
           "preload_embedder"]

MODES = ("hybrid", "vector", "keyword")
FUSIONS = ("combined", "rrf")
NO_EVIDENCE = 1e-4  # FTS5 clamps the IDF of a word in over half the chunks to 1e-6: BM25 stays below this
# The relevance floor per mode, on the score that mode ranks by (hybrid: the combined score; vector: the
# cosine; keyword: BM25, where any word matched counts). From bench/search_quality.py --sweep among
# generated distractors: the lowest floor at which every English no-answer query is said as such (93 %
# of the answerable queries still answered in hybrid mode, 77 % in vector mode). MiniLM cannot tell
# unrelated texts of other languages apart, so those no-answer queries stay above any useful floor: a
# query unlike English also needs keyword evidence (``fusion.EVIDENCE_FLOOR``) in hybrid and keyword mode.
# "corroborated" is the lower hybrid floor of a message both sides found (``fusion.found_by_both``: in the
# vector side's top hits, with keyword evidence above ``fusion.CORROBORATION``). From bench/search_quality.py
# --sweep on four stores (the labelled conversations alone, among 400, 2,000 and 13,719 generated messages):
# no no-answer result so found scores over 0.160, while the fact at the end of a long answer that shares almost
# no word with its question is one among the 13,719 (combined 0.223; no-answer queries' best, found by one
# side, reach 0.269). A floor only lowered for some messages cannot lose an answer the hybrid floor kept.
FLOORS = {"hybrid": 0.27, "corroborated": 0.2, "vector": 0.4, "keyword": 0.0}
# The floors of models whose cosines lie on another scale than MiniLM's, by embedder name. E5's lie
# between about 0.7 and 0.9 for any pair of texts: from bench/search_quality.py --no-distractors --sweep
# --embedder e5 on the labelled conversations alone, the lowest floors at which at least 90 % of the no-answer
# queries are said as such (hybrid 0.62: 94 %, with 91 % of the answerable still answered; vector 0.86: 100 %,
# 76 %). Among the 13,719 generated messages the same floors said 94 % and kept 91 % (hybrid).
# minilm-static (a static store, or one whose pass 2 has not begun): its cosines run above MiniLM's, whose hybrid
# floor said 69 % of the no-answer queries among the 13,719 generated messages; 0.45 is the lowest that says
# all of them (hybrid recall@5 0.913 -> 0.861). Its vector floor stays MiniLM's: no floor below 0.97 tells its
# no-answer queries in Arabic or Korean from answers (hybrid needs shared words for them, vector mode cannot).
# Neither has a lower corroborated floor: none was calibrated for them.
MODEL_FLOORS = {"e5": {"hybrid": 0.62, "corroborated": 0.62, "vector": 0.86, "keyword": 0.0},
                "minilm-static": {**FLOORS, "hybrid": 0.45, "corroborated": 0.45}}
# Results whose passage is the window of their chunk closest in meaning when it holds none of the query's
# words, or (a chunk found by meaning, ``_hit_chunk``) under FEW_TERMS of them: a few windows embedded per
# result (~15 ms each on 2 cores), so only for those read first.
RATED_PASSAGES = 5
FEW_TERMS = 0.5
_PRELOADS: dict[str, threading.Thread] = {}


@dataclass(frozen=True)
class Filters:
    """What the user restricts a search to; ``conversation`` is an id or a title substring."""

    role: str | None = None
    conversation: str | None = None
    source: str | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    include_superseded: bool = False  # also old versions of edited or replaced messages


@dataclass(frozen=True)
class ContextMessage:
    """A message shown with a hit: a neighbour, or the other half of its exchange."""

    role: str
    created_at: float | None
    position: int
    text: str
    key: str = ""


@dataclass(frozen=True)
class SearchResult:
    """One message that answers the query, with where it came from and why it matched.

    ``question`` and ``answer`` are the exchange the hit belongs to (the user message and the assistant
    message that follows it; one of them is the hit itself, the other None when the conversation has none).
    ``passage`` is where the ``snippet`` lies in ``text``: the best window of whole sentences of the chunk
    that matched. A result ``found_by_both`` sides is held to hybrid mode's lower, corroborated floor.
    """

    key: str
    conversation_id: str
    title: str
    source: str
    role: str
    created_at: float | None  # the message's time, else its conversation's
    position: int
    text: str
    score: float  # hybrid: combined score (0-1; RRF score with fusion="rrf"); vector: cosine; keyword: BM25
    snippet: str
    highlights: tuple[tuple[int, int], ...]  # [start, end) spans of query terms in ``snippet``
    vector_score: float | None = None
    keyword_score: float | None = None
    before: tuple[ContextMessage, ...] = field(default_factory=tuple)
    after: tuple[ContextMessage, ...] = field(default_factory=tuple)
    question: ContextMessage | None = None
    answer: ContextMessage | None = None
    passage: tuple[int, int] = (0, 0)
    found_by_both: bool = False  # by the vector side and by words with keyword evidence (``fusion.found_by_both``)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; dates as ISO 8601 UTC."""
        data = asdict(self)
        data["created_at"] = iso_date(self.created_at)
        data["highlights"] = [list(span) for span in self.highlights]
        data["passage"] = list(self.passage)
        for item in (*data["before"], *data["after"], data["question"], data["answer"]):
            if item is not None:
                item["created_at"] = iso_date(item["created_at"])
        return data


def open_for_search(url: str) -> Store:
    """Open an existing store for reading; never create one."""
    from ..stores import open_store

    return open_store(url, create=False)


def preload_embedder(name: str) -> None:
    """Start loading an embedding model in a background thread (most of a cold start is spent there, and
    onnxruntime releases the GIL meanwhile); the first search that needs the model waits for it."""
    if name not in _PRELOADS:
        _PRELOADS[name] = threading.Thread(target=_load_quietly, args=(name,), name=f"load-{name}", daemon=True)
        _PRELOADS[name].start()


def _load_quietly(name: str) -> None:
    from ..embedders import get_embedder

    try:
        get_embedder(name)
    except Exception:  # noqa: BLE001 - the search that needs the model loads it again and reports the error
        pass


class Searcher:
    """Searches one store; keeps the embedding model and the vector matrix loaded between searches."""

    def __init__(self, store: Store, embedder: "str | Embedder | None" = None) -> None:
        """``embedder`` names the model for queries (or is one, built by the caller: an OpenAI-compatible
        model with its key's variable); by default the one the store was built with."""
        self.store = store
        self.given_embedder = None if embedder is None or isinstance(embedder, str) else embedder
        self.requested_embedder = embedder if isinstance(embedder, str) else None
        self._query_embedder = threading.local()  # per search: the embedder of the space its query vector is in
        self.spaces = SpacePlanner(store)
        self.documents = store.message_count()  # for the keyword side's IDF scale: its logarithm barely moves
        if self.documents == 0:
            raise SearchError(f"{store.url}: the memory store is empty; run `sparky ingest EXPORT` first")

    @functools.cached_property
    def embedder_name(self) -> str:
        """The embedder for queries: the one requested, else the one the store was built with (resolved once)."""
        from ..embedders import resolve_embedder

        if self.given_embedder is not None:
            return self.given_embedder.model
        try:
            return resolve_embedder(self.requested_embedder, self.store.meta().get("model"))
        except SparkyError as exc:
            raise SearchError(f"{self.store.url}: {exc}; use --mode keyword") from None

    def search(self, query: str, k: int = 10, mode: str = "hybrid", filters: Filters = Filters(),
               context: int = 0, depth: int = SIDE_DEPTH, rrf_k: int = RRF_K, *, fusion: str = "combined",
               floor: bool = True, min_score: float | None = None, exchanges: bool = True,
               space: str | None = None) -> list[SearchResult]:
        """The ``k`` best messages for ``query``, each with its exchange and ``context`` neighbours on either
        side; [] when none reaches the relevance floor.

        ``floor=False`` returns the best ``k`` however weak; ``min_score`` replaces the mode's calibrated
        floor (``floor_for``). With ``exchanges``, a question and its answer are one result (the better hit).
        ``fusion="rrf"`` ranks hybrid results by reciprocal rank fusion (``rrf_k``), the fusion before
        ``combine``; it has no calibrated floor, so only ``min_score`` applies to it. ``space`` (a model or an
        embedder name) searches that embedding space only; by default a store mid-way through a progressive
        ingestion is searched across its spaces (``spaces``).
        """
        query = clean_query(query)
        if mode not in MODES:
            raise SearchError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        if fusion not in FUSIONS:
            raise SearchError(f"unknown fusion {fusion!r}; use one of {', '.join(FUSIONS)}")
        where = self._store_filters(filters)
        terms = keyword_terms(query)
        side_limit = max(k, depth) if mode == "hybrid" else k * 2 if exchanges else k
        keyword = self.store.keyword_hits(terms, where, side_limit) if mode != "vector" else []
        held = evidence_of(keyword, self.documents, len(terms))
        if mode != "vector" and (finer := keyword_terms(query, fine=True)) != terms and \
                max(held.values(), default=0.0) <= EVIDENCE_FLOOR:
            # no trigram of an unspaced run matched enough: its bigrams (a read of every chunk) may
            terms, keyword = finer, self.store.keyword_hits(finer, where, side_limit)
            held = evidence_of(keyword, self.documents, len(terms))
        vector, query_vector = self._vector(query, where, side_limit, space) if mode != "keyword" else ([], None)
        if mode != "hybrid":
            ranked = [(hit.message, hit.score) for hit in (vector if mode == "vector" else keyword)]
        elif fusion == "rrf":  # a keyword hit on words most messages hold (BM25 ~ 0) is no evidence
            ranked = fuse([vector, [hit for hit in keyword if hit.score > NO_EVIDENCE]], rrf_k)
        else:
            ranked = combine(vector, keyword, self.documents, len(terms))
        both = found_by_both(vector, held)
        threshold = min_score if min_score is not None else None if fusion == "rrf" and mode == "hybrid" \
            else self.floor_for(mode)
        if floor and threshold is not None:
            lower = threshold if min_score is not None else self.floor_for(mode, corroborated=True)
            ranked = [(message, score) for message, score in ranked
                      if score >= (lower if message in both else threshold)]
        strict = floor and min_score is None and self.needs_shared_words(query, mode, fusion)
        chosen = self._chosen(ranked, max(len(ranked), 1) if strict else k, exchanges)
        if strict:  # the cosine says little outside English, nor does one common piece: the words must match enough
            chosen = [(row, score, exchange) for row, score, exchange in chosen
                      if any(held.get(item.id, 0.0) > EVIDENCE_FLOOR
                             for item in (row, exchange.question, exchange.answer) if item is not None)][:k]
        return self._results(query, len(terms), chosen, vector, keyword, both, context, query_vector)

    def floor_for(self, mode: str, corroborated: bool = False) -> float:
        """The calibrated relevance floor of ``mode`` for the model this thread's last query was embedded with
        (``MODEL_FLOORS``, else MiniLM's ``FLOORS``); keyword mode's, whatever the model. ``corroborated``:
        hybrid mode's lower floor for a message both sides found."""
        if mode == "keyword":
            return FLOORS[mode]
        from ..embedders import embedder_for_model

        floors = MODEL_FLOORS.get(embedder_for_model(self._embedder().model) or "", FLOORS)
        return floors["corroborated" if corroborated and mode == "hybrid" else mode]

    def needs_shared_words(self, query: str, mode: str = "hybrid", fusion: str = "combined") -> bool:
        """Whether a result of ``query`` must also share words with it (besides the floor): the query is
        likely not English (``unlike_english``) and, outside keyword mode, the model is English-only."""
        return mode != "vector" and unlike_english(query) and \
            (mode == "keyword" or fusion == "combined" and not self._multilingual())

    def _multilingual(self) -> bool:
        """Whether the model the query was embedded with was trained on many languages (``multilingual``):
        then its cosine is evidence outside English too, and a non-English result needs no shared words."""
        return getattr(self._embedder(), "multilingual", False)

    def _store_filters(self, filters: Filters) -> StoreFilters:
        rows = None
        if filters.conversation is not None:
            rows = tuple(self.store.conversations_matching(filters.conversation))
            if not rows:
                raise SearchError(f"no conversation has the id or a title containing {filters.conversation!r}")
        return StoreFilters(filters.role, filters.source, rows, filters.since, filters.until,
                            filters.include_superseded)

    def _vector(self, query: str, where: StoreFilters, limit: int,
                space: str | None = None) -> tuple[list[ChunkHit], np.ndarray]:
        """The vector side: in the space named, else across the store's spaces (``spaces.SpacePlanner``), else
        (an embedder given or requested) in the primary space with that embedder."""
        self._query_embedder.name = None
        if space is None and (self.given_embedder is not None or self.requested_embedder is not None):
            return self._primary_vector(query, where, limit)
        plan = self.spaces.plan(space)
        if plan.primary_only:
            return self._primary_vector(query, where, limit)
        sides = []
        for held in plan.spaces:
            name = embedder_of(held)
            vector = self._query_vector(self._embedder(name), query)
            hits = self.store.vector_hits(vector, where, limit, space=held)
            sides.append((on_scale_of(plan.spaces[0], held, hits) if plan.mixed else hits, vector, name))
        self._query_embedder.name = sides[0][2]  # passages are rated in the better space
        hits = mixed_hits(sides[0][0], sides[1][0], plan.frontier, limit) if plan.mixed else sides[0][0]
        return hits, sides[0][1]

    def _primary_vector(self, query: str, where: StoreFilters, limit: int) -> tuple[list[ChunkHit], np.ndarray]:
        meta = self.store.meta()
        embedder = self._embedder()
        if meta.get("model") != embedder.model or meta.get("dimensions") != str(embedder.dimensions):
            raise SearchError(
                f"{self.store.url}: built with embedding model {meta.get('model')} ({meta.get('dimensions')}"
                f" dimensions), not {embedder.model} ({embedder.dimensions}); search with the same --embedder"
                " or use --mode keyword"
            )
        vector = self._query_vector(embedder, query)
        return self.store.vector_hits(vector, where, limit), vector

    @staticmethod
    def _query_vector(embedder: "Embedder", query: str) -> np.ndarray:
        embed = getattr(embedder, "embed_query", embedder.embed)  # models that embed queries their own way (E5)
        return np.asarray(embed([query]), dtype=np.float32)[0]

    def _embedder(self, name: str | None = None) -> Embedder:
        """The embedder called ``name``; by default the one this thread's last query was embedded with (its
        passages are rated with it), else the searcher's."""
        from ..embedders import get_embedder  # loads the model once per process

        if self.given_embedder is not None:
            return self.given_embedder
        name = name or getattr(self._query_embedder, "name", None) or self.embedder_name
        if name in _PRELOADS:
            _PRELOADS[name].join()
        return get_embedder(name)

    def _chosen(self, ranked: list[tuple[int, float]], k: int,
                exchanges: bool) -> list[tuple[MessageRow, float, Exchange]]:
        """The first ``k`` ranked messages still stored, each with its exchange; with ``exchanges``, only the
        best-ranked message of each exchange."""
        chosen: list[tuple[MessageRow, float, Exchange]] = []
        seen: set[tuple[int, int]] = set()
        for start in range(0, len(ranked), k):
            part = ranked[start:start + k]
            rows = self.store.messages([message for message, _ in part])
            for message, score in part:
                row = rows.get(message)
                if row is None:  # removed by a reset since the vectors were read
                    continue
                exchange = self._exchange(row)
                if exchanges and exchange.id in seen:
                    continue
                seen.add(exchange.id)
                chosen.append((row, score, exchange))
                if len(chosen) == k:
                    return chosen
        return chosen

    def _exchange(self, row: MessageRow) -> Exchange:
        """The user message and the assistant message that follows it, the one holding ``row``."""
        before, after = self.store.neighbours(row, 1)
        if row.role == "user":
            answer = after[0] if after and after[0].role == "assistant" else None
            return Exchange((row.conversation, row.position), row, answer)
        question = before[0] if before and before[0].role == "user" else None
        return Exchange((row.conversation, (question or row).position), question, row)

    def _results(self, query: str, term_count: int, chosen: list[tuple[MessageRow, float, Exchange]],
                 vector: list[ChunkHit], keyword: list[ChunkHit], both: set[int], context: int,
                 query_vector: np.ndarray | None) -> list[SearchResult]:
        by_vector = {hit.message: hit for hit in vector}
        by_keyword = {hit.message: hit for hit in keyword}
        rows = [row for row, _, _ in chosen]
        hit_chunks = {row.id: self._hit_chunk(by_vector.get(row.id), by_keyword.get(row.id), term_count)
                      for row in rows}
        chunks = self.store.chunk_texts(list(hit_chunks.values()))
        terms = query_terms(query)
        by_meaning = {row.id for row in rows if row.id in by_vector and hit_chunks[row.id] == by_vector[row.id].chunk}
        passages = self._passages(rows, {row.id: chunks.get(hit_chunks[row.id], "") for row in rows}, terms,
                                  query_vector, by_meaning)
        results = []
        for row, score, exchange in chosen:
            snippet, spans = make_snippet(row.text, passages[row.id], terms)
            before, after = self.store.neighbours(row, context) if context else ([], [])
            vector_hit, keyword_hit = by_vector.get(row.id), by_keyword.get(row.id)
            results.append(SearchResult(
                row.key, row.conversation_id, row.title, row.source, row.role, row.created_at, row.position,
                row.text, score, snippet, spans,
                vector_hit.score if vector_hit else None, keyword_hit.score if keyword_hit else None,
                tuple(map(_context, before)), tuple(map(_context, after)),
                _context(exchange.question) if exchange.question else None,
                _context(exchange.answer) if exchange.answer else None,
                passages[row.id], row.id in both,
            ))
        return results

    def _passages(self, rows: list[MessageRow], chunks: dict[int, str], terms: list[str],
                  query_vector: np.ndarray | None, by_meaning: set[int]) -> dict[int, tuple[int, int]]:
        """Each row's passage in its hit chunk: by the query's words, else (for the first ``RATED_PASSAGES``
        rows, in one batch, with a local model: a network one is sent the query only) the window whose
        embedding is closest to the query's, else the chunk's first. A chunk found ``by_meaning`` whose best
        window by words holds under ``FEW_TERMS`` of them is rated by meaning too: the words found there may
        be the query's incidental ones ("coast"), the fact asked for in a sentence holding none."""
        chosen: dict[int, tuple[int, int]] = {}
        pending: dict[int, list[tuple[int, int]]] = {}
        for rank, row in enumerate(rows):
            passage, packed, share = passage_windows(row.text, chunks[row.id], terms)
            chosen[row.id] = passage or packed[0]
            if rank < RATED_PASSAGES and len(packed) > 1 and \
                    (passage is None or row.id in by_meaning and share < FEW_TERMS):
                pending[row.id] = packed
        if pending and query_vector is not None and not is_recorded_openai(self.embedder_name):
            texts = [next(row.text for row in rows if row.id == message)[a:b]
                     for message, candidates in pending.items() for a, b in candidates]
            similarity = iter(np.asarray(self._embedder().embed(texts), dtype=np.float32) @ query_vector)
            for message, candidates in pending.items():
                rated = [float(next(similarity)) for _ in candidates]
                chosen[message] = candidates[rated.index(max(rated))]
        return chosen

    def _hit_chunk(self, vector: ChunkHit | None, keyword: ChunkHit | None, terms: int) -> int:
        """The chunk that matched: the keyword side's when its words are real evidence and weigh more in the
        combined score than the vector side's cosine, else the vector side's."""
        if keyword is None or vector is None:
            return (keyword or vector).chunk  # type: ignore[union-attr]
        evidence = keyword_evidence(keyword.score, self.documents, terms)
        return keyword.chunk if (1 - VECTOR_WEIGHT) * evidence >= VECTOR_WEIGHT * vector.score else vector.chunk


@dataclass(frozen=True)
class Exchange:
    """A question and its answer; ``id`` is (conversation row, position of its first message)."""

    id: tuple[int, int]
    question: MessageRow | None
    answer: MessageRow | None


def _context(row: MessageRow) -> ContextMessage:
    return ContextMessage(row.role, row.created_at, row.position, row.text, row.key)
