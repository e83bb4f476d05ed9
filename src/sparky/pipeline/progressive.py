"""Progressive ingestion: a fast static pass makes the whole memory searchable, a transformer pass follows.

Pass 1 is an ordinary ingestion (``ingest``) with a static model (``static_name``: ``wordllama`` by
default where installed, else ``minilm-static``) as the primary space, chunked by the transformer's tokenizer and
window, so that pass 2 finds chunks that fit it. Before pass 1
the transformer's space is recorded in the store (``add_space``): a store whose primary space is static and
which holds an incomplete transformer space is one with a pass still to come (``pending_space``). Pass 2 is
the re-embedding of that space (``reembed`` with ``replace``): one commit per batch, resumable, and the
space becomes the primary one once every chunk has its vector. Both passes keep the one rule: a stop or a
kill loses only the batches in flight, the next ``sparky ingest`` (or ``sparky reembed``) resumes what is
missing, and nothing is stored twice.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import reembed
from ..embedders import DEFAULT_EMBEDDER, EMBEDDERS, STATIC_EMBEDDERS, Embedder, Failure, RetryPolicy, Tokenizer, \
    embedder_for_model, is_static, recorded_model, resolve_embedder
from ..errors import SparkyError
from ..readers import ExportReader
from ..stores import Space, Store
from ..stores.records import StoredConversation
from .ingest import Display, IngestResult, Ingestion, Interrupted, StopRequest

# wordllama where its wheel is installed (Linux x86_64), else minilm-static. Measured side by side
# (bench/static_models.py, bench/progressive.py, bench/search_quality.py among the 13,719 generated messages):
# pass 1 as fast (ratio 1.01); minilm-static's hybrid recall@5 is higher under MiniLM's floor (0.913 vs 0.896),
# but that floor lets its higher cosines through (69 % of the no-answer queries said as such, vs 100 %); at its
# own floor (MODEL_FLOORS, 100 %) it is 0.861, and mid-way through pass 2 0.909 vs 0.939.
PREFERRED_STATIC = "wordllama"
FALLBACK_STATIC = "minilm-static"


def default_static() -> str:
    """The static model of pass 1 when none is named: wordllama where its package is installed, else
    minilm-static (which runs wherever minilm does)."""
    return PREFERRED_STATIC if importlib.util.find_spec(PREFERRED_STATIC) is not None else FALLBACK_STATIC


class ChunkedFor:
    """An ``Embedder``: the static model's vectors, over chunks cut by another model's tokenizer and window."""

    def __init__(self, fast: Embedder, chunking: Embedder) -> None:
        self.fast = fast
        self.model = fast.model
        self.dimensions = fast.dimensions
        self.concurrency = fast.concurrency
        self.max_tokens = chunking.max_tokens
        self.tokenizer: Tokenizer = chunking.tokenizer

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.fast.embed(texts)

    def classify(self, error: BaseException) -> Failure:
        return self.fast.classify(error)


def static_name(store: Store, requested: str | None) -> str:
    """The static model of pass 1: the store's primary one when it is static (the run under way, or a static
    store made progressive), else the one requested, else ``default_static()``."""
    primary = store.meta().get("model")
    if is_static(primary):
        name = embedder_for_model(primary)
        if requested is not None and requested != name:
            raise SparkyError(f"{store.url}: its static space is {primary}; ingest into it without --static or "
                              f"with --static {name}")
        return name
    if requested is not None:
        if requested not in STATIC_EMBEDDERS:
            raise SparkyError(f"--static must be a static model: {', '.join(STATIC_EMBEDDERS)}, not {requested}")
        return requested
    return default_static()


def is_transformer(model: str) -> bool:
    """Whether a recorded model is a transformer that runs on this machine."""
    return embedder_for_model(model) is not None and not is_static(model)


def pending_space(store: Store) -> Space | None:
    """The transformer space still to come: the primary space is static and the store holds an incomplete
    space of a local transformer (the one with the most vectors when there are several)."""
    if not is_static(store.meta().get("model")):
        return None
    chunks = store.stats()["chunks"]
    held = [(count, space) for space, count in store.space_vectors().items()
            if is_transformer(space.model) and (count < chunks or chunks == 0)]
    return max(held, key=lambda item: item[0])[1] if held else None


def transformer_name(store: Store, requested: str | None) -> str | None:
    """The transformer of a progressive run on ``store``: the pending space's, else the one requested (the
    default one when none is), else None when the store's primary space is a transformer already (a plain
    ingest). A static or network model is refused."""
    pending = pending_space(store)
    if pending is not None:
        name = embedder_for_model(pending.model)
        if requested is not None and recorded_model(resolve_embedder(requested, None)) != pending.model:
            raise SparkyError(f"{store.url}: its progressive pass is for {pending.model}; resume it without "
                              f"--embedder or with --embedder {name}")
        return name
    primary = store.meta().get("model")
    if primary is not None and not is_static(primary):
        return None
    name = resolve_embedder(requested, None) if requested is not None else DEFAULT_EMBEDDER
    if name not in EMBEDDERS or is_static(recorded_model(name)):
        raise SparkyError(f"--progressive needs a local transformer embedder (minilm, minilm-fp32, minilm-int8, "
                          f"e5), not {name}")
    return name


@dataclass
class ProgressiveResult:
    """What both passes did; ``reembed`` is None when pass 2 did not start (pass 1 stopped or failed)."""

    ingest: IngestResult
    reembed: reembed.ReembedResult | None
    stopped: bool = False  # a stop was asked for (in either pass, or between them)

    @property
    def complete(self) -> bool:
        return self.ingest.complete and self.reembed is not None and self.reembed.complete


class ProgressiveIngestion:
    """Both passes over one export into one store, in one process, under one stop request."""

    def __init__(self, export: Path, progress_path: Path, store: Store, fast: Embedder, transformer: Embedder,
                 display: Display, reembed_display: reembed.Display, batch_chunks: int = 256,
                 stop: StopRequest | None = None, retry: RetryPolicy = RetryPolicy(),
                 reader: ExportReader | None = None,
                 prune: Callable[[list[tuple[str, StoredConversation]]], bool] | None = None,
                 between: Callable[[IngestResult], None] | None = None) -> None:
        """``between`` is told pass 1's result before pass 2 starts (the memory is searchable then)."""
        self.store = store
        self.transformer = transformer
        self.stop = stop or StopRequest()
        self.between = between
        self.first = Ingestion(export, progress_path, store, ChunkedFor(fast, transformer), display,
                               batch_chunks=batch_chunks, stop=self.stop, retry=retry, reader=reader, prune=prune)
        self.second = reembed.Reembedding(store, transformer, reembed_display, batch_chunks=batch_chunks, stop=self.stop,
                                  retry=retry, replace=True)

    def run(self) -> ProgressiveResult:
        """Pass 1, then pass 2 unless pass 1 was stopped. Raises Interrupted when stopped before either
        stored anything (as ``Ingestion.run``)."""
        self._record_spaces()
        first = self.first.run()
        if self.between is not None and not self.stop.requested:
            self.between(first)
        if self.stop.requested:
            return ProgressiveResult(first, None, stopped=True)
        try:
            second = self.second.run()
        except Interrupted:  # asked to stop just as pass 2 began
            return ProgressiveResult(first, None, stopped=True)
        return ProgressiveResult(first, second, stopped=second.interrupted)

    def _record_spaces(self) -> None:
        """The static space as primary (a new store) and the transformer's space to come, before pass 1."""
        with self.store.lock():
            self.store.ensure_schema(self.first.embedder.model, int(self.first.embedder.dimensions))
            self.store.add_space(self.transformer.model, int(self.transformer.dimensions))
