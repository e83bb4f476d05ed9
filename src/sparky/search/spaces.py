"""Searching across embedding spaces: the better space where it has vectors, the fast one elsewhere.

A store mid-way through a progressive ingestion holds a complete static space (``wordllama`` or
``minilm-static``, primary) and a partial transformer space. Each is queried with its own model; a message's vector score is the better
space's where the message holds a vector there, else the static space's cosine mapped onto the better
space's scale (``SCALES``), so one ranking, one fusion and one relevance floor serve both parts. Once the
better space is complete the primary space alone is queried, as in a store of one space (pass 2 makes the
better space primary then; a store whose owner chose a static primary with ``reembed --replace`` keeps it).
A static-only store is searched on its own cosines: the MiniLM-calibrated floors hold for it as they are
(bench/progressive.py: the mapping is close to the identity over the top hits, recall@5 as measured).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..embedders import EMBEDDERS, embedder_for_model, is_static, recorded_model
from ..stores import ChunkHit, Space, Store
from .query import SearchError

# A static model's cosine -> MiniLM's. bench/progressive.py fits a quantile-to-quantile mapping (the n-th best
# message's score of each query of bench/queries.json in each space, top 50, among the 13,719 generated
# messages): the two scales are close there (wordllama 0.47 -> MiniLM 0.54 at the 95th percentile), and on
# the labelled queries the fitted mapping gave the mixed state recall@5 0.924, the identity 0.939 (= static
# alone, above MiniLM's half alone): the identity is kept, as explicit knots. minilm-static's cosines run higher
# (0.65 -> MiniLM 0.39 at the 90th percentile; `bench/progressive.py --static minilm-static`): its fitted knots
# gave the mixed state 0.909 against the identity's 0.894, and are kept.
SCALES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    recorded_model("wordllama"): ((-1.0, 1.0), (-1.0, 1.0)),
    recorded_model("minilm-static"): (
        (-1.0, 0.0476, 0.2062, 0.2877, 0.3443, 0.3661, 0.3812, 0.394, 0.4079, 0.4277, 0.4546, 0.4793, 0.5032,
         0.5259, 0.5475, 0.5685, 0.5835, 0.6093, 0.6499, 0.6718, 0.7297, 0.9049, 1.0),
        (-1.0, 0.1219, 0.1767, 0.195, 0.2075, 0.2176, 0.2291, 0.2399, 0.2495, 0.26, 0.2707, 0.2808, 0.2908,
         0.3001, 0.3137, 0.3303, 0.3449, 0.3598, 0.3858, 0.44, 0.537, 0.9248, 1.0)),
}


@dataclass(frozen=True)
class SpacePlan:
    """The spaces a query is embedded for, the first the better one; ``frontier``: with two, every chunk
    whose id is below it holds a vector in the first (the chunks past it may not)."""

    spaces: tuple[Space, ...]
    frontier: int = 0
    primary_only: bool = False  # the primary space alone, as a store of one space is searched

    @property
    def mixed(self) -> bool:
        return len(self.spaces) == 2


def on_scale_of(better: Space, space: Space, hits: list[ChunkHit]) -> list[ChunkHit]:
    """``space``'s hits with their cosines mapped onto ``better``'s scale (unchanged when no mapping is known)."""
    if space == better or space.model not in SCALES:
        return hits
    xs, ys = SCALES[space.model]
    scores = np.interp([hit.score for hit in hits], xs, ys)
    return [ChunkHit(hit.message, hit.chunk, float(score)) for hit, score in zip(hits, scores)]


class SpacePlanner:
    """Which spaces a store's queries are embedded for; keeps the better space's frontier between queries
    (it only moves on while pass 2 runs, so each query reads only the chunks embedded since the last)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._frontiers: dict[Space, int] = {}

    def plan(self, named: str | None = None) -> SpacePlan:
        """The space ``named`` (a model or an embedder name); else the better space with the static primary as
        a fallback while the better one is incomplete; else the primary alone."""
        if named is not None:
            return SpacePlan((resolve_space(self.store, named),))
        meta = self.store.meta()
        primary = Space(meta["model"], int(meta["dimensions"]))
        better = _better_space(primary, self.store.spaces())
        frontier = self._frontier(better) if better is not None else None
        if frontier is None:
            return SpacePlan((primary,), primary_only=True)
        return SpacePlan((better, primary), frontier)

    def _frontier(self, better: Space) -> int | None:
        """The first chunk without a vector in ``better``; None when it has none to search (no vector yet, or
        complete: a complete space not made primary leaves the primary space chosen, as by reembed --replace)."""
        known = self._frontiers.get(better, 0)
        missing = self.store.chunks_missing_vectors(better, max(known - 1, 0), 1)
        if not missing:
            return None
        self._frontiers[better] = missing[0][0]
        first = self.store.chunks_missing_vectors(Space("", 0), 0, 1)  # a space not held: the first chunk
        return missing[0][0] if missing[0][0] > first[0][0] else None


def _better_space(primary: Space, held: list[Space]) -> Space | None:
    """A transformer space beside a static primary one."""
    if not is_static(primary.model):
        return None
    return next((space for space in held if not is_static(space.model) and embedder_for_model(space.model)), None)


def resolve_space(store: Store, name: str) -> Space:
    """The held space of the model ``name`` (or of the embedder called ``name``); else a SearchError."""
    model = recorded_model(name) if name in EMBEDDERS else name
    held = store.spaces()
    found = next((space for space in held if space.model == model), None)
    if found is None:
        names = ", ".join(f"{space.model} ({embedder_for_model(space.model) or 'not runnable here'})" for space in held)
        raise SearchError(f"{store.url}: holds no vectors of {name}; its spaces: {names}")
    return found


def embedder_of(space: Space) -> str:
    """The embedder that embeds queries for ``space``; a SearchError when none runs here."""
    name = embedder_for_model(space.model)
    if name is None:
        raise SearchError(f"no embedder of this version of sparky runs {space.model}; use --mode keyword")
    return name


def mixed_hits(better: list[ChunkHit], fast: list[ChunkHit], frontier: int, limit: int) -> list[ChunkHit]:
    """One vector ranking from the better space's hits and the fast space's (already on the better scale).

    A message the better space returned keeps its score there. A fast hit whose chunk holds a better
    vector (below ``frontier``) but that the better space did not return scores at most the better space's
    last returned score (its own there is lower); any other fast hit keeps its mapped score."""
    scores = {hit.message: hit for hit in better}
    cap = better[-1].score if len(better) >= limit else None  # fewer: the better space returned all it holds
    for hit in fast:
        if hit.message in scores:
            continue
        if hit.chunk < frontier:
            if cap is None:
                continue  # it holds a better vector, and the better space returned every such message
            hit = ChunkHit(hit.message, hit.chunk, min(hit.score, cap))
        scores[hit.message] = hit
    return sorted(scores.values(), key=lambda hit: (-hit.score, hit.message))[:limit]
