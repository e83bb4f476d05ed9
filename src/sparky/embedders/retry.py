"""The one retry layer: exponential backoff with full jitter, honouring the delay a service asks for,
sleeping in a way a stop request interrupts at once."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Callable, TypeVar

from .base import Failure

T = TypeVar("T")


class RetryStopped(Exception):
    """A stop was requested while waiting to retry; the work is left for the next run."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. Rate limits get their own, larger budget: a run that is merely
    being slowed down must not end like one whose embedder is broken."""

    attempts: int = 3  # tries for a transient failure (the original tool's 3 is the floor)
    rate_limit_attempts: int = 12  # tries while the service keeps answering "too many requests"
    base_delay: float = 0.5  # seconds; the n-th retry waits uniform [0, base_delay * 2**n)
    max_delay: float = 60.0  # no single wait is longer, whatever a service asks

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.rate_limit_attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays cannot be negative")

    def delay(self, failure: Failure, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry + 1``: the delay the service asked for when it said
        one, else full jitter; both capped at ``max_delay``."""
        if failure.delay is not None:
            return min(max(failure.delay, 0.0), self.max_delay)
        return rng() * min(self.max_delay, self.base_delay * 2**retry)

    def allows(self, failure: Failure, tries: int) -> bool:
        """Whether a call that has failed ``tries`` times, the last time with ``failure``, is tried again."""
        if failure.kind == "transient":
            return tries < self.attempts
        if failure.kind == "rate_limited":
            return tries < self.rate_limit_attempts
        return False


def call_with_retries(fn: Callable[[], T], classify: Callable[[BaseException], Failure],
                      policy: RetryPolicy = RetryPolicy(), stop: threading.Event | None = None,
                      rng: Callable[[], float] = random.random,
                      on_wait: Callable[[Failure, float], None] = lambda failure, seconds: None) -> T:
    """Call ``fn`` until it succeeds or its failure may not be retried (then that error is raised unchanged).

    Waits run on ``stop`` (an Event): setting it ends a wait at once with RetryStopped. ``on_wait`` hears of
    every wait before it starts (to tell the user a rate limit is being honoured)."""
    stop = stop or threading.Event()
    tries = 0
    while True:
        try:
            return fn()
        except Exception as error:
            tries += 1
            failure = classify(error)
            if not policy.allows(failure, tries):
                raise
            seconds = policy.delay(failure, tries - 1, rng)
            on_wait(failure, seconds)
            if stop.wait(seconds):
                raise RetryStopped() from error
