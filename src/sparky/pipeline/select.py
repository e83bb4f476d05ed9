"""What a "meaningful message" is: small named rules, each counting what it dropped.

A message is dropped by the first rule that matches. ``trivially_short`` drops what a reader of the
memory cannot use on its own, and nothing that records a fact or a choice:

- always dropped: no letter or digit at all ("👍", "?!") and pure acknowledgements ("ok", "Thanks!", "yes",
  "no", "ok, thank you", "got it", "好的"), even when they answer a question: the question is kept, and
  a bare yes or ok adds nothing that can be searched for;
- always kept: 3 or more letters or digits once punctuation and emoji are removed ("Docker", "why?", "为什么");
- a shorter fragment ("C#", "Go", "5") is kept when it answers a question (the user replies to a kept
  assistant message that contains a "?": it records the user's choice) or when it is a name written with
  a symbol ("C#", "C++", "F#"); otherwise it is dropped ("hm", a stray "R").
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import Callable, Optional

from ..models import Conversation, Message

KEPT_ROLES = frozenset({"user", "assistant"})
ACKNOWLEDGEMENTS = frozenset({
    "okay", "okey", "yes", "yep", "yeah", "yup", "nope", "sure", "cool", "nice",
    "great", "perfect", "awesome", "thanks", "thank you", "thank you so much", "thanks a lot", "thx",
    "got it", "sounds good", "alright", "all right", "fine", "done", "lol", "continue", "go on",
    "ok thanks", "okay thanks", "ok thank you", "great thanks", "perfect thanks", "merci", "danke", "gracias",
    "ok", "k", "kk", "no", "y", "n", "ya", "ye", "ty", "np", "hi", "hm", "mm", "ah", "oh",
    "ja", "si", "sí", "da", "ок", "да", "好", "好的", "嗯", "是", "对", "はい",
})
INVISIBLE = re.compile(r"[\s\u200b-\u200f\u2060\ufeff]*")
LONGEST_TRIVIAL = 40  # characters; no acknowledgement is longer, so longer texts skip the checks
NOT_A_WORD = re.compile(r"[\W_]+")  # punctuation, emoji, spaces and invisible characters
NAMED_BY_SYMBOL = re.compile(r"[^\W\d_][#+]")  # a letter then "#" or "+": C#, C++, F#
QUESTION_MARKS = ("?", "？")

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
    """No letter or digit, a pure acknowledgement ("thanks!"), or under 3 letters or digits that neither
    answer an assistant's question nor name something with a symbol ("C#")."""
    text = message.text.strip()
    if len(text) > LONGEST_TRIVIAL:
        return False
    words = NOT_A_WORD.sub(" ", text.lower()).strip()
    if not words or words in ACKNOWLEDGEMENTS:
        return True
    if len(words.replace(" ", "")) >= 3:
        return False
    return not (answers_question(message, previous) or NAMED_BY_SYMBOL.search(text))


def answers_question(message: Message, previous: Message | None) -> bool:
    """A user message right after a kept assistant message that asks something (contains a "?")."""
    return (message.role == "user" and previous is not None and previous.role == "assistant"
            and any(mark in previous.text for mark in QUESTION_MARKS))


def duplicate_in_conversation(message: Message, previous: Message | None) -> bool:
    """The same text by the same role as the previous kept message (a retry)."""
    return previous is not None and previous.role == message.role and previous.text.strip() == message.text.strip()


RULES: list[Rule] = [hidden, role_not_kept, empty, whitespace_only, trivially_short, duplicate_in_conversation]


def unique_ids(messages: tuple[Message, ...]) -> list[Message]:
    """The messages with ids unique in their conversation: a repeated id (a damaged export) gets a suffix,
    so two messages are never taken for two versions of one."""
    seen: set[str] = set()
    unique = []
    for message in messages:
        identifier, copy = message.id, 1
        while identifier in seen:
            copy += 1
            identifier = f"{message.id}#{copy}"
        seen.add(identifier)
        unique.append(message if identifier == message.id else replace(message, id=identifier))
    return unique


class Selector:
    """Keeps a conversation's meaningful messages; ``dropped`` counts, by rule name, what it left out."""

    def __init__(self, rules: list[Rule] | None = None) -> None:
        self.rules = RULES if rules is None else rules
        self.dropped: Counter[str] = Counter()

    def select(self, conversation: Conversation) -> list[Message]:
        kept: list[Message] = []
        for message in unique_ids(conversation.messages):
            previous = kept[-1] if kept else None
            rule = next((rule for rule in self.rules if rule(message, previous)), None)
            if rule is None:
                kept.append(message)
            else:
                self.dropped[rule.__name__] += 1
        return kept
