"""The embedded store: one SQLite file with messages, chunks, float32 vectors and an FTS5 index.

Vectors are stored as float32 blobs and searched exactly with numpy: this Python's sqlite3 (like many
pyenv and macOS builds) cannot load extensions such as sqlite-vec.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ...crashpoints import crashpoint, sqlite_page_limit
from ...errors import StoreError, TransientStoreError
from ...folders import ensure_parent
from ...locking import FileLock
from ..records import MessageRecord, Space, StoredConversation, space_vectors_checked, stats_of
from . import ann
from .ann import AnnIndex
from .search import SearchQueries
from .vector_file import remove_vector_files

_KEY_QUERY_SIZE = 500


def _execute_script(db: sqlite3.Connection, script: str) -> None:
    """Run statements one by one (``executescript`` would commit the open transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: sqlite3.Connection) -> None:
    _execute_script(
        db,
        """
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            conversation_id TEXT NOT NULL,
            title TEXT NOT NULL,
            created_at REAL,
            updated_at REAL,
            UNIQUE (source, conversation_id)
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            conversation INTEGER NOT NULL REFERENCES conversations(id),
            message_id TEXT NOT NULL,
            role TEXT NOT NULL,
            created_at REAL,
            position INTEGER NOT NULL,
            text TEXT NOT NULL,
            ingested_at REAL NOT NULL
        );
        CREATE INDEX messages_by_conversation ON messages (conversation, position);
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            message INTEGER NOT NULL REFERENCES messages(id),
            idx INTEGER NOT NULL,
            text TEXT NOT NULL,
            vector BLOB NOT NULL,
            UNIQUE (message, idx)
        );
        CREATE VIRTUAL TABLE chunks_fts USING fts5(
            text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
        );
        """
    )


def _m002_embedding_spaces(db: sqlite3.Connection) -> None:
    """Vectors move to their own table, keyed by embedding space (model + dimensions), so a store can hold
    vectors of several models; chunk ids are never reused after a delete (AUTOINCREMENT), so a cached
    vector matrix can tell it is stale; ``deletions`` counts delete transactions for the same reason."""
    _execute_script(
        db,
        """
        CREATE TABLE spaces (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            dimensions INTEGER NOT NULL,
            UNIQUE (model, dimensions)
        );
        INSERT INTO spaces (model, dimensions)
            SELECT m.value, CAST(d.value AS INTEGER) FROM meta m JOIN meta d
            ON m.name = 'model' AND d.name = 'dimensions';
        ALTER TABLE chunks RENAME TO chunks_v1;
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            message INTEGER NOT NULL REFERENCES messages(id),
            idx INTEGER NOT NULL,
            text TEXT NOT NULL,
            UNIQUE (message, idx)
        );
        INSERT INTO chunks (id, message, idx, text) SELECT id, message, idx, text FROM chunks_v1;
        CREATE TABLE vectors (
            space INTEGER NOT NULL REFERENCES spaces(id),
            chunk INTEGER NOT NULL REFERENCES chunks(id),
            vector BLOB NOT NULL,
            PRIMARY KEY (space, chunk)
        ) WITHOUT ROWID;
        INSERT INTO vectors (space, chunk, vector) SELECT s.id, c.id, c.vector FROM chunks_v1 c, spaces s;
        DROP TABLE chunks_v1;
        INSERT OR IGNORE INTO meta (name, value) VALUES ('deletions', '0')
        """
    )


def _m003_message_versions(db: sqlite3.Connection) -> None:
    """A message is its (conversation, message id) across exports: a new text under the same id is a new
    version, and the old one is kept, marked superseded (hidden from search unless asked for). At most one
    current version per message; of earlier duplicates (an edit stored twice) the newest stays current."""
    _execute_script(
        db,
        """
        ALTER TABLE messages ADD COLUMN superseded_at REAL;
        UPDATE messages SET superseded_at = ingested_at
            WHERE id NOT IN (SELECT max(id) FROM messages GROUP BY conversation, message_id);
        CREATE UNIQUE INDEX messages_current ON messages (conversation, message_id) WHERE superseded_at IS NULL;
        CREATE INDEX messages_superseded ON messages (superseded_at) WHERE superseded_at IS NOT NULL
        """
    )


def _m004_trigram_index(db: sqlite3.Connection) -> None:
    """A trigram index beside the word index, so a term of an unspaced script (Chinese, Japanese) is found
    inside a longer run of it (``stores/substring.py``); filled from the chunks already stored."""
    _execute_script(
        db,
        """
        CREATE VIRTUAL TABLE chunks_trigram USING fts5(text, content='chunks', content_rowid='id',
            tokenize='trigram');
        INSERT INTO chunks_trigram (chunks_trigram) VALUES ('rebuild')
        """
    )


def _m005_vectors_by_space(db: sqlite3.Connection) -> None:
    """An index of the vectors by space alone: counting one space's vectors (every search of a store that
    holds several spaces checks it) reads this small index instead of every vector's page (2 ms against
    150 ms at 25k vectors a space)."""
    db.execute("CREATE INDEX vectors_by_space ON vectors (space)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_initial, _m002_embedding_spaces,
                                                          _m003_message_versions, _m004_trigram_index,
                                                          _m005_vectors_by_space]


class SQLiteStore(SearchQueries):
    """A single-file store; each ``upsert`` is one transaction and a known key is never written twice.

    The file (and so its WAL and shared-memory files, which SQLite creates with the file's mode) is made
    readable by its owner only: it holds a person's whole chat history. An existing file keeps its mode."""

    def __init__(self, path: str | Path, create: bool = True, busy_timeout: float = 30.0) -> None:
        """``busy_timeout``: seconds a write waits for another writer before it is a TransientStoreError."""
        self.path = Path(path)
        self.url = str(self.path)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a folder, not a database file")
        if not create and self.path.exists() and _readonly_schema_version(self.path) == 0 \
                and not _unmigrated_store_of_ours(self.path):
            raise StoreError(f"{self.path}: not a Sparky memory store; run `sparky ingest EXPORT` first (or pass --db)")
        if not self.path.exists():
            if not create:
                raise StoreError(f"{self.path}: no memory store here; run `sparky ingest EXPORT` first (or pass --db)")
            ensure_parent(self.path)
            _create_private(self.path)
        try:
            self.db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            if (page_limit := sqlite_page_limit()) is not None:
                self.db.execute(f"PRAGMA max_page_count = {page_limit}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot open the memory store ({exc})") from None
        self._migrate()

    def lock(self) -> FileLock:
        """The ingester's exclusive lock on this store (``<file>.lock``, flock: a killed holder releases it)."""
        return FileLock(self.path, f"memory store {self.path}")

    def _schema_version(self) -> int:
        try:
            return self.db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a Sparky memory store ({exc})") from None

    def _migrate(self) -> None:
        version = self._schema_version()
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path}: made by a newer Sparky (schema {version}); upgrade sparky")
        try:
            for number in range(version, len(MIGRATIONS)):
                with self._transaction():
                    crashpoint("schema")
                    MIGRATIONS[number](self.db)
                    self.db.execute(f"PRAGMA user_version = {number + 1}")
        except sqlite3.DatabaseError as exc:  # e.g. another application's database with a "messages" table
            raise StoreError(f"{self.path}: not a Sparky memory store ({exc})") from None

    def _transaction(self) -> "_Transaction":
        return _Transaction(self.db, self.path)

    def meta(self) -> dict[str, str]:
        try:
            return dict(self.db.execute("SELECT name, value FROM meta"))
        except sqlite3.DatabaseError as exc:  # the first read of every run: a damaged file shows here
            raise StoreError(f"{self.path}: cannot read the memory store ({exc})") from None

    def spaces(self) -> list[Space]:
        """The embedding spaces the store holds vectors of, the primary (``meta``'s model) first."""
        return [Space(model, dimensions) for model, dimensions in self.db.execute(
            "SELECT model, dimensions FROM spaces s ORDER BY NOT EXISTS (SELECT 1 FROM meta m JOIN meta d"
            " ON m.name = 'model' AND d.name = 'dimensions' WHERE m.value = s.model"
            " AND CAST(d.value AS INTEGER) = s.dimensions), id")]

    def ensure_schema(self, model: str, dimensions: int) -> None:
        """Record the embedder (the primary embedding space) on first use; refuse one of another model."""
        meta = self.meta()
        if "model" not in meta:
            with self._transaction():
                self.db.executemany(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)",
                    [("model", model), ("dimensions", str(dimensions))],
                )
                self.db.execute("INSERT OR IGNORE INTO spaces (model, dimensions) VALUES (?, ?)", (model, dimensions))
            return
        if meta["model"] != model or int(meta["dimensions"]) != dimensions:
            raise StoreError(
                f"{self.path}: built with embedding model {meta['model']} ({meta['dimensions']} dimensions), "
                f"not {model} ({dimensions}); use another --db or the same --embedder"
            )

    def known(self, keys: Iterable[str], include_superseded: bool = False) -> set[str]:
        """The subset of ``keys`` stored as current versions (also as superseded ones, when asked)."""
        current = "" if include_superseded else " AND superseded_at IS NULL"
        keys = list(keys)
        found: set[str] = set()
        for start in range(0, len(keys), _KEY_QUERY_SIZE):
            part = keys[start : start + _KEY_QUERY_SIZE]
            marks = ",".join("?" * len(part))
            found.update(row[0] for row in self.db.execute(
                f"SELECT key FROM messages WHERE key IN ({marks}){current}", part))
        return found

    def current_versions(self, conversations: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
        """For each (source, conversation id): its current messages, message id -> key."""
        versions: dict[tuple[str, str], dict[str, str]] = {}
        for source, conversation_id, message_id, key in self.db.execute(
                "SELECT v.source, v.conversation_id, m.message_id, m.key FROM messages m"
                " JOIN conversations v ON v.id = m.conversation WHERE m.superseded_at IS NULL"):
            versions.setdefault((source, conversation_id), {})[message_id] = key
        wanted = set(conversations)
        return {name: found for name, found in versions.items() if name in wanted}

    def supersede(self, keys: Iterable[str]) -> int:
        """Mark these current messages superseded (kept, hidden from search by default), in one transaction."""
        keys, now, marked = list(keys), time.time(), 0
        with self._transaction():
            for start in range(0, len(keys), _KEY_QUERY_SIZE):
                part = keys[start : start + _KEY_QUERY_SIZE]
                marks = ",".join("?" * len(part))
                marked += self.db.execute(f"UPDATE messages SET superseded_at = ? WHERE key IN ({marks})"
                                          " AND superseded_at IS NULL", [now, *part]).rowcount
        return marked

    def stored_conversations(self, source: str) -> list[StoredConversation]:
        """The conversations of ``source`` the store holds, with their message counts (every version)."""
        return [StoredConversation(*row) for row in self.db.execute(
            "SELECT v.conversation_id, v.title, count(m.id) FROM conversations v JOIN messages m"
            " ON m.conversation = v.id WHERE v.source = ? GROUP BY v.id ORDER BY v.id", (source,))]

    def keys_of_conversations(self, conversations: Iterable[tuple[str, str]]) -> list[str]:
        """The keys of every version of every message of these (source, conversation id) conversations."""
        return [row[0] for row in self.db.execute(
            "SELECT m.key FROM messages m JOIN conversations v ON v.id = m.conversation"
            " WHERE (v.source, v.conversation_id) IN"
            " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))",
            [json.dumps([list(pair) for pair in conversations])])]

    def upsert(self, records: list[MessageRecord]) -> int:
        """Write the records in one transaction; returns the versions added or made current again.

        A current key is left alone. A new key for a message id its conversation holds supersedes the
        version stored (kept); a superseded key becomes current again (its vectors are still there). A
        record with ``superseded_at`` (a copy of an old version) is stored as such, touching nothing else."""
        added = 0
        now = time.time()
        with self._transaction():
            space = self._primary_space()
            for record in records:
                conversation_row = self._conversation_row(record)
                message = record.message
                existing = self.db.execute("SELECT id, superseded_at FROM messages WHERE key = ?",
                                           (record.key,)).fetchone()
                if existing is not None and (existing[1] is None or record.superseded_at is not None):
                    continue
                if record.superseded_at is None:
                    self.db.execute("UPDATE messages SET superseded_at = ? WHERE conversation = ? AND message_id = ?"
                                    " AND superseded_at IS NULL", (now, conversation_row, message.id))
                if existing is not None:
                    self.db.execute("UPDATE messages SET superseded_at = NULL WHERE id = ?", (existing[0],))
                    added += 1
                    continue
                cursor = self.db.execute(
                    "INSERT INTO messages (key, conversation, message_id, role, created_at, position, text,"
                    " ingested_at, superseded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.key, conversation_row, message.id, message.role, message.created_at,
                     message.position, message.text, now, record.superseded_at),
                )
                added += 1
                message_row = cursor.lastrowid
                vectors = np.ascontiguousarray(record.vectors, dtype=np.float32)
                if vectors.shape != (len(record.chunk_texts), space[1]):
                    raise StoreError(f"{self.path}: message {record.key} has {len(record.chunk_texts)} chunks "
                                     f"but vectors of shape {vectors.shape} (nothing was written)")
                for index, (text, vector) in enumerate(zip(record.chunk_texts, vectors)):
                    chunk_row = self.db.execute(
                        "INSERT INTO chunks (message, idx, text) VALUES (?, ?, ?)", (message_row, index, text),
                    ).lastrowid
                    self.db.execute("INSERT INTO vectors (space, chunk, vector) VALUES (?, ?, ?)",
                                    (space[0], chunk_row, vector.tobytes()))
                    self.db.execute("INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)", (chunk_row, text))
                    self.db.execute("INSERT INTO chunks_trigram (rowid, text) VALUES (?, ?)", (chunk_row, text))
            crashpoint("before_commit")
        crashpoint("after_commit")
        return added

    def _primary_space(self) -> tuple[int, int]:
        """Row id and dimensions of the space ``ensure_schema`` recorded."""
        row = self.db.execute("SELECT s.id, s.dimensions FROM spaces s JOIN meta m ON m.name = 'model'"
                              " AND m.value = s.model ORDER BY s.id LIMIT 1").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: no embedding model recorded yet (ensure_schema first)")
        return row

    def _conversation_row(self, record: MessageRecord) -> int:
        conversation = record.conversation
        self.db.execute(
            "INSERT INTO conversations (source, conversation_id, title, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, conversation_id) DO UPDATE SET"
            " title = excluded.title, updated_at = excluded.updated_at",
            (conversation.source, conversation.id, conversation.title, conversation.created_at,
             conversation.updated_at),
        )
        return self.db.execute(
            "SELECT id FROM conversations WHERE source = ? AND conversation_id = ?",
            (conversation.source, conversation.id),
        ).fetchone()[0]

    def delete_keys(self, keys: Iterable[str]) -> int:
        """Remove these messages with their chunks and keyword rows, in one transaction."""
        keys = list(keys)
        removed = 0
        with self._transaction():
            for start in range(0, len(keys), _KEY_QUERY_SIZE):
                part = keys[start : start + _KEY_QUERY_SIZE]
                marks = ",".join("?" * len(part))
                chunk_rows = self.db.execute(
                    f"SELECT c.id, c.text FROM chunks c JOIN messages m ON m.id = c.message WHERE m.key IN ({marks})",
                    part,
                ).fetchall()
                for index in ("chunks_fts", "chunks_trigram"):
                    self.db.executemany(f"INSERT INTO {index} ({index}, rowid, text) VALUES ('delete', ?, ?)",
                                        chunk_rows)
                self.db.execute(f"DELETE FROM vectors WHERE chunk IN (SELECT c.id FROM chunks c JOIN messages m"
                                f" ON m.id = c.message WHERE m.key IN ({marks}))", part)
                self.db.execute(
                    f"DELETE FROM chunks WHERE message IN (SELECT id FROM messages WHERE key IN ({marks}))", part
                )
                removed += self.db.execute(f"DELETE FROM messages WHERE key IN ({marks})", part).rowcount
            self.db.execute(
                "DELETE FROM conversations WHERE id NOT IN (SELECT DISTINCT conversation FROM messages)"
            )
            self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'deletions'")
        if removed:
            self.remove_derived_files()
        return removed

    def remove_derived_files(self) -> None:
        """Delete the vector files derived from the store: stale after a delete, the next search writes them."""
        remove_vector_files(self.path)

    def stats(self) -> dict:
        """Counts of what the store holds, and the embedder it was built with."""
        row = self.db.execute(
            "SELECT (SELECT count(*) FROM conversations),"
            " (SELECT count(*) FROM messages WHERE superseded_at IS NULL), (SELECT count(*) FROM chunks),"
            " (SELECT count(*) FROM messages WHERE superseded_at IS NOT NULL)"
        ).fetchone()
        return stats_of(row, self.meta())

    # embedding spaces beside the primary one (sparky reembed, sparky spaces)

    def add_space(self, model: str, dimensions: int) -> None:
        """Record an embedding space (nothing when it is held); refuse a model held at another width."""
        with self._transaction():
            widths = [row[0] for row in self.db.execute("SELECT dimensions FROM spaces WHERE model = ?", (model,))]
            if widths and dimensions not in widths:
                raise StoreError(f"{self.path}: holds vectors of {model} with {widths[0]} dimensions, not {dimensions}")
            self.db.execute("INSERT OR IGNORE INTO spaces (model, dimensions) VALUES (?, ?)", (model, dimensions))

    def space_vectors(self) -> dict[Space, int]:
        """How many vectors each embedding space holds, in the order the spaces were recorded."""
        return {Space(model, dimensions): count for model, dimensions, count in self.db.execute(
            "SELECT s.model, s.dimensions, (SELECT count(*) FROM vectors v WHERE v.space = s.id)"
            " FROM spaces s ORDER BY s.id")}

    def chunks_missing_vectors(self, space: Space, after_id: int, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (chunk id, text) of the chunks with ids past ``after_id`` that have no vector in
        ``space`` (all of them when it is not held), in id order; every version's chunks, since a superseded
        message may become current again."""
        return self.db.execute(
            "SELECT c.id, c.text FROM chunks c WHERE c.id > ? AND NOT EXISTS (SELECT 1 FROM vectors v WHERE"
            " v.space = (SELECT id FROM spaces WHERE model = ? AND dimensions = ?) AND v.chunk = c.id)"
            " ORDER BY c.id LIMIT ?", (after_id, space.model, space.dimensions, limit)).fetchall()

    def put_vectors(self, space: Space, chunk_ids: Sequence[int], vectors: np.ndarray) -> int:
        """Store these chunks' vectors in ``space``, in one transaction; returns the vectors written. A chunk
        holding a vector there keeps it (never written twice), a chunk deleted since is skipped, and a shape
        that is not (chunks, the space's width) is refused before anything is written."""
        vectors = space_vectors_checked(str(self.path), space, chunk_ids, vectors)
        with self._transaction():
            space_id = self._space_id(space)
            written = sum(self.db.execute(
                "INSERT OR IGNORE INTO vectors (space, chunk, vector) SELECT ?, id, ? FROM chunks WHERE id = ?",
                (space_id, vector.tobytes(), int(chunk))).rowcount for chunk, vector in zip(chunk_ids, vectors))
            crashpoint("before_commit")
        crashpoint("after_commit")
        return written

    def set_primary(self, space: Space) -> None:
        """Make a held space the primary one (``meta``'s model and dimensions: what ingest and search use).
        A searcher's kept matrix is per space and checked on every query, so it follows at its next query."""
        with self._transaction():
            self._space_id(space)
            self.db.executemany("UPDATE meta SET value = ? WHERE name = ?",
                                [(space.model, "model"), (str(space.dimensions), "dimensions")])

    def _space_id(self, space: Space) -> int:
        row = self.db.execute("SELECT id FROM spaces WHERE model = ? AND dimensions = ?",
                              (space.model, space.dimensions)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: holds no vectors of {space.model} ({space.dimensions} dimensions)")
        return row[0]

    def ensure_index(self, space: Space | None = None) -> tuple[int, bool] | None:
        """Build the ANN index of a space (by default the primary one), or add to it only the rows added
        since, when the space holds ``ann.MIN_ROWS`` rows or more: the rows added and whether it was built
        afresh, or None (too few rows, another builder at work, or it cannot be written: search stays exact).
        It blocks for the build (minutes at 1M new rows): the end of an ingest is the place to call it."""
        space_id, current = self._vector_state(space)
        matrix = self._load(space_id, current)
        if len(matrix.rows.ids) < ann.MIN_ROWS:
            return None
        return AnnIndex(self.path, space_id).build(matrix.state, matrix.rows)

    def close(self) -> None:
        self.db.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception; disk-full and read-only become StoreErrors."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise TransientStoreError(f"{self.path}: the memory store is busy ({exc}); another program "
                                          "is writing to it") from None
            raise

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.DatabaseError as error:
                exc = error
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError) and _is_fatal(exc):
            raise StoreError(f"{self.path}: cannot write the memory store ({exc})") from None
        if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
            raise TransientStoreError(f"{self.path}: the memory store is busy ({exc})") from None
        if exc_type is None:
            raise exc
        return False


def _is_fatal(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return any(word in text for word in ("disk is full", "readonly", "read-only", "disk i/o"))


def _readonly_schema_version(path: Path) -> int:
    """The file's SQLite ``user_version``, read without writing: opening a foreign file as a store would
    turn it to WAL mode and add tables. (Not ``mode=ro``: a WAL store copied without its shared-memory
    file, or left by a killed process, cannot be read that way, and its WAL may hold the version.)"""
    try:
        with closing(sqlite3.connect(path)) as db:
            return db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a Sparky memory store ({exc})") from None


def _unmigrated_store_of_ours(path: Path) -> bool:
    """A WAL-mode file without a single table: a store whose first migration never reached the main file
    (its process was killed, or the file was copied without its WAL). Another application's database has
    tables; a file we did not make is not in WAL mode."""
    with open(path, "rb") as file:
        header = file.read(100)
    if len(header) < 100 or header[18:20] != b"\x02\x02":
        return False
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _create_private(path: Path) -> None:
    """Create an empty file readable and writable by its owner only (SQLite fills it on first use)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the memory store ({exc.strerror})") from None
