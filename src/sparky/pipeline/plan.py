"""What an ingestion would still send to an embedder: the texts of the meaningful messages the store lacks."""

from __future__ import annotations

from ..readers import ExportReader
from ..stores import Store
from .select import Selector


def texts_to_embed(reader: ExportReader, store: Store) -> list[str]:
    """The text of every meaningful message of the export that the store does not hold yet."""
    selector = Selector()
    pending = [(message.key(conversation.source), message.text)
               for conversation in reader.conversations() for message in selector.select(conversation)]
    known = store.known(key for key, _ in pending)
    return [text for key, text in pending if key not in known]
