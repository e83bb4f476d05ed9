"""The passage of a message shown for a hit, with the query's words marked."""

from __future__ import annotations

import re

from ..text import UNSPACED
from .query import STOPWORDS

SNIPPET_CHARS = 240


def query_terms(query: str) -> list[str]:
    """Words of the query worth highlighting: letters and digits, no common English words."""
    words = dict.fromkeys(word.casefold() for word in re.findall(r"[^\W_]+", query))
    return [word for word in words if word not in STOPWORDS]


def make_snippet(text: str, chunk: str, terms: list[str]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """About ``SNIPPET_CHARS`` of the message around the densest run of query terms, with their spans.

    When no term occurs, the start of the best-matching chunk stands in.
    """
    text = " ".join(text.split())
    matches = _term_spans(text, terms)
    if not matches:
        chunk = " ".join(chunk.split())
        snippet = chunk[:SNIPPET_CHARS] + ("…" if len(chunk) > SNIPPET_CHARS else "")
        return snippet, ()
    first = _densest_window(matches, SNIPPET_CHARS)
    start = max(0, first - SNIPPET_CHARS // 5)
    if start:
        space = text.find(" ", start, first)
        start = space + 1 if space != -1 else start
    end = min(len(text), start + SNIPPET_CHARS)
    prefix = "…" if start else ""
    snippet = prefix + text[start:end] + ("…" if end < len(text) else "")
    shift = len(prefix) - start
    spans = tuple((a + shift, b + shift) for a, b in matches if a >= start and b <= end)
    return snippet, spans


def _term_spans(text: str, terms: list[str]) -> list[tuple[int, int]]:
    if not terms:
        return []
    alternatives = "|".join(  # whole words, as FTS5 matches them; unspaced scripts match anywhere
        re.escape(term) if UNSPACED.search(term) else rf"(?<![^\W_]){re.escape(term)}(?![^\W_])"
        for term in sorted(terms, key=len, reverse=True)
    )
    pattern = re.compile(alternatives, re.IGNORECASE)
    return [match.span() for match in pattern.finditer(text)]


def _densest_window(spans: list[tuple[int, int]], width: int) -> int:
    """Start of the span that begins the window of ``width`` characters holding the most spans."""
    best_start, best_count, first = spans[0][0], 0, 0
    for last, (_, end) in enumerate(spans):
        while end - spans[first][0] > width:
            first += 1
        if last - first + 1 > best_count:
            best_start, best_count = spans[first][0], last - first + 1
    return best_start
