"""The ingestion pipeline: export -> meaningful messages -> chunks -> vectors -> store, resumable.

A message counts as ingested when its row and all its chunks with their vectors are committed in one
transaction under its unique key. The progress file is reconciled with the store at start (the store
wins) and rewritten whole then, on Ctrl+C / SIGTERM and at the end; every few batches in between, a
checkpoint appends only what changed to its journal (see ``progress``), so it does not grow with what is done.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator, Protocol, TypeVar

import numpy as np

from .chunking import chunk_messages
from ..crashpoints import crashpoint, wake
from ..embedders import (BadOutput, Embedder, Failure, FatalEmbedError, RetryPolicy, RetryStopped, call_with_retries,
                         check_output, describe)
from ..errors import SparkyError

from ..locking import FileLock
from ..models import Conversation, Message
from .progress import ProgressCheckpoint, empty_progress, load_progress, reconcile, remove_stale_temp_files
from ..readers import ExportReader
from .scan import ExportScan, ScanInterrupted, scan_export
from .select import Selector
from .store_retry import STORE_RETRY, with_store_retries
from ..stores import MessageRecord, Store
from ..stores.records import StoredConversation
from .versions import VersionPlan, plan_versions

T = TypeVar("T")
CHECKPOINT_EVERY_BATCHES = 5
MAX_FAILED_BATCHES_IN_A_ROW = 3


class Display(Protocol):
    """What the pipeline tells the person watching (``sparky.cli.display.Display`` prints it)."""

    def scanning(self, path: Path | str) -> None: ...
    def start(self, total_conversations: int, done_conversations: int, total_messages: int,
              done_messages: int) -> None: ...
    def conversation(self, conversation: Conversation, found: int, skipped: int) -> None: ...
    def conversation_failed(self, conversation: Conversation, error: BaseException) -> None: ...
    def conversation_completed(self) -> None: ...
    def batch_stored(self, stored: int, failed: int) -> None: ...
    def finish(self) -> None: ...
    def stopping(self, immediate: bool) -> None: ...


class Interrupted(Exception):
    """The user asked the run to stop (Ctrl+C or SIGTERM); progress has been saved."""


class EmbedderDown(SparkyError):
    """Several batches in a row failed with transient errors even after retries."""

    exit_code = 1


@dataclass
class PendingMessage:
    """A message waiting for its vectors."""

    key: str
    conversation: Conversation
    message: Message
    chunk_texts: tuple[str, ...]


@dataclass
class BatchOutcome:
    """What came back from the embedder for one batch."""

    records: list[MessageRecord] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # key -> error
    transient_failure: bool = False  # the embedder stayed down through every retry (not merely rate limited)


@dataclass
class IngestResult:
    """The counts of a finished or interrupted run."""

    total_conversations: int
    total_messages: int
    stored_messages: int
    processed: int
    skipped: int
    failed: int
    failed_conversations: list[tuple[str, str]]
    skipped_conversations: list[tuple[str, str]]
    dropped: dict[str, int]
    interrupted: bool = False
    versions: dict[str, int] = field(default_factory=dict)  # new, changed, unchanged, superseded, pruned, absent
    previous_export: str | None = None  # the export the progress file followed before this one

    @property
    def complete(self) -> bool:
        return not self.interrupted and self.stored_messages == self.total_messages


class StopRequest:
    """First Ctrl+C / SIGTERM asks for a clean stop after the batch in flight; a second Ctrl+C stops at once.

    Install it as early as possible (the CLI does, before the model loads): a stop asked for at any
    moment then ends the run with 130 and nothing half-written. ``event`` wakes retry waits at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.display: Display | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def guard(self, work: Callable[[], T]) -> T:
        """Run ``work`` with the handlers installed (unless the caller installed them already); a stop asked
        for before it started (e.g. while the model loaded) raises Interrupted."""
        installed_here = not self.installed
        if installed_here:
            self.install()
        try:
            if self.requested:
                raise Interrupted()
            return work()
        finally:
            if installed_here:
                self.restore()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        immediate = self.requested and signum == signal.SIGINT
        if self.display is not None and (immediate or not self.requested):
            self.display.stopping(immediate)
        if immediate:
            os._exit(130)  # every commit is one transaction: nothing is half-written
        self.event.set()
        wake()


def attach_stop(stop: StopRequest | None, display: "Display", embedder: Embedder) -> StopRequest:
    """The run's stop request (a new one when None), telling ``display``; a network embedder's own waits
    (rate limits) end with it too."""
    stop = stop or StopRequest()
    stop.display = display
    bind_stop = getattr(embedder, "bind_stop", None)
    if bind_stop is not None:
        bind_stop(stop.event)
    return stop


class Ingestion:
    """One run of the pipeline over one export into one store."""

    def __init__(
        self,
        export: Path,
        progress_path: Path,
        store: Store,
        embedder: Embedder,
        display: Display,
        batch_chunks: int = 256,
        stop: StopRequest | None = None,
        retry: RetryPolicy = RetryPolicy(),
        reader: ExportReader | None = None,
        prune: Callable[[list[tuple[str, StoredConversation]]], bool] | None = None,
        store_retry: RetryPolicy = STORE_RETRY,
    ) -> None:
        """``prune``: remove the stored conversations the export no longer holds, when it returns True for
        them (it is shown them first); None keeps them. ``retry`` is the embedder's retry policy,
        ``store_retry`` the store's."""
        self.reader = reader or ExportReader(export)
        self.prune = prune
        self.progress_path = progress_path
        self.store = store
        self.embedder = embedder
        self.display = display
        self.batch_chunks = batch_chunks
        self.stop = attach_stop(stop, display, embedder)
        self.retry = retry
        self.store_retry = store_retry
        self.progress: dict = empty_progress()
        self.scan = ExportScan()
        self.stored: set[str] = set()
        self.failed_conversations: list[tuple[str, str]] = []
        self.completed_conversations: set[str] = set()
        self.session = {"processed": 0, "skipped": 0, "failed": 0}
        self.versions = VersionPlan()
        self.version_counts = dict.fromkeys(("new", "changed", "unchanged", "superseded", "pruned", "absent"), 0)
        self.previous_export: str | None = None
        self.checkpoints: ProgressCheckpoint | None = None
        self._new_keys: list[str] = []  # stored since the last checkpoint
        self._new_conversations: list[str] = []  # completed since the last checkpoint
        self._batches_since_checkpoint = 0
        self._failed_batches_in_a_row = 0
        self._writer: ThreadPoolExecutor | None = None  # the store's thread, while batches are embedded
        self._writing: tuple[Future, list[PendingMessage], BatchOutcome] | None = None  # being written
        self._started = time.monotonic()

    def run(self) -> IngestResult:
        """Ingest everything not yet stored. Raises Interrupted after saving when asked to stop."""
        with FileLock(self.progress_path, f"progress file {self.progress_path}"), self.store.lock():
            return self.stop.guard(self._run_locked)

    def _run_locked(self) -> IngestResult:
        remove_stale_temp_files(self.progress_path)
        fingerprint = self.reader.fingerprint()
        self.progress = self._load_matching_progress(fingerprint)
        self.store.ensure_schema(self.embedder.model, self.embedder.dimensions)
        self.display.scanning(self.reader.display_path)
        try:
            self.scan = scan_export(self.reader, should_stop=lambda: self.stop.requested)
        except ScanInterrupted:
            raise Interrupted() from None
        self.stored = self.store.known(self.scan.all_keys())
        self.session["skipped"] = len(self.stored)  # already stored by an earlier run: never embedded again
        self._plan_versions()
        self._begin_session(fingerprint)
        self.checkpoints = ProgressCheckpoint(self.progress_path, self.progress)
        self._full_checkpoint()
        try:
            if len(self.stored) < self.scan.total_messages:
                self._embed_missing()
        except Interrupted:
            pass
        except BaseException:
            self._final_checkpoint(first_error=True)
            raise
        self._final_checkpoint()
        return self._result(interrupted=self.stop.requested)

    def _plan_versions(self) -> None:
        """Count new, changed and unchanged messages; prune when asked; supersede what left complete branches."""
        self.versions = plan_versions(self.scan, self.store, self.stored)
        counts = self.version_counts
        counts.update(new=len(self.versions.new), changed=len(self.versions.changed),
                      unchanged=self.versions.unchanged, absent=len(self.versions.absent))
        if self.versions.absent and self.prune is not None and self.prune(self.versions.absent):
            self.store.delete_keys(self.store.keys_of_conversations(
                (source, conversation.conversation_id) for source, conversation in self.versions.absent))
            counts["pruned"], counts["absent"] = len(self.versions.absent), 0
        for conversation_id in list(self.versions.replaced):
            if all(key in self.stored for key in self.scan.conversation_keys[conversation_id]):
                self._supersede_replaced(conversation_id)

    def _supersede_replaced(self, conversation_id: str) -> None:
        """Mark the stored messages that left this conversation's branch superseded (its new ones are in)."""
        keys = self.versions.replaced.pop(conversation_id, None)
        if keys:
            self._finish_write()  # the store is used by one thread at a time
            self.version_counts["superseded"] += with_store_retries(lambda: self.store.supersede(keys), self.store_retry)

    def _final_checkpoint(self, first_error: bool = False) -> None:
        """Save the progress file at the end of a session. When the run is already failing, a failure to
        save (the same full disk, say) must not replace the first cause: the store holds the truth anyway."""
        self.progress["sessions"][-1]["ended"] = datetime.now().isoformat()
        try:
            self._full_checkpoint()
        except Exception:
            if not first_error:
                raise

    def _load_matching_progress(self, fingerprint: str) -> dict:
        progress = load_progress(self.progress_path) or empty_progress()
        recorded = progress.get("export", {}).get("fingerprint")
        if recorded and recorded != fingerprint:  # a newer export: the file follows it, the store keeps both
            self.previous_export = progress["export"].get("path")
            fresh = empty_progress()
            fresh["previous_exports"] = [*progress.get("previous_exports", []),
                                         {**progress["export"], "sessions": len(progress["sessions"])}]
            return fresh
        return progress

    def _begin_session(self, fingerprint: str) -> None:
        self.progress["export"] = {"path": os.path.abspath(self.reader.path), "fingerprint": fingerprint}
        self.progress["store"] = self.store.url  # the store's display URL: never a password
        self.progress["embedder"] = {"model": self.embedder.model, "dimensions": self.embedder.dimensions}
        self.progress["sessions"].append(
            {"started": datetime.now().isoformat(), "ended": None, "processed": 0, "seconds": 0.0}
        )

    def _reconcile(self) -> None:
        """Make the progress file say what the store holds: the store wins."""
        reconcile(self.progress, self.scan, self.stored, self.session, self.failed_conversations)
        self.progress["sessions"][-1]["processed"] = self.session["processed"]
        self.progress["sessions"][-1]["seconds"] = round(time.monotonic() - self._started, 3)
        self.progress["sessions"][-1]["versions"] = dict(self.version_counts)

    def _full_checkpoint(self) -> None:
        """At the session's start and end (a stop included): reconcile with the store, rewrite the whole file."""
        self._reconcile()
        self.checkpoints.rewrite()
        self._new_keys.clear()
        self._new_conversations.clear()
        self._batches_since_checkpoint = 0

    def _checkpoint(self) -> None:
        """Every few batches: append only what changed since the last checkpoint to the journal."""
        self.checkpoints.append(self._new_keys, self._new_conversations, self.failed_conversations, self.session,
                                round(time.monotonic() - self._started, 3))
        self._new_keys.clear()
        self._new_conversations.clear()
        self._batches_since_checkpoint = 0

    def _embed_missing(self) -> None:
        """Second pass: chunk and embed what the store lacks, one batch embedding while the next is built."""
        done_conversations = set(self.progress["processed_conversations"])
        self.completed_conversations = set(done_conversations)
        self.display.start(
            total_conversations=len(self.scan.conversation_keys),
            done_conversations=len(done_conversations),
            total_messages=self.scan.total_messages,
            done_messages=len(self.stored),
        )
        workers = max(1, int(self.embedder.concurrency))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed") as pool, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="store") as writer:
            # The next batch is parsed and chunked while ``workers`` batches embed and the last one embedded
            # is written; a batch is sent only when one of them is, so a kill never throws away more than
            # ``workers`` + 1 embedded batches.
            self._writer = writer
            in_flight: dict[Future, list[PendingMessage]] = {}
            try:
                for batch in self._batches(done_conversations):
                    while len(in_flight) >= workers:
                        self._store_finished(in_flight)
                    if self.stop.requested:
                        break  # the batch just built is dropped; it is the first one the next run embeds
                    in_flight[pool.submit(self._embed_batch, batch)] = batch
                while in_flight:
                    self._store_finished(in_flight)
                self._finish_write()
            except BaseException:
                self.stop.event.set()  # the run is failing: workers waiting to retry give up at once
                self._finish_write(failing=True)
                raise
            finally:
                self._writer = None
        self.display.finish()
        if self.stop.requested:
            raise Interrupted()

    def _batches(self, done_conversations: set[str]) -> Iterator[list[PendingMessage]]:
        """Batches of whole messages, about ``batch_chunks`` chunks each, across conversations."""
        batch: list[PendingMessage] = []
        chunk_count = 0
        selector = Selector()
        for conversation in self.reader.conversations():
            if self.stop.requested:
                return
            if conversation.id in done_conversations:
                continue
            try:
                pending = self._pending_messages(conversation, selector)
            except Exception as exc:  # one bad conversation must not stop the run
                self.failed_conversations.append((conversation.id, f"{type(exc).__name__}: {exc}"))
                self.display.conversation_failed(conversation, exc)
                continue
            for item in pending:
                batch.append(item)
                chunk_count += len(item.chunk_texts)
                if chunk_count >= self.batch_chunks:
                    yield batch
                    batch, chunk_count = [], 0
        if batch:
            yield batch

    def _pending_messages(self, conversation: Conversation, selector: Selector) -> list[PendingMessage]:
        messages = selector.select(conversation)
        fresh = [(m, m.key(conversation.source)) for m in messages]
        skipped = sum(1 for _, key in fresh if key in self.stored)
        fresh = [(m, key) for m, key in fresh if key not in self.stored]
        self.display.conversation(conversation, found=len(messages), skipped=skipped)
        if not fresh:
            self._mark_conversation_if_done(conversation.id)
            return []
        chunks = chunk_messages([(key, m.text) for m, key in fresh], self.embedder)
        texts_by_key: dict[str, list[str]] = {}
        for chunk in chunks:
            texts_by_key.setdefault(chunk.message_key, []).append(chunk.text)
        return [
            PendingMessage(key, conversation, m, tuple(texts_by_key[key])) for m, key in fresh
        ]

    def _embed_batch(self, batch: list[PendingMessage]) -> BatchOutcome:
        """Runs in the worker thread: embed a batch with retries, isolating permanently failing messages.

        A batch that had not started when a stop was asked for is left for the next run, so a Ctrl+C waits
        for the batch in flight only, not also for the one queued behind it."""
        outcome = BatchOutcome()
        if self.stop.requested:
            return outcome
        self._embed_group(batch, outcome)
        return outcome

    def _embed_group(self, group: list[PendingMessage], outcome: BatchOutcome) -> None:
        """Embed ``group`` with retries; on a permanent error fail the one message it names, else split."""
        texts = [text for item in group for text in item.chunk_texts]
        try:
            vectors = call_with_retries(
                lambda: check_output(self.embedder.embed(texts), len(texts), self.embedder.dimensions),
                self.embedder.classify, self.retry, self.stop.event)
        except RetryStopped:
            return  # left for the next run: nothing recorded
        except Exception as error:
            self._embed_failed(group, texts, error, self.embedder.classify(error), outcome)
            return
        crashpoint("after_embed", len(texts))
        offset = 0
        for item in group:
            count = len(item.chunk_texts)
            outcome.records.append(
                MessageRecord(item.key, item.conversation, item.message, item.chunk_texts, vectors[offset : offset + count])
            )
            offset += count

    def _embed_failed(self, group: list[PendingMessage], texts: list[str], error: Exception, failure: Failure,
                      outcome: BatchOutcome) -> None:
        if failure.kind == "fatal":
            raise FatalEmbedError(f"the embedder cannot work: {failure.reason}; every stored message is kept")
        reason = describe(error)
        if failure.kind in ("transient", "rate_limited"):
            outcome.transient_failure = outcome.transient_failure or failure.kind == "transient"
            outcome.failures.update({item.key: reason for item in group})
        elif len(group) == 1 or isinstance(error, BadOutput):
            outcome.failures.update({item.key: reason for item in group})
        elif failure.index is not None and 0 <= failure.index < len(texts):
            culprit = _item_of_text(group, failure.index)
            outcome.failures[group[culprit].key] = reason
            self._embed_group(group[:culprit] + group[culprit + 1 :], outcome)
        else:
            middle = len(group) // 2
            self._embed_group(group[:middle], outcome)
            self._embed_group(group[middle:], outcome)

    def _store_finished(self, in_flight: dict[Future, list[PendingMessage]]) -> None:
        """Wait for at least one batch in flight (staying responsive to signals) and commit what finished."""
        done: set[Future] = set()
        while not done:
            done, _ = wait(in_flight, timeout=0.2, return_when=FIRST_COMPLETED)
        for future in done:
            self._store_outcome(in_flight.pop(future), future.result())

    def _store_outcome(self, batch: list[PendingMessage], outcome: BatchOutcome) -> None:
        """Record the batch written before, then start writing this one on the store's thread (the store
        does its part, a server's or SQLite's, while this thread reads and chunks the next batch)."""
        self._finish_write()
        if not outcome.records:  # nothing to write: recorded at once (a run of failed batches ends on time)
            self._record_outcome(batch, outcome)
            return
        write = self._writer.submit(with_store_retries, lambda: self.store.upsert(outcome.records), self.store_retry)
        self._writing = (write, batch, outcome)

    def _finish_write(self, failing: bool = False) -> None:
        """Wait for the batch being written and record it as stored; a failed write raises (``failing``: the
        run is failing already, and only a committed write is recorded). Every use of the store by this
        thread comes after this, so the store is never used by two threads at once."""
        pending, self._writing = self._writing, None
        if pending is None:
            return
        write, batch, outcome = pending
        if not failing:
            write.result()
            self._record_outcome(batch, outcome)
            return
        try:  # the first cause of the failure is the one reported
            if write.exception() is None:
                self._record_outcome(batch, outcome)
        except Exception:
            pass

    def _record_outcome(self, batch: list[PendingMessage], outcome: BatchOutcome) -> None:
        for record in outcome.records:
            if record.key in self.versions.changed:
                self.version_counts["superseded"] += 1
            if record.key not in self.stored:
                self._new_keys.append(record.key)
            self.stored.add(record.key)
            self.progress["failed_messages"].pop(record.key, None)
        self.progress["failed_messages"].update(outcome.failures)
        self.session["processed"] += len(outcome.records)
        self.session["failed"] += len(outcome.failures)
        for conversation_id in {item.conversation.id for item in batch}:
            self._mark_conversation_if_done(conversation_id)
        self.display.batch_stored(stored=len(outcome.records), failed=len(outcome.failures))
        self._batches_since_checkpoint += 1
        if self._batches_since_checkpoint >= CHECKPOINT_EVERY_BATCHES:
            self._checkpoint()
        self._failed_batches_in_a_row = self._failed_batches_in_a_row + 1 if outcome.transient_failure else 0
        if self._failed_batches_in_a_row >= MAX_FAILED_BATCHES_IN_A_ROW:
            error = next(iter(outcome.failures.values()))
            raise EmbedderDown(f"the embedder keeps failing ({error}); progress is saved, run the same command later")

    def _mark_conversation_if_done(self, conversation_id: str) -> None:
        keys = self.scan.conversation_keys.get(conversation_id, [])
        if conversation_id not in self.completed_conversations and all(key in self.stored for key in keys):
            self._supersede_replaced(conversation_id)
            self.completed_conversations.add(conversation_id)
            self._new_conversations.append(conversation_id)
            self.display.conversation_completed()

    def _result(self, interrupted: bool) -> IngestResult:
        return IngestResult(
            total_conversations=len(self.scan.conversation_keys),
            total_messages=self.scan.total_messages,
            stored_messages=len(self.progress["processed_messages"]),
            processed=self.session["processed"],
            skipped=self.session["skipped"],
            failed=len(self.progress["failed_messages"]),
            failed_conversations=self.failed_conversations,
            skipped_conversations=self.scan.skipped_conversations,
            dropped=dict(self.scan.dropped),
            interrupted=interrupted,
            versions=dict(self.version_counts),
            previous_export=self.previous_export,
        )


def _item_of_text(group: list[PendingMessage], index: int) -> int:
    """The position in ``group`` of the message whose chunks include text number ``index`` of the batch."""
    for position, item in enumerate(group):
        index -= len(item.chunk_texts)
        if index < 0:
            return position
    raise IndexError(index)


