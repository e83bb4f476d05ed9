"""Counts in words, for every message the user reads: "1 conversation", "2 conversations", "the 3rd"."""

from __future__ import annotations


def plural(count: int, word: str) -> str:
    """``count`` and ``word``, with an "s" unless the count is one ("1 message", "1,204 MESSAGES")."""
    suffix = "" if count == 1 else "S" if word.isupper() else "s"
    return f"{count:,} {word}{suffix}"


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th ... 11th, 12th, 13th ... 21st."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number:,}{suffix}"
