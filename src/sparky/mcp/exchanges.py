"""Search hits as question/answer exchanges: what the user asked and what the assistant answered.

Each hit comes with one neighbour on either side (``context=1``). A user message that matched is paired
with the assistant reply after it, an assistant message with the user question before it. When both
halves of one exchange matched, the exchange appears once, at the rank of its better half.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..search import ContextMessage, SearchResult

CONTEXT = 1  # neighbours asked of the search: the other half of an exchange is next to its match


@dataclass(frozen=True)
class Exchange:
    """A matched message and the other half of its exchange (None when the conversation has none)."""

    hit: SearchResult
    question: SearchResult | ContextMessage | None
    answer: SearchResult | ContextMessage | None

    @property
    def matched(self) -> str:
        """Which half matched the query: "question" or "answer"."""
        return "question" if self.question is self.hit else "answer"


def exchanges(results: list[SearchResult]) -> list[Exchange]:
    """The exchanges of ranked search hits, in rank order, each once."""
    found: list[Exchange] = []
    seen: set[tuple] = set()
    for hit in results:
        if hit.role == "user":
            reply = hit.after[0] if hit.after and hit.after[0].role == "assistant" else None
            exchange = Exchange(hit, hit, reply)
        else:
            asked = hit.before[-1] if hit.before and hit.before[-1].role == "user" else None
            exchange = Exchange(hit, asked, hit)
        identity = (hit.source, hit.conversation_id, _position(exchange.question), _position(exchange.answer))
        if identity not in seen:
            seen.add(identity)
            found.append(exchange)
    return found


def _position(message: SearchResult | ContextMessage | None) -> int | None:
    return None if message is None else message.position
