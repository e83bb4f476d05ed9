"""A test implementation shipped with the package (as httpx ships MockTransport): an embedder wrapper that
fails on purpose, so the pipeline's handling of each failure class can be tested against a real model.

``get_embedder`` never applies it; a test wraps an embedder explicitly, in-process or through
``tests/support/faulty_sparky.py`` for a subprocess. A spec such as
``"transient=0.3,rate_limited=0.2,retry_after=0.01,permanent=MARKER,fatal=KEY,seed=1"`` raises a
``TransientError`` on 30% of calls and ``RateLimited`` (asking for ``retry_after`` seconds) on 20% (drawn from
a generator seeded with 1, before any work is done), a ``PermanentEmbedError`` naming the index of the first
text containing ``MARKER``, and a ``FatalEmbedError`` on any call including a text containing ``KEY``.
"""

from __future__ import annotations

import random

import numpy as np

from .base import Embedder, FatalEmbedError, PermanentEmbedError, RateLimited, TransientError


class FaultyEmbedder:
    """Wraps an embedder; ``embed`` fails as the spec says, otherwise the wrapped model answers."""

    def __init__(self, inner: Embedder, spec: str) -> None:
        options = dict(part.split("=", 1) for part in spec.split(",") if part.strip())
        unknown = set(options) - {"transient", "rate_limited", "retry_after", "permanent", "fatal", "seed"}
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        self.inner = inner
        self.transient_rate = float(options.get("transient", 0))
        self.rate_limited_rate = float(options.get("rate_limited", 0))
        self.retry_after = float(options["retry_after"]) if "retry_after" in options else None
        self.marker = options.get("permanent")
        self.fatal_marker = options.get("fatal")
        self.rng = random.Random(int(options.get("seed", 0)))
        self.calls = 0
        self.injected = 0  # calls that failed on purpose
        self.answered: list[str] = []  # every text the wrapped model embedded, in order

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.injected += 1  # undone below when no fault applies
        draw = self.rng.random()
        if draw < self.transient_rate:
            raise TransientError("injected transient fault")
        if draw < self.transient_rate + self.rate_limited_rate:
            raise RateLimited("injected rate limit", retry_after=self.retry_after)
        if self.fatal_marker and any(self.fatal_marker in text for text in texts):
            raise FatalEmbedError(f"injected fatal fault (a text contains {self.fatal_marker!r})")
        for index, text in enumerate(texts):
            if self.marker and self.marker in text:
                raise PermanentEmbedError(index, f"contains the injected marker {self.marker!r}")
        self.injected -= 1
        vectors = self.inner.embed(texts)
        self.answered += texts
        return vectors
