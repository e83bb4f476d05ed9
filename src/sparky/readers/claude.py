"""One raw Claude.ai conversation (a dict from conversations.json) -> a Conversation of its newest branch.

A message's text is taken once (the export repeats it): its content[] "text" blocks when any has text,
else its `text` field. Other blocks (thinking, tool_use, tool_result, unknown) are left out and counted
by type. Attachments' `extracted_content` (long pastes, uploaded documents) is appended to the text.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timezone

from ..models import Conversation, Message
from . import chatgpt
from .chatgpt import MalformedConversation, clean

SOURCE = "claude"
ROOT_PARENT = "00000000-0000-4000-8000-000000000000"  # the parent_message_uuid of a conversation's root
ROLES = {"human": "user", "assistant": "assistant"}
COUNTER_LENGTH = 40  # longest counter name taken from the export (a block type or sender)


def convert(raw: object, counts: Counter[str]) -> Conversation:
    """The conversation's newest branch with its user/assistant text; adds left-out kinds to counts."""
    if not isinstance(raw, dict):
        raise MalformedConversation("conversation is not a JSON object")
    items = raw.get("chat_messages")
    if not isinstance(items, list):
        raise MalformedConversation("'chat_messages' is not a list")
    conversation_id = conversation_id_of(raw)
    local: Counter[str] = Counter()
    malformed = sum(not isinstance(item, dict) for item in items)
    if malformed:
        local["malformed_message"] += malformed
    messages: list[Message] = []
    for index in branch(items):
        message = _message(items[index], index, conversation_id, len(messages), local)
        if message is not None:
            messages.append(message)
    counts.update(local)
    name = raw.get("name")
    return Conversation(
        source=SOURCE,
        id=conversation_id,
        title=(clean(name).strip() or "Untitled") if isinstance(name, str) else "Untitled",
        created_at=timestamp(raw.get("created_at")),
        updated_at=timestamp(raw.get("updated_at")),
        messages=tuple(messages),
    )


def conversation_id_of(raw: dict) -> str:
    """`uuid`, else chatgpt's fallbacks (`id`, `conversation_id`, a stable "anon-" hash of the content)."""
    return _identifier(raw.get("uuid")) or chatgpt.conversation_id_of(raw)


def _identifier(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return clean(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def timestamp(value: object) -> float | None:
    """An ISO-8601 string (Z or an offset, any fraction; none means UTC) as epoch seconds, else None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def branch(items: list) -> list[int]:
    """Indices in `items` of the messages from the root to the newest leaf, stopping at a cycle."""
    parents = parents_of(items)
    if not parents:
        return []
    path: list[int] = []
    seen: set[int] = set()
    node: int | None = newest_leaf(items, parents)
    while node is not None and node not in seen:
        seen.add(node)
        path.append(node)
        node = parents[node]
    path.reverse()
    return path


def parents_of(items: list) -> dict[int, int | None]:
    """Each message's parent index (None for a root), keyed by index in `items`, in list order.

    `parent_message_uuid` names the parent; the root sentinel, or a uuid no message of the conversation
    has, makes the message a root. A message without a (string) `parent_message_uuid` follows the
    previous message in list order: older exports have no parent links, and a conversation begun before
    they existed has them only on its later messages. Items that are not objects are not messages.
    """
    by_uuid: dict[str, int] = {}
    for index, item in enumerate(items):
        uuid = item.get("uuid") if isinstance(item, dict) else None
        if isinstance(uuid, str) and uuid:
            by_uuid.setdefault(uuid, index)
    parents: dict[int, int | None] = {}
    previous: int | None = None
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        link = item.get("parent_message_uuid")
        if isinstance(link, str) and link:
            parents[index] = None if link == ROOT_PARENT else by_uuid.get(link)
        else:
            parents[index] = previous
        previous = index
    return parents


def newest_leaf(items: list, parents: dict[int, int | None]) -> int:
    """The newest message without children (ties: the last in list order); all of them in a pure cycle."""
    with_children = {parent for parent in parents.values() if parent is not None}
    leaves = [index for index in parents if index not in with_children] or list(parents)
    return max(reversed(leaves), key=lambda index: _created(items[index]))


def _created(message: dict) -> float:
    created = timestamp(message.get("created_at"))
    return -math.inf if created is None else created


def _message(item: dict, index: int, conversation_id: str, position: int, counts: Counter[str]) -> Message | None:
    """The Message of a human or assistant item; other senders are counted and left out."""
    sender = item.get("sender")
    role = ROLES.get(sender) if isinstance(sender, str) else None
    if role is None:
        counts[_counter_name(sender, "unknown_sender")] += 1
        return None
    return Message(
        conversation_id=conversation_id,
        id=_identifier(item.get("uuid")) or f"message-{index}",
        role=role,
        created_at=timestamp(item.get("created_at")),
        text=text_of(item, counts),
        position=position,
    )


def text_of(message: dict, counts: Counter[str]) -> str:
    """The message text taken once (text blocks, else `text`), then each attachment's extracted content."""
    body = "\n\n".join(_block_texts(message.get("content"), counts))
    if not body:
        text = message.get("text")
        body = text if isinstance(text, str) else ""
    pieces = [body, *_attachments(message.get("attachments"))]
    return clean("\n\n".join(piece for piece in pieces if piece))


def _block_texts(content: object, counts: Counter[str]) -> list[str]:
    """The non-empty texts of the "text" blocks; every other block is counted by its type."""
    if not isinstance(content, list):
        return []
    texts = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind != "text":
            counts[_counter_name(kind, "unknown_content")] += 1
            continue
        text = block.get("text")
        if isinstance(text, str) and text:
            texts.append(text)
    return texts


def _attachments(attachments: object) -> list[str]:
    """Each attachment with extracted text as "[Attachment: <file name>]", a newline and that text."""
    if not isinstance(attachments, list):
        return []
    pieces = []
    for attachment in attachments:
        body = attachment.get("extracted_content") if isinstance(attachment, dict) else None
        if isinstance(body, str) and body.strip():
            name = attachment.get("file_name")
            name = " ".join(name.split()) if isinstance(name, str) else ""
            pieces.append(f"[Attachment: {name or 'unnamed'}]\n{body}")
    return pieces


def _counter_name(value: object, fallback: str) -> str:
    return value[:COUNTER_LENGTH] if isinstance(value, str) and value else fallback
