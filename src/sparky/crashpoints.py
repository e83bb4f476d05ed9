"""Deterministic crash sites and phase tracing for the crash suite (test-only).

Set ``SPARKY_CRASH_AT="site:n"`` and the process kills itself with SIGKILL the n-th time it
arrives at ``crashpoint("site")``. Sites: ``after_embed``, ``before_commit``, ``after_commit``,
``progress_tmp_written``, ``before_replace``, ``after_replace`` (a whole rewrite of the progress file: at a
session's start, at its end and on a stop), ``journal_written`` (a checkpoint between those: its line is
appended to the progress file's journal and fsynced), ``schema``, ``loading_model``; the PostgreSQL store's
``store_transient`` (a statement failed with a retryable error, its SQLSTATE as detail) and
``store_unreachable`` (the server could not be reached again mid-run) and ``index_build`` (just before the
HNSW index of a space is built, inside the build's transaction).

Set ``SPARKY_TRACE_FILE=path`` and every arrival at a site appends the line ``"<pid> <site>\\n"`` to that
file (one ``O_APPEND`` write, so lines survive a SIGKILL and never interleave; ``after_embed`` adds the
number of texts embedded, so tests can count re-work), plus ``"<pid> start"``
when the pipeline's modules are first imported. The random-kill tests read it to learn where each kill
landed. ``SPARKY_TRACE_PAUSE="site:seconds"`` (with a trace file) waits at that site after tracing it
(a stop request ends the wait, as it ends every real wait),
widening a window (e.g. the open transaction at ``before_commit``) so random kills land in it often.

Set ``SPARKY_SQLITE_MAX_PAGES=n`` and the SQLite store caps its file at n pages (``PRAGMA
max_page_count``), so a test can fill the "disk" at an exact size.

Unset, a crash point costs two truth tests.
"""

from __future__ import annotations

import os
import signal
import threading

_target = os.environ.get("SPARKY_CRASH_AT", "")
_site, _, _count = _target.partition(":")
_arrivals: dict[str, int] = {}
_trace_file = os.environ.get("SPARKY_TRACE_FILE", "")
_pause_site, _, _pause_seconds = os.environ.get("SPARKY_TRACE_PAUSE", "").partition(":")
_wake = threading.Event()


def wake() -> None:
    """End a ``SPARKY_TRACE_PAUSE`` early: a stop request does, as it would end any real wait."""
    _wake.set()


def sqlite_page_limit() -> int | None:
    """The test-only cap on the SQLite store's size in pages, if ``SPARKY_SQLITE_MAX_PAGES`` sets one."""
    value = os.environ.get("SPARKY_SQLITE_MAX_PAGES", "")
    return int(value) if value.isdigit() else None


def _trace(site: str, detail: object = None) -> None:
    line = f"{os.getpid()} {site}" if detail is None else f"{os.getpid()} {site} {detail}"
    fd = os.open(_trace_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def crashpoint(site: str, detail: object = None) -> None:
    """Kill this process with SIGKILL when the configured site is reached for the configured time.

    ``detail`` (e.g. how many texts were just embedded) only goes into the trace line.
    """
    if _trace_file:
        _trace(site, detail)
        if site == _pause_site:
            _wake.wait(float(_pause_seconds))
    if not _target or site != _site:
        return
    _arrivals[site] = _arrivals.get(site, 0) + 1
    if _arrivals[site] == int(_count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


if _trace_file:
    _trace("start")
