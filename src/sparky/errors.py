"""Errors the CLI turns into one clear line and an exit code instead of a traceback."""


class SparkyError(Exception):
    """A problem the user can act on; the message names the file and the problem."""

    exit_code = 2


class InputError(SparkyError):
    """The export (or another input file) cannot be read as what it should be."""


class StoreError(SparkyError):
    """The memory store cannot be opened or does not match the embedder."""


class TransientStoreError(StoreError):
    """The store is busy (locked past the timeout) or the connection dropped: worth retrying."""

    exit_code = 1


class LockedError(SparkyError):
    """Another ingester already holds the progress file or the store."""

    exit_code = 3
