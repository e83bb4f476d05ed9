"""Plain frozen records passed between the parts of the pipeline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Message:
    """One message of a conversation's canonical branch, with its plain text."""

    conversation_id: str
    id: str
    role: str  # "user" | "assistant" (others are dropped by select)
    created_at: float | None  # epoch seconds
    text: str
    position: int  # 0-based index in the canonical branch
    hidden: bool = False  # marked hidden in the export (select drops these)

    def key(self, source: str) -> str:
        """The unique message key: sha256 over source, conversation id, message id, role and text."""
        return message_key(source, self.conversation_id, self.id, self.role, self.text)


@dataclass(frozen=True)
class Conversation:
    """A conversation as the reader yields it: its canonical branch only."""

    source: str  # "chatgpt" | "claude"
    id: str
    title: str
    created_at: float | None
    updated_at: float | None
    messages: tuple[Message, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Chunk:
    """A piece of a message small enough for the embedding model's window."""

    message_key: str
    index: int
    text: str


def message_key(source: str, conversation_id: str, message_id: str, role: str, text: str) -> str:
    """sha256 hex digest over the five identifying fields, NUL-separated so fields cannot run together."""
    digest = hashlib.sha256()
    for part in (source, conversation_id, message_id, role, text):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()
