"""The embedded store: one SQLite file (``store``) and the queries search runs over it (``search``)."""

from .store import SQLiteStore

__all__ = ["SQLiteStore"]
