"""The memory the pages read: the store opened read-only on first need, and one searcher over it.

The store may not exist yet when the server starts (the status page is for watching an ingestion that
creates it): every request tries again until it opens. A SQLite file whose schema is not written yet is
left alone, so that this reader never runs a migration beside the ingester that is creating the store.
One lock serialises the requests' use of the store's single connection and of the searcher.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import SparkyError, StoreError
from ..search import Searcher, open_for_search, preload_embedder
from ..stores import Store, redact, store_path
from ..stores.reads import Reads


class Memory:
    """A store URL, opened on first need; ``reading()`` hands out the store and its page reads."""

    def __init__(self, url: str, embedder: str | None = None) -> None:
        self.url = url
        self.display_url = redact(url)
        self.embedder = embedder
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._reads: Reads | None = None
        self._searcher: Searcher | None = None

    @contextmanager
    def reading(self) -> Iterator[Reads]:
        """The store's reads, one request at a time; StoreError when there is no store (yet)."""
        with self._lock:
            yield self._open()

    @contextmanager
    def searching(self) -> Iterator[Searcher]:
        """The searcher, one request at a time; SearchError while the store is empty."""
        with self._lock:
            self._open()
            if self._searcher is None:
                self._searcher = Searcher(self._store, self.embedder)
            yield self._searcher

    def warm_up(self) -> None:
        """Start loading the query model in the background when the store is there and not empty."""
        try:
            with self.searching() as searcher:
                preload_embedder(searcher.embedder_name)
        except SparkyError:
            pass  # no store or an empty one yet: the first search loads the model, or says why not

    def _open(self) -> Reads:
        if self._reads is None:
            path = store_path(self.url)
            if path is not None and not path.is_file():
                raise StoreError(f"no memory store at {path} yet: run `sparky ingest EXPORT` (or pass --db)")
            if path is not None and _without_tables(path):
                raise StoreError(f"{path}: the memory store is being created; try again in a moment")
            store = open_for_search(self.url)
            try:
                self._reads = Reads(store)
            except StoreError:
                store.close()
                raise
            self._store = store
        return self._reads

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
            self._store = self._reads = self._searcher = None


def _without_tables(path: Path) -> bool:
    """Whether the SQLite file holds no table yet (just created, its schema not committed), read without
    writing; a file that is not a database is left to the store to refuse."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] == 0
    except sqlite3.DatabaseError:
        return False
