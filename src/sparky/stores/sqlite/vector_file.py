"""The vector file of an embedding space: a copy of its chunk ids, message rows and vectors as raw arrays
beside the store, so that a new process maps them instead of reading every blob out of SQLite.

``<db file>.vectors/space-<id>/`` (owner-only) holds ``ids.i64`` and ``messages.i64`` (little-endian
int64), ``vectors.f32`` (little-endian float32, row-major, count x dimensions) and ``state.json``: the
store's state the arrays are a copy of, ``{"deletions", "count", "max_id", "dimensions", "format": 1}``.
``state.json`` is the commit marker, always written last (temp file, fsync, ``os.replace``): a full write
first removes it, then renames the new arrays into place; growth appends to the arrays, then replaces it.
A reader takes the arrays only when their sizes agree with ``state.json``; the caller decides whether
that state is the store's. Writers hold an exclusive flock on ``.lock``, readers a shared one while they
check and map; nobody waits: a reader that meets a writer returns nothing, a writer that meets anyone
writes nothing. The file is derived and only saves time, so a failure to write it (a read-only folder, a
full disk) is silent.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

FORMAT = 1
STATE = "state.json"
LOCK = ".lock"


@dataclass(frozen=True)
class VectorState:
    """What a copy of a space's vectors is a copy of: ``count`` rows, chunk ids up to ``max_id``, taken
    when the store had counted ``deletions`` delete transactions."""

    deletions: int
    count: int
    max_id: int
    dimensions: int


class Rows(NamedTuple):
    """Aligned arrays, in chunk id order."""

    ids: np.ndarray  # int64 chunk ids, ascending
    messages: np.ndarray  # int64 message row of each chunk
    vectors: np.ndarray  # float32 (count, dimensions)


_FILES = (("ids.i64", "<i8"), ("messages.i64", "<i8"), ("vectors.f32", "<f4"))


def vector_folder(store: Path) -> Path:
    """The folder holding every vector file derived from the store at ``store``."""
    return Path(f"{store}.vectors")


def remove_vector_files(store: Path) -> None:
    """Delete every vector file derived from the store (a search rebuilds them)."""
    shutil.rmtree(vector_folder(store), ignore_errors=True)


class VectorFile:
    """The vector file of one embedding space of one store."""

    def __init__(self, store: Path, space: int) -> None:
        self.folder = vector_folder(store) / f"space-{space}"

    def load(self) -> tuple[VectorState, Rows] | None:
        """The recorded state and the arrays mapped read-only, or None when missing, torn or being written."""
        with locked(self.folder / LOCK, fcntl.LOCK_SH) as held:
            state = self._state() if held else None
            if state is None or not self._sizes_match(state):
                return None
            rows = self._map(state)
            return (state, rows) if _ordered(rows.ids, state.max_id) else None

    def write(self, state: VectorState, rows: Rows) -> None:
        """Replace the file with ``rows``, a copy of the store in ``state``; nothing when that is impossible."""
        try:
            make_folders(self.folder)
            with locked(self.folder / LOCK, fcntl.LOCK_EX) as held:
                if not held:
                    return
                (self.folder / STATE).unlink(missing_ok=True)
                for (name, dtype), array in zip(_FILES, rows):
                    _replace(self.folder / name, np.ascontiguousarray(array, dtype=dtype))
                self._write_state(state)
        except OSError:
            pass

    def append(self, base: VectorState, state: VectorState, added: Rows) -> Rows | None:
        """Append ``added`` to a file holding ``base``, to make it hold ``state``; the grown arrays, mapped,
        or None when the file no longer holds ``base`` or cannot be written."""
        try:
            with locked(self.folder / LOCK, fcntl.LOCK_EX) as held:
                if not held or self._state() != base or not self._sizes_match(base):
                    return None
                with staged(self.folder / STATE, _state_bytes(state)) as commit:  # fails before any append
                    for (name, dtype), array in zip(_FILES, added):
                        with open(self.folder / name, "ab") as file:
                            file.write(np.ascontiguousarray(array, dtype=dtype))
                            file.flush()
                            os.fsync(file.fileno())
                    commit()
                sync_folder(self.folder)
                return self._map(state)
        except OSError:
            return None

    def _state(self) -> VectorState | None:
        try:
            data = json.loads((self.folder / STATE).read_text())
            values = [data[name] for name in ("deletions", "count", "max_id", "dimensions")]
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if data.get("format") != FORMAT or any(type(value) is not int or value < 0 for value in values):
            return None
        return VectorState(*values)

    def _sizes_match(self, state: VectorState) -> bool:
        sizes = (state.count * 8, state.count * 8, state.count * state.dimensions * 4)
        try:
            return all((self.folder / name).stat().st_size == size for (name, _), size in zip(_FILES, sizes))
        except OSError:
            return False

    def _map(self, state: VectorState) -> Rows:
        shapes = ((state.count,), (state.count,), (state.count, state.dimensions))
        return Rows(*(_mapped(self.folder / name, dtype, shape) for (name, dtype), shape in zip(_FILES, shapes)))

    def _write_state(self, state: VectorState) -> None:
        _replace(self.folder / STATE, _state_bytes(state))
        sync_folder(self.folder)



def make_folders(folder: Path) -> None:
    """Make a space's folder and the store's vectors folder above it, owner-only."""
    for each in (folder.parent, folder):
        try:
            each.mkdir(mode=0o700)
        except FileExistsError:
            continue
        each.chmod(0o700)  # mkdir's mode is narrowed by the umask


@contextmanager
def locked(path: Path, kind: int, wait: bool = False) -> Iterator[bool]:
    """Hold the flock ``path`` (shared or exclusive), by default without waiting; yields whether it is held."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o600)
    except OSError:  # no folder, or an unwritable one without a lock file
        yield False
        return
    try:
        fcntl.flock(fd, kind if wait else kind | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)  # releases the lock


def _state_bytes(state: VectorState) -> bytes:
    return json.dumps({**asdict(state), "format": FORMAT}).encode()


@contextmanager
def staged(path: Path, data: bytes | np.ndarray) -> Iterator[Callable[[], None]]:
    """A temp file beside ``path`` holding ``data`` (owner-only, fsynced); what it yields renames it over
    ``path``. The temp file is removed when it was not renamed."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with open(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        yield lambda: os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _replace(path: Path, data: bytes | np.ndarray) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it and rename it over ``path``."""
    with staged(path, data) as commit:
        commit()


def sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mapped(path: Path, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The file as a read-only array of ``shape`` (an empty file cannot be mapped: an empty array then)."""
    if shape[0] == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def _ordered(ids: np.ndarray, max_id: int) -> bool:
    """Chunk ids strictly ascending up to ``max_id``, as the store hands them out."""
    return len(ids) == 0 or (int(ids[0]) > 0 and int(ids[-1]) == max_id and bool(np.all(ids[1:] > ids[:-1])))
