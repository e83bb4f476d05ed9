"""What a "meaningful message" is: small named rules, each counting what it dropped.

A message is dropped by the first rule that matches. ``trivially_short`` is deliberately conservative:
it drops only messages with fewer than 3 letters or digits once punctuation and emoji are removed
("ok!", "no", "👍", "好的") and pure acknowledgements ("Thanks!", "ok, thank you", "got it"); a short
real question such as "why?" or "为什么" is kept.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Optional

from ..models import Conversation, Message

KEPT_ROLES = frozenset({"user", "assistant"})
ACKNOWLEDGEMENTS = frozenset({
    "okay", "okey", "yes", "yep", "yeah", "yup", "nope", "sure", "cool", "nice",
    "great", "perfect", "awesome", "thanks", "thank you", "thank you so much", "thanks a lot", "thx",
    "got it", "sounds good", "alright", "all right", "fine", "done", "lol", "continue", "go on",
    "ok thanks", "okay thanks", "ok thank you", "great thanks", "perfect thanks", "merci", "danke", "gracias",
})
INVISIBLE = re.compile(r"[\s\u200b-\u200f\u2060\ufeff]*")
LONGEST_TRIVIAL = 40  # characters; no acknowledgement is longer, so longer texts skip the checks
NOT_A_WORD = re.compile(r"[\W_]+")  # punctuation, emoji, spaces and invisible characters

Rule = Callable[[Message, Optional[Message]], bool]


def hidden(message: Message, previous: Message | None) -> bool:
    """Marked hidden in the export."""
    return message.hidden


def role_not_kept(message: Message, previous: Message | None) -> bool:
    """Neither a user nor an assistant message."""
    return message.role not in KEPT_ROLES


def empty(message: Message, previous: Message | None) -> bool:
    """No text at all."""
    return message.text == ""


def whitespace_only(message: Message, previous: Message | None) -> bool:
    """Only spaces, newlines or invisible characters."""
    return INVISIBLE.fullmatch(message.text) is not None


def trivially_short(message: Message, previous: Message | None) -> bool:
    """Under 3 letters or digits once punctuation and emoji are removed, or a pure acknowledgement ("thanks!")."""
    text = message.text.strip()
    if len(text) > LONGEST_TRIVIAL:
        return False
    words = NOT_A_WORD.sub(" ", text.lower()).strip()
    return len(words.replace(" ", "")) < 3 or words in ACKNOWLEDGEMENTS


def duplicate_in_conversation(message: Message, previous: Message | None) -> bool:
    """The same text by the same role as the previous kept message (a retry)."""
    return previous is not None and previous.role == message.role and previous.text.strip() == message.text.strip()


RULES: list[Rule] = [hidden, role_not_kept, empty, whitespace_only, trivially_short, duplicate_in_conversation]


class Selector:
    """Keeps a conversation's meaningful messages; ``dropped`` counts, by rule name, what it left out."""

    def __init__(self, rules: list[Rule] | None = None) -> None:
        self.rules = RULES if rules is None else rules
        self.dropped: Counter[str] = Counter()

    def select(self, conversation: Conversation) -> list[Message]:
        kept: list[Message] = []
        for message in conversation.messages:
            previous = kept[-1] if kept else None
            rule = next((rule for rule in self.rules if rule(message, previous)), None)
            if rule is None:
                kept.append(message)
            else:
                self.dropped[rule.__name__] += 1
        return kept
