"""Keeping an answer within what an assistant can use: a token estimate, and trimming a text to a share.

No tokenizer of the assistant's model is at hand, so the estimate is deliberately generous: about four
ASCII characters a token (English prose averages a little more), and a token for every other character
(CJK scripts run close to one a character; accented letters cost less, so they are over-counted).
"""

from __future__ import annotations

DEFAULT_BUDGET = 4000  # tokens in one tool answer: a few exchanges, small beside any assistant's context
MIN_SHARE = 120  # the fewest tokens one message is given, however many share the budget
ELLIPSIS = " […]"


def estimate_tokens(text: str) -> int:
    """A generous estimate of how many tokens ``text`` costs an assistant."""
    ascii_chars = len(text.encode("ascii", "ignore"))
    return (ascii_chars + 3) // 4 + len(text) - ascii_chars


def trim(text: str, tokens: int) -> tuple[str, bool]:
    """``text`` cut at a word boundary to about ``tokens`` tokens (marked ``[…]``), and whether it was cut."""
    if estimate_tokens(text) <= tokens:
        return text, False
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits, found by bisection (the estimate only grows with length)
        middle = (low + high + 1) // 2
        if estimate_tokens(text[:middle]) + 2 <= tokens:
            low = middle
        else:
            high = middle - 1
    cut = text[:low]
    space = cut.rfind(" ", max(0, low - 40))  # end on a whole word when one ends nearby
    if space > 0:
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS, True


class Budget:
    """What is left of one answer's token budget; blocks are taken while they fit."""

    def __init__(self, tokens: int) -> None:
        self.left = tokens

    def take(self, text: str, force: bool = False) -> bool:
        """Spend the tokens of ``text`` if it fits (always with ``force``: the first block of an answer)."""
        cost = estimate_tokens(text)
        if cost > self.left and not force:
            return False
        self.left -= cost
        return True
