"""Fusing the vector and keyword rankings into one.

``combine`` (the default) is a convex combination of the two sides' scores, each on an absolute scale: the
cosine, and the keyword side's BM25 as evidence: BM25 over what the query's words could score at most
(each word as rare as a word can be in a store of this size), so a hit on all of a query's rare words is
about 1, and a hit on words many messages hold, or on one word of five, is near 0; below
``KEYWORD_OFFSET`` it counts for nothing. Being absolute, the fused score also says how good the best hit
is, which the relevance floor uses. ``fuse`` is reciprocal rank fusion, the fusion before it.
"""

from __future__ import annotations

import math

from ..stores import ChunkHit

# Reciprocal rank fusion: score = sum over sides of 1 / (RRF_K + rank), over the top SIDE_DEPTH (at least
# k) of each side. The depth is also how many hits of each side ``combine`` looks at.
RRF_K = 20
SIDE_DEPTH = 50

# From bench/search_quality.py --sweep (exchange level) over the 131 labelled queries among generated
# distractors: the best r@1 and MRR of the settings whose hybrid r@5 is at least the better side's on
# every query class (RRF, the fusion before, falls below the vector side on hard paraphrases).
VECTOR_WEIGHT = 0.7
KEYWORD_OFFSET = 0.1
KEYWORD_SCALE = 0.7
# The keyword evidence a result (its hit, question or answer) must exceed, besides the mode's floor, in
# hybrid and keyword mode when the query is not English (``query.unlike_english``): MiniLM rates any two
# texts of one such language alike, so there its cosine alone is no sign of an answer, nor is one common
# piece of a long unspaced query. From bench/search_quality.py --sweep among generated distractors.
EVIDENCE_FLOOR = 0.0


# The keyword evidence above which the keyword side counts as having found a message (``found_by_both``).
CORROBORATION = 0.1


def found_by_both(vector: list[ChunkHit], evidence: dict[int, float]) -> set[int]:
    """The messages both sides found: among the vector side's hits, with keyword ``evidence`` above
    ``CORROBORATION``."""
    return {hit.message for hit in vector if evidence.get(hit.message, 0.0) > CORROBORATION}


def fuse(sides: list[list[ChunkHit]], rrf_k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of ranked lists of messages; ties go to the better single rank."""
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for hits in sides:
        for rank, hit in enumerate(hits, 1):
            scores[hit.message] = scores.get(hit.message, 0.0) + 1.0 / (rrf_k + rank)
            best_rank[hit.message] = min(best_rank.get(hit.message, rank), rank)
    return sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))


def keyword_evidence(bm25: float, documents: int, terms: int = 1, offset: float = KEYWORD_OFFSET,
                     scale: float = KEYWORD_SCALE) -> float:
    """A keyword hit's BM25 as evidence in [0, 1]: over ``terms`` times the IDF of a word found in one of
    ``documents``, less ``offset``, over ``scale``."""
    most = max(math.log((documents - 0.5) / 1.5), 1.0)  # FTS5's IDF of a word in one of ``documents``
    return min(1.0, max(0.0, (bm25 / (most * max(terms, 1)) - offset) / scale))


def evidence_of(keyword: list[ChunkHit], documents: int, terms: int = 1, offset: float = KEYWORD_OFFSET,
                scale: float = KEYWORD_SCALE) -> dict[int, float]:
    """Each keyword hit's message with its ``keyword_evidence``."""
    return {hit.message: keyword_evidence(hit.score, documents, terms, offset, scale) for hit in keyword}


def combine(vector: list[ChunkHit], keyword: list[ChunkHit], documents: int, terms: int = 1,
            weight: float = VECTOR_WEIGHT, offset: float = KEYWORD_OFFSET,
            scale: float = KEYWORD_SCALE) -> list[tuple[int, float]]:
    """``weight`` × cosine + (1 − ``weight``) × keyword evidence (for a query of ``terms`` keyword terms) per
    message, best first. A message the
    vector side did not return gets its lowest cosine (it ranks below all it returned); one the keyword
    side did not return gets no evidence."""
    cosines = {hit.message: max(hit.score, 0.0) for hit in vector}
    evidence = evidence_of(keyword, documents, terms, offset, scale)
    missing_cosine = min(cosines.values(), default=0.0)
    scores = {
        message: weight * cosines.get(message, missing_cosine) + (1 - weight) * evidence.get(message, 0.0)
        for message in {*cosines, *evidence}
    }
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))

