"""The PostgreSQL store (pgvector): connection, schema and migrations, writes and the ingester's lock.

The same contract as the SQLite store: a unique message key, one transaction per ``upsert`` (a known key
is left alone), the embedding model and its dimensions recorded once and checked, embedding spaces in a
``spaces`` table with vectors keyed by space. Writes are a handful of statements per batch, whatever its
size: conversations, messages and chunks as multi-row ``INSERT … SELECT FROM unnest(…)``, vectors as one
binary ``COPY``.

Supabase: the pgvector extension may live in schema ``extensions`` (every use of it is qualified). Search
works through the transaction pooler (port 6543): nothing relies on session state outside a transaction
and nothing is prepared server-side. An ingestion needs the direct connection (or the session pooler):
``lock()`` holds a session-level advisory lock on a connection of its own, which a transaction pooler
does not keep.
"""

from __future__ import annotations

import time
from typing import Iterable, Sequence

import numpy as np
import psycopg

from ...crashpoints import crashpoint
from ...errors import LockedError, StoreError, TransientStoreError
from .. import redact
from ..records import MessageRecord, Space, StoredConversation, space_vectors_checked, stats_of
from . import schema
from .connection import Connection, register_vector_type
from .search import SearchQueries

LOCK_CLASS = 0x53504B59  # "SPKY": the first key of every advisory lock the store takes
_KEY_QUERY_SIZE = 5000


class PostgresStore(SearchQueries):
    """A store in a PostgreSQL database with pgvector; ``url`` is for display (never the password)."""

    def __init__(self, url: str, create: bool = True) -> None:
        """``create=False`` opens an existing store only: a database without Sparky's tables is an error and
        nothing is created in it."""
        self.url = redact(url)
        self.db = Connection(url)
        self._space: tuple[int, int] | None = None  # the primary space's row and dimensions, once recorded
        version = self._schema_version()
        if version is None and not create:
            raise StoreError(f"{self.url}: no memory store in this database; run `sparky ingest EXPORT` first "
                             "(or pass --db)")
        if version is not None and version > len(schema.MIGRATIONS):
            raise StoreError(f"{self.url}: made by a newer Sparky (schema {version}); upgrade sparky")
        if version is None or version < len(schema.MIGRATIONS):
            self._migrate()
        with self.db.statement() as cur:
            vector_schema = schema.extension_schema(cur, "vector")
            version = cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        self.iterative_scan = version is not None and _version(version[0]) >= (0, 8)
        if vector_schema is None:
            raise StoreError(f"{self.url}: the pgvector extension was removed from this database; "
                             "ask an administrator to run: CREATE EXTENSION vector;")
        self.vector_schema = vector_schema
        self.db.use_vector_schema(vector_schema)

    # schema

    def _schema_version(self) -> int | None:
        with self.db.statement() as cur:
            row = cur.execute("SELECT to_regclass('sparky_schema') IS NOT NULL").fetchone()
            if not row[0]:
                return None
            return cur.execute("SELECT coalesce(max(version), 0) FROM sparky_schema").fetchone()[0]

    def _migrate(self) -> None:
        """Apply each missing migration in the transaction that records it; a transaction-level advisory
        lock keeps two processes opening a new store from migrating it twice."""
        while True:
            with self.db.transaction() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext('schema:' || current_schema()))",
                            (LOCK_CLASS,))
                cur.execute("CREATE TABLE IF NOT EXISTS sparky_schema (version integer PRIMARY KEY,"
                            " applied_at timestamptz NOT NULL DEFAULT now())")
                version = cur.execute("SELECT coalesce(max(version), 0) FROM sparky_schema").fetchone()[0]
                if version >= len(schema.MIGRATIONS):
                    return
                crashpoint("schema")
                vector_schema = self._ensure_vector_extension(cur)
                try:
                    schema.MIGRATIONS[version](cur, vector_schema, _unaccent_schema(cur))
                except psycopg.errors.DuplicateTable as exc:
                    raise StoreError(f"{self.url}: this database holds other tables ({self.db.describe(exc)}); "
                                     "not a Sparky memory store: use another database or schema") from None
                cur.execute("INSERT INTO sparky_schema (version) VALUES (%s)", (version + 1,))

    def _ensure_vector_extension(self, cur: psycopg.Cursor) -> str:
        """The schema pgvector lives in, creating the extension when it is missing; a clear error with the
        SQL an administrator should run when this role may not create it or the server lacks it."""
        found = schema.extension_schema(cur, "vector")
        if found is not None:
            return found
        try:
            with cur.connection.transaction():  # a savepoint: the error is reported, not the aborted block
                cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            database = cur.execute("SELECT current_database()").fetchone()[0]
            raise StoreError(
                f"{self.url}: the pgvector extension is not installed and cannot be created here "
                f"({self.db.describe(exc)}); ask an administrator to run in database {database}: "
                "CREATE EXTENSION vector;") from None
        return schema.extension_schema(cur, "vector") or "public"

    def meta(self) -> dict[str, str]:
        with self.db.statement() as cur:
            return dict(cur.execute("SELECT name, value FROM meta").fetchall())

    def spaces(self) -> list[Space]:
        """The embedding spaces the store holds vectors of, the primary (``meta``'s model) first."""
        with self.db.statement() as cur:
            return [Space(model, dimensions) for model, dimensions in
                    cur.execute("SELECT s.model, s.dimensions FROM spaces s LEFT JOIN meta m ON m.name = 'model'"
                                " LEFT JOIN meta d ON d.name = 'dimensions' ORDER BY"
                                " (s.model, s.dimensions::text) IS NOT DISTINCT FROM (m.value, d.value) DESC, s.id"
                                ).fetchall()]

    def ensure_schema(self, model: str, dimensions: int) -> None:
        """Record the embedder (the primary embedding space) on first use; refuse one of another model."""
        meta = self.meta()
        if "model" not in meta:
            with self.db.transaction() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext('schema:' || current_schema()))",
                            (LOCK_CLASS,))
                cur.execute("INSERT INTO meta (name, value) VALUES ('model', %s), ('dimensions', %s)"
                            " ON CONFLICT (name) DO NOTHING", (model, str(dimensions)))
                recorded = dict(cur.execute("SELECT name, value FROM meta WHERE name IN ('model', 'dimensions')"))
                cur.execute("INSERT INTO spaces (model, dimensions) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                            (recorded["model"], int(recorded["dimensions"])))
            meta = self.meta()
        if meta["model"] != model or int(meta["dimensions"]) != dimensions:
            raise StoreError(
                f"{self.url}: built with embedding model {meta['model']} ({meta['dimensions']} dimensions), "
                f"not {model} ({dimensions}); use another --db or the same --embedder"
            )

    def _primary_space(self, cur: psycopg.Cursor | None = None) -> tuple[int, int]:
        """Row id and dimensions of the space ``ensure_schema`` recorded."""
        if self._space is not None:
            return self._space
        query = ("SELECT s.id, s.dimensions FROM spaces s JOIN meta m ON m.name = 'model' AND m.value = s.model"
                 " ORDER BY s.id LIMIT 1")
        if cur is None:
            with self.db.statement() as own:
                row = own.execute(query).fetchone()
        else:
            row = cur.execute(query).fetchone()
        if row is None:
            raise StoreError(f"{self.url}: no embedding model recorded yet (ensure_schema first)")
        self._space = (row[0], row[1])
        return self._space

    # writing

    def lock(self) -> "AdvisoryLock":
        """The ingester's exclusive lock on this store: a session advisory lock on a connection of its own,
        held while the lock is; the server releases it when that connection ends (the process died).
        Needs a direct connection (or a session pooler): behind a transaction pooler the lock would not stay
        with the session."""
        return AdvisoryLock(self.db, self.url)

    def known(self, keys: Iterable[str], include_superseded: bool = False) -> set[str]:
        """The subset of ``keys`` stored as current versions (also as superseded ones, when asked)."""
        current = "" if include_superseded else " AND superseded_at IS NULL"
        keys = list(keys)
        found: set[str] = set()
        with self.db.statement() as cur:
            for start in range(0, len(keys), _KEY_QUERY_SIZE):
                part = keys[start : start + _KEY_QUERY_SIZE]
                found.update(row[0] for row in cur.execute(
                    f"SELECT key FROM messages WHERE key = ANY(%s::text[]){current}", (part,)).fetchall())
        return found

    def current_versions(self, conversations: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
        """For each (source, conversation id): its current messages, message id -> key."""
        pairs = list(set(conversations))
        versions: dict[tuple[str, str], dict[str, str]] = {}
        with self.db.statement() as cur:
            for start in range(0, len(pairs), _KEY_QUERY_SIZE):
                part = pairs[start : start + _KEY_QUERY_SIZE]
                for source, conversation_id, message_id, key in cur.execute(
                        "SELECT v.source, v.conversation_id, m.message_id, m.key FROM unnest(%s::text[], %s::text[])"
                        " AS w(source, conversation_id) JOIN conversations v USING (source, conversation_id)"
                        " JOIN messages m ON m.conversation = v.id WHERE m.superseded_at IS NULL",
                        _columns(part, 2)).fetchall():
                    versions.setdefault((source, conversation_id), {})[message_id] = key
        return versions

    def supersede(self, keys: Iterable[str]) -> int:
        """Mark these current messages superseded (kept, hidden from search by default), in one transaction."""
        keys, marked = list(keys), 0
        with self.db.transaction() as cur:
            for start in range(0, len(keys), _KEY_QUERY_SIZE):
                marked += _supersede(cur, "m.key = ANY(%s::text[])", (keys[start : start + _KEY_QUERY_SIZE],))
        return marked

    def stored_conversations(self, source: str) -> list[StoredConversation]:
        """The conversations of ``source`` the store holds, with their message counts (every version)."""
        with self.db.statement() as cur:
            return [StoredConversation(*row) for row in cur.execute(
                "SELECT v.conversation_id, v.title, count(m.id) FROM conversations v JOIN messages m"
                " ON m.conversation = v.id WHERE v.source = %s GROUP BY v.id ORDER BY v.id", (source,)).fetchall()]

    def keys_of_conversations(self, conversations: Iterable[tuple[str, str]]) -> list[str]:
        """The keys of every version of every message of these (source, conversation id) conversations."""
        with self.db.statement() as cur:
            return [row[0] for row in cur.execute(
                "SELECT m.key FROM unnest(%s::text[], %s::text[]) AS w(source, conversation_id)"
                " JOIN conversations v USING (source, conversation_id) JOIN messages m ON m.conversation = v.id",
                _columns(list(set(conversations)), 2)).fetchall()]

    def upsert(self, records: list[MessageRecord]) -> int:
        """Write the records in one transaction; keys already present are left alone. Returns rows added."""
        if not records:
            return 0
        now = time.time()
        with self.db.transaction() as cur:
            space, dimensions = self._primary_space(cur)
            conversation_rows = _upsert_conversations(cur, records)
            first: dict[str, MessageRecord] = {}
            for record in records:  # a key twice in one batch: the first is the one written
                first.setdefault(record.key, record)
            unique = list(first.values())
            stored = dict(cur.execute("SELECT key, superseded_at IS NULL FROM messages WHERE key = ANY(%s::text[])",
                                      ([r.key for r in unique],)).fetchall())
            unique = [r for r in unique if r.key not in stored or (not stored[r.key] and r.superseded_at is None)]
            current = [r for r in unique if r.superseded_at is None]
            # a new current version supersedes the one stored under the same message id; then the superseded
            # versions asked for are made current again, and the new ones inserted
            _supersede(cur, "(m.conversation, m.message_id) IN (SELECT * FROM unnest(%s::bigint[], %s::text[]))",
                       _columns([(conversation_rows[(r.conversation.source, r.conversation.id)][0], r.message.id)
                                 for r in current], 2))
            revived = [r.key for r in current if r.key in stored]
            if revived:
                cur.execute("UPDATE messages SET superseded_at = NULL WHERE key = ANY(%s::text[])", (revived,))
                cur.execute("UPDATE vectors v SET current = true FROM messages m WHERE m.id = v.message"
                            " AND m.key = ANY(%s::text[])", (revived,))
            unique = [r for r in unique if r.key not in stored]
            new = dict(cur.execute(
                "INSERT INTO messages (key, conversation, message_id, role, created_at, position, text, ingested_at,"
                " superseded_at) SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[],"
                " %s::float8[], %s::integer[], %s::text[], %s::float8[], %s::float8[])"
                " ON CONFLICT (key) DO NOTHING RETURNING key, id",
                _columns([(r.key, conversation_rows[(r.conversation.source, r.conversation.id)][0], r.message.id,
                           r.message.role, _real(r.message.created_at), int(r.message.position), r.message.text, now,
                           _real(r.superseded_at)) for r in unique], 9),
            ).fetchall())
            added = [record for record in unique if record.key in new]
            vectors = []
            for record in added:
                array = np.ascontiguousarray(record.vectors, dtype=np.float32)
                if array.shape != (len(record.chunk_texts), dimensions):
                    raise StoreError(f"{self.url}: message {record.key} has {len(record.chunk_texts)} chunks "
                                     f"but vectors of shape {array.shape} (nothing was written)")
                vectors.append(array)
            chunk_rows = [(new[record.key], index, text) for record in added
                          for index, text in enumerate(record.chunk_texts)]
            if chunk_rows:
                ids = dict(((message, index), chunk) for chunk, message, index in cur.execute(
                    f"WITH added AS (INSERT INTO chunks (message, idx, text, tsv, tokens) {schema.CHUNK_KEYWORDS}"
                    " RETURNING id, message, idx, tokens),"
                    " totals AS (UPDATE keyword_totals SET chunks = chunks + (SELECT count(*) FROM added),"
                    " tokens = tokens + (SELECT coalesce(sum(tokens), 0) FROM added))"
                    " SELECT id, message, idx FROM added", _columns(chunk_rows, 3)).fetchall())
                rows = []
                for record, array in zip(added, vectors):
                    conversation, conversation_date = conversation_rows[(record.conversation.source,
                                                                         record.conversation.id)]
                    date = _real(record.message.created_at if record.message.created_at is not None
                                 else conversation_date)
                    message = new[record.key]
                    rows += [(space, ids[(message, index)], message, conversation, record.message.role,
                              record.conversation.source, date, record.superseded_at is None, vector)
                             for index, vector in enumerate(array)]
                _copy_vectors(cur, rows)
            crashpoint("before_commit")
        crashpoint("after_commit")
        return len(added) + len(revived)

    def delete_keys(self, keys: Iterable[str]) -> int:
        """Remove these messages with their chunks, vectors and keyword rows, in one transaction."""
        keys = list(keys)
        removed = 0
        with self.db.transaction() as cur:
            for start in range(0, len(keys), _KEY_QUERY_SIZE):
                part = keys[start : start + _KEY_QUERY_SIZE]
                cur.execute(
                    "WITH gone AS (DELETE FROM chunks c USING messages m WHERE m.id = c.message"
                    " AND m.key = ANY(%s::text[]) RETURNING c.tokens)"
                    " UPDATE keyword_totals SET chunks = chunks - (SELECT count(*) FROM gone),"
                    " tokens = tokens - (SELECT coalesce(sum(tokens), 0) FROM gone)", (part,))
                removed += cur.execute("DELETE FROM messages WHERE key = ANY(%s::text[])", (part,)).rowcount
            cur.execute("DELETE FROM conversations v WHERE NOT EXISTS"
                        " (SELECT 1 FROM messages m WHERE m.conversation = v.id)")
            cur.execute("UPDATE meta SET value = (value::bigint + 1)::text WHERE name = 'deletions'")
        return removed

    def stats(self) -> dict:
        """Counts of what the store holds, and the embedder it was built with."""
        with self.db.statement() as cur:
            row = cur.execute("SELECT (SELECT count(*) FROM conversations),"
                              " (SELECT count(*) FROM messages WHERE superseded_at IS NULL), (SELECT count(*) FROM chunks),"
                              " (SELECT count(*) FROM messages WHERE superseded_at IS NOT NULL)").fetchone()
        return stats_of(row, self.meta())

    # embedding spaces beside the primary one (sparky reembed, sparky spaces)

    def add_space(self, model: str, dimensions: int) -> None:
        """Record an embedding space (nothing when it is held); refuse a model held at another width."""
        with self.db.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext('schema:' || current_schema()))", (LOCK_CLASS,))
            widths = [row[0] for row in cur.execute("SELECT dimensions FROM spaces WHERE model = %s",
                                                     (model,)).fetchall()]
            if widths and dimensions not in widths:
                raise StoreError(f"{self.url}: holds vectors of {model} with {widths[0]} dimensions, not {dimensions}")
            cur.execute("INSERT INTO spaces (model, dimensions) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (model, dimensions))

    def space_vectors(self) -> dict[Space, int]:
        """How many vectors each embedding space holds, in the order the spaces were recorded."""
        with self.db.statement() as cur:
            return {Space(model, dimensions): count for model, dimensions, count in cur.execute(
                "SELECT s.model, s.dimensions, (SELECT count(*) FROM vectors v WHERE v.space = s.id)"
                " FROM spaces s ORDER BY s.id").fetchall()}

    def chunks_missing_vectors(self, space: Space, after_id: int, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (chunk id, text) of the chunks with ids past ``after_id`` that have no vector in
        ``space`` (all of them when it is not held), in id order; every version's chunks, since a superseded
        message may become current again."""
        with self.db.statement() as cur:
            return cur.execute(
                "SELECT c.id, c.text FROM chunks c WHERE c.id > %s AND NOT EXISTS (SELECT 1 FROM vectors v WHERE"
                " v.space = (SELECT id FROM spaces WHERE model = %s AND dimensions = %s) AND v.chunk = c.id)"
                " ORDER BY c.id LIMIT %s", (after_id, space.model, space.dimensions, limit)).fetchall()

    def put_vectors(self, space: Space, chunk_ids: Sequence[int], vectors: np.ndarray) -> int:
        """Store these chunks' vectors in ``space`` with their messages' filter fields, in one transaction
        (a binary COPY into a temporary table, then one INSERT … SELECT); returns the vectors written. A chunk
        holding a vector there keeps it (never written twice), a chunk deleted since is skipped, and a shape
        that is not (chunks, the space's width) is refused before anything is written."""
        vectors = space_vectors_checked(self.url, space, chunk_ids, vectors)
        vector = schema.vector_type(self.vector_schema)
        with self.db.transaction() as cur:
            space_id = self._space_id(cur, space)
            cur.execute(f"CREATE TEMPORARY TABLE sparky_new_vectors (chunk bigint, embedding {vector}) ON COMMIT DROP")
            with cur.copy("COPY sparky_new_vectors (chunk, embedding) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "vector"])
                for chunk, row in zip(chunk_ids, vectors):
                    copy.write_row((int(chunk), row))
            written = cur.execute(
                "INSERT INTO vectors (space, chunk, message, conversation, role, source, created_at, current,"
                " embedding) SELECT %s, c.id, c.message, m.conversation, m.role, v.source,"
                " coalesce(m.created_at, v.created_at), m.superseded_at IS NULL, n.embedding"
                " FROM sparky_new_vectors n JOIN chunks c ON c.id = n.chunk JOIN messages m ON m.id = c.message"
                " JOIN conversations v ON v.id = m.conversation ON CONFLICT (space, chunk) DO NOTHING",
                (space_id,)).rowcount
            crashpoint("before_commit")
        crashpoint("after_commit")
        return written

    def set_primary(self, space: Space) -> None:
        """Make a held space the primary one (``meta``'s model and dimensions: what ingest and search use)."""
        with self.db.transaction() as cur:
            self._space_id(cur, space)
            cur.execute("UPDATE meta SET value = CASE name WHEN 'model' THEN %s ELSE %s END"
                        " WHERE name IN ('model', 'dimensions')", (space.model, str(space.dimensions)))
        self._space = None  # the primary space's row, read again

    def _space_id(self, cur: psycopg.Cursor, space: Space) -> int:
        row = cur.execute("SELECT id FROM spaces WHERE model = %s AND dimensions = %s",
                          (space.model, space.dimensions)).fetchone()
        if row is None:
            raise StoreError(f"{self.url}: holds no vectors of {space.model} ({space.dimensions} dimensions)")
        return row[0]

    def ensure_index(self, space: Space | None = None) -> tuple[int, bool] | None:
        """Build the HNSW index of a space (by default the primary one) when it has none and holds
        ``schema.HNSW_MIN_ROWS`` vectors or more: the vectors it holds and True, else None (the index is
        there, the space is too small or too wide for one). The keyword index's pending entries are merged
        first.

        A space is recorded without its index and filled without one: building the graph once over the
        stored vectors is far cheaper than inserting them into it one by one, so ingest, reembed and copy
        call this at their end, and later writes keep the index up to date. Until then a search scans the
        space exactly (exact results; slower at scale). The build is one transaction: searches go on
        meanwhile, another process's writes wait for it, and a build cut short leaves nothing behind."""
        with self.db.statement() as cur:  # the keyword index's pending entries merged (by its owner: else VACUUM's)
            cur.execute("SELECT gin_clean_pending_list(c.oid) FROM pg_class c WHERE c.oid = 'chunks_tsv'::regclass"
                        " AND pg_has_role(c.relowner, 'USAGE')")
        with self.db.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext('index:' || current_schema()))", (LOCK_CLASS,))
            space_id, dimensions = (self._primary_space(cur) if space is None
                                    else (self._space_id(cur, space), space.dimensions))
            build = schema.space_index_sql(self.vector_schema, space_id, dimensions)
            if build is None or cur.execute("SELECT to_regclass(%s) IS NOT NULL",
                                            (schema.space_index_name(space_id),)).fetchone()[0]:
                return None
            rows = cur.execute("SELECT count(*) FROM vectors WHERE space = %s", (space_id,)).fetchone()[0]
            if rows < max(1, schema.HNSW_MIN_ROWS):
                return None
            cur.execute("SELECT set_config('maintenance_work_mem', %s, true)"
                        " WHERE pg_size_bytes(current_setting('maintenance_work_mem')) < pg_size_bytes(%s)",
                        (schema.build_memory(rows, dimensions),) * 2)
            crashpoint("index_build")
            cur.execute(build)
        return rows, True

    def close(self) -> None:
        self.db.close()


class AdvisoryLock:
    """``pg_try_advisory_lock`` on a dedicated connection, held from ``__enter__`` to ``__exit__``."""

    def __init__(self, db: Connection, url: str) -> None:
        self.db = db
        self.url = url
        self._conn: psycopg.Connection | None = None

    def __enter__(self) -> "AdvisoryLock":
        self._conn = self._take()
        self.db.lock = self
        return self

    def _take(self) -> psycopg.Connection:
        conn = self.db.connect("sparky-lock")
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext('ingest:' || current_schema()))",
                               (LOCK_CLASS,)).fetchone()[0]
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"{self.url}: cannot lock the memory store ({self.db.describe(exc)})") from None
        if not got:
            conn.close()
            raise LockedError(f"memory store {self.url} is in use by another ingestion; "
                              "wait for it to finish or stop it first")
        return conn

    def confirm(self) -> None:
        """Before a write: the lock's session is still there, else take the lock again (the server was
        restarted or the connection dropped, which released it); another ingester holding it by then is a
        LockedError, so two never write at once."""
        try:
            self._conn.execute("SELECT 1")
            return
        except psycopg.Error:
            self._conn.close()
        try:
            self._conn = self._take()
        except StoreError as exc:
            if isinstance(exc, LockedError):
                raise
            raise TransientStoreError(f"{exc} (the lock's connection was lost)") from None

    def __exit__(self, *exc: object) -> None:
        self.db.lock = None
        conn, self._conn = self._conn, None
        if conn is not None:
            try:  # closing the session releases the lock anyway
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext('ingest:' || current_schema()))",
                             (LOCK_CLASS,))
            except psycopg.Error:
                pass
            finally:
                conn.close()


def _unaccent_schema(cur: psycopg.Cursor) -> str | None:
    """The schema of the ``unaccent`` extension, creating it when the server has it and this role may;
    None when it cannot be had (keywords are then matched with their accents)."""
    found = schema.extension_schema(cur, "unaccent")
    if found is not None:
        return found
    available = cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'unaccent'").fetchone()
    if available is None:
        return None
    try:
        with cur.connection.transaction():
            cur.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
    except psycopg.Error:
        return None
    return schema.extension_schema(cur, "unaccent")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _real(value: float | None) -> float | None:
    return None if value is None else float(value)


def _columns(rows: list[tuple], width: int) -> list[list]:
    """Rows as column lists, for ``unnest`` over array parameters (one statement for any number of rows)."""
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]


def _upsert_conversations(cur: psycopg.Cursor, records: list[MessageRecord]
                          ) -> dict[tuple[str, str], tuple[int, float | None]]:
    """Insert the records' conversations, or update the title and date of those stored; their rows and
    stored creation dates (a stored conversation keeps its own)."""
    latest = {(r.conversation.source, r.conversation.id): r.conversation for r in records}  # the last wins
    rows = [(c.source, c.id, c.title, _real(c.created_at), _real(c.updated_at)) for c in latest.values()]
    return {(source, conversation_id): (row, created_at) for row, source, conversation_id, created_at in cur.execute(
        "INSERT INTO conversations (source, conversation_id, title, created_at, updated_at)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[])"
        " ON CONFLICT (source, conversation_id) DO UPDATE SET title = excluded.title,"
        " updated_at = excluded.updated_at RETURNING id, source, conversation_id, created_at",
        _columns(rows, 5)).fetchall()}


_VECTOR_COLUMNS = ("int4", "int8", "int8", "int8", "text", "text", "float8", "bool", "vector")


def _supersede(cur: psycopg.Cursor, which: str, params: Iterable) -> int:
    """Mark the current messages ``which`` selects (alias ``m``) superseded, and their vectors not current."""
    marked = cur.execute(f"UPDATE messages m SET superseded_at = %s WHERE m.superseded_at IS NULL AND {which}"
                         " RETURNING m.id", (time.time(), *params)).fetchall()
    if marked:
        cur.execute("UPDATE vectors SET current = false WHERE message = ANY(%s::bigint[])", ([row[0] for row in marked],))
    return len(marked)


def _copy_vectors(cur: psycopg.Cursor, rows: list[tuple]) -> None:
    """The vectors with their filter fields in one binary COPY."""
    with cur.copy("COPY vectors (space, chunk, message, conversation, role, source, created_at, current, embedding)"
                  " FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(_VECTOR_COLUMNS))
        for row in rows:
            copy.write_row(row)


__all__ = ["AdvisoryLock", "PostgresStore", "register_vector_type"]
