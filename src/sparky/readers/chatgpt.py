"""One raw ChatGPT conversation (a dict from conversations.json) -> a Conversation of its visible branch.

Canvas (writing) documents sit inline in the text as a block opened by a line ``:::writing{...}`` and closed
by a line ``:::``: the document text is kept and those two marker lines are dropped, except inside a code
fence (a ``:::`` there is content). A ``:::`` line outside an open writing block is kept as it is.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter

from ..models import Conversation, Message

SOURCE = "chatgpt"
TEXT_TYPES = frozenset({"text", "multimodal_text", "code"})
SKIPPED_ROLES = frozenset({"system", "tool"})
HIDDEN_CHANNELS = frozenset({"analysis", "commentary"})
CITATION = re.compile(r"[ \t]*(?:【[^【】]*†[^【】]*】|\ue200[^\ue201]*\ue201)")
WRITING_OPEN = re.compile(r"[ \t]*:::writing\{.*\}\s*")  # a whole line
WRITING_CLOSE = re.compile(r"[ \t]*:::\s*")  # a whole line
FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")  # a code fence's opening or closing run, at a line's start


class MalformedConversation(Exception):
    """The conversation's structure cannot be read; the reader reports and skips it."""


def clean(text: str) -> str:
    """Text safe to store and encode: no NUL bytes, lone surrogates replaced."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def epoch(value: object) -> float | None:
    """A finite epoch-seconds number as float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def convert(raw: object, counts: Counter[str]) -> Conversation:
    """The conversation's current branch with its visible user/assistant text; adds left-out kinds to counts."""
    if not isinstance(raw, dict):
        raise MalformedConversation("conversation is not a JSON object")
    mapping = raw.get("mapping")
    if not isinstance(mapping, dict):
        raise MalformedConversation("'mapping' is not an object")
    conversation_id = conversation_id_of(raw)
    local: Counter[str] = Counter()
    messages: list[Message] = []
    for node_id in branch(mapping, raw.get("current_node")):
        kept = _visible(mapping[node_id], local)
        if kept is None:
            continue
        message, role, text = kept
        message_id = message.get("id")
        messages.append(Message(
            conversation_id=conversation_id,
            id=clean(message_id) if isinstance(message_id, str) and message_id else clean(node_id),
            role=role,
            created_at=epoch(message.get("create_time")),
            text=text,
            position=len(messages),
        ))
    counts.update(local)
    title = raw.get("title")
    return Conversation(
        source=SOURCE,
        id=conversation_id,
        title=(clean(title).strip() or "Untitled") if isinstance(title, str) else "Untitled",
        created_at=epoch(raw.get("create_time")),
        updated_at=epoch(raw.get("update_time")),
        messages=tuple(messages),
    )


def conversation_id_of(raw: dict) -> str:
    """`id`, else `conversation_id`, else a stable "anon-" id hashed from the conversation's content."""
    for field in ("id", "conversation_id"):
        value = raw.get(field)
        if isinstance(value, str) and value.strip():
            return clean(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    canonical = json.dumps(raw, sort_keys=True, ensure_ascii=False, default=str)
    return "anon-" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def branch(mapping: dict, current: object) -> list[str]:
    """Node ids from the root to `current` (or the newest leaf), stopping at cycles and dangling parents."""
    node_id = current if isinstance(current, str) and current in mapping else newest_leaf(mapping)
    path: list[str] = []
    seen: set[str] = set()
    while isinstance(node_id, str) and node_id in mapping and node_id not in seen:
        seen.add(node_id)
        path.append(node_id)
        node = mapping[node_id]
        node_id = node.get("parent") if isinstance(node, dict) else None
    path.reverse()
    return path


def newest_leaf(mapping: dict) -> str | None:
    """The leaf whose message is newest (ties: the last in mapping order).

    A leaf has no child in the mapping: none of its `children` exists and no other node names it as its
    `parent` (shard files may lack `children`).
    """
    parents = _parents(mapping)
    best: str | None = None
    best_time = -math.inf
    for node_id, node in mapping.items():
        children = node.get("children") if isinstance(node, dict) else None
        if node_id in parents or (
                isinstance(children, list) and any(isinstance(c, str) and c in mapping for c in children)):
            continue
        message = node.get("message") if isinstance(node, dict) else None
        created = epoch(message.get("create_time")) if isinstance(message, dict) else None
        created = -math.inf if created is None else created
        if created >= best_time:
            best, best_time = node_id, created
    return best


def _parents(mapping: dict) -> set[str]:
    """The ids that some other node names as its parent."""
    found = set()
    for node_id, node in mapping.items():
        parent = node.get("parent") if isinstance(node, dict) else None
        if isinstance(parent, str) and parent != node_id:
            found.add(parent)
    return found


def _visible(node: object, counts: Counter[str]) -> tuple[dict, str, str] | None:
    """(message, role, text) when the node is a message the user saw; otherwise counts why not."""
    message = node.get("message") if isinstance(node, dict) else None
    if message is None:
        return None
    if not isinstance(message, dict):
        counts["malformed_message"] += 1
        return None
    content = message.get("content")
    content = content if isinstance(content, dict) else {}
    author = message.get("author")
    role = author.get("role") if isinstance(author, dict) else None
    role = role if isinstance(role, str) else "unknown"
    reason = _hidden_reason(message, content, role)
    if reason:
        counts[reason] += 1
        return None
    text = _text(content)
    if role == "assistant" and ("【" in text or "\ue200" in text):
        text = CITATION.sub("", text)
    return message, role, text


def _hidden_reason(message: dict, content: dict, role: str) -> str | None:
    """Why a message is left out by default (its content type, role, hidden flag, tool call or channel)."""
    content_type = content.get("content_type")
    if not isinstance(content_type, str) or not content_type:
        return "unknown_content"
    if content_type not in TEXT_TYPES:
        return content_type[:40]
    if role in SKIPPED_ROLES:
        return role
    metadata = message.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    if metadata.get("is_user_system_message") is True:
        return "user_system_message"
    if metadata.get("is_visually_hidden_from_conversation") is True or epoch(message.get("weight")) == 0:
        return "hidden"
    if message.get("recipient") not in (None, "all"):
        return "tool_call"
    channel = message.get("channel")
    if isinstance(channel, str) and channel in HIDDEN_CHANNELS:
        return channel
    return None


def _text(content: dict) -> str:
    """The visible text: string parts and audio transcriptions, or a code block's text."""
    if content.get("content_type") == "code":
        text = content.get("text")
        return clean(text) if isinstance(text, str) else ""
    parts = content.get("parts")
    if isinstance(parts, str):
        parts = [parts]
    if not isinstance(parts, list):
        return ""
    pieces = []
    for part in parts:
        if isinstance(part, dict) and part.get("content_type") == "audio_transcription":
            part = part.get("text")
        if isinstance(part, str) and part:
            pieces.append(part)
    return clean(strip_writing_markers("\n".join(pieces)))


def strip_writing_markers(text: str) -> str:
    """The text without the opening and closing lines of its canvas (writing) blocks, outside code fences."""
    if ":::writing" not in text:
        return text
    kept: list[str] = []
    fence = ""  # the open code fence's run of backticks or tildes, "" outside one
    depth = 0  # writing blocks open
    for line in text.split("\n"):
        if not fence and WRITING_OPEN.fullmatch(line):
            depth += 1
        elif not fence and depth and WRITING_CLOSE.fullmatch(line):
            depth -= 1
        else:
            fence = _fence_after(line, fence)
            kept.append(line)
    return "\n".join(kept)


def _fence_after(line: str, fence: str) -> str:
    """The code fence open after `line`, given the one open before it ("" for none)."""
    match = FENCE.match(line)
    if match is None:
        return fence
    run = match.group(1)
    if not fence:
        return run
    closes = run[0] == fence[0] and len(run) >= len(fence) and not line[match.end():].strip()
    return "" if closes else fence
