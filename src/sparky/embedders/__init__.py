"""Embedders turn texts into L2-normalised float32 vectors; retries for the transient failures of any of them.

``get_embedder(name)`` loads each model once per process: ``minilm`` (the default: all-MiniLM-L6-v2
as an fp32 ONNX graph built from the packaged weights), ``minilm-fp32`` (the same) and ``minilm-int8``
(the packaged int8-weight ONNX export). All run on onnxruntime, offline, without torch.

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
EMBEDDERS = {"minilm": "fp32", "minilm-fp32": "fp32", "minilm-int8": "int8"}  # name -> runtime


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


def get_embedder(name: str = "minilm") -> Embedder:
    """The embedder called ``name``, loaded once per process (wrapped for fault injection under SPARKY_FAULTS)."""
    if name not in EMBEDDERS:
        raise SparkyError(f"unknown embedder {name!r}; choose one of: {', '.join(EMBEDDERS)}")
    runtime = EMBEDDERS[name]
    if runtime not in _LOADED:
        from . import local

        if runtime == "int8":
            _LOADED[runtime] = local.OnnxMiniLM(local.INT8_MODEL, local.int8_path())
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
