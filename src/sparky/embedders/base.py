"""The Embedder protocol, the Tokenizer protocol chunking needs, and how an embedder's failures are classified.

An embedder turns texts into float32, L2-normalised vectors of shape ``(len(texts), dimensions)``. It
says how its own errors should be handled (``classify``): retry soon (transient), wait what the service
asked (rate limited), give up on one text (permanent, with its index when known) or stop the run (fatal:
a bad key, an unknown model). The pipeline acts on that classification and checks every output's shape.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import numpy as np

from ..errors import SparkyError

FailureKind = Literal["transient", "rate_limited", "permanent", "fatal"]


class Tokens(NamedTuple):
    """A text's model tokens, special tokens excluded: character spans in the text, and which begin a word."""

    spans: list[tuple[int, int]]
    word_starts: list[bool]


class Tokenizer(Protocol):
    """What chunking needs: tokens with character offsets, and how many special tokens the model adds.

    A local model gives its own; a network model, which has none here, gives a safe estimate
    (``sparky.embedders.estimate.EstimatedTokenizer``) that never counts fewer tokens than the model would.
    """

    special_tokens: int

    def tokenize(self, texts: list[str]) -> list[Tokens]: ...


class Embedder(Protocol):
    """An embedding model (see the module docstring for the contract of ``embed`` and ``classify``)."""

    model: str
    dimensions: int
    max_tokens: int  # the window, special tokens included; longer texts are truncated, so chunk first
    concurrency: int  # how many batches may be in flight at once (1 for a model on this machine's CPU)
    tokenizer: Tokenizer

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def classify(self, error: BaseException) -> Failure: ...


@dataclass(frozen=True)
class Failure:
    """What an embedder says about one of its errors."""

    kind: FailureKind
    reason: str
    delay: float | None = None  # seconds the service asked us to wait (rate limited)
    index: int | None = None  # the text of the batch that can never be embedded (permanent)


class TransientError(Exception):
    """A failure worth retrying soon (overload, a dropped connection)."""


class RateLimited(TransientError):
    """The service asked us to slow down, and to wait ``retry_after`` seconds when it said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentEmbedError(Exception):
    """The text at ``index`` of the batch can never be embedded; retrying the same text fails again."""

    def __init__(self, index: int | None, reason: str) -> None:
        where = "a text of the batch" if index is None else f"text {index} of the batch"
        super().__init__(f"{where} cannot be embedded: {reason}")
        self.index = index


class BadOutput(PermanentEmbedError):
    """The embedder answered with the wrong number of vectors, the wrong width, or non-finite values:
    the whole batch fails (splitting it would only repeat the same answer)."""

    def __init__(self, reason: str) -> None:
        super().__init__(None, reason)


class FatalEmbedError(SparkyError):
    """The embedder cannot work at all (a bad key, an unknown model): the run stops, finished work kept."""


def describe(error: BaseException) -> str:
    """``Type: message``, short enough to keep in the progress file."""
    return f"{type(error).__name__}: {error}"[:500]


def classify_common(error: BaseException) -> Failure:
    """The classification every embedder shares: our own error types, timeouts and dropped connections,
    HTTP status codes (429 rate limited, 5xx transient, 400/401/403/404 fatal or permanent) when the error
    carries one, SQLite 'locked'/'busy'. Anything else is permanent for the batch (the pipeline bisects it)."""
    reason = describe(error)
    if isinstance(error, FatalEmbedError):
        return Failure("fatal", reason)
    if isinstance(error, RateLimited):
        return Failure("rate_limited", reason, delay=error.retry_after)
    if isinstance(error, (TransientError, TimeoutError, ConnectionError)):
        return Failure("transient", reason)
    if isinstance(error, PermanentEmbedError):
        return Failure("permanent", reason, index=error.index)
    if isinstance(error, sqlite3.OperationalError) and any(w in str(error).lower() for w in ("locked", "busy")):
        return Failure("transient", reason)
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        if status == 429:
            return Failure("rate_limited", reason, delay=getattr(error, "retry_after", None))
        if status >= 500 or status == 408:
            return Failure("transient", reason)
        if status in (401, 403, 404):
            return Failure("fatal", reason)
    return Failure("permanent", reason)


def check_output(vectors: object, count: int, dimensions: int) -> np.ndarray:
    """The embedder's output as float32, or BadOutput when it has the wrong count or width or is not
    finite: a message with missing chunks must never be stored as complete."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != count:
        raise BadOutput(f"the embedder returned {array.shape[0] if array.ndim else 0} vectors "
                        f"for {count} texts")
    if array.shape[1] != dimensions:
        raise BadOutput(f"the embedder returned vectors of {array.shape[1]} dimensions, "
                        f"not {dimensions}")
    if not np.isfinite(array).all():
        raise BadOutput("the embedder returned vectors that are not finite (NaN or infinity)")
    return array
