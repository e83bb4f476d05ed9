"""Conversations and transcripts, read through the public Store protocol only.

The protocol has no "list conversations" or "read a conversation" call, so both are composed from
``conversations_matching`` (every row matches the empty text) and ``neighbours``, which returns the stored
messages before and after a position in a conversation: asked about a position before the first message
(or after the last), it returns a conversation's first (or last) messages, in order, over its index on
(conversation, position). The list is kept and read again when the store's counts change (an ingestion
added messages, a reset removed some).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..search import SearchError
from ..stores import MessageRow, Store

BEFORE_FIRST = -1  # positions are 0-based
AFTER_LAST = 2**31 - 1  # the largest position either store can hold (PostgreSQL: integer)
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


def message_id(row: MessageRow) -> str:
    """The id a citation gives a message: the start of its unique key."""
    return row.key[:MESSAGE_ID_LENGTH]


class Catalogue:
    """The conversations of one store, and their transcripts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._counts: tuple | None = None
        self._conversations: dict[int, ConversationInfo] = {}

    def conversations(self) -> dict[int, ConversationInfo]:
        """Every stored conversation that holds a message, by store row; read again when the store changed."""
        stats = self.store.stats()
        counts = (stats.get("conversations"), stats.get("messages"), stats.get("chunks"))
        if counts != self._counts:
            found = {}
            for row in self.store.conversations_matching(""):
                info = self._read(row)
                if info is not None:
                    found[row] = info
            self._conversations, self._counts = found, counts
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

    def transcript(self, info: ConversationInfo) -> list[MessageRow]:
        """Every stored message of a conversation, in order."""
        return self.store.neighbours(_at(info.row, BEFORE_FIRST), AFTER_LAST)[1]

    def _read(self, row: int) -> ConversationInfo | None:
        first = self.store.neighbours(_at(row, BEFORE_FIRST), 1)[1]
        last = self.store.neighbours(_at(row, AFTER_LAST), 1)[0]
        if not first or not last:  # every message of it was removed
            return None
        head = first[0]
        return ConversationInfo(row, head.conversation_id, head.title, head.source, head.created_at, last[0].created_at)


def _at(conversation: int, position: int) -> MessageRow:
    """A place in a conversation to ask ``neighbours`` about (no stored message is there)."""
    return MessageRow(id=0, key="", conversation=conversation, conversation_id="", title="", source="", role="",
                      created_at=None, position=position, text="")
