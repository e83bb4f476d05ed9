"""The meaningful-message rules: each one, their order, and their counts."""

from __future__ import annotations

import pytest

from sparky.models import Conversation, Message
from sparky.pipeline.select import RULES, Selector


def conversation(*turns: tuple[str, str], hidden: frozenset[int] = frozenset()) -> Conversation:
    messages = tuple(Message("c", f"m{i}", role, None, text, i, hidden=i in hidden)
                     for i, (role, text) in enumerate(turns))
    return Conversation("chatgpt", "c", "t", None, None, messages)


def kept_texts(*turns: tuple[str, str], **kwargs) -> tuple[list[str], dict]:
    selector = Selector()
    kept = selector.select(conversation(*turns, **kwargs))
    return [m.text for m in kept], dict(selector.dropped)


def test_rules_are_listed_by_name():
    assert [rule.__name__ for rule in RULES] == [
        "hidden", "role_not_kept", "empty", "whitespace_only", "trivially_short", "duplicate_in_conversation"]
    assert all(rule.__doc__ for rule in RULES)


def test_real_messages_are_kept_in_order():
    turns = [("user", "Why does my Docker build cache miss?"), ("assistant", "Because COPY . . comes first.")]
    assert kept_texts(*turns) == ([text for _, text in turns], {})


def test_hidden_and_other_roles_are_dropped():
    assert kept_texts(("system", "You are a helpful assistant"), ("tool", "42"), ("user", "real question"),
                      ("assistant", "secret"), hidden=frozenset({3})) == (
        ["real question"], {"role_not_kept": 2, "hidden": 1})


def test_empty_and_whitespace_only():
    assert kept_texts(("user", ""), ("assistant", "  \n\t"), ("user", "\u200b \ufeff"), ("user", "a real one")) == (
        ["a real one"], {"empty": 1, "whitespace_only": 2})


@pytest.mark.parametrize("text", ["ok", "OK!", "k", "👍", "Thanks!", "thank you so much!!", "Got it.", "好的",
                                  "  yes  ", "Sounds good 👍", "no", "Ok, thank you!", "?!"])
def test_trivially_short_messages_are_dropped(text):
    assert kept_texts(("user", text)) == ([], {"trivially_short": 1})


@pytest.mark.parametrize("text", ["why?", "How?", "为什么", "42 GB?", "thanks, but the error persists: EACCES",
                                  "ok so what about the second query?", "Yes, please rewrite it in Go."])
def test_short_real_questions_are_kept(text):
    assert kept_texts(("user", text)) == ([text], {})


def test_consecutive_duplicate_by_the_same_role_is_dropped():
    question = "How do I center a div with CSS grid?"
    assert kept_texts(("user", question), ("user", question + " "), ("assistant", "place-items: center"),
                      ("user", question)) == ([question, "place-items: center", question],
                                              {"duplicate_in_conversation": 1})


def test_duplicate_check_compares_with_the_previous_kept_message():
    assert kept_texts(("user", "Explain the GIL please"), ("assistant", "ok"), ("user", "Explain the GIL please")) == (
        ["Explain the GIL please"], {"trivially_short": 1, "duplicate_in_conversation": 1})


def test_first_matching_rule_is_counted_and_counts_add_up_across_conversations():
    selector = Selector()
    for _ in range(3):
        selector.select(conversation(("system", ""), ("user", "real text here")))
    assert selector.dropped == {"role_not_kept": 3}


def test_custom_rules():
    selector = Selector(rules=[RULES[2]])
    assert [m.text for m in selector.select(conversation(("system", "x"), ("user", "")))] == ["x"]
