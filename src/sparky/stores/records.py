"""The records a store takes and gives back, the same for every backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
    vectors: np.ndarray  # float32, shape (len(chunk_texts), dimensions), of the store's embedding space
    superseded_at: float | None = None  # set: an old version, stored as such (a copy); None: the current one


@dataclass(frozen=True)
class Space:
    """An embedding space: the vectors of one model. A store can hold several side by side."""

    model: str
    dimensions: int


@dataclass(frozen=True)
class StoreFilters:
    """Filters in store terms: conversation rows instead of ids or titles, dates as epoch seconds."""

    role: str | None = None
    source: str | None = None
    conversations: tuple[int, ...] | None = None
    since: float | None = None  # inclusive
    until: float | None = None  # exclusive
    include_superseded: bool = False  # also the old versions of edited or replaced messages


@dataclass(frozen=True)
class ChunkHit:
    """A message's best chunk on one side of the search, with that side's score (higher is better)."""

    message: int
    chunk: int
    score: float


@dataclass(frozen=True)
class MessageRow:
    """A stored message with the conversation it belongs to."""

    id: int
    key: str
    conversation: int
    conversation_id: str
    title: str
    source: str
    role: str
    created_at: float | None
    position: int
    text: str


@dataclass(frozen=True)
class StoredConversation:
    """A conversation as the store holds it: for what ``--prune`` would remove."""

    conversation_id: str
    title: str
    messages: int  # every version


def space_vectors_checked(store: str, space: Space, chunk_ids: Sequence[int], vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as contiguous float32, one row of the space's width per chunk; else a StoreError naming
    ``store`` (before anything is written)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.shape != (len(chunk_ids), space.dimensions):
        raise StoreError(f"{store}: {len(chunk_ids)} chunks but vectors of shape {vectors.shape} for "
                         f"{space.model} ({space.dimensions} dimensions); nothing was written")
    return vectors


def stats_of(counts: tuple[int, int, int, int], meta: dict[str, str]) -> dict:
    """A store's ``stats()``: conversation, message (current versions), chunk and superseded-version counts,
    and the embedder it was built with."""
    return {
        "conversations": counts[0],
        "messages": counts[1],
        "chunks": counts[2],
        "superseded": counts[3],
        "model": meta.get("model"),
        "dimensions": int(meta["dimensions"]) if "dimensions" in meta else None,
    }
