"""Staying under a server's rate limits: the delay a 429 asks for, and a gate every request passes.

The gate does not retry anything (the pipeline's ``call_with_retries`` is the one retry layer); it only
decides when a request may be sent:

- at most ``limit`` requests in flight, and one until the first answer (it tells whether the server
  sends its budgets, which the next requests then respect). The limit starts at the embedder's
  ``concurrency``, halves on a 429 (once per ``DECREASE_EVERY`` seconds, so one burst of 429s counts
  once) and grows by one after ``QUIET_PERIOD`` seconds without a 429, back up to ``concurrency``;
- nothing is sent before the time a 429 asked to wait (``retry-after-ms`` / ``retry-after``);
- where the server sends ``x-ratelimit-limit-*`` / ``x-ratelimit-remaining-*`` / ``x-ratelimit-reset-*``
  (OpenAI does, on every answer), a model of its token and request budgets, refilled continuously,
  holds a request back until the budget has room for it, so the next 429 is avoided rather than
  answered.

Waits poll a stop event: a stop asked for while a request waits here ends the wait with ``RetryStopped``
and nothing is sent.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable, Mapping

from .retry import RetryStopped

DECREASE_EVERY = 2.0  # seconds: 429s closer together than this lower the limit once
QUIET_PERIOD = 10.0  # seconds without a 429 before the limit grows by one
POLL = 0.05  # seconds between looks at the stop event while waiting


def retry_after(headers: Mapping[str, str] | None, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
                ) -> float | None:
    """Seconds a response asks to wait: ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(float(value) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - now()).total_seconds(), 0.0)


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


@dataclass
class Budget:
    """A model of one of the server's budgets (tokens or requests): ``level`` at ``stamp``, refilled at
    ``rate`` per second up to ``capacity``."""

    capacity: float
    rate: float
    level: float
    stamp: float

    def available(self, now: float) -> float:
        return min(self.capacity, self.level + self.rate * (now - self.stamp))

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits (a request larger than the whole budget waits for a full one)."""
        needed = min(amount, self.capacity) - self.available(now)
        return 0.0 if needed <= 0 or self.rate <= 0 else needed / self.rate

    def take(self, amount: float, now: float) -> None:
        self.level = self.available(now) - amount
        self.stamp = now


def budget_from_headers(headers: Mapping[str, str], kind: str, now: float) -> Budget | None:
    """The ``tokens`` or ``requests`` budget a response's ``x-ratelimit-*`` headers describe, if they do."""
    limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
    remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
    if limit is None or remaining is None or limit <= 0:
        return None
    # The limits are per minute and refill continuously. (The reset header says when the budget is full
    # again; a server that enforces its limit over shorter periods, as OpenAI may, makes it misleading.)
    return Budget(capacity=limit, rate=limit / 60.0, level=remaining, stamp=now)


@dataclass
class _Ticket:
    seq: int
    tokens: int
    sent: float


@dataclass
class GateStats:
    """What the gate did, for a benchmark or a test."""

    sent: int = 0
    rate_limited: int = 0  # 429 answers
    peak_in_flight: int = 0
    paced_seconds: float = 0.0  # time requests waited for the budget model or a retry-after
    lowest_limit: int = 0
    limit_history: list[tuple[float, int]] = field(default_factory=list)


class Gate:
    """Admits requests under an adaptive in-flight limit and the server's rate budgets (see the module)."""

    def __init__(self, concurrency: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.maximum = max(1, int(concurrency))
        self.limit = self.maximum
        self.clock = clock
        self.in_flight: dict[int, _Ticket] = {}
        self.blocked_until = 0.0
        self.budgets: dict[str, Budget] = {}
        self.last_decrease = -math.inf
        self.last_429 = -math.inf
        self.last_increase = clock()
        self.stats = GateStats(lowest_limit=self.limit)
        self._seq = 0
        self._learned = 0  # the last request whose answer's headers were read
        self._answered = False  # until a first answer tells whether the server sends its budgets, one at a time
        self._cond = threading.Condition()

    def enter(self, tokens: int, stop: threading.Event | None = None) -> _Ticket:
        """Block until a request of ``tokens`` tokens may be sent; RetryStopped when ``stop`` is set first."""
        started = self.clock()
        with self._cond:
            while True:
                if stop is not None and stop.is_set():
                    raise RetryStopped()
                now = self.clock()
                self._maybe_increase(now)
                wait = self._wait(tokens, now)
                if wait <= 0:
                    break
                self._cond.wait(timeout=min(wait, POLL))
            self._seq += 1
            ticket = _Ticket(self._seq, tokens, now)
            self.in_flight[ticket.seq] = ticket
            for kind, amount in (("tokens", tokens), ("requests", 1)):
                if kind in self.budgets:
                    self.budgets[kind].take(amount, now)
            self.stats.sent += 1
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, len(self.in_flight))
            self.stats.paced_seconds += now - started
            return ticket

    def _wait(self, tokens: int, now: float) -> float:
        """Seconds before a request may go (POLL when it waits for another to finish)."""
        if len(self.in_flight) >= (self.limit if self._answered else 1):
            return POLL
        if now < self.blocked_until:
            return self.blocked_until - now
        waits = [budget.wait_for(amount, now) for kind, amount in (("tokens", tokens), ("requests", 1))
                 if (budget := self.budgets.get(kind)) is not None]
        return max(waits, default=0.0)

    def leave(self, ticket: _Ticket, headers: Mapping[str, str] | None, rate_limited: bool = False,
              delay: float | None = None) -> None:
        """A request ended: learn from its answer's headers; on a 429 lower the limit and hold new requests."""
        with self._cond:
            now = self.clock()
            self.in_flight.pop(ticket.seq, None)
            self._answered = True
            if headers:
                self._learn(ticket, headers, now)
            if rate_limited:
                self.stats.rate_limited += 1
                self.last_429 = now
                if delay is not None:
                    self.blocked_until = max(self.blocked_until, now + delay)
                if now - self.last_decrease >= DECREASE_EVERY and self.limit > 1:
                    self.limit = max(1, self.limit // 2)
                    self.last_decrease = now
                    self.stats.lowest_limit = min(self.stats.lowest_limit, self.limit)
                    self.stats.limit_history.append((now, self.limit))
                self.last_increase = now
            self._cond.notify_all()

    def _learn(self, ticket: _Ticket, headers: Mapping[str, str], now: float) -> None:
        if ticket.seq < self._learned:  # a later request's answer already told more
            return
        self._learned = ticket.seq
        later = [t for t in self.in_flight.values() if t.seq > ticket.seq]  # sent after it: maybe not yet counted
        for kind in ("tokens", "requests"):
            budget = budget_from_headers(headers, kind, now)
            if budget is None:
                continue
            budget.level -= sum(t.tokens if kind == "tokens" else 1 for t in later)
            self.budgets[kind] = budget

    def _maybe_increase(self, now: float) -> None:
        if self.limit < self.maximum and now - max(self.last_429, self.last_increase) >= QUIET_PERIOD:
            self.limit += 1
            self.last_increase = now
            self.stats.limit_history.append((now, self.limit))
