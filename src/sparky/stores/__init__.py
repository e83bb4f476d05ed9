"""Vector stores: the source of truth for what has been ingested.

A store is chosen by URL: a file path (or ``sqlite:///path``) opens the embedded SQLite store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np

from ..errors import StoreError
from ..models import Conversation, Message


@dataclass(frozen=True)
class MessageRecord:
    """A message with its chunks and their vectors, ready to be written in one transaction."""

    key: str
    conversation: Conversation  # only its metadata is stored; messages are not read
    message: Message
    chunk_texts: tuple[str, ...]
    vectors: np.ndarray  # float32, shape (len(chunk_texts), dimensions)


class Store(Protocol):
    """What the pipeline and the search need from a store."""

    url: str

    def ensure_schema(self, model: str, dimensions: int) -> None: ...
    def known(self, keys: Iterable[str]) -> set[str]: ...
    def upsert(self, records: list[MessageRecord]) -> int: ...
    def delete_keys(self, keys: Iterable[str]) -> int: ...
    def stats(self) -> dict: ...
    def close(self) -> None: ...


def open_store(url: str) -> Store:
    """Open the store a URL names (a path or sqlite:///path)."""
    if url.startswith(("postgres://", "postgresql://")):
        raise StoreError(f"{redact(url)}: the PostgreSQL store is not available in this version")
    from .sqlite import SQLiteStore

    return SQLiteStore(url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url)


def redact(url: str) -> str:
    """The URL with any password replaced, safe to print or store."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url
