"""Keyword search for unspaced scripts (Chinese, Japanese): a term is found anywhere inside the text.

Word tokenizers keep a whole run of kana or ideographs as one token, so ``ラーメン`` inside
``東京でラーメンを食べた`` is not a word of its own. Terms in these scripts are matched as substrings
instead, and ranked by BM25 with the term's occurrences in the chunk as its frequency, the IDF over every
chunk of the store (FTS5's floor of 1e-6 for a term in over half of them), and no length normalisation
(a chunk's length in words is not defined for such text). Each store finds the matching chunks its own
way (SQLite: its trigram index for terms of three characters or more); the scores are computed here, so
both stores rank alike.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

from ..text import UNSPACED
from .records import ChunkHit

K1 = 1.2
IDF_FLOOR = 1e-6

# (term) -> every chunk of the store holding it: (chunk id, message id, chunk text)
Matches = Callable[[str], Iterable[tuple[int, int, str]]]


def unspaced_terms(terms: Sequence[str]) -> tuple[list[str], list[str]]:
    """The terms split into (word terms, unspaced-script terms)."""
    words = [term for term in terms if not UNSPACED.search(term)]
    return words, [term for term in terms if UNSPACED.search(term)]


def substring_hits(terms: Sequence[str], matches: Matches, total_chunks: int,
                   passes: Callable[[set[int]], set[int]]) -> list[ChunkHit]:
    """Each passing message's best chunk by the summed BM25 of ``terms``, best first; ``passes`` keeps the
    message ids that pass the filters."""
    scores: dict[int, float] = {}
    message_of: dict[int, int] = {}
    for term in dict.fromkeys(terms):
        found = [(chunk, message, text.count(term)) for chunk, message, text in matches(term)]
        idf = math.log((total_chunks - len(found) + 0.5) / (len(found) + 0.5)) if found else 0.0
        idf = idf if idf > 0 else IDF_FLOOR
        for chunk, message, tf in found:
            scores[chunk] = scores.get(chunk, 0.0) + idf * tf * (K1 + 1) / (tf + K1)
            message_of[chunk] = message
    kept = passes(set(message_of.values()))
    best: dict[int, ChunkHit] = {}
    for chunk, score in sorted(scores.items(), key=lambda item: (-item[1], item[0])):
        message = message_of[chunk]
        if message in kept and message not in best:
            best[message] = ChunkHit(message, chunk, score)
    return list(best.values())


def merged(*sides: list[ChunkHit], limit: int) -> list[ChunkHit]:
    """Hits of several keyword searches as one list: each message once, with its best score."""
    best: dict[int, ChunkHit] = {}
    for hit in (hit for side in sides for hit in side):
        if hit.message not in best or hit.score > best[hit.message].score:
            best[hit.message] = hit
    return sorted(best.values(), key=lambda hit: (-hit.score, hit.message))[:limit]
