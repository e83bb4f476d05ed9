"""Copy a memory from one store to another (SQLite to PostgreSQL and back) without embedding anything again.

Messages go over in batches in the source's row order, each with its conversation, its chunks and their
vectors of the source's primary embedding space, under the same keys, superseded versions as superseded; each batch is one ``upsert`` (one
transaction) in the target. Keys the target already holds are skipped, so a copy that was interrupted
resumes where it stopped and a second copy copies nothing. The target records the source's model and
dimensions (``ensure_schema``): a target built with another model is refused before anything is written.
The target's ingester lock is held for the whole copy.

The Store protocol has no way to read whole records back, so the reading side is per backend here
(``_SQLiteReader``, ``_PostgresReader``), over the tables both stores share.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar

import numpy as np

from ..errors import StoreError
from ..models import Conversation, Message
from . import Store
from .records import MessageRecord

DEFAULT_BATCH = 500
T = TypeVar("T")


def _once(call: Callable[[], T]) -> T:
    return call()


@dataclass(frozen=True)
class CopyProgress:
    """Where a copy stands after a batch."""

    done: int  # source messages gone through so far (copied or skipped)
    total: int  # messages in the source when the copy started
    copied: int  # written to the target so far
    skipped: int  # already in the target


@dataclass(frozen=True)
class CopyResult:
    total: int
    copied: int
    skipped: int
    batches: int
    model: str
    dimensions: int


class _Reader(Protocol):
    def space(self) -> tuple[int, str, int]: ...
    def batch(self, after: int, limit: int, space: int, dimensions: int) -> list[tuple[int, MessageRecord]]: ...


_MESSAGES = (
    "SELECT m.id, m.key, m.message_id, m.role, m.created_at, m.position, m.text, v.source, v.conversation_id,"
    " v.title, v.created_at, v.updated_at, m.superseded_at FROM messages m JOIN conversations v"
    " ON v.id = m.conversation"
)
_SPACE = ("SELECT s.id, s.model, s.dimensions FROM spaces s JOIN meta m ON m.name = 'model' AND m.value = s.model"
          " ORDER BY s.id LIMIT 1")


def copy_store(source: Store, target: Store, on_batch: Callable[[CopyProgress], None] | None = None,
               batch_size: int = DEFAULT_BATCH, lock: bool = True,
               retrying: Callable[[Callable[[], Any]], Any] = _once) -> CopyResult:
    """Copy every message of ``source`` that ``target`` lacks; ``on_batch`` hears after each committed batch
    (an exception from it stops the copy: what was committed stays, and the next copy resumes).
    ``lock``: hold the target's ingester lock meanwhile (pass False when the caller holds it).
    ``retrying(call)`` makes each store call of a batch (a transient failure is retried there)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    reader = _reader(source)
    space, model, dimensions = reader.space()
    counts = source.stats()
    total = counts["messages"] + counts["superseded"]
    copied = skipped = done = batches = 0
    with target.lock() if lock else nullcontext():
        target.ensure_schema(model, dimensions)
        after = 0
        while True:
            rows = retrying(lambda: reader.batch(after, batch_size, space, dimensions))
            if not rows:
                break
            after = rows[-1][0]
            records = [record for _, record in rows]
            known = retrying(lambda: target.known([record.key for record in records], include_superseded=True))
            fresh = [record for record in records if record.key not in known]
            if fresh:
                copied += retrying(lambda: target.upsert(fresh))
            skipped += len(records) - len(fresh)
            done += len(records)
            batches += 1
            if on_batch is not None:
                on_batch(CopyProgress(done, max(total, done), copied, skipped))
    return CopyResult(max(total, done), copied, skipped, batches, model, dimensions)


def _reader(store: Store) -> _Reader:
    from .sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        return _SQLiteReader(store)
    try:
        from .postgres import PostgresStore
    except ImportError:  # the postgres extra is not installed: no store can be one
        PostgresStore = ()  # type: ignore[assignment,misc]
    if isinstance(store, PostgresStore):
        return _PostgresReader(store)
    raise StoreError(f"{store.url}: cannot copy from this kind of store")


def _records(store_url: str, messages: list[tuple], chunks: list[tuple], dimensions: int) -> list[tuple[int, MessageRecord]]:
    """Records from message rows (``_MESSAGES``' columns) and chunk rows (message, idx, text, vector or None)."""
    by_message: dict[int, list[tuple]] = {}
    for row in chunks:
        by_message.setdefault(row[0], []).append(row)
    records = []
    for (row, key, message_id, role, created_at, position, text, source, conversation_id, title, conversation_created,
         conversation_updated, superseded_at) in messages:
        parts = sorted(by_message.get(row, []), key=lambda part: part[1])
        if any(part[3] is None for part in parts):
            raise StoreError(f"{store_url}: message {key} has a chunk without a vector; run `sparky progress "
                             "--rebuild` or re-ingest it before copying")
        vectors = (np.stack([np.asarray(part[3], dtype=np.float32) for part in parts]) if parts
                   else np.zeros((0, dimensions), np.float32))
        conversation = Conversation(source, conversation_id, title, conversation_created, conversation_updated)
        message = Message(conversation_id, message_id, role, created_at, text, position)
        records.append((row, MessageRecord(key, conversation, message, tuple(part[2] for part in parts), vectors,
                                           superseded_at)))
    return records


class _SQLiteReader:
    def __init__(self, store) -> None:
        self.store = store

    def space(self) -> tuple[int, str, int]:
        row = self.store.db.execute(_SPACE).fetchone()
        if row is None:
            raise StoreError(f"{self.store.url}: the memory store holds no vectors yet; nothing to copy")
        return row

    def batch(self, after: int, limit: int, space: int, dimensions: int) -> list[tuple[int, MessageRecord]]:
        db = self.store.db
        messages = db.execute(f"{_MESSAGES} WHERE m.id > ? ORDER BY m.id LIMIT ?", (after, limit)).fetchall()
        if not messages:
            return []
        chunks = db.execute(
            "SELECT c.message, c.idx, c.text, x.vector FROM chunks c LEFT JOIN vectors x ON x.chunk = c.id"
            " AND x.space = ? WHERE c.message > ? AND c.message <= ?", (space, after, messages[-1][0])).fetchall()
        decoded = []
        for message, index, text, blob in chunks:
            vector = None if blob is None else np.frombuffer(blob, dtype=np.float32)
            if vector is not None and vector.shape != (dimensions,):
                raise StoreError(f"{self.store.url}: a stored vector does not have {dimensions} dimensions")
            decoded.append((message, index, text, vector))
        return _records(self.store.url, messages, decoded, dimensions)


class _PostgresReader:
    def __init__(self, store) -> None:
        self.store = store

    def space(self) -> tuple[int, str, int]:
        with self.store.db.statement() as cur:
            row = cur.execute(_SPACE).fetchone()
        if row is None:
            raise StoreError(f"{self.store.url}: the memory store holds no vectors yet; nothing to copy")
        return row

    def batch(self, after: int, limit: int, space: int, dimensions: int) -> list[tuple[int, MessageRecord]]:
        with self.store.db.transaction("read") as cur:  # one snapshot for the messages and their chunks
            messages = cur.execute(f"{_MESSAGES} WHERE m.id > %s ORDER BY m.id LIMIT %s", (after, limit)).fetchall()
            if not messages:
                return []
            chunks = cur.execute(
                "SELECT c.message, c.idx, c.text, x.embedding FROM chunks c LEFT JOIN vectors x ON x.chunk = c.id"
                " AND x.space = %s WHERE c.message > %s AND c.message <= %s",
                (space, after, messages[-1][0]), binary=True).fetchall()
        decoded = []
        for message, index, text, vector in chunks:
            array = None if vector is None else vector.to_numpy()
            if array is not None and array.shape != (dimensions,):
                raise StoreError(f"{self.store.url}: a stored vector does not have {dimensions} dimensions")
            decoded.append((message, index, text, array))
        return _records(self.store.url, messages, decoded, dimensions)
