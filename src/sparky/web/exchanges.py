"""Search results as the question/answer exchanges the search pairs them in: the half that matched shows its
passage with the query words marked, the other half shortened."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from ..search import ContextMessage, SearchResult
from .render import marked, shortened


@dataclass(frozen=True)
class Side:
    """One message of an exchange: the hit's matching passage marked, or the other message shortened."""

    role: str
    position: int
    created_at: float | None
    text: Markup
    hit: bool


@dataclass(frozen=True)
class Exchange:
    """A hit with the message that completes its exchange (when the store holds one)."""

    source: str
    conversation_id: str
    title: str
    created_at: float | None
    hit_position: int
    question: Side | None
    answer: Side | None

    @property
    def sides(self) -> list[Side]:
        return [side for side in (self.question, self.answer) if side is not None]


def exchanges(results: list[SearchResult]) -> list[Exchange]:
    """The results as exchanges in rank order (the search returns one result per exchange)."""
    return [_exchange(result) for result in results]


def _exchange(result: SearchResult) -> Exchange:
    def side(message: ContextMessage | None) -> Side | None:
        if message is None:
            return None
        if message.key == result.key:  # the half that matched: its passage, the query words marked
            return Side(result.role, result.position, result.created_at, marked(result.snippet, result.highlights),
                        True)
        return Side(message.role, message.position, message.created_at, Markup.escape(shortened(message.text)),
                    False)

    return Exchange(result.source, result.conversation_id, result.title, result.created_at, result.position,
                    side(result.question), side(result.answer))
