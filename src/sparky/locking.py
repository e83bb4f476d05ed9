"""Advisory file locks that a killed process releases automatically (flock)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import LockedError, SparkyError


class FileLock:
    """An exclusive, non-blocking lock on ``<path>.lock``; the holder's pid is written inside."""

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(f"{path}.lock")
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "FileLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # a folder that is missing, not a folder, or not writable
            raise SparkyError(f"cannot lock the {self.what}: {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(
                f"{self.what} is in use by another ingestion (pid {holder}); "
                "wait for it to finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def holder(self) -> int | None:
        """The pid of the process holding this lock now, or None when nobody does.

        The lock is asked, not the pid left in the file: a killed holder's pid may have been reused."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None  # no lock file: nobody ever held it here
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
