"""What the tools answer: each answer is a pydantic model (the tool's output schema, sent as structured
content) and a compact text rendering of it, which is what the assistant reads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Citation(BaseModel):
    """Where a message is: pass both to get_conversation (as id and around_message) to read around it."""

    conversation: str = Field(description="The conversation's id.")
    message: str = Field(description="The message's id within the conversation.")


class ExchangeOut(BaseModel):
    """One question/answer exchange from the memory."""

    rank: int
    title: str
    date: str | None = Field(description="When the matching message was written (ISO 8601 UTC).")
    source: str = Field(description="The export it came from: chatgpt or claude.")
    matched: Literal["question", "answer"] = Field(description="Which half matched the query.")
    question: str | None = Field(description="What the user asked (trimmed to fit), if stored.")
    answer: str | None = Field(description="What the assistant answered (trimmed to fit), if stored.")
    passage: str = Field(description="The passage of the matching message that matched.")
    citation: Citation
    score: float

    def block(self) -> str:
        lines = [f"[{self.rank}] {self.title} · {_day(self.date)} · {self.source} · conversation"
                 f" {self.citation.conversation} message {self.citation.message}"]
        if self.question is not None:
            lines.append(f"Q{' (match)' if self.matched == 'question' else ''}: {self.question}")
        if self.answer is not None:
            lines.append(f"A{' (match)' if self.matched == 'answer' else ''}: {self.answer}")
        return "\n".join(lines)


class SearchAnswer(BaseModel):
    """The exchanges that best match a query, best first."""

    exchanges: list[ExchangeOut]
    no_good_match: bool = Field(description="True when nothing in the memory matches the query well.")
    next_offset: int | None = Field(description="Pass as offset to see the next exchanges; None when no more.")

    def text(self) -> str:
        if self.no_good_match:
            return "No good match in the memory for this query."
        if not self.exchanges:
            return "No more matches."
        blocks = [f"{len(self.exchanges)} exchange(s) from the memory, best match first."
                  " Cite them by conversation and message id."]
        blocks += [item.block() for item in self.exchanges]
        if self.next_offset is not None:
            blocks.append(f"More matches: call search_memory again with offset={self.next_offset}.")
        return "\n\n".join(blocks)


class MessageOut(BaseModel):
    """One message of a transcript."""

    id: str
    role: str
    date: str | None
    text: str = Field(description="The message (trimmed to fit when marked trimmed).")
    trimmed: bool

    def block(self) -> str:
        return f"--- {self.role} · {_minute(self.date)} · message {self.id}\n{self.text}"


class ConversationPage(BaseModel):
    """A conversation's transcript, or the part of it asked for."""

    id: str
    title: str
    source: str
    started: str | None
    last: str | None
    total: int = Field(description="Messages stored in the conversation.")
    offset: int = Field(description="Index of the first message shown (0-based).")
    messages: list[MessageOut]
    next_offset: int | None = Field(description="Pass as offset to read on; None at the end.")

    def text(self) -> str:
        shown = f"messages {self.offset + 1}–{self.offset + len(self.messages)} of {self.total}" \
            if self.messages else f"no messages from {self.offset + 1} on (of {self.total})"
        lines = [f"Conversation \"{self.title}\" · {self.source} · id {self.id} · {_day(self.started)} to"
                 f" {_day(self.last)} · {shown}"]
        lines += [f"\n{message.block()}" for message in self.messages]
        if self.next_offset is not None:
            lines.append(f"\nMore: call get_conversation with id={self.id} and offset={self.next_offset}.")
        return "\n".join(lines)


class ConversationOut(BaseModel):
    """A conversation in a listing."""

    id: str
    title: str
    source: str
    started: str | None
    last: str | None

    def line(self) -> str:
        return f"- {self.title} · {self.source} · {_day(self.started)} to {_day(self.last)} · id {self.id}"


class ConversationList(BaseModel):
    """Conversations, most recent first."""

    total: int = Field(description="Conversations that match.")
    conversations: list[ConversationOut]
    next_offset: int | None = Field(description="Pass as offset to list more; None when no more.")

    def text(self) -> str:
        if not self.conversations:
            return "No conversation matches." if self.total == 0 else "No more conversations."
        lines = [f"{self.total} conversation(s), most recent first:"]
        lines += [item.line() for item in self.conversations]
        if self.next_offset is not None:
            lines.append(f"More: call list_conversations again with offset={self.next_offset}.")
        return "\n".join(lines)


class MemoryStats(BaseModel):
    """What the memory holds."""

    conversations: int
    messages: int
    chunks: int
    sources: dict[str, int] = Field(description="Conversations per export format.")
    first: str | None = Field(description="The earliest message date.")
    last: str | None = Field(description="The latest message date.")
    model: str | None = Field(description="The embedding model the memory was built with.")
    dimensions: int | None

    def text(self) -> str:
        sources = ", ".join(f"{count} from {name}" for name, count in sorted(self.sources.items())) or "none"
        return (f"The memory holds {self.conversations} conversations ({sources}), {self.messages} messages in"
                f" {self.chunks} chunks, from {_day(self.first)} to {_day(self.last)}; embedding model"
                f" {self.model} ({self.dimensions} dimensions).")


def _day(iso: str | None) -> str:
    return iso[:10] if iso else "undated"


def _minute(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "undated"
