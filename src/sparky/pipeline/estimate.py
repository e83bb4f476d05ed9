"""How long the rest of an ingestion will take.

From the sessions recorded in the progress file: messages per second of actual work (each session's
``processed`` over its ``seconds``, so pauses between sessions do not count), as a range from the
slowest to the fastest session, never narrower than ±15% of the overall rate. Before any session has
stored anything, a short calibration embeds a sample of the export's own not-yet-stored messages with
the local embedder. For an API embedder the tokens still to send are counted too (exactly, with
cl100k_base, for OpenAI's own models; an upper-bound estimate for others) and priced at the model's list
price where one is known (api.openai.com).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

from .chunking import chunk_messages
from ..embedders import DEFAULT_EMBEDDER, Embedder, embedder_for_model, get_embedder
from ..embedders.openai_tokens import recorded_token_counter
from ..embedders.pricing import recorded_cost
from ..errors import InputError
from ..readers import ExportReader
from .select import Selector
from ..stores import Space, Store
from ..words import plural

MIN_SPREAD = 0.15
CALIBRATION_SAMPLE = 64
CALIBRATION_WARMUP = 8
CALIBRATION_RANGE = (0.7, 1.0)  # the pipeline also reads, chunks and writes: at most the embedding rate
REEMBED_RANGE = (0.9, 1.0)  # a re-embedding only reads and writes: a few percent over the bare encode
SESSION_HOURS = (1, 2)


@dataclass
class Estimate:
    """The remaining work, the throughput it is based on, and what that means in time and sessions."""

    remaining_messages: int
    basis: str = ""  # "sessions" or "calibration"; empty when no time could be estimated
    measured_sessions: int = 0
    measured_messages: int = 0
    measured_seconds: float = 0.0
    rate_low: float | None = None  # messages per second
    rate_high: float | None = None
    seconds_low: float | None = None
    seconds_high: float | None = None
    sessions_low: int | None = None
    sessions_high: int | None = None
    api_tokens: int | None = None
    api_tokens_exact: bool = False
    api_cost: float | None = None  # dollars at the list price; None when unknown (another host or model)
    note: str = ""

    def basis_text(self) -> str:
        """Where the throughput comes from, in words."""
        if self.basis == "calibration":
            return (f"calibration on this machine: embedded {self.measured_messages:,} of the export's messages "
                    f"in {self.measured_seconds:.1f}s (no session has stored anything yet)")
        return (f"{plural(self.measured_sessions, 'session')}: {plural(self.measured_messages, 'message')} in "
                f"{format_duration(self.measured_seconds)} of work")


@dataclass
class PassEstimate:
    """The time left of a re-embedding pass (``progressive``'s pass 2), by calibration on its next chunks."""

    remaining_chunks: int
    measured_chunks: int
    measured_seconds: float
    seconds_low: float
    seconds_high: float


@dataclass
class Remaining:
    """What a pass over the export found still to store."""

    messages: int
    chars: int
    sample: list[tuple[str, str]]  # (key, text), a uniform random sample
    tokens: int = 0  # by the counter the survey was given (0 without one)


def working_sessions(sessions: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(processed, seconds) of the sessions that stored something in a measurable time."""
    measured = []
    for session in sessions:
        processed, seconds = session.get("processed") or 0, session.get("seconds") or 0.0
        if processed > 0 and seconds > 0:
            measured.append((int(processed), float(seconds)))
    return measured


def plan(estimate: Estimate, low: float, high: float) -> Estimate:
    """Fill in the time and the 1–2 hour sessions that a throughput range means for the remaining work."""
    estimate.rate_low, estimate.rate_high = low, high
    estimate.seconds_low = estimate.remaining_messages / high
    estimate.seconds_high = estimate.remaining_messages / low
    estimate.sessions_low = max(1, math.ceil(estimate.seconds_low / (SESSION_HOURS[1] * 3600)))
    estimate.sessions_high = max(1, math.ceil(estimate.seconds_high / (SESSION_HOURS[0] * 3600)))
    return estimate


def from_sessions(sessions: list[dict[str, Any]], remaining: int) -> Estimate | None:
    """The estimate from the recorded sessions, or None when none of them stored anything."""
    measured = working_sessions(sessions)
    if not measured:
        return None
    processed = sum(count for count, _ in measured)
    seconds = sum(spent for _, spent in measured)
    overall = processed / seconds
    rates = [count / spent for count, spent in measured]
    low = min(min(rates), overall * (1 - MIN_SPREAD))
    high = max(max(rates), overall * (1 + MIN_SPREAD))
    estimate = Estimate(remaining, "sessions", len(measured), processed, seconds)
    return plan(estimate, low, high)


def survey_remaining(reader: ExportReader, done: set[str], sample_size: int = CALIBRATION_SAMPLE,
                     count_tokens: Callable[[list[str]], list[int]] | None = None) -> Remaining:
    """One streaming pass: the meaningful messages not in ``done``, their characters (and tokens, with
    ``count_tokens``), and a sample."""
    selector = Selector()
    rng = random.Random(0)
    remaining = Remaining(0, 0, [])
    for conversation in reader.conversations():
        for message in selector.select(conversation):
            key = message.key(conversation.source)
            if key in done:
                continue
            remaining.messages += 1
            remaining.chars += len(message.text)
            if count_tokens is not None:
                remaining.tokens += count_tokens([message.text])[0]
            if len(remaining.sample) < sample_size:
                remaining.sample.append((key, message.text))
            elif (slot := rng.randrange(remaining.messages)) < sample_size:
                remaining.sample[slot] = (key, message.text)
    return remaining


def calibrate(sample: list[tuple[str, str]], embedder: Embedder) -> float:
    """Seconds to embed the sample's chunks, after a warm-up call that loads the model."""
    texts = [chunk.text for chunk in chunk_messages(sample, embedder)]
    embedder.embed(texts[:CALIBRATION_WARMUP])
    started = time.perf_counter()
    embedder.embed(texts)
    return time.perf_counter() - started


def is_api_model(model: str | None) -> bool:
    """Whether a recorded embedding model is sent to an API rather than run on this machine."""
    return bool(model) and embedder_for_model(model) is None


def estimate_time(
    progress: dict[str, Any] | None,
    open_reader: Callable[[], ExportReader] | None,
    embedder_factory: Callable[[str], Embedder] = get_embedder,
) -> Estimate:
    """The estimate for a progress document (None before any run), reading the export only when needed.

    ``open_reader`` opens the export (for the API tokens and the calibration); ``embedder_factory`` builds
    the local embedder to calibrate with.
    """
    remaining = _remaining_from(progress)
    if remaining == 0:
        return Estimate(0, note="Nothing left to ingest.")
    model = progress["embedder"].get("model") if progress else None
    api = is_api_model(model)
    estimate = from_sessions(progress["sessions"], remaining) if progress and remaining else None
    if estimate is not None and not api:
        return estimate
    fallback = estimate or Estimate(remaining or 0)
    if open_reader is None:
        fallback.note = "Name the export with --export to estimate the rest."
        return fallback
    counter, exact = recorded_token_counter(model) if api and model else (None, False)
    try:
        survey = survey_remaining(open_reader(), set(progress["processed_messages"]) if progress else set(),
                                  count_tokens=counter)
    except InputError as exc:
        fallback.note = f"No estimate from the export: {exc}"
        return fallback
    remaining = survey.messages if remaining is None else remaining
    fallback.remaining_messages = remaining
    if api:
        fallback.api_tokens, fallback.api_tokens_exact = survey.tokens, exact
        fallback.api_cost = recorded_cost(model or "", survey.tokens)
        if estimate is None:
            fallback.note = "The time is measured during the first session (an API embedder is not calibrated)."
        return fallback
    if not survey.sample:
        return Estimate(0, note="Nothing left to ingest.")
    return _calibrated(remaining, survey.sample, model, embedder_factory)


def _remaining_from(progress: dict[str, Any] | None) -> int | None:
    """Messages still to store by the file's counts; None before the first scan recorded them."""
    if not progress or not progress["stats"]["total_messages"]:
        return None
    stats = progress["stats"]
    return max(stats["total_messages"] - stats["processed_messages"], 0)


def _calibrated(
    remaining: int, sample: list[tuple[str, str]], model: str | None, embedder_factory: Callable[[str], Embedder]
) -> Estimate:
    seconds = calibrate(sample, embedder_factory(embedder_for_model(model or "") or DEFAULT_EMBEDDER))
    rate = len(sample) / seconds
    estimate = Estimate(remaining, "calibration", 0, len(sample), seconds)
    return plan(estimate, rate * CALIBRATION_RANGE[0], rate * CALIBRATION_RANGE[1])


def estimate_pass(store: Store, space: Space, embedder_factory: Callable[[str], Embedder] = get_embedder
                  ) -> PassEstimate | None:
    """The time left to give every chunk a vector in ``space`` (a local model's): its next chunks embedded once
    as a calibration; None when none is missing or no local model runs the space."""
    name = embedder_for_model(space.model)
    remaining = store.stats()["chunks"] - store.space_vectors().get(space, 0)
    if name is None or remaining <= 0:
        return None
    texts = [text for _, text in store.chunks_missing_vectors(space, 0, CALIBRATION_SAMPLE)]
    embedder = embedder_factory(name)
    embedder.embed(texts[:CALIBRATION_WARMUP])
    started = time.perf_counter()
    embedder.embed(texts)
    seconds = max(time.perf_counter() - started, 1e-6)
    rate = len(texts) / seconds
    return PassEstimate(remaining, len(texts), seconds, remaining / (rate * REEMBED_RANGE[1]),
                        remaining / (rate * REEMBED_RANGE[0]))


def format_duration(seconds: float) -> str:
    """"45s", "12m", "3h 05m"."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h {minutes % 60:02d}m"
