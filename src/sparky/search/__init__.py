"""Memory search: vector k-NN and FTS5 keyword search fused by reciprocal rank, with filters and context.

Results are messages (a message's best chunk represents it; no message twice). Filters are applied by
the store before any top-k cut. Dates are UTC. Keyword mode never loads the embedding model.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
import unicodedata
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import SparkyError

if TYPE_CHECKING:
    from ..embedders import Embedder
    from ..stores.sqlite import SQLiteStore
    from ..stores.sqlite.search import ChunkHit, MessageRow, StoreFilters

MODES = ("hybrid", "vector", "keyword")
# Reciprocal rank fusion: score = sum over sides of 1 / (RRF_K + rank), over the top SIDE_DEPTH (at least
# k) of each side. From bench/search_quality.py --sweep: among the sample plus 14k generated messages,
# k=20 / depth 50 ties for the best recall@5 with the best MRR; on the sample alone it beats the usual
# k=60. The differences are one query of 66.
RRF_K = 20
SIDE_DEPTH = 50
NO_EVIDENCE = 1e-4  # FTS5 clamps the IDF of a word in over half the chunks to 1e-6: BM25 stays below this
SNIPPET_CHARS = 240
_STOPWORDS = frozenset(  # the usual English list (NLTK's, without contractions): never in the keyword query
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers"
    " herself it its itself they them their theirs themselves what which who whom this that these those am is"
    " are was were be been being have has had having do does did doing a an the and but if or because as until"
    " while of at by for with about against between into through during before after above below to from up"
    " down in out on off over under again further then once here there when where why how all any both each"
    " few more most other some such no nor not only own same so than too very s t can will just don should now"
    .split()
)
_PRELOADS: dict[str, threading.Thread] = {}
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # kana and CJK ideographs


class SearchError(SparkyError):
    """A search that cannot run as asked: empty query, missing or empty store, unknown conversation…"""


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


def open_for_search(url: str) -> SQLiteStore:
    """Open an existing store for reading; never create one."""
    from ..stores import open_store, redact
    from ..stores.sqlite import SQLiteStore

    path = Path(url.removeprefix("sqlite:///"))
    if "://" not in str(path):
        if not path.is_file():
            raise SearchError(f"{url}: no memory store here; run `sparky ingest EXPORT` first (or pass --db)")
        if _schema_version(path) == 0:
            raise SearchError(f"{url}: not a Sparky memory store; run `sparky ingest EXPORT` first (or pass --db)")
    store = open_store(url)
    if not isinstance(store, SQLiteStore):
        store.close()
        raise SearchError(f"{redact(url)}: search supports the SQLite store only")
    return store


def _schema_version(path: Path) -> int:
    """The file's SQLite ``user_version``, read without writing; opening it as a store would add tables."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise SearchError(f"{path}: not a Sparky memory store ({exc})") from None


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

    def __init__(self, store: SQLiteStore, embedder: str | None = None) -> None:
        """``embedder`` names the model for queries; by default the one the store was built with."""
        from ..stores.sqlite.search import SQLiteSearch

        self.store = store
        self.requested_embedder = embedder
        self.backend = SQLiteSearch(store)
        if self.backend.message_count() == 0:
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
        query = unicodedata.normalize("NFC", query).strip()
        if not query:
            raise SearchError("empty query: say what to look for")
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
        from ..stores.sqlite.search import StoreFilters

        rows = None
        if filters.conversation is not None:
            rows = tuple(self.backend.conversations_matching(filters.conversation))
            if not rows:
                raise SearchError(f"no conversation has the id or a title containing {filters.conversation!r}")
        return StoreFilters(filters.role, filters.source, rows, filters.since, filters.until)

    def _vector(self, query: str, where: StoreFilters, limit: int) -> list[ChunkHit]:
        import numpy as np

        meta = self.store.meta()
        if meta.get("dimensions", "").isdigit():
            self.backend.load_vectors(int(meta["dimensions"]))  # while a preloading model may still load
        embedder = self._embedder()
        if meta.get("model") != embedder.model or meta.get("dimensions") != str(embedder.dimensions):
            raise SearchError(
                f"{self.store.url}: built with embedding model {meta.get('model')} ({meta.get('dimensions')}"
                f" dimensions), not {embedder.model} ({embedder.dimensions}); search with the same --embedder"
                " or use --mode keyword"
            )
        vector = np.asarray(embedder.embed([query]), dtype=np.float32)[0]
        return self.backend.vector_search(vector, where, limit)

    def _keyword(self, query: str, where: StoreFilters, limit: int) -> list[ChunkHit]:
        match = fts_query(query)
        return self.backend.keyword_search(match, where, limit) if match else []

    def _embedder(self) -> Embedder:
        from ..embedders import get_embedder  # loads the model once per process

        if self.embedder_name in _PRELOADS:
            _PRELOADS[self.embedder_name].join()
        return get_embedder(self.embedder_name)

    def _results(self, query: str, ranked: list[tuple[int, float]], vector: list[ChunkHit],
                 keyword: list[ChunkHit], context: int) -> list[SearchResult]:
        by_vector = {hit.message: hit for hit in vector}
        by_keyword = {hit.message: hit for hit in keyword}
        rows = self.backend.messages([message for message, _ in ranked])
        chunks = self.backend.chunk_texts(
            [(by_keyword.get(message) or by_vector[message]).chunk for message, _ in ranked])
        terms = query_terms(query)
        results = []
        for message, score in ranked:
            row = rows.get(message)
            if row is None:  # removed by a reset since the vectors were read
                continue
            chunk = (by_keyword.get(message) or by_vector[message]).chunk
            snippet, spans = make_snippet(row.text, chunks.get(chunk, ""), terms)
            before, after = self.backend.neighbours(row, context) if context else ([], [])
            results.append(SearchResult(
                row.key, row.conversation_id, row.title, row.source, row.role, row.created_at, row.position,
                row.text, score, snippet, spans,
                by_vector[message].score if message in by_vector else None,
                by_keyword[message].score if message in by_keyword else None,
                tuple(_context(item) for item in before), tuple(_context(item) for item in after),
            ))
        return results


def fuse(sides: list[list[ChunkHit]], rrf_k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of ranked lists of messages; ties go to the better single rank."""
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for hits in sides:
        for rank, hit in enumerate(hits, 1):
            scores[hit.message] = scores.get(hit.message, 0.0) + 1.0 / (rrf_k + rank)
            best_rank[hit.message] = min(best_rank.get(hit.message, rank), rank)
    return sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))


def fts_query(query: str) -> str | None:
    """The query as OR-ed quoted FTS5 terms, so nothing in it is read as FTS5 syntax; None if no term is left.

    Tokens are split on whitespace and kept only if they hold a letter or digit; common English words
    are left out unless nothing else remains. Chinese and Japanese are written without spaces, so the
    index holds whole runs of them as one token: such terms match as prefixes.
    """
    tokens = [token for token in query.split() if any(char.isalnum() for char in token)]
    content = [token for token in tokens if _bare(token) not in _STOPWORDS]
    unique = dict.fromkeys((content or tokens))
    if not unique:
        return None
    return " OR ".join(
        '"' + token.replace('"', '""') + '"' + (" *" if _UNSPACED.search(token) else "") for token in unique
    )


def query_terms(query: str) -> list[str]:
    """Words of the query worth highlighting: letters and digits, no common English words."""
    words = dict.fromkeys(word.casefold() for word in re.findall(r"[^\W_]+", query))
    return [word for word in words if word not in _STOPWORDS]


def make_snippet(text: str, chunk: str, terms: list[str]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """About ``SNIPPET_CHARS`` of the message around the densest run of query terms, with their spans.

    When no term occurs, the start of the best-matching chunk stands in.
    """
    text = " ".join(text.split())
    matches = _term_spans(text, terms)
    if not matches:
        chunk = " ".join(chunk.split())
        snippet = chunk[:SNIPPET_CHARS] + ("…" if len(chunk) > SNIPPET_CHARS else "")
        return snippet, ()
    first = _densest_window(matches, SNIPPET_CHARS)
    start = max(0, first - SNIPPET_CHARS // 5)
    if start:
        space = text.find(" ", start, first)
        start = space + 1 if space != -1 else start
    end = min(len(text), start + SNIPPET_CHARS)
    prefix = "…" if start else ""
    snippet = prefix + text[start:end] + ("…" if end < len(text) else "")
    shift = len(prefix) - start
    spans = tuple((a + shift, b + shift) for a, b in matches if a >= start and b <= end)
    return snippet, spans


def _term_spans(text: str, terms: list[str]) -> list[tuple[int, int]]:
    if not terms:
        return []
    alternatives = "|".join(  # whole words, as FTS5 matches them; unspaced scripts match anywhere
        re.escape(term) if _UNSPACED.search(term) else rf"(?<![^\W_]){re.escape(term)}(?![^\W_])"
        for term in sorted(terms, key=len, reverse=True)
    )
    pattern = re.compile(alternatives, re.IGNORECASE)
    return [match.span() for match in pattern.finditer(text)]


def _densest_window(spans: list[tuple[int, int]], width: int) -> int:
    """Start of the span that begins the window of ``width`` characters holding the most spans."""
    best_start, best_count, first = spans[0][0], 0, 0
    for last, (_, end) in enumerate(spans):
        while end - spans[first][0] > width:
            first += 1
        if last - first + 1 > best_count:
            best_start, best_count = spans[first][0], last - first + 1
    return best_start


def _bare(token: str) -> str:
    return "".join(char for char in token if char.isalnum()).casefold()


def _context(row: MessageRow) -> ContextMessage:
    return ContextMessage(row.role, row.created_at, row.position, row.text)


def parse_when(text: str, end: bool = False) -> float:
    """Epoch seconds for a date (YYYY, YYYY-MM, YYYY-MM-DD) or ISO date-time, UTC unless an offset is given.

    With ``end``, the first instant after the period named: ``2024-03`` ends at 2024-04-01T00:00Z.
    """
    text = text.strip()
    match = re.fullmatch(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", text)
    try:
        if match:
            year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
            start = datetime(year, month, day, tzinfo=timezone.utc)
            if not end:
                return start.timestamp()
            if match[3]:
                return (start + timedelta(days=1)).timestamp()
            if match[2]:
                return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc).timestamp()
            return datetime(year + 1, 1, 1, tzinfo=timezone.utc).timestamp()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SearchError(f"{text!r}: not a date; use YYYY-MM-DD (or YYYY-MM, YYYY, or an ISO date-time)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    step = timedelta(seconds=1) if re.search(r"\d:\d{2}:\d", text) else timedelta(minutes=1)
    return (moment + step).timestamp() if end else moment.timestamp()


def iso_date(epoch: float | None) -> str | None:
    """ISO 8601 UTC to the second, or None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
