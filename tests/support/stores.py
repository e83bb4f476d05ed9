"""A small real store for search tests: one conversation of assistant messages, embedded by the model given."""

from __future__ import annotations

from pathlib import Path

from sparky.models import Conversation, Message
from sparky.stores import MessageRecord
from sparky.stores.sqlite import SQLiteStore


def embedded_store(path: Path, embedder, texts: list[str], title: str = "A conversation") -> SQLiteStore:
    """A SQLite store at ``path`` built with ``embedder`` holding ``texts``, one message each, in order."""
    store = SQLiteStore(path)
    store.ensure_schema(embedder.model, embedder.dimensions)
    conversation = Conversation("chatgpt", "c", title, 1.7e9, None)
    records = []
    for position, text in enumerate(texts):
        message = Message("c", f"m{position}", "assistant", 1.7e9, text, position)
        records.append(MessageRecord(message.key("chatgpt"), conversation, message, (text,), embedder.embed([text])))
    store.upsert(records)
    return store
