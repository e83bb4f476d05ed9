"""The SQLite side of search: exact cosine k-NN over the float32 blobs and FTS5 BM25, filtered before top-k.

The vectors of an embedding space are read once per process and kept. Chunk ids only grow (AUTOINCREMENT)
and every delete bumps the store's ``deletions`` counter, so the kept matrix knows when it is stale: after
a delete it is read again; when an ingestion only added chunks, just the new rows are read and appended.
A new process maps the space's vector file (``vector_file``) instead of reading every blob, when the file
is a copy of the store as it is now, or of an earlier state it only grew from; a few of its rows are
compared with the store first. A process that had to read the blobs writes the file for the next one.
The keyword query applies the filters in SQL.
The vector side applies the same filters as a numpy mask over the messages' filterable fields, read once
on the first filtered search (a SQL pass over the messages costs ~100 ms at 200k chunks, the mask ~1 ms),
and scores only the rows that pass.
Past ``ann.MIN_ROWS`` rows, when the space's ANN index is built (``ann``), the candidates are the index's
nearest entries and the rows added after it, re-scored exactly from the matrix; a filter passing at most
``ann.EXACT_ROWS`` rows is scanned exactly, a wider one over-fetches by the share it passes and widens
until ``limit`` messages pass, else scans exactly: k is always full when k messages pass.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import StoreError
from ..records import ChunkHit, MessageRow, Space, StoreFilters
from ..substring import merged, substring_hits, unspaced_terms
from . import ann
from .ann import AnnIndex, Graph
from .vector_file import Rows, VectorFile, VectorState

_FETCH_ROWS = 4096
_QUERY_PARAMS = 900  # stay under SQLite's bound-parameter limit
_CHECKED_ROWS = 16  # rows of a vector file compared with the store before it is used


@dataclass(frozen=True)
class _Fields:
    """The filterable fields of each chunk's message, aligned with a ``_Matrix``."""

    known: np.ndarray  # bool: the message is still stored
    current: np.ndarray  # bool: the message's current version (not superseded)
    conversations: np.ndarray  # int64 conversation row
    dates: np.ndarray  # float64 epoch seconds (message, else conversation), NaN when unknown
    roles: np.ndarray  # str: "user" | "assistant"
    sources: np.ndarray  # str: "chatgpt" | "claude"

    def passing(self, filters: StoreFilters) -> np.ndarray:
        """Whether each row passes the filters."""
        mask = self.known.copy()
        if not filters.include_superseded:
            mask &= self.current
        if filters.role:
            mask &= self.roles == filters.role
        if filters.source:
            mask &= self.sources == filters.source
        if filters.conversations is not None:
            mask &= np.isin(self.conversations, np.asarray(filters.conversations, dtype=np.int64))
        if filters.since is not None:  # NaN dates fail every date filter, as NULL does in SQL
            mask &= self.dates >= filters.since
        if filters.until is not None:
            mask &= self.dates < filters.until
        return mask


@dataclass
class _Matrix:
    """Every chunk vector of one embedding space in chunk id order, a copy of the store in ``state``; the
    filter fields are read on first need."""

    state: VectorState
    rows: Rows
    fields: _Fields | None = None
    fields_at: tuple | None = None  # the superseded versions' (count, sum of ids) when the fields were read
    graph: Graph | None = None  # the space's checked ANN index over these rows
    graph_at: tuple | None = None  # the index marker's stamp when it was checked


_MATRICES: dict[tuple[str, int], _Matrix] = {}

_MESSAGE_COLUMNS = (
    "m.id, m.key, m.conversation, v.conversation_id, v.title, v.source, m.role,"
    " coalesce(m.created_at, v.created_at), m.position, m.text"
)


class SearchQueries:
    """The search side of ``SQLiteStore`` (mixed into it): every query runs on ``self.db``."""

    db: sqlite3.Connection
    path: Path
    _known_states: dict | None = None  # space -> (commit stamp, its _read_vector_state then)

    def message_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM messages WHERE superseded_at IS NULL").fetchone()[0]

    def conversations_matching(self, text: str) -> list[int]:
        """Rows of conversations whose id is ``text`` or whose title contains it (case-insensitive)."""
        needle = text.casefold()
        return [
            row
            for row, conversation_id, title in self.db.execute("SELECT id, conversation_id, title FROM conversations")
            if conversation_id == text or needle in title.casefold()
        ]

    def vector_hits(self, query: np.ndarray, filters: StoreFilters, limit: int,
                    space: Space | None = None) -> list[ChunkHit]:
        """The ``limit`` messages whose best chunk is closest (cosine) to ``query``, among those that pass,
        in ``space`` (by default the primary one; only the messages holding a vector in it). Past
        ``ann.MIN_ROWS`` rows, through the space's ANN index when it is built (``ann``, ``_approximate``)."""
        space_id, current = self._vector_state(space)
        matrix = self._load(space_id, current)
        ids, messages, vectors = matrix.rows
        if vectors.shape[1] != query.shape[-1]:
            raise StoreError(f"{self.path}: the query has {query.shape[-1]} dimensions, the stored vectors "
                             f"{vectors.shape[1]}")
        graph = self._graph(matrix, space_id)
        superseded = self._superseded()
        if not superseded[0]:  # nothing hidden: no test needed
            filters = replace(filters, include_superseded=True)
        if filters == StoreFilters(include_superseded=True):
            found = _approximate(graph, query, matrix.rows, None, limit) if graph is not None else None
            return found if found is not None else _best_per_message(vectors @ query, ids, messages, limit)
        if matrix.fields is None or matrix.fields_at != superseded:
            matrix.fields, matrix.fields_at = _load_fields(self.db, messages), superseded
        mask = matrix.fields.passing(filters)
        rows = np.flatnonzero(mask)
        if graph is not None and len(rows) > ann.EXACT_ROWS:
            found = _approximate(graph, query, matrix.rows, mask, limit)
            if found is not None:
                return found
        # a few rows: gather and score them; many: scoring all beats copying the rows out
        scores = vectors[rows] @ query if len(rows) * 8 < len(ids) else (vectors @ query)[rows]
        return _best_per_message(scores, ids[rows], messages[rows], limit)

    def _graph(self, matrix: _Matrix, space: int) -> Graph | None:
        """The space's ANN index over ``matrix`` when it holds ``ann.MIN_ROWS`` rows or more and a checked
        index is built (checked again whenever a build commits a new one)."""
        if len(matrix.rows.ids) < ann.MIN_ROWS:
            return None
        index = AnnIndex(self.path, space)
        stamp = index.stamp()
        if stamp != matrix.graph_at:
            matrix.graph = index.open(matrix.state, matrix.rows) if stamp is not None else None
            matrix.graph_at = stamp
        return matrix.graph

    def _superseded(self) -> tuple[int, float]:
        """How many versions are hidden, and the sum of their ids: read from a small partial index."""
        return self.db.execute("SELECT count(*), total(id) FROM messages WHERE superseded_at IS NOT NULL").fetchone()

    def keyword_hits(self, terms: Sequence[str], filters: StoreFilters, limit: int) -> list[ChunkHit]:
        """The ``limit`` messages whose best chunk ranks highest by BM25 for any of ``terms``: words through
        the word index, terms of unspaced scripts as substrings (``stores/substring.py``)."""
        if not terms:
            return []
        if not self._superseded()[0]:  # nothing hidden: the unfiltered plan stays open
            filters = replace(filters, include_superseded=True)
        words, unspaced = unspaced_terms(terms)
        found = self._word_hits(words, filters, limit) if words else []
        if not unspaced:
            return found
        total = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return merged(found, substring_hits(unspaced, self._chunks_holding, total,
                                            lambda ids: self._passing(ids, filters)), limit=limit)

    def _chunks_holding(self, terms: Sequence[str]) -> list[tuple[int, int, str]]:
        """Every chunk whose text holds one of ``terms``: through the trigram index for those of three
        characters or more, by reading the chunks once for the shorter ones."""
        long, short = [term for term in terms if len(term) >= 3], [term for term in terms if len(term) < 3]
        found = self.db.execute(
            "SELECT c.id, c.message, c.text FROM chunks_trigram t JOIN chunks c ON c.id = t.rowid"
            " WHERE chunks_trigram MATCH ?", [" OR ".join('"' + term.replace('"', '""') + '"' for term in long)]
        ).fetchall() if long else []
        if short:
            found += self.db.execute("SELECT id, message, text FROM chunks WHERE "
                                     + " OR ".join(["instr(text, ?) > 0"] * len(short)), short).fetchall()
        return list({row[0]: row for row in found}.values())

    def _passing(self, ids: set[int], filters: StoreFilters) -> set[int]:
        """The message ids among ``ids`` that pass ``filters``."""
        where, params = _where(filters)
        if not where or not ids:
            return ids
        return {row[0] for row in self.db.execute(
            "SELECT m.id FROM messages m JOIN conversations v ON v.id = m.conversation"
            f" WHERE m.id IN (SELECT value FROM json_each(?)) AND {where}", [json.dumps(sorted(ids)), *params])}

    def _word_hits(self, terms: Sequence[str], filters: StoreFilters, limit: int) -> list[ChunkHit]:
        """The word index's side. Unfiltered, FTS5 yields the chunks in rank order and only the top ones are
        read. Filtered, every match is joined in chunk order and grouped by message in SQL: reading in rank
        order would jump around the file, twice as slow when the filter rejects most matches (200k chunks)."""
        match = fts_match(terms)
        where, params = _where(filters)
        if where:
            rows = self.db.execute(
                "WITH found AS MATERIALIZED (SELECT rowid AS chunk, rank FROM chunks_fts WHERE chunks_fts MATCH ?)"
                " SELECT c.message, c.id, min(found.rank) AS best FROM found JOIN chunks c ON c.id = found.chunk"
                f" JOIN messages m ON m.id = c.message JOIN conversations v ON v.id = m.conversation WHERE {where}"
                " GROUP BY c.message ORDER BY best, c.message LIMIT ?",
                [match, *params, limit],
            )
            return [ChunkHit(message, chunk, -rank) for message, chunk, rank in rows]
        cursor = self.db.execute(
            "SELECT c.message, c.id, f.rank FROM (SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ?) f"
            " JOIN chunks c ON c.id = f.rowid ORDER BY f.rank", [match])
        best: dict[int, ChunkHit] = {}
        for message, chunk, rank in cursor:
            if message not in best:
                best[message] = ChunkHit(message, chunk, -rank)
                if len(best) == limit:
                    break
        cursor.close()
        return list(best.values())

    def messages(self, ids: Sequence[int]) -> dict[int, MessageRow]:
        """Stored messages by row id."""
        found: dict[int, MessageRow] = {}
        for start in range(0, len(ids), _QUERY_PARAMS):
            part = list(ids[start : start + _QUERY_PARAMS])
            marks = ",".join("?" * len(part))
            for row in self.db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m JOIN conversations v ON v.id = m.conversation"
                f" WHERE m.id IN ({marks})", part,
            ):
                found[row[0]] = MessageRow(*row)
        return found

    def chunk_texts(self, ids: Sequence[int]) -> dict[int, str]:
        """Chunk texts by chunk id."""
        found: dict[int, str] = {}
        for start in range(0, len(ids), _QUERY_PARAMS):
            part = list(ids[start : start + _QUERY_PARAMS])
            marks = ",".join("?" * len(part))
            found.update(self.db.execute(f"SELECT id, text FROM chunks WHERE id IN ({marks})", part))
        return found

    def neighbours(self, message: MessageRow, count: int) -> tuple[list[MessageRow], list[MessageRow]]:
        """Up to ``count`` stored messages before and after ``message`` in its conversation, in order."""
        query = (
            f"SELECT {_MESSAGE_COLUMNS} FROM messages m JOIN conversations v ON v.id = m.conversation"
            " WHERE m.conversation = ? AND m.superseded_at IS NULL AND m.position {} ? ORDER BY m.position {} LIMIT ?"
        )
        before = [MessageRow(*row) for row in self.db.execute(
            query.format("<", "DESC"), (message.conversation, message.position, count))]
        after = [MessageRow(*row) for row in self.db.execute(
            query.format(">", "ASC"), (message.conversation, message.position, count))]
        return before[::-1], after

    def load_vectors(self, space: Space | None = None) -> _Matrix:
        """A space's vectors (by default the primary one's): kept from an earlier call, else mapped from the
        vector file, else read from the store (and the vector file written); only the chunks added since are
        read when the store only grew."""
        return self._load(*self._vector_state(space))

    def _load(self, space_id: int, current: VectorState) -> _Matrix:
        key = (str(self.path.resolve()), space_id)
        kept = _MATRICES.get(key)
        if kept is not None and kept.state == current:
            return kept
        file = VectorFile(self.path, space_id)
        base = kept if kept is not None and kept.state.deletions == current.deletions else self._mapped(file, space_id)
        matrix = self._grown(file, space_id, base, current) if base is not None else None
        if matrix is None:
            rows = _read_vectors(self.db, self.path, space_id, current.dimensions, 0, current.max_id)
            matrix = _Matrix(replace(current, count=len(rows.ids)), rows)
            file.write(matrix.state, rows)
        _MATRICES[key] = matrix
        return matrix

    def _vector_state(self, space: Space | None) -> tuple[int, VectorState]:
        """``_read_vector_state``, read again only when a commit happened since (``PRAGMA data_version`` for
        other connections', ``total_changes`` for this one's): counting the chunks is most of a search's
        time at 1M chunks, the two checks a few microseconds."""
        stamp = (self.db.execute("PRAGMA data_version").fetchone()[0], self.db.total_changes)
        if self._known_states is None:
            self._known_states = {}
        known = self._known_states.get(space)
        if known is None or known[0] != stamp:
            known = self._known_states[space] = (stamp, self._read_vector_state(space))
        return known[1]

    def _read_vector_state(self, space: Space | None) -> tuple[int, VectorState]:
        """A space's (by default the primary one's) row id and the store's state for it now, read in one
        statement (one snapshot).

        With a single space every chunk has its vector (they are written and deleted together), and counting
        the chunks reads a small index instead of every vector page (1.6 ms against 0.5 s at 200k chunks)."""
        if space is None:
            row = self.db.execute("SELECT s.id, s.dimensions, (SELECT count(*) FROM spaces) FROM spaces s JOIN meta m"
                                  " ON m.name = 'model' AND m.value = s.model ORDER BY s.id LIMIT 1").fetchone()
            if row is None:
                raise StoreError(f"{self.path}: the memory store holds no vectors yet")
        else:
            row = self.db.execute("SELECT id, dimensions, (SELECT count(*) FROM spaces) FROM spaces WHERE model = ?"
                                  " AND dimensions = ?", (space.model, space.dimensions)).fetchone()
            if row is None:
                raise StoreError(f"{self.path}: holds no vectors of {space.model} ({space.dimensions} dimensions)")
        space_id, dimensions, spaces = row
        counting = "SELECT count(*) FROM chunks" if spaces == 1 else "SELECT count(*) FROM vectors WHERE space = :space"
        deletions, count, max_id = self.db.execute(
            "SELECT CAST(coalesce((SELECT value FROM meta WHERE name = 'deletions'), 0) AS INTEGER),"
            f" ({counting}), (SELECT coalesce(max(chunk), 0) FROM vectors WHERE space = :space)",
            {"space": space_id}).fetchone()
        return space_id, VectorState(deletions, count, max_id, dimensions)

    def _mapped(self, file: VectorFile, space: int) -> _Matrix | None:
        """The vector file's rows when they agree with the store at the rows checked, else None."""
        loaded = file.load()
        if loaded is None or not _agrees_with_store(self.db, space, loaded[1]):
            return None
        return _Matrix(*loaded)

    def _grown(self, file: VectorFile, space: int, base: _Matrix, current: VectorState) -> _Matrix | None:
        """``base`` grown to ``current`` by reading only the chunks added since (and appending them to the
        vector file), or None when the store did not only grow since ``base``."""
        if base.state == current:
            return base
        if base.state.deletions != current.deletions or base.state.dimensions != current.dimensions \
                or current.max_id <= base.state.max_id:
            return None
        added = _read_vectors(self.db, self.path, space, current.dimensions, base.state.max_id, current.max_id)
        if base.state.count + len(added.ids) != current.count:
            return None
        rows = file.append(base.state, current, added) or Rows(*map(np.concatenate, zip(base.rows, added)))
        return _Matrix(current, rows)


def _read_vectors(db: sqlite3.Connection, path: Path, space: int, dimensions: int, after: int,
                  up_to: int) -> Rows:
    """Chunk ids, message rows and vectors of the chunks with ``after < id <= up_to``, in id order."""
    ids: list[int] = []
    messages: list[int] = []
    blobs: list[bytes] = []
    cursor = db.execute(
        "SELECT v.chunk, c.message, v.vector FROM vectors v JOIN chunks c ON c.id = v.chunk"
        " WHERE v.space = ? AND v.chunk > ? AND v.chunk <= ? ORDER BY v.chunk", (space, after, up_to))
    while rows := cursor.fetchmany(_FETCH_ROWS):
        for chunk, message, blob in rows:
            ids.append(chunk)
            messages.append(message)
            blobs.append(blob)
    blob = b"".join(blobs)
    if len(blob) != len(blobs) * dimensions * 4:
        raise StoreError(f"{path}: stored vectors do not have {dimensions} dimensions")
    vectors = np.frombuffer(blob, dtype=np.float32).reshape(len(blobs), dimensions).copy()
    return Rows(np.array(ids, dtype=np.int64), np.array(messages, dtype=np.int64), vectors)


def _agrees_with_store(db: sqlite3.Connection, space: int, rows: Rows) -> bool:
    """Whether a few rows spread over a copy (the first and the last among them) hold the store's chunk,
    message and vector bytes: a copy is never trusted over the store, and this costs a few lookups."""
    if len(rows.ids) == 0:
        return True
    at = np.unique(np.linspace(0, len(rows.ids) - 1, _CHECKED_ROWS).astype(np.int64))
    chunks = [int(chunk) for chunk in rows.ids[at]]
    stored = {chunk: (message, vector) for chunk, message, vector in db.execute(
        "SELECT v.chunk, c.message, v.vector FROM vectors v JOIN chunks c ON c.id = v.chunk"
        f" WHERE v.space = ? AND v.chunk IN ({','.join('?' * len(chunks))})", [space, *chunks])}
    return all(stored.get(chunk) == (int(rows.messages[i]), rows.vectors[i].tobytes()) for chunk, i in zip(chunks, at))


def _load_fields(db: sqlite3.Connection, chunk_messages: np.ndarray) -> _Fields:
    rows = db.execute(
        "SELECT m.id, m.conversation, coalesce(m.created_at, v.created_at), m.role, v.source,"
        " m.superseded_at IS NULL FROM messages m JOIN conversations v ON v.id = m.conversation ORDER BY m.id"
    ).fetchall() or [(-1, -1, None, "", "", 0)]
    ids, conversations, dates, roles, sources, current = zip(*rows)
    message_ids = np.array(ids, dtype=np.int64)
    at = np.searchsorted(message_ids, chunk_messages).clip(max=len(message_ids) - 1)
    return _Fields(
        known=message_ids[at] == chunk_messages,
        current=np.array(current, dtype=bool)[at],
        conversations=np.array(conversations, dtype=np.int64)[at],
        dates=np.array([np.nan if date is None else date for date in dates], dtype=np.float64)[at],
        roles=np.array(roles)[at],
        sources=np.array(sources)[at],
    )


def _approximate(graph: Graph, query: np.ndarray, rows: Rows, mask: np.ndarray | None,
                 limit: int) -> list[ChunkHit] | None:
    """The ``limit`` best messages among the index's candidates (and the rows added after it) that pass
    ``mask``, re-scored exactly; the candidates are widened until ``limit`` messages pass, or None (scan
    exactly) when ``ann.MAX_FETCH`` candidates do not hold them."""
    ids, messages, vectors = rows
    share = 1.0 if mask is None else max(float(np.count_nonzero(mask)) / max(len(ids), 1), 1e-9)
    count = int(min(ann.MAX_FETCH, np.ceil(limit * 4 / share)))
    while True:
        found = graph.candidates(query, ids, count)
        if mask is not None:
            found = found[mask[found]]
        hits = _best_per_message(vectors[found] @ query, ids[found], messages[found], limit)
        if len(hits) >= limit:
            return hits
        if count >= min(ann.MAX_FETCH, graph.size):
            return None
        count = min(ann.MAX_FETCH, count * 4)


def _best_per_message(scores: np.ndarray, chunks: np.ndarray, messages: np.ndarray, limit: int) -> list[ChunkHit]:
    """Top ``limit`` messages by their best chunk's score, looking at as few top chunks as suffice."""
    total = len(scores)
    depth = min(total, limit * 4)
    while True:
        top = np.argpartition(-scores, depth - 1)[:depth] if 0 < depth < total else np.arange(total)
        top = top[np.argsort(-scores[top], kind="stable")]
        _, first = np.unique(messages[top], return_index=True)
        if len(first) >= limit or depth >= total:
            break
        depth = min(total, depth * 4)
    best = top[np.sort(first)[:limit]]
    return [ChunkHit(int(messages[i]), int(chunks[i]), float(scores[i])) for i in best]


def fts_match(terms: Sequence[str]) -> str:
    """The terms as OR-ed quoted FTS5 strings, so nothing in them is read as FTS5 syntax."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


def _where(filters: StoreFilters) -> tuple[str, list]:
    """The SQL twin of ``_Matrix.passing``: conditions over ``m`` (messages) and ``v`` (conversations)."""
    clauses: list[str] = [] if filters.include_superseded else ["m.superseded_at IS NULL"]
    params: list = []
    if filters.role:
        clauses.append("m.role = ?")
        params.append(filters.role)
    if filters.source:
        clauses.append("v.source = ?")
        params.append(filters.source)
    if filters.conversations is not None:
        clauses.append("m.conversation IN (SELECT value FROM json_each(?))")  # any number of rows
        params.append(json.dumps(filters.conversations))
    if filters.since is not None:
        clauses.append("coalesce(m.created_at, v.created_at) >= ?")
        params.append(filters.since)
    if filters.until is not None:
        clauses.append("coalesce(m.created_at, v.created_at) < ?")
        params.append(filters.until)
    return " AND ".join(clauses), params
