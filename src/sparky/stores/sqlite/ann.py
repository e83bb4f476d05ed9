"""The ANN index of an embedding space: a usearch HNSW graph over the space's vector matrix, derived data
beside its vector file, so that a search past ``MIN_ROWS`` chunks looks at a few thousand candidates instead
of every vector.

``<db file>.vectors/space-<id>/`` holds ``ann.usearch`` (the graph, float16 vectors, keys = chunk ids) and
``ann.json``, the marker written last: the store's ``deletions`` and ``max_id`` when it was built, how many
of the matrix's rows it covered (``live``), its entries (``size``, removed chunks included), the file's
size, and the chunk ids and vector hashes of a few rows (``probe``) that tell a graph of another store
apart. A graph is used only when its marker and file agree and every row of the matrix up to its
``max_id`` is in it: rows added since (the tail) are scored exactly beside it, removed chunks are dropped
when its keys are mapped to the matrix, and candidates are always re-scored exactly from the matrix. So a
stale graph costs recall at worst, never a wrong or removed row.

Builds happen only in ``build`` (``SQLiteStore.ensure_index``): by adding only the tail rows to the graph
held, or from scratch when there is none or it holds removed chunks (a delete removes every derived file
of the store, this one too). A builder holds ``.ann.build.lock`` (exclusive, without waiting: a second builder
does nothing) while it builds in memory, and ``.ann.lock`` exclusively only while it swaps the files in
(marker removed, graph renamed into place, marker written); readers hold ``.ann.lock`` shared while they
check and map, without waiting (a reader that meets the swap searches exactly this once). A failure to
build or write is silent: search stays exact.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .vector_file import Rows, VectorState, locked, make_folders, staged, sync_folder, vector_folder

MIN_ROWS = 150_000  # below this many rows the exact scan is as fast (bench/ann_libraries.py)
EXACT_ROWS = 30_000  # a filter passing at most this many rows is scanned exactly
MAX_FETCH = 8192  # candidates asked of the index at the most before a filtered search scans exactly
MIN_EF = 256  # the graph's least search depth (expansion_search): recall@10 0.99 at 200k
# ... growing with the graph to MAX_EF at 1M rows, where ef 256 / 512 / 1024 gave recall@10 0.912 / 0.924 / 0.952
# at p50 0.92 / 1.21 / 1.97 ms (bench/ann_libraries.py --sizes 1000000 --ef 256,512,1024, 2-core Xeon, 2026-12-02)
MAX_EF = 1024
CONNECTIVITY = 16
EF_CONSTRUCTION = 64
FORMAT = 1
GRAPH, MARKER, LOCK, BUILD_LOCK = "ann.usearch", "ann.json", ".ann.lock", ".ann.build.lock"
_PROBES = 16


@dataclass(frozen=True)
class Marker:
    deletions: int
    max_id: int
    live: int
    size: int
    file_size: int
    probe: tuple[tuple[int, str], ...]


@dataclass
class Graph:
    """A checked graph over a matrix's rows ``[:covered]``; the rows after them are its tail."""

    index: object  # usearch.index.Index, memory-mapped read-only
    covered: int

    def candidates(self, query: np.ndarray, ids: np.ndarray, count: int) -> np.ndarray:
        """Row numbers of the matrix: the ``count`` nearest entries found that are still rows, and the tail."""
        index = self.index
        index.expansion_search = search_depth(len(index), count)
        keys = np.asarray(index.search(query, count, threads=1).keys, dtype=np.int64)
        at = np.searchsorted(ids, keys).clip(max=max(len(ids) - 1, 0))
        found = at[ids[at] == keys] if len(ids) else at[:0]
        return np.concatenate([found, np.arange(self.covered, len(ids))])

    @property
    def size(self) -> int:
        return len(self.index)


def search_depth(size: int, count: int) -> int:
    """The ``expansion_search`` of a query for ``count`` candidates in a graph of ``size`` rows."""
    return max(count, min(MAX_EF, max(MIN_EF, size * MAX_EF // 1_000_000)))


class AnnIndex:
    """The ANN index files of one embedding space of one store."""

    def __init__(self, store: Path, space: int) -> None:
        self.folder = vector_folder(store) / f"space-{space}"

    def stamp(self) -> tuple | None:
        """The marker's identity (changes whenever a build commits), or None when there is none."""
        try:
            info = (self.folder / MARKER).stat()
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    def open(self, state: VectorState, rows: Rows) -> Graph | None:
        """The graph mapped read-only when it is one of these rows (see the module), else None."""
        from usearch.index import Index

        with locked(self.folder / LOCK, fcntl.LOCK_SH) as held:
            marker = self._marker() if held else None
            if marker is None or not self._file_matches(marker):
                return None
            try:
                index = Index.restore(str(self.folder / GRAPH), view=True)
            except (OSError, ValueError, RuntimeError):
                return None
        if index is None or index.ndim != state.dimensions or len(index) != marker.size:
            return None
        covered = _covered(index, marker, state, rows)
        return None if covered is None else Graph(index, covered)

    def build(self, state: VectorState, rows: Rows) -> tuple[int, bool] | None:
        """Bring the graph up to ``rows``: add the tail to the graph held, or build it afresh. The rows added
        and whether it was built afresh; None when another builder is at work or it cannot be written."""
        try:
            make_folders(self.folder)
            with locked(self.folder / BUILD_LOCK, fcntl.LOCK_EX) as held:
                return self._build(state, rows) if held else None
        except (OSError, ValueError, RuntimeError, MemoryError):
            return None

    def _build(self, state: VectorState, rows: Rows) -> tuple[int, bool] | None:
        from usearch.index import Index

        held = self.open(state, rows)
        if held is not None and held.size == held.covered == len(rows.ids):
            return 0, False
        if held is not None and held.size == held.covered:  # grown only, nothing removed from it
            index, start, fresh = Index.restore(str(self.folder / GRAPH), view=False), held.covered, False
        else:
            index, start, fresh = Index(ndim=state.dimensions, metric="ip", dtype="f16", connectivity=CONNECTIVITY,
                                        expansion_add=EF_CONSTRUCTION), 0, True
        del held
        index.expansion_add = EF_CONSTRUCTION
        if start < len(rows.ids):
            index.add(np.asarray(rows.ids[start:], dtype=np.uint64), np.asarray(rows.vectors[start:]),
                      threads=os.cpu_count() or 1)
        self._commit(index, state, rows)
        return len(rows.ids) - start, fresh

    def _commit(self, index, state: VectorState, rows: Rows) -> None:
        temp = self.folder / f".{GRAPH}.tmp"
        try:
            index.save(str(temp))
            os.chmod(temp, 0o600)
            with open(temp, "rb+") as file:
                os.fsync(file.fileno())
            marker = {"format": FORMAT, "deletions": state.deletions, "max_id": state.max_id, "live": len(rows.ids),
                      "size": len(index), "file_size": temp.stat().st_size, "probe": _probe(rows)}
            with staged(self.folder / MARKER, json.dumps(marker).encode()) as commit:
                with locked(self.folder / LOCK, fcntl.LOCK_EX, wait=True) as held:
                    if held:
                        (self.folder / MARKER).unlink(missing_ok=True)
                        os.replace(temp, self.folder / GRAPH)
                        commit()
            sync_folder(self.folder)
        finally:
            temp.unlink(missing_ok=True)

    def _marker(self) -> Marker | None:
        try:
            data = json.loads((self.folder / MARKER).read_text())
            values = [data[name] for name in ("deletions", "max_id", "live", "size", "file_size")]
            probe = tuple((int(chunk), str(digest)) for chunk, digest in data["probe"])
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if data.get("format") != FORMAT or any(type(value) is not int or value < 0 for value in values):
            return None
        return Marker(*values, probe)

    def _file_matches(self, marker: Marker) -> bool:
        try:
            return (self.folder / GRAPH).stat().st_size == marker.file_size
        except OSError:
            return False


def _covered(index, marker: Marker, state: VectorState, rows: Rows) -> int | None:
    """How many leading rows the graph covers (every row up to its ``max_id``), or None when it is not a
    graph of these rows: a probed row's vector differs, or a row up to its ``max_id`` is missing from it."""
    ids = rows.ids
    covered = int(np.searchsorted(ids, marker.max_id, side="right"))
    probed = [(chunk, digest) for chunk, digest in marker.probe]
    at = np.searchsorted(ids, [chunk for chunk, _ in probed]).clip(max=max(len(ids) - 1, 0))
    present = [(i, digest) for i, (chunk, digest) in zip(at, probed) if len(ids) and int(ids[i]) == chunk]
    if covered and not present or any(_digest(rows.vectors[i]) != digest for i, digest in present):
        return None
    if state.deletions == marker.deletions and marker.max_id <= state.max_id:
        return covered if covered == marker.live else None
    return covered if bool(np.all(index.contains(np.asarray(ids[:covered], dtype=np.uint64)))) else None


def _probe(rows: Rows) -> list[tuple[int, str]]:
    at = np.unique(np.linspace(0, len(rows.ids) - 1, _PROBES).astype(np.int64)) if len(rows.ids) else []
    return [(int(rows.ids[i]), _digest(rows.vectors[i])) for i in at]


def _digest(vector: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(vector, dtype="<f4").tobytes(), digest_size=8).hexdigest()
