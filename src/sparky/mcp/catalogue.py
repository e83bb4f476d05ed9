"""Conversations and transcripts, from the browsing reads both stores answer (``stores/reads.py``).

The list is kept and read again when the store's counts change (an ingestion added messages, a reset
removed some, a re-import superseded some).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..search import SearchError
from ..stores import Store
from ..stores.reads import Reads, StoredMessage

MESSAGE_ID_LENGTH = 12  # hex digits of the message key shown as a message's id: unique within a conversation


@dataclass(frozen=True)
class ConversationInfo:
    """A stored conversation: its store row, export id, title, source, first and last message dates."""

    row: int
    id: str
    title: str
    source: str
    started: float | None
    last: float | None


def message_id(row: StoredMessage) -> str:
    """The id a citation gives a message: the start of its unique key."""
    return row.key[:MESSAGE_ID_LENGTH]


class Catalogue:
    """The conversations of one store, and their transcripts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads = Reads(store)
        self._counts: tuple | None = None
        self._conversations: dict[int, ConversationInfo] = {}

    def conversations(self) -> dict[int, ConversationInfo]:
        """Every stored conversation that holds a message, by store row; read again when the store changed."""
        stats = self.store.stats()
        counts = (stats.get("conversations"), stats.get("messages"), stats.get("chunks"), stats.get("superseded"))
        if counts != self._counts:
            self._conversations = {
                summary.row: ConversationInfo(summary.row, summary.conversation_id, summary.title, summary.source,
                                              summary.created_at, summary.latest_at)
                for summary in self.reads.every_conversation()}
            self._counts = counts
        return self._conversations

    def matching(self, text: str) -> list[ConversationInfo]:
        """Conversations whose id is ``text`` or whose title contains it, as ``sparky search --conversation``."""
        known = self.conversations()
        return [known[row] for row in self.store.conversations_matching(text) if row in known]

    def resolve(self, conversation: str) -> ConversationInfo:
        """The one conversation ``conversation`` names: by its id, else by the only title that contains it."""
        candidates = self.matching(conversation)
        exact = [info for info in candidates if info.id == conversation]
        if len(exact) == 1 or (not exact and len(candidates) == 1):
            return (exact or candidates)[0]
        if not candidates:
            raise SearchError("no conversation has that id or a title containing it; list_conversations shows them")
        shown = "; ".join(f"{info.id} ({info.title})" for info in (exact or candidates)[:5])
        raise SearchError(f"{len(exact or candidates)} conversations match; give one id: {shown}")

    def transcript(self, info: ConversationInfo) -> list[StoredMessage]:
        """Every current message of a conversation, in order."""
        return self.reads.transcript(info.row)
