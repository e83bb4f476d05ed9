"""Reads for browsing a memory (``sparky web``, ``sparky mcp``) that the Store protocol does not offer: whole
transcripts, conversations with their sizes, and counts per day for the timeline.

Both stores keep the same ``conversations`` and ``messages`` tables, so each read is one SQL text; the
few differences (parameter marks, a list parameter, the day of an epoch) are in ``_Dialect``. Every
statement only reads. A conversation's date is its own, else its first message's; a message's date is
its own, else its conversation's (as the search filters read it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import StoreError
from . import Store

SORTS = {  # the conversation list's orders, over the summary query's columns (undated last)
    "newest": "(created IS NULL), created DESC",
    "oldest": "(created IS NULL), created ASC",
    "largest": "characters DESC, messages DESC",
    "most messages": "messages DESC, characters DESC",
}
_SUMMARY = (
    "SELECT v.id, v.source, v.conversation_id, v.title, coalesce(v.created_at, min(m.created_at)) AS created,"
    " max(coalesce(m.created_at, v.created_at)) AS latest, count(m.id) AS messages,"
    " sum(length(m.text)) AS characters"
    " FROM conversations v JOIN messages m ON m.conversation = v.id AND m.superseded_at IS NULL"
)
_GROUP = " GROUP BY v.id, v.source, v.conversation_id, v.title, v.created_at"


@dataclass(frozen=True)
class ConversationSummary:
    """A stored conversation with its size."""

    row: int
    source: str
    conversation_id: str
    title: str
    created_at: float | None
    latest_at: float | None
    messages: int
    characters: int


@dataclass(frozen=True)
class StoredMessage:
    """One message of a transcript, as stored."""

    key: str
    role: str
    created_at: float | None
    position: int
    text: str


@dataclass(frozen=True)
class ConversationPage:
    """One page of the conversation list, and how many conversations the list has in all."""

    conversations: list[ConversationSummary]
    total: int


@dataclass(frozen=True)
class DayCounts:
    """Conversations and messages per day (days since 1970-01-01, UTC), and how many have no date."""

    conversations: dict[int, int]
    messages: dict[int, int]
    undated_conversations: int
    undated_messages: int


class _Dialect:
    """What differs between the SQLite and the PostgreSQL text of a read."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres

    def sql(self, text: str) -> str:
        """``text`` with its ``?`` marks as the driver wants them (no statement here holds a literal ``?``)."""
        return text.replace("?", "%s") if self.postgres else text

    def in_list(self, column: str) -> str:
        """A condition: ``column`` is one of a list given as one parameter (see ``list_param``)."""
        return f"{column} = ANY(?)" if self.postgres else f"{column} IN (SELECT value FROM json_each(?))"

    def list_param(self, values: Sequence[int]) -> Any:
        return list(values) if self.postgres else json.dumps(list(values))

    def day(self, epoch: str) -> str:
        """The day number (since 1970-01-01, UTC) of an epoch-seconds expression, negative ones too."""
        if self.postgres:
            return f"CAST(floor(({epoch}) / 86400) AS bigint)"
        return f"CAST(julianday(date({epoch}, 'unixepoch')) - 2440587.5 AS INTEGER)"


class Reads:
    """The browsing reads over one open store (SQLite or PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        from .sqlite import SQLiteStore

        self.store = store
        if isinstance(store, SQLiteStore):
            self.dialect = _Dialect(postgres=False)
        elif _is_postgres(store):
            self.dialect = _Dialect(postgres=True)
        else:
            raise StoreError(f"{store.url}: only SQLite and PostgreSQL stores can be browsed")

    def _rows(self, text: str, params: Sequence[Any] = ()) -> list[tuple]:
        statement = self.dialect.sql(text)
        if self.dialect.postgres:
            with self.store.db.statement() as cur:  # type: ignore[attr-defined]
                return cur.execute(statement, list(params)).fetchall()
        return self.store.db.execute(statement, list(params)).fetchall()  # type: ignore[attr-defined]

    def conversation(self, source: str, conversation_id: str) -> ConversationSummary | None:
        """The conversation with this source and id, or None when the store does not hold it."""
        rows = self._rows(_SUMMARY + " WHERE v.source = ? AND v.conversation_id = ?" + _GROUP,
                          (source, conversation_id))
        return _summary(rows[0]) if rows else None

    def transcript(self, conversation: int) -> list[StoredMessage]:
        """The current messages of the conversation stored in row ``conversation``, in their order."""
        rows = self._rows("SELECT key, role, created_at, position, text FROM messages WHERE conversation = ?"
                          " AND superseded_at IS NULL ORDER BY position", (conversation,))
        return [StoredMessage(key, role, created_at, position, text) for key, role, created_at, position, text in rows]

    def every_conversation(self) -> list[ConversationSummary]:
        """Every conversation that holds a current message, newest first."""
        return [_summary(row) for row in self._rows(
            f"SELECT * FROM ({_SUMMARY}{_GROUP}) AS listed ORDER BY {SORTS['newest']}, id")]

    def conversations(self, title: str | None = None, sort: str = "newest", limit: int = 50, offset: int = 0,
                      since: float | None = None, until: float | None = None) -> ConversationPage:
        """A page of conversations: those whose title contains ``title`` (or whose id it is) when given,
        dated in ``[since, until)`` when given, in the order ``sort`` names (see ``SORTS``)."""
        where, params = "", []
        if title:
            rows = self.store.conversations_matching(title)
            if not rows:
                return ConversationPage([], 0)
            where, params = " WHERE " + self.dialect.in_list("v.id"), [self.dialect.list_param(rows)]
        having, having_params = [], []
        if since is not None:
            having.append("coalesce(v.created_at, min(m.created_at)) >= ?")
            having_params.append(since)
        if until is not None:
            having.append("coalesce(v.created_at, min(m.created_at)) < ?")
            having_params.append(until)
        grouped = _SUMMARY + where + _GROUP + (" HAVING " + " AND ".join(having) if having else "")
        rows = self._rows(f"SELECT * FROM ({grouped}) AS listed ORDER BY {SORTS[sort]}, id LIMIT ? OFFSET ?",
                          [*params, *having_params, limit, offset])
        total = self._rows(f"SELECT count(*) FROM ({grouped}) AS listed", [*params, *having_params])[0][0]
        return ConversationPage([_summary(row) for row in rows], total)

    def day_counts(self) -> DayCounts:
        """How many conversations and messages each day holds."""
        conversation_date = "coalesce(v.created_at, min(m.created_at))"
        dated = self._rows(
            f"SELECT {self.dialect.day('created')} AS day, count(*) FROM (SELECT {conversation_date} AS created"
            " FROM conversations v JOIN messages m ON m.conversation = v.id AND m.superseded_at IS NULL"
            " GROUP BY v.id, v.created_at) AS c"
            " WHERE created IS NOT NULL GROUP BY 1")
        message_date = "coalesce(m.created_at, v.created_at)"
        messages = self._rows(
            f"SELECT {self.dialect.day(message_date)} AS day, count(*) FROM messages m JOIN conversations v"
            f" ON v.id = m.conversation WHERE m.superseded_at IS NULL AND {message_date} IS NOT NULL GROUP BY 1")
        undated = self._rows(
            f"SELECT (SELECT count(*) FROM (SELECT {conversation_date} AS created FROM conversations v JOIN"
            " messages m ON m.conversation = v.id AND m.superseded_at IS NULL GROUP BY v.id, v.created_at) AS c"
            " WHERE created IS NULL),"
            f" (SELECT count(*) FROM messages m JOIN conversations v ON v.id = m.conversation"
            f" WHERE m.superseded_at IS NULL AND {message_date} IS NULL)")[0]
        return DayCounts({int(day): count for day, count in dated}, {int(day): count for day, count in messages},
                         undated[0], undated[1])


def _is_postgres(store: Store) -> bool:
    try:
        from .postgres import PostgresStore
    except ImportError:  # the drivers are not installed: it cannot be one
        return False
    return isinstance(store, PostgresStore)


def _summary(row: tuple) -> ConversationSummary:
    conversation, source, conversation_id, title, created, latest, messages, characters = row
    return ConversationSummary(conversation, source, conversation_id, title, created, latest, int(messages),
                               int(characters or 0))
