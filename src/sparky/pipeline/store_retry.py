"""Retrying a store call that failed transiently: a busy SQLite file, a lost PostgreSQL connection, a server
restarting or failing over. The store has its own budget, apart from the embedder's (``--retries``): a
managed database's restart or failover takes seconds to tens of seconds, and a run that waits it out keeps
its place instead of ending. Waits are full-jitter exponential backoff, at most ``max_delay`` each (about
a minute in all at worst); a stop request ends a wait at once."""

from __future__ import annotations

import threading
from typing import Callable, TypeVar

from ..embedders import Failure, RetryPolicy, call_with_retries, describe
from ..errors import TransientStoreError

T = TypeVar("T")

STORE_RETRY = RetryPolicy(attempts=10, rate_limit_attempts=1, base_delay=0.5, max_delay=10.0)


def store_failure(error: BaseException) -> Failure:
    """Only a busy or briefly unreachable store is worth retrying; anything else stops the run."""
    kind = "transient" if isinstance(error, TransientStoreError) else "fatal"
    return Failure(kind, describe(error))


def with_store_retries(call: Callable[[], T], policy: RetryPolicy = STORE_RETRY,
                       stop: threading.Event | None = None) -> T:
    """``call()``, retried under ``policy`` while the store fails transiently; other errors are raised."""
    return call_with_retries(call, store_failure, policy, stop)
