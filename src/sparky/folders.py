"""Create the folder a file is to be written in, or say in one line why it cannot be."""

from __future__ import annotations

from pathlib import Path

from .errors import SparkyError


def ensure_parent(path: Path) -> None:
    """Create ``path``'s folder (and its parents) when missing; a clear error when that is impossible."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # some ancestor is a file
        raise SparkyError(f"{path}: cannot create its folder (Not a directory: a file is in the way)") from None
    except OSError as exc:
        raise SparkyError(f"{path}: cannot create its folder ({exc.strerror})") from None
