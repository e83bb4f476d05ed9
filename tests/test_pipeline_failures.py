"""How the pipeline acts on each class of embedder failure, on a checked output, and on a stop (real model)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from conftest import read_progress, store_health, store_keys
from sparky.cli.display import Display
from sparky.embedders import RateLimited, RetryPolicy, get_embedder
from sparky.embedders.testing import FaultyEmbedder
from sparky.errors import SparkyError, StoreError
from sparky.pipeline import ingest as ingest_module
from sparky.pipeline.ingest import Ingestion, Interrupted, StopRequest
from sparky.pipeline.scan import scan_export
from sparky.readers import ExportReader
from sparky.stores.sqlite import SQLiteStore

FAST = RetryPolicy(base_delay=0.0, max_delay=0.0)


class Wrapped:
    """An embedder whose ``embed`` runs ``answer(texts, real_embed)``: to return wrong outputs on purpose."""

    def __init__(self, answer) -> None:
        self.inner = get_embedder("minilm")
        self.answer = answer
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return self.answer(texts, self.inner.embed)


def run(tmp_path: Path, export: Path, embedder, batch_chunks: int = 16, stop: StopRequest | None = None,
        retry: RetryPolicy = FAST):
    store = SQLiteStore(tmp_path / "m.db")
    display = Display(Console(file=io.StringIO()), quiet=True)
    try:
        return Ingestion(export, tmp_path / "p.json", store, embedder, display, batch_chunks=batch_chunks,
                         stop=stop, retry=retry).run()
    finally:
        store.close()


def all_keys(export: Path) -> set[str]:
    return set(scan_export(ExportReader(export)).all_keys())


def poisoned_text(export: Path) -> str:
    return next(m.text for c in ExportReader(export).conversations() for m in c.messages if "docker" in m.text.lower())


@pytest.mark.parametrize("wrong", ["too_few", "too_wide", "not_finite"])
def test_a_wrong_output_fails_its_batch_and_nothing_of_it_is_stored(tmp_path, sample_export, wrong):
    marker = poisoned_text(sample_export)[:20]

    def answer(texts, embed):
        vectors = embed(texts)
        if not any(marker in text for text in texts):
            return vectors
        if wrong == "too_few":
            return vectors[:-1]
        if wrong == "too_wide":
            return np.hstack([vectors, vectors[:, :1]])
        vectors[0, 0] = np.nan
        return vectors

    embedder = Wrapped(answer)
    result = run(tmp_path, sample_export, embedder)
    failed = set(read_progress(tmp_path / "p.json")["failed_messages"])
    stored = set(store_keys(tmp_path / "m.db"))
    assert failed and not failed & stored and stored | failed == all_keys(sample_export)
    assert result.failed == len(failed) and not result.complete
    assert store_health(tmp_path / "m.db")["messages_without_chunks"] == 0
    reasons = set(read_progress(tmp_path / "p.json")["failed_messages"].values())
    assert all("BadOutput" in reason for reason in reasons), reasons


def test_a_permanent_error_naming_its_text_fails_that_message_only_without_splitting_the_batch(
        tmp_path, sample_export):
    marker = poisoned_text(sample_export)[:20]
    embedder = FaultyEmbedder(get_embedder("minilm"), f"permanent={marker}")
    result = run(tmp_path, sample_export, embedder, batch_chunks=10_000)  # the whole sample in one batch
    failed = read_progress(tmp_path / "p.json")["failed_messages"]
    assert len(failed) == result.failed == 1
    assert embedder.calls == 2  # the batch, then the batch without the message it named: no bisection
    assert set(store_keys(tmp_path / "m.db")) == all_keys(sample_export) - set(failed)


class RateLimitedFirst:
    """429 on the first ``count`` calls (asking for no wait), then the real model."""

    def __init__(self, count: int) -> None:
        self.inner = get_embedder("minilm")
        self.left = count

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.left:
            self.left -= 1
            raise RateLimited("429 Too Many Requests", retry_after=0.0)
        return self.inner.embed(texts)


def test_a_run_that_is_merely_rate_limited_is_not_ended(tmp_path, sample_export):
    """Ten 429s in a row (more than three batches' worth of ordinary retries) only slow the run down."""
    result = run(tmp_path, sample_export, RateLimitedFirst(10))
    assert result.complete and result.failed == 0
    assert set(store_keys(tmp_path / "m.db")) == all_keys(sample_export)


def test_an_embedder_that_stays_down_ends_the_run_with_its_work_kept(tmp_path, sample_export):
    embedder = FaultyEmbedder(get_embedder("minilm"), "transient=1.0")
    with pytest.raises(ingest_module.EmbedderDown):
        run(tmp_path, sample_export, embedder)
    assert embedder.calls == 3 * FAST.attempts  # three batches, each tried `attempts` times, then it stops
    assert read_progress(tmp_path / "p.json")["failed_messages"]


def test_a_fatal_error_stops_at_once_keeping_every_finished_batch(tmp_path, sample_export):
    texts = [m.text for c in ExportReader(sample_export).conversations() for m in c.messages]
    marker = texts[len(texts) // 2][:20]
    embedder = FaultyEmbedder(get_embedder("minilm"), f"fatal={marker}")
    with pytest.raises(SparkyError, match="the embedder cannot work: FatalEmbedError"):
        run(tmp_path, sample_export, embedder, batch_chunks=8)
    stored = set(store_keys(tmp_path / "m.db"))
    assert stored and stored < all_keys(sample_export)
    assert embedder.injected == 1  # never retried
    assert set(read_progress(tmp_path / "p.json")["processed_messages"]) == stored


def test_a_stop_asked_before_the_run_starts_stores_nothing(tmp_path, sample_export):
    stop = StopRequest()
    stop.event.set()
    with pytest.raises(Interrupted):
        run(tmp_path, sample_export, get_embedder("minilm"), stop=stop)
    assert store_keys(tmp_path / "m.db") == []


def test_a_stop_during_the_last_batch_still_ends_as_interrupted(tmp_path, sample_export):
    """The last batch completes the export, but a stop was asked for: the run says interrupted (exit 130)."""
    stop = StopRequest()

    def answer(texts, embed):
        stop.event.set()  # as the signal handler does, while the one batch embeds
        return embed(texts)

    result = run(tmp_path, sample_export, Wrapped(answer), batch_chunks=10_000, stop=stop)
    assert result.interrupted and not result.complete
    assert set(store_keys(tmp_path / "m.db")) == all_keys(sample_export)  # the batch in flight was finished


def test_on_a_full_disk_the_store_error_is_reported_not_the_progress_file_error(tmp_path, sample_export,
                                                                               monkeypatch):
    monkeypatch.setenv("SPARKY_SQLITE_MAX_PAGES", "40")
    monkeypatch.setattr("sparky.crashpoints.sqlite_page_limit", lambda: 40)
    monkeypatch.setattr("sparky.stores.sqlite.store.sqlite_page_limit", lambda: 40)
    real_rewrite = ingest_module.ProgressCheckpoint.rewrite
    saves = []

    def rewrite_then_fail(self, *args, **kwargs):
        saves.append(1)
        if len(saves) > 1:  # the final checkpoint finds the disk full too
            raise SparkyError("p.json: cannot write the progress file (No space left on device)")
        return real_rewrite(self, *args, **kwargs)

    monkeypatch.setattr(ingest_module.ProgressCheckpoint, "rewrite", rewrite_then_fail)
    with pytest.raises(StoreError, match="disk is full|database or disk is full"):
        run(tmp_path, sample_export, get_embedder("minilm"), batch_chunks=8)
    assert len(saves) >= 2


class TwoAtOnce:
    """An embedder that takes two batches in flight and proves it: its first call waits until a second call
    has started (the wait's timeout only guards against a hang), which can only happen with two in flight."""

    concurrency = 2

    def __init__(self) -> None:
        import threading

        self.inner = get_embedder("minilm")
        self.second_started = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def embed(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            assert self.second_started.wait(timeout=300), "no second batch was sent while the first embedded"
        else:
            self.second_started.set()
        with self.lock:  # the real model runs one batch at a time
            return self.inner.embed(texts)


def test_several_batches_are_in_flight_and_committed_as_they_arrive(tmp_path, sample_export):
    embedder = TwoAtOnce()
    result = run(tmp_path, sample_export, embedder, batch_chunks=16)
    assert result.complete and embedder.second_started.is_set() and embedder.calls > 2
    assert set(store_keys(tmp_path / "m.db")) == all_keys(sample_export)
    assert store_health(tmp_path / "m.db")["messages_without_chunks"] == 0
