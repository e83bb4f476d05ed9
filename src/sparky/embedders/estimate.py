"""A safe token estimate for chunking when the model's tokenizer is not on this machine (network models).

Byte-level BPE tokenizers (OpenAI's, most open embedding servers') never make more tokens than a text has
UTF-8 bytes, and English words average about four characters a token. The estimate counts every run of
up to three ASCII letters or digits as one token and every other byte as one, so it never counts fewer
tokens than such a model does: chunks may be shorter than needed, never longer than the window.
"""

from __future__ import annotations

import re

from .base import Tokens

_PIECE = re.compile(r"[A-Za-z0-9]{1,3}|\S")


class EstimatedTokenizer:
    """A ``Tokenizer`` whose token counts are an upper bound of a byte-level BPE model's."""

    def __init__(self, special_tokens: int = 0) -> None:
        self.special_tokens = special_tokens

    def tokenize(self, texts: list[str]) -> list[Tokens]:
        return [_estimate(text) for text in texts]


def _estimate(text: str) -> Tokens:
    spans: list[tuple[int, int]] = []
    starts: list[bool] = []
    previous_end = -1
    for match in _PIECE.finditer(text):
        start, end = match.span()
        begins_word = start != previous_end or not (text[start].isalnum() and text[start - 1].isalnum())
        width = 1 if match.group().isascii() else len(match.group().encode("utf-8", "surrogatepass"))
        for byte in range(width):  # a non-ASCII character may be as many tokens as it has bytes
            spans.append((start, end))
            starts.append(begins_word and byte == 0)
        previous_end = end
    return Tokens(spans, starts)
