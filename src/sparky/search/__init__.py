"""Memory search: vector k-NN and FTS5 keyword search fused by reciprocal rank, with filters and context.

Results are messages (a message's best chunk represents it; no message twice). Filters are applied by
the store before any top-k cut. Dates are UTC. Keyword mode never loads the embedding model.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import SparkyError
from ..stores import ChunkHit, MessageRow, Store, StoreFilters
from .fusion import RRF_K, SIDE_DEPTH, fuse
from .query import SearchError, clean_query, iso_date, keyword_terms, parse_when
from .snippets import make_snippet, query_terms

if TYPE_CHECKING:
    from ..embedders import Embedder

__all__ = ["MODES", "RRF_K", "SIDE_DEPTH", "ContextMessage", "Filters", "SearchError", "SearchResult", "Searcher",
           "fuse", "iso_date", "keyword_terms", "open_for_search", "parse_when", "preload_embedder"]

MODES = ("hybrid", "vector", "keyword")
NO_EVIDENCE = 1e-4  # FTS5 clamps the IDF of a word in over half the chunks to 1e-6: BM25 stays below this
_PRELOADS: dict[str, threading.Thread] = {}


@dataclass(frozen=True)
class Filters:
    """What the user restricts a search to; ``conversation`` is an id or a title substring."""

    role: str | None = None
    conversation: str | None = None
    source: str | None = None
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive


@dataclass(frozen=True)
class ContextMessage:
    """A neighbouring message shown around a hit."""

    role: str
    created_at: float | None
    position: int
    text: str


@dataclass(frozen=True)
class SearchResult:
    """One message that answers the query, with where it came from and why it matched."""

    key: str
    conversation_id: str
    title: str
    source: str
    role: str
    created_at: float | None  # the message's time, else its conversation's
    position: int
    text: str
    score: float  # hybrid: fused RRF score; vector: cosine; keyword: -bm25
    snippet: str
    highlights: tuple[tuple[int, int], ...]  # [start, end) spans of query terms in ``snippet``
    vector_score: float | None = None
    keyword_score: float | None = None
    before: tuple[ContextMessage, ...] = field(default_factory=tuple)
    after: tuple[ContextMessage, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; dates as ISO 8601 UTC."""
        data = asdict(self)
        data["created_at"] = iso_date(self.created_at)
        data["highlights"] = [list(span) for span in self.highlights]
        for side in ("before", "after"):
            for item in data[side]:
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

    def __init__(self, store: Store, embedder: str | None = None) -> None:
        """``embedder`` names the model for queries; by default the one the store was built with."""
        self.store = store
        self.requested_embedder = embedder
        if store.message_count() == 0:
            raise SearchError(f"{store.url}: the memory store is empty; run `sparky ingest EXPORT` first")

    @functools.cached_property
    def embedder_name(self) -> str:
        """The embedder for queries: the one requested, else the one the store was built with (resolved once)."""
        from ..embedders import resolve_embedder

        try:
            return resolve_embedder(self.requested_embedder, self.store.meta().get("model"))
        except SparkyError as exc:
            raise SearchError(f"{self.store.url}: {exc}; use --mode keyword") from None

    def search(self, query: str, k: int = 10, mode: str = "hybrid", filters: Filters = Filters(),
               context: int = 0, depth: int = SIDE_DEPTH, rrf_k: int = RRF_K) -> list[SearchResult]:
        """The ``k`` best messages for ``query``, each with ``context`` neighbours on either side."""
        query = clean_query(query)
        if mode not in MODES:
            raise SearchError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        where = self._store_filters(filters)
        side_limit = max(k, depth) if mode == "hybrid" else k
        keyword = self._keyword(query, where, side_limit) if mode != "vector" else []
        vector = self._vector(query, where, side_limit) if mode != "keyword" else []
        if mode == "hybrid":  # a keyword hit on words most messages hold (BM25 ~ 0) is no evidence
            ranked = fuse([vector, [hit for hit in keyword if hit.score > NO_EVIDENCE]], rrf_k)[:k]
        else:
            ranked = [(hit.message, hit.score) for hit in (vector if mode == "vector" else keyword)]
        return self._results(query, ranked, vector, keyword, context)

    def _store_filters(self, filters: Filters) -> StoreFilters:
        rows = None
        if filters.conversation is not None:
            rows = tuple(self.store.conversations_matching(filters.conversation))
            if not rows:
                raise SearchError(f"no conversation has the id or a title containing {filters.conversation!r}")
        return StoreFilters(filters.role, filters.source, rows, filters.since, filters.until)

    def _vector(self, query: str, where: StoreFilters, limit: int) -> list[ChunkHit]:
        import numpy as np

        meta = self.store.meta()
        embedder = self._embedder()
        if meta.get("model") != embedder.model or meta.get("dimensions") != str(embedder.dimensions):
            raise SearchError(
                f"{self.store.url}: built with embedding model {meta.get('model')} ({meta.get('dimensions')}"
                f" dimensions), not {embedder.model} ({embedder.dimensions}); search with the same --embedder"
                " or use --mode keyword"
            )
        vector = np.asarray(embedder.embed([query]), dtype=np.float32)[0]
        return self.store.vector_hits(vector, where, limit)

    def _keyword(self, query: str, where: StoreFilters, limit: int) -> list[ChunkHit]:
        return self.store.keyword_hits(keyword_terms(query), where, limit)

    def _embedder(self) -> Embedder:
        from ..embedders import get_embedder  # loads the model once per process

        if self.embedder_name in _PRELOADS:
            _PRELOADS[self.embedder_name].join()
        return get_embedder(self.embedder_name)

    def _results(self, query: str, ranked: list[tuple[int, float]], vector: list[ChunkHit],
                 keyword: list[ChunkHit], context: int) -> list[SearchResult]:
        by_vector = {hit.message: hit for hit in vector}
        by_keyword = {hit.message: hit for hit in keyword}
        rows = self.store.messages([message for message, _ in ranked])
        chunks = self.store.chunk_texts(
            [(by_keyword.get(message) or by_vector[message]).chunk for message, _ in ranked])
        terms = query_terms(query)
        results = []
        for message, score in ranked:
            row = rows.get(message)
            if row is None:  # removed by a reset since the vectors were read
                continue
            chunk = (by_keyword.get(message) or by_vector[message]).chunk
            snippet, spans = make_snippet(row.text, chunks.get(chunk, ""), terms)
            before, after = self.store.neighbours(row, context) if context else ([], [])
            results.append(SearchResult(
                row.key, row.conversation_id, row.title, row.source, row.role, row.created_at, row.position,
                row.text, score, snippet, spans,
                by_vector[message].score if message in by_vector else None,
                by_keyword[message].score if message in by_keyword else None,
                tuple(_context(item) for item in before), tuple(_context(item) for item in after),
            ))
        return results


def _context(row: MessageRow) -> ContextMessage:
    return ContextMessage(row.role, row.created_at, row.position, row.text)


