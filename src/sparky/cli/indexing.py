"""After an ingest, a re-embedding or a copy: the store's ANN index brought up to date, so that search at scale
is fast from the first query (SQLite past ``ann.MIN_ROWS`` vectors; PostgreSQL builds a space's HNSW index
over the vectors its first filling stored, and keeps it up to date after)."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from ..stores import Space, Store


def index_for_search(store: "Store", err: Console, quiet: bool = False, space: "Space | None" = None) -> None:
    """Build a space's ANN index (by default the primary one's), or add the rows stored since, saying so (a
    build takes minutes at a million vectors); a store without one, or too small for one, is left as it is."""
    ensure = getattr(store, "ensure_index", None)
    if ensure is None:
        return
    started = time.monotonic()
    status = err.status("Indexing the vectors for fast search (minutes for a large store)…") \
        if err.is_terminal and not quiet else nullcontext()
    with status:
        done = ensure(space)
    if done is not None and done[0] and not quiet:
        err.print(f"Indexed {done[0]:,} vectors for fast search in {time.monotonic() - started:.0f} s"
                  f"{' (built afresh)' if done[1] else ''}.")
