"""The passage of a message shown for a hit: the best window of whole sentences of the chunk that matched,
with the query's words marked."""

from __future__ import annotations

import re
from typing import Sequence

from ..stores.substring import SUBSTRING_SCRIPT
from .query import STOPWORDS, pieces

PASSAGE_CHARS = 320  # a window of whole sentences up to about this long (one sentence, however long, fits)
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|(?<=[。！？])\s*|\n\s*")

Span = tuple[int, int]


def query_terms(query: str) -> list[str]:
    """Words of the query worth highlighting: letters and digits, no common English words; a long run of
    an unspaced script or a Korean word as the pieces the keyword side matched."""
    words = dict.fromkeys(word.casefold() for word in re.findall(r"[^\W_]+", query))
    return list(dict.fromkeys(piece for word in words if word not in STOPWORDS for piece in pieces(word)))


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """``[start, end)`` spans of the sentences (and lines) of ``text[start:end]``, surrounding space left out."""
    end = len(text) if end is None else end
    spans, at = [], start
    for cut in _SENTENCE_END.finditer(text, start, end):
        _add_stripped(text, at, cut.start(), spans)
        at = cut.end()
    _add_stripped(text, at, end, spans)
    return spans


def _add_stripped(text: str, start: int, end: int, spans: list[Span]) -> None:
    piece = text[start:end]
    if piece.strip():
        left = len(piece) - len(piece.lstrip())
        spans.append((start + left, start + len(piece.rstrip())))


def windows(sentences: list[Span], width: int = PASSAGE_CHARS) -> list[Span]:
    """Every run of consecutive sentences that starts at a sentence and fits ``width`` (at least one)."""
    found = []
    for first, (start, end) in enumerate(sentences):
        for _, next_end in sentences[first + 1:]:
            if next_end - start > width:
                break
            end = next_end
        found.append((start, end))
    return found


def term_spans(text: str, terms: Sequence[str], start: int = 0, end: int | None = None) -> list[Span]:
    """Where the terms occur in ``text[start:end]``: whole words, as FTS5 matches them (unspaced scripts
    anywhere), case-insensitive; overlapping occurrences (the trigrams ラーメ and ーメン) as one span."""
    end = len(text) if end is None else end
    found = sorted(match.span() for term in terms for match in re.compile(
        re.escape(term) if SUBSTRING_SCRIPT.search(term) else rf"(?<![^\W_]){re.escape(term)}(?![^\W_])",
        re.IGNORECASE).finditer(text, start, end))
    spans: list[Span] = []
    for a, b in found:
        if spans and a < spans[-1][1]:
            spans[-1] = (spans[-1][0], max(b, spans[-1][1]))
        else:
            spans.append((a, b))
    return spans


def passage_windows(text: str, chunk: str, terms: Sequence[str],
                    width: int = PASSAGE_CHARS) -> tuple[Span | None, list[Span], float]:
    """The best window of whole sentences inside ``chunk`` (a slice of ``text``; the whole text when it is
    not one), as ``[start, end)`` in ``text``: the one holding the most distinct query terms, then the most
    of them (None when no term occurs); the chunk's windows that do not overlap, for the caller to rate by
    meaning (a few texts to embed per hit); and the share of the distinct terms the best window holds."""
    start = text.find(chunk) if chunk else -1
    start, end = (start, start + len(chunk)) if start >= 0 else (0, len(text))
    candidates = windows(sentence_spans(text, start, end), width) or [(start, end)]
    packed = [candidates[0]]
    for window in candidates:
        if window[0] >= packed[-1][1]:
            packed.append(window)
    matches = term_spans(text, terms, start, end)
    if not matches:
        return (candidates[0] if len(candidates) == 1 else None), packed, 0.0

    def rating(window: Span) -> tuple[int, int]:
        inside = [text[a:b].casefold() for a, b in matches if window[0] <= a and b <= window[1]]
        return len(set(inside)), len(inside)

    best = max(candidates, key=rating)  # max keeps the first of equals
    return best, packed, rating(best)[0] / max(len({term.casefold() for term in terms}), 1)


def best_passage(text: str, chunk: str, terms: Sequence[str], width: int = PASSAGE_CHARS) -> Span:
    """``passage_windows``' choice, else (no term occurs) the chunk's first window."""
    chosen, packed, _ = passage_windows(text, chunk, terms, width)
    return chosen or packed[0]


def make_snippet(text: str, passage: Span, terms: Sequence[str]) -> tuple[str, tuple[Span, ...]]:
    """The passage as shown (``…`` where the message goes on) and the ``[start, end)`` spans of the query
    terms in it."""
    start, end = passage
    prefix = "…" if text[:start].strip() else ""
    snippet = prefix + text[start:end] + ("…" if text[end:].strip() else "")
    shift = len(prefix) - start
    return snippet, tuple((a + shift, b + shift) for a, b in term_spans(text, terms, start, end))
