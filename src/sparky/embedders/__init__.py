"""Embedders turn texts into L2-normalised float32 vectors; retries for the transient failures of any of them.

``get_embedder(name)`` loads each model once per process, all offline and without torch:

- ``minilm`` (the default, also ``minilm-q8``): all-MiniLM-L6-v2 with int8 weights and int8 arithmetic,
  quantised once from the packaged fp32 weights (about 1.7x faster than fp32 on 2 cores, same recall@5
  on the labelled queries);
- ``minilm-fp32``: the same model in fp32, an ONNX graph built from the packaged weights;
- ``minilm-int8``: the packaged int8-weight ONNX export (int8 storage, fp32 arithmetic);
- ``wordllama``: WordLlama l2_supercat's static token embeddings (256 dimensions), averaged in numpy:
  it ingests about 15x faster than ``minilm``, weaker on paraphrases.

A store records the model it was built with; ``resolve_embedder`` picks that model's embedder when none
is named, so a store keeps working after the default changes.

Test-only fault injection: with ``SPARKY_FAULTS`` set, ``get_embedder`` wraps the embedder so that
``embed`` fails on purpose. ``SPARKY_FAULTS="transient=0.3,permanent=MARKER,seed=1"`` raises a
``TransientError`` on 30% of calls (drawn from a generator seeded with 1, before any work is done), and a
``PermanentEmbedError`` naming the index of the first text containing ``MARKER``, on every call that
includes such a text. Each key is optional. Never set it outside tests.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from typing import Callable, NamedTuple, Protocol, TypeVar

import numpy as np

from ..errors import SparkyError

T = TypeVar("T")
DEFAULT_EMBEDDER = "minilm"
# name -> runtime; the first name of each runtime is the one shown for a store built with it
EMBEDDERS = {"minilm": "q8", "minilm-fp32": "fp32", "minilm-int8": "int8", "wordllama": "static", "minilm-q8": "q8"}


class Tokens(NamedTuple):
    """A text's model tokens, special tokens excluded: character spans in the text, and which begin a word."""

    spans: list[tuple[int, int]]
    word_starts: list[bool]


class Tokenizing(Protocol):
    """What chunking needs from a model: its tokens with offsets, and how many special tokens it adds."""

    special_tokens: int

    def tokenize(self, texts: list[str]) -> list[Tokens]: ...


class Embedder(Tokenizing, Protocol):
    """An embedding model: ``embed`` returns float32 L2-normalised vectors, shape (len(texts), dimensions)."""

    model: str
    dimensions: int
    max_tokens: int  # the window, special tokens included; longer texts are truncated, so chunk first

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, texts: list[str]) -> list[int]: ...


class TransientError(Exception):
    """A failure worth retrying (overload, rate limit, a dropped connection)."""


class PermanentEmbedError(Exception):
    """The text at ``index`` of the batch can never be embedded; retrying the same text fails again."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"text {index} of the batch cannot be embedded: {reason}")
        self.index = index


def is_transient(exc: BaseException) -> bool:
    """The default classifier: timeouts, connection errors, HTTP 429/5xx, and SQLite 'locked' or 'busy'."""
    if isinstance(exc, (TransientError, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return any(word in str(exc).lower() for word in ("locked", "busy"))
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status == 429 or status >= 500)


def retry_delay(exc: BaseException, attempt: int, base_delay: float, max_delay: float,
                rng: Callable[[], float]) -> float:
    """Seconds to wait before retry number ``attempt + 1``: the exception's ``retry_after`` when it has one,
    else full jitter, uniform in [0, base_delay * 2**attempt); both capped at ``max_delay``."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return min(max(float(retry_after), 0.0), max_delay)
    return rng() * min(max_delay, base_delay * 2**attempt)


def call_with_retries(fn: Callable[[], T], *, attempts: int = 3, base_delay: float = 0.5, max_delay: float = 30.0,
                      is_transient: Callable[[BaseException], bool] = is_transient,
                      sleep: Callable[[float], None] = time.sleep, rng: Callable[[], float] = random.random) -> T:
    """Call ``fn`` up to ``attempts`` times, sleeping between tries while it fails transiently.

    A permanent failure, or the last transient one, is raised unchanged.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(attempts - 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            sleep(retry_delay(exc, attempt, base_delay, max_delay, rng))
    return fn()


def recorded_model(name: str) -> str:
    """The model name a store records for the embedder called ``name``, without loading the model."""
    from . import local, static

    models = {"fp32": local.FP32_MODEL, "q8": local.Q8_MODEL, "int8": local.INT8_MODEL, "static": static.MODEL}
    return models[_runtime(name)]


def resolve_embedder(requested: str | None, store_model: str | None) -> str:
    """The embedder to use: the one requested, else the one the store was built with, else the default."""
    if requested is not None:
        _runtime(requested)
        return requested
    if store_model is None:
        return DEFAULT_EMBEDDER
    name = embedder_for_model(store_model)
    if name is None:
        raise SparkyError(f"the memory store was built with embedding model {store_model}, which this version "
                          f"of sparky cannot run (it runs {', '.join(EMBEDDERS)})")
    return name


def embedder_for_model(model: str) -> str | None:
    """The name of the embedder that runs a recorded model on this machine; None for any other model."""
    return next((name for name in EMBEDDERS if recorded_model(name) == model), None)


def _runtime(name: str) -> str:
    if name not in EMBEDDERS:
        raise SparkyError(f"unknown embedder {name!r}; choose one of: {', '.join(EMBEDDERS)}")
    return EMBEDDERS[name]


def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """The embedder called ``name``, loaded once per process (wrapped for fault injection under SPARKY_FAULTS)."""
    runtime = _runtime(name)
    if runtime not in _LOADED:
        from . import local

        if runtime == "static":
            from .static import WordLlama

            _LOADED[runtime] = WordLlama()
        elif runtime == "int8":
            _LOADED[runtime] = local.OnnxMiniLM(local.INT8_MODEL, local.int8_path())
        elif runtime == "q8":
            # Its activations are quantised with one scale per call: batching texts would make each
            # vector depend on its batch-mates (cosine down to 0.96), so every text runs alone (as fast).
            _LOADED[runtime] = local.OnnxMiniLM(local.Q8_MODEL, local.q8_path(), token_budget=0)
        else:
            _LOADED[runtime] = local.OnnxMiniLM(local.FP32_MODEL, local.fp32_path())
    faults = os.environ.get("SPARKY_FAULTS")
    return FaultyEmbedder(_LOADED[runtime], faults) if faults else _LOADED[runtime]


_LOADED: dict[str, Embedder] = {}


class FaultyEmbedder:
    """Test-only wrapper raising the faults described by a ``SPARKY_FAULTS`` spec (see the module docstring)."""

    def __init__(self, inner: Embedder, spec: str) -> None:
        options = dict(part.split("=", 1) for part in spec.split(",") if part.strip())
        self.inner = inner
        self.transient_rate = float(options.get("transient", 0))
        self.marker = options.get("permanent")
        self.rng = random.Random(int(options.get("seed", 0)))

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.rng.random() < self.transient_rate:
            raise TransientError("injected transient fault (SPARKY_FAULTS)")
        for index, text in enumerate(texts):
            if self.marker and self.marker in text:
                raise PermanentEmbedError(index, f"contains the injected marker {self.marker!r} (SPARKY_FAULTS)")
        return self.inner.embed(texts)
