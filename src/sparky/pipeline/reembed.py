"""Re-embedding: another model's vectors for the chunk texts a store holds, without the export, resumable.

The run records the embedding space (model + dimensions), then reads the chunks that have no vector in it,
a batch at a time in chunk id order, embeds them and commits each batch in one transaction
(``Store.put_vectors``: a chunk that holds a vector in the space keeps it). A kill at any moment loses only
the batches in flight; the next run asks the store again what is missing, so no vector is written twice
and a complete space is never embedded again. With ``replace`` the space becomes the primary one (what
ingest and search use) once every chunk has its vector. Identical chunk texts within a batch are embedded
once. Stops, retries and failures behave as in ingestion (``ingest``): the first Ctrl+C stops after the
batches in flight, transient failures are retried under the same ``RetryPolicy``, a permanent one fails
only its chunk (left for the next run), a fatal one stops the run with every committed batch kept.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..crashpoints import crashpoint
from ..embedders import BadOutput, Embedder, FatalEmbedError, RetryPolicy, RetryStopped, call_with_retries, \
    check_output, describe
from ..errors import StoreError
from ..stores import Space, Store
from .ingest import MAX_FAILED_BATCHES_IN_A_ROW, EmbedderDown, Interrupted, StopRequest, attach_stop
from .store_retry import STORE_RETRY, with_store_retries

_PAGE = 4096  # chunk texts read per query when listing what a run would send


class Display(Protocol):
    """What a re-embedding tells the person watching (``sparky.cli.reembed.ReembedDisplay`` prints it)."""

    def start(self, space: Space, chunks: int, held: int) -> None: ...
    def batch_stored(self, stored: int, failed: int) -> None: ...
    def finish(self) -> None: ...
    def stopping(self, immediate: bool) -> None: ...


@dataclass
class ReembedResult:
    """What a run did and where the space stands after it (read from the store)."""

    space: Space
    chunks: int  # chunks the store holds (every version's)
    vectors: int  # vectors the space holds now
    written: int  # vectors this run wrote
    embedded: int  # texts this run sent to the embedder (fewer than written when texts repeat)
    failed: int  # chunks this run could not embed (tried again by the next run)
    primary: bool  # the space is the store's primary one now
    interrupted: bool = False

    @property
    def complete(self) -> bool:
        return self.vectors == self.chunks


@dataclass
class _Outcome:
    """What came back from the embedder for one batch: a vector per distinct text, or why not."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # text -> error
    embedded: int = 0
    transient_failure: bool = False


def held_space(store: Store, model: str) -> Space | None:
    """The space of ``model`` the store holds (a model is held at one width only), else None."""
    return next((space for space in store.space_vectors() if space.model == model), None)


def texts_to_reembed(store: Store, model: str) -> list[str]:
    """The chunk texts a re-embedding with ``model`` would send: those without a vector in its space, every
    chunk's when the store holds none; known without loading the model or asking a server its width."""
    space = held_space(store, model) or Space(model, 0)  # a space not held lacks every chunk's vector
    texts: list[str] = []
    after = 0
    while page := store.chunks_missing_vectors(space, after, _PAGE):
        texts += [text for _, text in page]
        after = page[-1][0]
    return texts


class Reembedding:
    """One run adding (or completing) the space of ``embedder`` in ``store``."""

    def __init__(self, store: Store, embedder: Embedder, display: Display, batch_chunks: int = 256,
                 stop: StopRequest | None = None, retry: RetryPolicy = RetryPolicy(), replace: bool = False,
                 store_retry: RetryPolicy = STORE_RETRY) -> None:
        """``replace``: make the space the primary one once it is complete. ``retry`` is the embedder's retry
        policy, ``store_retry`` the store's."""
        self.store = store
        self.embedder = embedder
        self.display = display
        self.batch_chunks = batch_chunks
        self.stop = attach_stop(stop, display, embedder)
        self.retry = retry
        self.store_retry = store_retry
        self.replace = replace
        self.written = 0
        self.embedded = 0
        self.failed = 0
        self._failed_batches_in_a_row = 0

    def run(self) -> ReembedResult:
        """Embed every chunk the space lacks (under the store's ingester lock). Raises Interrupted when
        asked to stop before anything started; a stop during the run returns a result marked interrupted."""
        with self.store.lock():
            return self.stop.guard(self._run_locked)

    def _run_locked(self) -> ReembedResult:
        if "model" not in self.store.meta():
            raise StoreError(f"{self.store.url}: holds no messages yet; run `sparky ingest EXPORT` first")
        space = Space(self.embedder.model, int(self.embedder.dimensions))
        self.store.add_space(space.model, space.dimensions)
        chunks, held = self.store.stats()["chunks"], self.store.space_vectors()[space]
        if held < chunks:
            self.display.start(space, chunks, held)
            try:
                self._embed_missing(space)
            finally:
                self.display.finish()
        vectors, chunks = self.store.space_vectors()[space], self.store.stats()["chunks"]
        if self.replace and vectors == chunks and not self.stop.requested and not self._is_primary(space):
            self.store.set_primary(space)
        return ReembedResult(space, chunks, vectors, self.written, self.embedded, self.failed,
                             self._is_primary(space), self.stop.requested)

    def _is_primary(self, space: Space) -> bool:
        meta = self.store.meta()
        return (meta.get("model"), meta.get("dimensions")) == (space.model, str(space.dimensions))

    def _embed_missing(self, space: Space) -> None:
        """Read a batch while ``concurrency`` batches embed; commit each as it finishes, in the main thread."""
        workers = max(1, int(self.embedder.concurrency))
        after = 0
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reembed") as pool:
            in_flight: dict[Future, list[tuple[int, str]]] = {}
            try:
                while not self.stop.requested:
                    batch = with_store_retries(
                        lambda: self.store.chunks_missing_vectors(space, after, self.batch_chunks), self.store_retry)
                    if not batch:
                        break
                    after = batch[-1][0]  # a failed chunk is passed over: the next run tries it again
                    while len(in_flight) >= workers:
                        self._store_finished(space, in_flight)
                    if self.stop.requested:
                        break  # the batch just read is the first one the next run embeds
                    in_flight[pool.submit(self._embed_batch, batch)] = batch
                while in_flight:
                    self._store_finished(space, in_flight)
            except BaseException:
                self.stop.event.set()  # the run is failing: workers waiting to retry give up at once
                raise

    def _embed_batch(self, batch: list[tuple[int, str]]) -> _Outcome:
        """Runs in a worker thread: each distinct text of the batch embedded once, with retries."""
        outcome = _Outcome()
        if not self.stop.requested:
            self._embed_texts(list(dict.fromkeys(text for _, text in batch)), outcome)
        return outcome

    def _embed_texts(self, texts: list[str], outcome: _Outcome) -> None:
        """Embed ``texts`` with retries; on a permanent error fail the one text it names, else split."""
        try:
            vectors = call_with_retries(
                lambda: check_output(self.embedder.embed(texts), len(texts), self.embedder.dimensions),
                self.embedder.classify, self.retry, self.stop.event)
        except RetryStopped:
            return  # left for the next run: nothing recorded
        except Exception as error:
            failure = self.embedder.classify(error)
            if failure.kind == "fatal":
                raise FatalEmbedError(f"the embedder cannot work: {failure.reason}; every stored vector is kept")
            reason = describe(error)
            if failure.kind in ("transient", "rate_limited") or len(texts) == 1 or isinstance(error, BadOutput):
                outcome.transient_failure = outcome.transient_failure or failure.kind == "transient"
                outcome.failures.update(dict.fromkeys(texts, reason))
            elif failure.index is not None and 0 <= failure.index < len(texts):
                outcome.failures[texts[failure.index]] = reason
                self._embed_texts(texts[: failure.index] + texts[failure.index + 1 :], outcome)
            else:
                self._embed_texts(texts[: len(texts) // 2], outcome)
                self._embed_texts(texts[len(texts) // 2 :], outcome)
            return
        crashpoint("after_embed", len(texts))
        outcome.embedded += len(texts)
        outcome.vectors.update(zip(texts, vectors))

    def _store_finished(self, space: Space, in_flight: dict[Future, list[tuple[int, str]]]) -> None:
        """Wait for at least one batch in flight (staying responsive to signals) and commit what finished."""
        done: set[Future] = set()
        while not done:
            done, _ = wait(in_flight, timeout=0.2, return_when=FIRST_COMPLETED)
        for future in done:
            self._store_outcome(space, in_flight.pop(future), future.result())

    def _store_outcome(self, space: Space, batch: list[tuple[int, str]], outcome: _Outcome) -> None:
        embedded = [(chunk, outcome.vectors[text]) for chunk, text in batch if text in outcome.vectors]
        if embedded:
            ids = [chunk for chunk, _ in embedded]
            vectors = np.stack([vector for _, vector in embedded])
            self.written += with_store_retries(lambda: self.store.put_vectors(space, ids, vectors), self.store_retry)
        failed = sum(1 for _, text in batch if text in outcome.failures)
        self.embedded += outcome.embedded
        self.failed += failed
        self.display.batch_stored(stored=len(embedded), failed=failed)
        self._failed_batches_in_a_row = self._failed_batches_in_a_row + 1 if outcome.transient_failure else 0
        if self._failed_batches_in_a_row >= MAX_FAILED_BATCHES_IN_A_ROW:
            error = next(iter(outcome.failures.values()))
            raise EmbedderDown(f"the embedder keeps failing ({error}); every stored vector is kept, run the same "
                               "command later")
