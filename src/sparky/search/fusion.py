"""Fusing the vector and keyword rankings into one."""

from __future__ import annotations

from ..stores import ChunkHit

# Reciprocal rank fusion: score = sum over sides of 1 / (RRF_K + rank), over the top SIDE_DEPTH (at least
# k) of each side. From bench/search_quality.py --sweep: among the sample plus 14k generated messages,
# k=20 / depth 50 ties for the best recall@5 with the best MRR; on the sample alone it beats the usual
# k=60. The differences are one query of 66.
RRF_K = 20
SIDE_DEPTH = 50


def fuse(sides: list[list[ChunkHit]], rrf_k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of ranked lists of messages; ties go to the better single rank."""
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for hits in sides:
        for rank, hit in enumerate(hits, 1):
            scores[hit.message] = scores.get(hit.message, 0.0) + 1.0 / (rrf_k + rank)
            best_rank[hit.message] = min(best_rank.get(hit.message, rank), rank)
    return sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))
