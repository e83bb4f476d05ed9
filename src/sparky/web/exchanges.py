"""Search results as question/answer exchanges: a hit on a question shows the answer after it, a hit on an
answer the question before it (from a search with ``context=1``); an exchange is shown once, at the rank
of its best hit."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from ..search import SearchResult
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
    """The results as exchanges in rank order, each exchange once."""
    found: list[Exchange] = []
    seen: set[tuple] = set()
    for result in results:
        exchange = _exchange(result)
        identity = (exchange.source, exchange.conversation_id,
                    *(side.position if side else None for side in (exchange.question, exchange.answer)))
        if identity not in seen:
            seen.add(identity)
            found.append(exchange)
    return found


def _exchange(result: SearchResult) -> Exchange:
    hit = Side(result.role, result.position, result.created_at, marked(result.snippet, result.highlights), True)
    question, answer = (hit, None) if result.role == "user" else (None, hit)
    if result.role == "user" and result.after and result.after[0].role == "assistant":
        reply = result.after[0]
        answer = Side(reply.role, reply.position, reply.created_at, Markup.escape(shortened(reply.text)), False)
    elif result.role == "assistant" and result.before and result.before[-1].role == "user":
        asked = result.before[-1]
        question = Side(asked.role, asked.position, asked.created_at, Markup.escape(shortened(asked.text)), False)
    return Exchange(result.source, result.conversation_id, result.title, result.created_at, result.position,
                    question, answer)
