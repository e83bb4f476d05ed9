"""The PostgreSQL side of search, answered inside the database: pgvector HNSW and a BM25 over ``tsvector``.

Vectors: an HNSW index (cosine) per embedding space. A selective filter is answered by an exact scan of the
rows that pass when the planner (``EXPLAIN``: estimated, nothing read) expects at most ``EXACT_MAX_ROWS`` of
them and can reach them cheaply through an index (a conversation, a date range, a source: through its
conversations), at most ``EXACT_MAX_COST``. Otherwise the query runs in one transaction with
``hnsw.iterative_scan = relaxed_order`` (pgvector 0.8: the index scan goes on until the filtered rows fill the
limit) and ``hnsw.ef_search`` at least the rows asked for, and more for a larger index (``ef_search_floor``:
100 up to 250k vectors, growing to 400 at 1M); the rows come back re-ordered by their exact
distance. When the index cannot fill the limit (a filter so selective that the scan gives up at
``hnsw.max_scan_tuples``), the exact scan answers instead. Scores are cosine similarities (1 - cosine
distance), as SQLite's.

Keywords: the terms become a tsquery built by the database from their words (each term a phrase, the
terms OR-ed; nothing the user typed is read as query syntax), matched through the GIN index, and ranked
with FTS5's BM25 (k1 = 1.2, b = 0.75, the same IDF floor), so the scores are on SQLite's scale and the
hybrid search's "no evidence" cut means the same on both stores. Terms of unspaced scripts (Chinese,
Japanese) are matched as substrings by a scan of the chunks' text, scored as on SQLite (``substring``).

Filters are the SQL twin of the SQLite store's ``_where``, applied before any cut. Each message is
represented by its best chunk.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import psycopg

from ...errors import StoreError
from ..records import ChunkHit, MessageRow, Space, StoreFilters
from ..substring import merged, substring_hits, unspaced_terms
from .connection import Connection
from .schema import distance_operator, query_cast, vector_expression

MIN_EF_SEARCH = 100  # pgvector defaults to 40: recall@10 0.94 at 100k clustered vectors, 100 gives 0.98
# ef_search grows with the index: at 1M clustered 384-d vectors (m=16, ef_construction=64) recall@10 is 0.78
# at 100, 0.88 at 200, 0.93 at 400 (p50 16 ms under load), 0.94 at 800 (bench/search_scale.py --ef-search);
# with the store's ef_construction 128 (schema.HNSW_PARAMETERS), 0.983 at 400 (7 ms)
ROWS_PER_EF = 2500
SCALED_EF_CAP = 400
MAX_EF_SEARCH = 1000  # pgvector's bound on hnsw.ef_search
MAX_INDEX_DEPTH = 20000  # past this many rows (hnsw.max_scan_tuples' default) an exact scan answers
# When a filtered query is answered exactly: at most this many rows pass (the planner's estimate), and its plan
# costs at most this much (the planner's units: a sequential page read is 1). At 100k clustered 384-d vectors
# (bench/search_scale.py, 2 cores) an exact scan of ~2,000 rows reached through an index costs ~2,000-4,000
# and takes 4-17 ms, where the iterative index scan of the same 2% filter takes ~140-290 ms; a sequential scan
# of all the vectors costs ~21,000 and takes ~260 ms.
EXACT_MAX_ROWS = 10000
EXACT_MAX_COST = 15000.0
BM25_K1 = 1.2
BM25_B = 0.75
_QUERY_IDS = 10000

_MESSAGE_COLUMNS = (
    "m.id, m.key, m.conversation, v.conversation_id, v.title, v.source, m.role,"
    " coalesce(m.created_at, v.created_at), m.position, m.text"
)


class SearchQueries:
    """The search side of ``PostgresStore`` (mixed into it)."""

    db: Connection
    url: str
    vector_schema: str  # and ``_primary_space()``, ``_space_id()``, from the store
    iterative_scan: bool  # pgvector >= 0.8

    def message_count(self) -> int:
        with self.db.statement() as cur:
            return cur.execute("SELECT count(*) FROM messages WHERE superseded_at IS NULL").fetchone()[0]

    def conversations_matching(self, text: str) -> list[int]:
        """Rows of conversations whose id is ``text`` or whose title contains it (case-insensitive, by
        Python's casefold: the same answer as the SQLite store's)."""
        needle = text.casefold()
        with self.db.statement() as cur:
            rows = cur.execute("SELECT id, conversation_id, title FROM conversations ORDER BY id").fetchall()
        return [row for row, conversation_id, title in rows if conversation_id == text or needle in title.casefold()]

    def _without_needless_version_test(self, filters: StoreFilters) -> StoreFilters:
        """``filters`` without the current-version test when no version is hidden (a small partial index
        says): an unfiltered search keeps its plain plan."""
        with self.db.statement() as cur:
            hidden = cur.execute("SELECT EXISTS (SELECT 1 FROM messages WHERE superseded_at IS NOT NULL)").fetchone()[0]
        return filters if hidden else replace(filters, include_superseded=True)

    def vector_hits(self, query: np.ndarray, filters: StoreFilters, limit: int,
                    space: Space | None = None) -> list[ChunkHit]:
        """The ``limit`` messages whose best chunk is closest (cosine) to ``query``, among those that pass,
        in ``space`` (by default the primary one; only the messages holding a vector in it)."""
        if space is None:
            try:
                space_id, dimensions = self._primary_space()
            except StoreError:
                raise StoreError(f"{self.url}: the memory store holds no vectors yet") from None
        else:
            with self.db.statement() as cur:
                space_id, dimensions = self._space_id(cur, space), space.dimensions
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != dimensions:
            raise StoreError(f"{self.url}: the query has {query.shape[0]} dimensions, the stored vectors "
                             f"{dimensions}")
        if limit <= 0:
            return []
        filters = self._without_needless_version_test(filters)
        where, params = _where(filters, _VECTOR_FIELDS)
        reach, reach_params = _index_reach(filters)
        distance = (f"{vector_expression(self.vector_schema, dimensions, 'e.embedding')}"
                    f" {distance_operator(self.vector_schema)} %s{query_cast(self.vector_schema, dimensions)}")
        condition = f"e.space = {int(space_id)}" + (f" AND {where}" if where else "")
        source = f"FROM vectors e WHERE {condition}"  # the filter fields are on the vector's row: no join
        indexed = (f"WITH relaxed AS MATERIALIZED (SELECT e.message, e.chunk, {distance} AS distance {source}"
                   " ORDER BY distance LIMIT %s) SELECT message, chunk, distance FROM relaxed"
                   " ORDER BY distance + 0, chunk")
        exact = (f"SELECT message, chunk, distance FROM (SELECT DISTINCT ON (e.message) e.message, e.chunk,"
                 f" {distance} AS distance {source}{reach} ORDER BY e.message, distance, e.chunk) best"
                 " ORDER BY distance, message LIMIT %s")
        exact_values = [query, *params, *reach_params, limit]
        with self.db.transaction("read") as cur:
            if not (where and _selective(cur, (f"SELECT 1 {source}", params), (exact, exact_values))):
                hits = self._index_hits(cur, indexed, [query, *params], limit)
                if hits is not None:
                    return hits
            rows = cur.execute(exact, exact_values).fetchall()
        return [ChunkHit(message, chunk, 1.0 - float(distance)) for message, chunk, distance in rows]

    def _index_hits(self, cur: psycopg.Cursor, indexed: str, values: list, limit: int) -> list[ChunkHit] | None:
        """The ``limit`` best messages through the HNSW index, searching deeper while a filter takes rows away;
        None when the index runs out of rows that pass (the exact scan then says which there are)."""
        depth = limit * 4
        floor = ef_search_floor(cur.execute("SELECT reltuples FROM pg_class WHERE oid = 'vectors'::regclass"
                                            ).fetchone()[0])
        while depth <= MAX_INDEX_DEPTH:
            ef_search = str(min(MAX_EF_SEARCH, max(floor, depth)))
            if self.iterative_scan:  # pgvector 0.8: the scan goes on past ef_search until the limit is met
                cur.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),"
                            " set_config('hnsw.ef_search', %s, true)", (ef_search,))
            else:  # an older pgvector returns at most ef_search rows; the exact scan makes up the rest
                cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", (ef_search,))
            rows = cur.execute(indexed, [*values, depth]).fetchall()
            hits = _first_per_message(rows, limit)
            if len(hits) >= limit:
                return hits
            if len(rows) < depth:
                return None
            depth *= 4
        return None

    def keyword_hits(self, terms: Sequence[str], filters: StoreFilters, limit: int) -> list[ChunkHit]:
        """The ``limit`` messages whose best chunk ranks highest by BM25 for any of ``terms``: words through
        the tsvector index, terms of unspaced scripts as substrings (``stores/substring.py``)."""
        if not terms or limit <= 0:
            return []
        filters = self._without_needless_version_test(filters)
        words, unspaced = unspaced_terms(terms)
        found = self._word_hits(words, filters, limit) if words else []
        if not unspaced:
            return found
        with self.db.statement() as cur:
            total = cur.execute("SELECT chunks FROM keyword_totals").fetchone()[0]
        return merged(found, substring_hits(unspaced, self._chunks_holding, total,
                                            lambda ids: self._passing(ids, filters)), limit=limit)

    def _chunks_holding(self, terms: Sequence[str]) -> list[tuple[int, int, str]]:
        """Every chunk whose text holds one of ``terms`` (one scan of the chunks' text)."""
        with self.db.statement() as cur:
            return cur.execute("SELECT id, message, text FROM chunks WHERE EXISTS"
                               " (SELECT 1 FROM unnest(%s::text[]) AS t(term) WHERE strpos(text, t.term) > 0)",
                               (list(terms),)).fetchall()

    def _passing(self, ids: set[int], filters: StoreFilters) -> set[int]:
        """The message ids among ``ids`` that pass ``filters``."""
        where, params = _where(filters)
        if not where or not ids:
            return ids
        with self.db.statement() as cur:
            return {row[0] for row in cur.execute(
                "SELECT m.id FROM messages m JOIN conversations v ON v.id = m.conversation"
                f" WHERE m.id = ANY(%s::bigint[]) AND {where}", [sorted(ids), *params]).fetchall()}

    def _word_hits(self, terms: Sequence[str], filters: StoreFilters, limit: int) -> list[ChunkHit]:
        """The tsvector index's side, ranked by FTS5's BM25."""
        terms = list(terms)
        prefixes = [False] * len(terms)  # whole words (unspaced scripts are matched as substrings)
        where, params = _where(filters)
        any_term = " || ".join(["sparky_term_query(%s, %s)"] * len(terms))
        filtered = (" JOIN messages m ON m.id = h.message JOIN conversations v ON v.id = m.conversation"
                    f" WHERE {where}") if where else ""
        sql = (
            "WITH terms AS MATERIALIZED (SELECT n, sparky_term_query(t, p) AS q, sparky_term_words(t) AS words,"
            " p AS prefix FROM unnest(%s::text[], %s::boolean[]) WITH ORDINALITY AS u(t, p, n)),"
            " usable AS MATERIALIZED (SELECT * FROM terms WHERE numnode(q) > 0),"
            # each chunk that matches a term, with how often it holds the term: its rarest word's count (a
            # prefix term: of the words that start so)
            " hits AS MATERIALIZED (SELECT c.id AS chunk, c.message, c.tokens, t.n, f.tf"
            " FROM chunks c JOIN usable t ON c.tsv @@ t.q CROSS JOIN LATERAL (SELECT coalesce(min(w.hits), 0) AS tf"
            " FROM (SELECT coalesce(sum(coalesce(array_length(d.positions, 1), 1)), 0) AS hits"
            " FROM unnest(t.words) AS tw(word) LEFT JOIN unnest(c.tsv) d ON d.lexeme = tw.word"
            " OR (t.prefix AND starts_with(d.lexeme, tw.word)) GROUP BY tw.word) w) f"
            f" WHERE c.tsv @@ ({any_term})),"
            " totals AS (SELECT greatest(chunks, 1)::float8 AS total,"
            " greatest(tokens::float8 / greatest(chunks, 1), 1e-9) AS avgdl FROM keyword_totals),"
            " idf AS (SELECT h.n, CASE WHEN x.idf <= 0 THEN 1e-6 ELSE x.idf END AS idf FROM"
            " (SELECT n, count(*) AS df FROM hits GROUP BY n) h CROSS JOIN totals,"
            " LATERAL (SELECT ln((totals.total - h.df + 0.5) / (h.df + 0.5)) AS idf) x),"
            " scored AS (SELECT h.chunk, h.message, sum(i.idf * h.tf * %s / (h.tf + %s * (%s + %s * h.tokens"
            " / totals.avgdl))) AS score FROM hits h JOIN idf i ON i.n = h.n CROSS JOIN totals"
            f"{filtered} GROUP BY h.chunk, h.message)"
            " SELECT message, chunk, score FROM (SELECT DISTINCT ON (message) message, chunk, score FROM scored"
            " ORDER BY message, score DESC, chunk) best ORDER BY score DESC, message LIMIT %s"
        )
        values = [terms, prefixes, *[value for pair in zip(terms, prefixes) for value in pair],
                  BM25_K1 + 1, BM25_K1, 1 - BM25_B, BM25_B, *params, limit]
        with self.db.statement() as cur:
            rows = cur.execute(sql, values).fetchall()
        return [ChunkHit(message, chunk, float(score)) for message, chunk, score in rows]

    def messages(self, ids: Sequence[int]) -> dict[int, MessageRow]:
        """Stored messages by row id."""
        found: dict[int, MessageRow] = {}
        ids = [int(i) for i in ids]
        with self.db.statement() as cur:
            for start in range(0, len(ids), _QUERY_IDS):
                for row in cur.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages m JOIN conversations v ON v.id = m.conversation"
                    " WHERE m.id = ANY(%s::bigint[])", (ids[start : start + _QUERY_IDS],),
                ).fetchall():
                    found[row[0]] = MessageRow(*row)
        return found

    def chunk_texts(self, ids: Sequence[int]) -> dict[int, str]:
        """Chunk texts by chunk id."""
        ids = [int(i) for i in ids]
        found: dict[int, str] = {}
        with self.db.statement() as cur:
            for start in range(0, len(ids), _QUERY_IDS):
                found.update(cur.execute("SELECT id, text FROM chunks WHERE id = ANY(%s::bigint[])",
                                         (ids[start : start + _QUERY_IDS],)).fetchall())
        return found

    def neighbours(self, message: MessageRow, count: int) -> tuple[list[MessageRow], list[MessageRow]]:
        """Up to ``count`` stored messages before and after ``message`` in its conversation, in order."""
        query = (
            f"SELECT {_MESSAGE_COLUMNS} FROM messages m JOIN conversations v ON v.id = m.conversation"
            " WHERE m.conversation = %s AND m.superseded_at IS NULL AND m.position {} %s"
            " ORDER BY m.position {} LIMIT %s"
        )
        with self.db.statement() as cur:
            before = [MessageRow(*row) for row in cur.execute(
                query.format("<", "DESC"), (message.conversation, message.position, count)).fetchall()]
            after = [MessageRow(*row) for row in cur.execute(
                query.format(">", "ASC"), (message.conversation, message.position, count)).fetchall()]
        return before[::-1], after


def ef_search_floor(rows: float) -> int:
    """The smallest ``hnsw.ef_search`` for an index over about ``rows`` vectors (the planner's estimate)."""
    return int(min(SCALED_EF_CAP, max(MIN_EF_SEARCH, rows / ROWS_PER_EF)))


def _index_reach(filters: StoreFilters) -> tuple[str, list]:
    """A condition that adds nothing to the filter but lets the planner reach a source's vectors through
    indexes (a vector's source is its conversation's; conversations are indexed by source, vectors by
    conversation), where ``e.source`` alone, unindexed, reads every row."""
    if not filters.source:
        return "", []
    return " AND e.conversation = ANY(ARRAY(SELECT id FROM conversations WHERE source = %s))", [filters.source]


def _selective(cur: psycopg.Cursor, passing: tuple[str, list], exact: tuple[str, list]) -> bool:
    """Whether the planner expects few rows to pass (``passing``: a query of them) and the ``exact`` scan of
    them to be cheap; both planned, neither run. (The exact plan's own row estimate cannot be used: the
    source's conversations are an array it cannot size.)"""
    return (_plan(cur, *passing)["Plan Rows"] <= EXACT_MAX_ROWS
            and _plan(cur, *exact)["Total Cost"] <= EXACT_MAX_COST)


def _plan(cur: psycopg.Cursor, sql: str, values: list) -> dict:
    return cur.execute(f"EXPLAIN (FORMAT JSON) {sql}", values).fetchone()[0][0]["Plan"]


def _first_per_message(rows: list[tuple[int, int, float]], limit: int) -> list[ChunkHit]:
    """The first (best) chunk of each message in rows ordered best first, up to ``limit`` messages."""
    best: dict[int, ChunkHit] = {}
    for message, chunk, distance in rows:
        if message not in best:
            best[message] = ChunkHit(message, chunk, 1.0 - float(distance))
            if len(best) == limit:
                break
    return list(best.values())


_MESSAGE_FIELDS = {"role": "m.role", "source": "v.source", "conversation": "m.conversation",
                   "date": "coalesce(m.created_at, v.created_at)", "current": "m.superseded_at IS NULL"}
_VECTOR_FIELDS = {"role": "e.role", "source": "e.source", "conversation": "e.conversation", "date": "e.created_at",
                  "current": "e.current"}


def _where(filters: StoreFilters, fields: dict[str, str] = _MESSAGE_FIELDS) -> tuple[str, list]:
    """The SQLite store's ``_where`` in PostgreSQL: conditions over ``m`` (messages) and ``v``
    (conversations), or over the same fields copied onto a vector's row (``_VECTOR_FIELDS``)."""
    clauses: list[str] = [] if filters.include_superseded else [fields["current"]]
    params: list = []
    if filters.role:
        clauses.append(f"{fields['role']} = %s")
        params.append(filters.role)
    if filters.source:
        clauses.append(f"{fields['source']} = %s")
        params.append(filters.source)
    if filters.conversations is not None:
        clauses.append(f"{fields['conversation']} = ANY(%s::bigint[])")  # any number of rows
        params.append([int(row) for row in filters.conversations])
    if filters.since is not None:
        clauses.append(f"{fields['date']} >= %s")
        params.append(float(filters.since))
    if filters.until is not None:
        clauses.append(f"{fields['date']} < %s")
        params.append(float(filters.until))
    return " AND ".join(clauses), params
