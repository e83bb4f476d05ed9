"""The PostgreSQL side of search, answered inside the database: pgvector HNSW and a BM25 over ``tsvector``.

Vectors: an HNSW index (cosine) per embedding space. A query runs in one transaction with
``hnsw.iterative_scan = relaxed_order`` (pgvector 0.8: the index scan goes on until the filtered rows
fill the limit) and ``hnsw.ef_search`` at least the rows asked for; the rows come back re-ordered by their
exact distance. When the index cannot fill the limit (a filter so selective that the scan gives up at
``hnsw.max_scan_tuples``), the query is answered by an exact scan of the rows that pass instead. Scores
are cosine similarities (1 - cosine distance), as SQLite's.

Keywords: the terms become a tsquery built by the database from their words (each term a phrase, an
unspaced-script term a prefix, the terms OR-ed; nothing the user typed is read as query syntax), matched
through the GIN index, and ranked with FTS5's BM25 (k1 = 1.2, b = 0.75, the same IDF floor), so the scores
are on SQLite's scale and the hybrid search's "no evidence" cut means the same on both stores.

Filters are the SQL twin of the SQLite store's ``_where``, applied before any cut. Each message is
represented by its best chunk.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...errors import StoreError
from ...text import UNSPACED
from ..records import ChunkHit, MessageRow, StoreFilters
from .connection import Connection
from .schema import distance_operator, query_cast, vector_expression

MIN_EF_SEARCH = 100  # pgvector defaults to 40: recall@10 0.94 at 100k clustered vectors, 100 gives more
MAX_EF_SEARCH = 1000  # pgvector's bound on hnsw.ef_search
MAX_INDEX_DEPTH = 20000  # past this many rows (hnsw.max_scan_tuples' default) an exact scan answers
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
    vector_schema: str  # and ``_primary_space()``, from the store
    iterative_scan: bool  # pgvector >= 0.8

    def message_count(self) -> int:
        with self.db.statement() as cur:
            return cur.execute("SELECT count(*) FROM messages").fetchone()[0]

    def conversations_matching(self, text: str) -> list[int]:
        """Rows of conversations whose id is ``text`` or whose title contains it (case-insensitive, by
        Python's casefold: the same answer as the SQLite store's)."""
        needle = text.casefold()
        with self.db.statement() as cur:
            rows = cur.execute("SELECT id, conversation_id, title FROM conversations ORDER BY id").fetchall()
        return [row for row, conversation_id, title in rows if conversation_id == text or needle in title.casefold()]

    def vector_hits(self, query: np.ndarray, filters: StoreFilters, limit: int) -> list[ChunkHit]:
        """The ``limit`` messages whose best chunk is closest (cosine) to ``query``, among those that pass."""
        try:
            space, dimensions = self._primary_space()
        except StoreError:
            raise StoreError(f"{self.url}: the memory store holds no vectors yet") from None
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != dimensions:
            raise StoreError(f"{self.url}: the query has {query.shape[0]} dimensions, the stored vectors "
                             f"{dimensions}")
        if limit <= 0:
            return []
        where, params = _where(filters, _VECTOR_FIELDS)
        distance = (f"{vector_expression(self.vector_schema, dimensions, 'e.embedding')}"
                    f" {distance_operator(self.vector_schema)} %s{query_cast(self.vector_schema, dimensions)}")
        condition = f"e.space = {int(space)}" + (f" AND {where}" if where else "")
        source = f"FROM vectors e WHERE {condition}"  # the filter fields are on the vector's row: no join
        indexed = (f"WITH relaxed AS MATERIALIZED (SELECT e.message, e.chunk, {distance} AS distance {source}"
                   " ORDER BY distance LIMIT %s) SELECT message, chunk, distance FROM relaxed"
                   " ORDER BY distance + 0, chunk")
        exact = (f"SELECT message, chunk, distance FROM (SELECT DISTINCT ON (e.message) e.message, e.chunk,"
                 f" {distance} AS distance {source} ORDER BY e.message, distance, e.chunk) best"
                 " ORDER BY distance, message LIMIT %s")
        depth = limit * 4
        with self.db.transaction("read") as cur:
            while depth <= MAX_INDEX_DEPTH:
                ef_search = str(min(MAX_EF_SEARCH, max(MIN_EF_SEARCH, depth)))
                if self.iterative_scan:  # pgvector 0.8: the scan goes on past ef_search until the limit is met
                    cur.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),"
                                " set_config('hnsw.ef_search', %s, true)", (ef_search,))
                else:  # an older pgvector returns at most ef_search rows; the exact scan makes up the rest
                    cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", (ef_search,))
                rows = cur.execute(indexed, [query, *params, depth]).fetchall()
                hits = _first_per_message(rows, limit)
                if len(hits) >= limit:
                    return hits
                if len(rows) < depth:
                    break  # the index ran out of rows that pass: the exact scan says which there are
                depth *= 4
            rows = cur.execute(exact, [query, *params, limit]).fetchall()
        return [ChunkHit(message, chunk, 1.0 - float(distance)) for message, chunk, distance in rows]

    def keyword_hits(self, terms: Sequence[str], filters: StoreFilters, limit: int) -> list[ChunkHit]:
        """The ``limit`` messages whose best chunk ranks highest by BM25 for any of ``terms``."""
        if not terms or limit <= 0:
            return []
        terms = list(terms)
        prefixes = [bool(UNSPACED.search(term)) for term in terms]
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
            " WHERE m.conversation = %s AND m.position {} %s ORDER BY m.position {} LIMIT %s"
        )
        with self.db.statement() as cur:
            before = [MessageRow(*row) for row in cur.execute(
                query.format("<", "DESC"), (message.conversation, message.position, count)).fetchall()]
            after = [MessageRow(*row) for row in cur.execute(
                query.format(">", "ASC"), (message.conversation, message.position, count)).fetchall()]
        return before[::-1], after


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
                   "date": "coalesce(m.created_at, v.created_at)"}
_VECTOR_FIELDS = {"role": "e.role", "source": "e.source", "conversation": "e.conversation", "date": "e.created_at"}


def _where(filters: StoreFilters, fields: dict[str, str] = _MESSAGE_FIELDS) -> tuple[str, list]:
    """The SQLite store's ``_where`` in PostgreSQL: conditions over ``m`` (messages) and ``v``
    (conversations), or over the same fields copied onto a vector's row (``_VECTOR_FIELDS``)."""
    clauses: list[str] = []
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
