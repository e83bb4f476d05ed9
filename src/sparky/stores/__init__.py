"""Stores: the source of truth for what has been ingested, and the engine that searches it.

A store is chosen by URL: a file path or ``sqlite:///path`` opens the embedded SQLite store. A URL with
another scheme is never turned into a path, and its password never reaches the screen, a log or the
progress file (``redact``).

The one rule: a message counts as ingested when its row and all its chunks with their vectors are
committed in one transaction under its unique key; re-inserting a key is a no-op.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Iterable, Protocol, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..errors import StoreError
from .records import ChunkHit, MessageRecord, MessageRow, Space, StoredConversation, StoreFilters

__all__ = ["ChunkHit", "MessageRecord", "MessageRow", "Space", "Store", "StoreFilters", "StoredConversation",
           "open_store", "redact", "store_path"]


class Store(Protocol):
    """What the pipeline and the search need from a store.

    Writing: ``lock`` (one ingester per store; released when the process dies), ``ensure_schema`` (the
    only place that creates or migrates tables, each migration in the transaction that records it),
    ``known``, ``upsert`` (one transaction per call), ``delete_keys``; for re-imports ``current_versions``,
    ``supersede``, ``stored_conversations`` and ``keys_of_conversations``. A message is its (source,
    conversation, message id); a new text for it is a new key, and storing it supersedes the version stored
    (kept, hidden from search unless ``StoreFilters.include_superseded``). A busy store or a dropped
    connection raises ``TransientStoreError``, any other failure ``StoreError``.
    Reading: ``meta`` (the recorded embedding space), ``stats`` and the search side, each answered by the
    backend's own engine: vector hits, keyword hits, messages, chunk texts, neighbours, conversations.
    Spaces: ``add_space``, ``space_vectors``, ``chunks_missing_vectors``, ``put_vectors`` and ``set_primary``
    let ``sparky reembed`` add another model's vectors from the chunk texts held, one commit per batch.
    """

    url: str  # for display: never holds a password

    def lock(self) -> AbstractContextManager[object]: ...
    def ensure_schema(self, model: str, dimensions: int) -> None: ...
    def meta(self) -> dict[str, str]: ...
    def spaces(self) -> list[Space]: ...
    def known(self, keys: Iterable[str], include_superseded: bool = False) -> set[str]: ...
    def upsert(self, records: list[MessageRecord]) -> int: ...
    def delete_keys(self, keys: Iterable[str]) -> int: ...
    def current_versions(self, conversations: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]: ...
    def supersede(self, keys: Iterable[str]) -> int: ...
    def stored_conversations(self, source: str) -> list[StoredConversation]: ...
    def keys_of_conversations(self, conversations: Iterable[tuple[str, str]]) -> list[str]: ...
    def stats(self) -> dict: ...
    def message_count(self) -> int: ...
    def conversations_matching(self, text: str) -> list[int]: ...
    def vector_hits(self, query: np.ndarray, filters: StoreFilters, limit: int,
                    space: Space | None = None) -> list[ChunkHit]: ...
    def keyword_hits(self, terms: Sequence[str], filters: StoreFilters, limit: int) -> list[ChunkHit]: ...
    def messages(self, ids: Sequence[int]) -> dict[int, MessageRow]: ...
    def chunk_texts(self, ids: Sequence[int]) -> dict[int, str]: ...
    def neighbours(self, message: MessageRow, count: int) -> tuple[list[MessageRow], list[MessageRow]]: ...
    # embedding spaces beside the primary one (``sparky reembed``, ``sparky spaces``)

    def add_space(self, model: str, dimensions: int) -> None:
        """Record a space (nothing when held; Postgres: with its HNSW index); refuse a model held at another width."""
        ...

    def space_vectors(self) -> dict[Space, int]:
        """How many vectors each space holds, in the order the spaces were recorded."""
        ...

    def chunks_missing_vectors(self, space: Space, after_id: int, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` (chunk id, text) of the chunks past ``after_id`` without a vector in ``space`` (all
        of them when it is not held), by id."""
        ...

    def put_vectors(self, space: Space, chunk_ids: Sequence[int], vectors: np.ndarray) -> int:
        """Store these chunks' vectors in ``space`` in one transaction; a chunk holding one already keeps it,
        a chunk deleted since is skipped, a wrong shape is refused before anything is written. Returns the
        vectors written."""
        ...

    def set_primary(self, space: Space) -> None:
        """Make a held space the primary one (``meta``'s model and dimensions: what search and ingest use)."""
        ...

    def close(self) -> None: ...


def store_path(url: str) -> Path | None:
    """The file a SQLite store URL names (a plain path or ``sqlite:///path``), else None."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///") or ".")  # sqlite:////abs -> /abs, sqlite:///rel -> rel
    if "://" in url or url.startswith("sqlite:"):
        return None
    return Path(url)


def open_store(url: str, create: bool = True) -> Store:
    """Open the store a URL names; with ``create=False`` a missing SQLite file is an error, not a new store."""
    path = store_path(url)
    if path is None:
        scheme = url.split(":", 1)[0].lower()
        if scheme in ("postgres", "postgresql"):
            try:
                from .postgres import PostgresStore
            except ImportError:
                raise StoreError(f"{redact(url)}: the PostgreSQL store needs its drivers: "
                                 "pip install 'sparky-memory[postgres]'") from None
            return PostgresStore(url, create=create)
        raise StoreError(f"{redact(url)}: unknown kind of store {scheme!r}; give a file path or sqlite:///path")
    from .sqlite import SQLiteStore

    return SQLiteStore(path, create=create)


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (in the user part or a ``password=`` parameter)."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            credentials, host = netloc.rsplit("@", 1)
            if ":" in credentials:
                netloc = f"{credentials.split(':', 1)[0]}:***@{host}"
        query = "&".join(
            f"{pair.split('=', 1)[0]}=***" if pair.lower().startswith(("password=", "sslpassword=")) else pair
            for pair in parts.query.split("&")
        ) if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # unparseable: show only the scheme
        return url.split("://", 1)[0] + "://***"
