"""Keyword search for unspaced scripts (Chinese, Japanese) and Korean: a term is found anywhere inside a text.

Word tokenizers keep a whole run of kana or ideographs as one token, so ``ラーメン`` inside
``東京でラーメンを食べた`` is not a word of its own; a Korean word carries its particles (``찌개에``,
``김치찌개를``), so its stem is not a word of its own either. Terms in these scripts are matched as
substrings instead (the query side splits their long runs into overlapping trigrams, a Korean word into bigrams, ``search/query.py``),
and ranked by BM25 with the term's occurrences in the chunk as its frequency, the IDF over every chunk of
the store (FTS5's floor of 1e-6 for a term in over half of them), and no length normalisation
(a chunk's length in words is not defined for such text). Each store finds the matching chunks its own
way, for all of a query's terms at once (SQLite: its trigram index when every term has three characters
or more); the scores are computed here, so both stores rank alike.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Iterable, Sequence

from ..text import UNSPACED
from .records import ChunkHit

# Kana, CJK ideographs and Hangul (syllables and jamo): the scripts whose terms are matched as substrings
SUBSTRING_SCRIPT = re.compile(UNSPACED.pattern[:-1] + "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
K1 = 1.2
IDF_FLOOR = 1e-6

# (terms) -> every chunk of the store holding one of them, read once: (chunk id, message id, chunk text)
Matches = Callable[[Sequence[str]], Iterable[tuple[int, int, str]]]


def unspaced_terms(terms: Sequence[str]) -> tuple[list[str], list[str]]:
    """The terms split into (word terms, terms matched as substrings: unspaced scripts and Hangul)."""
    words = [term for term in terms if not SUBSTRING_SCRIPT.search(term)]
    return words, [term for term in terms if SUBSTRING_SCRIPT.search(term)]


def substring_hits(terms: Sequence[str], matches: Matches, total_chunks: int,
                   passes: Callable[[set[int]], set[int]]) -> list[ChunkHit]:
    """Each passing message's best chunk by the summed BM25 of ``terms``, best first; ``passes`` keeps the
    message ids that pass the filters."""
    scores: dict[int, float] = {}
    message_of: dict[int, int] = {}
    terms = list(dict.fromkeys(terms))
    texts = {chunk: (message, text) for chunk, message, text in matches(terms)}
    for term in terms:
        found = [(chunk, message, text.count(term)) for chunk, (message, text) in texts.items() if term in text]
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
