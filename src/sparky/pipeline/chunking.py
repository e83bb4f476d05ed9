"""Split messages longer than the model's window into overlapping chunks, measured in the model's own tokens.

Cuts fall between the model's tokens, at word starts, preferably at a paragraph break, then at a line
break or the end of a sentence, within the last quarter of the window. Chunk texts are slices of the
original text, and together they cover all of it: nothing is truncated silently.
"""

from __future__ import annotations

from ..embedders import Embedder, Tokenizer, Tokens
from ..models import Chunk

SENTENCE_ENDS = frozenset(".!?;…。！？；")


def chunk_message(key: str, text: str, tokenizer: Tokenizer, max_tokens: int = 256, overlap: int = 32) -> list[Chunk]:
    """The chunks of one message; a message that fits the window is one chunk with the whole text."""
    return _chunks(key, text, tokenizer.tokenize([text])[0], max_tokens - tokenizer.special_tokens, overlap)


def chunk_messages(items: list[tuple[str, str]], embedder: Embedder, overlap: int = 32) -> list[Chunk]:
    """The chunks of many ``(message key, text)`` pairs in order, tokenised in one batch."""
    tokenizer = embedder.tokenizer
    tokens = tokenizer.tokenize([text for _, text in items])
    budget = embedder.max_tokens - tokenizer.special_tokens
    return [chunk for (key, text), toks in zip(items, tokens) for chunk in _chunks(key, text, toks, budget, overlap)]


def _chunks(key: str, text: str, tokens: Tokens, budget: int, overlap: int) -> list[Chunk]:
    ranges = split_tokens(text, tokens, budget, overlap)
    if len(ranges) == 1:
        return [Chunk(key, 0, text)]
    spans, last = tokens.spans, len(ranges) - 1
    return [
        Chunk(key, index, text[(spans[start][0] if index else 0) : (spans[end - 1][1] if index < last else len(text))])
        for index, (start, end) in enumerate(ranges)
    ]


def split_tokens(text: str, tokens: Tokens, budget: int, overlap: int) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` of at most ``budget`` tokens, consecutive ones sharing at least
    ``overlap`` tokens (more, up to half the window, when that lets the next one start at a word), together
    covering every token."""
    if not 0 <= overlap < budget // 2:
        raise ValueError(f"overlap must be at least 0 and under half the window ({budget // 2} tokens)")
    count = len(tokens.spans)
    ranges: list[tuple[int, int]] = []
    start = 0
    while count - start > budget:
        limit = start + budget
        window = range(limit, limit - max(1, budget // 4), -1)  # the last quarter: chunks stay long
        end = max(window, key=lambda cut: _cut_quality(text, tokens, cut))
        ranges.append((start, end))
        start = max(end - overlap, start + 1)
        floor = max(ranges[-1][0] + 1, end - budget // 2)  # a wordless run must not stall the window
        start = next((cut for cut in range(start, floor - 1, -1) if tokens.word_starts[cut]), start)
    ranges.append((start, count))
    return ranges


def _cut_quality(text: str, tokens: Tokens, cut: int) -> int:
    """How good ending a chunk before token ``cut`` is: 3 paragraph, 2 line or sentence end, 1 space,
    0 another word start (punctuation), -1 inside a word."""
    if not tokens.word_starts[cut]:
        return -1
    previous, following = tokens.spans[cut - 1], tokens.spans[cut]
    gap = text[previous[1] : following[0]]
    if gap.count("\n") >= 2:
        return 3
    if "\n" in gap or text[previous[0] : previous[1]] in SENTENCE_ENDS:
        return 2
    return 1 if gap else 0
