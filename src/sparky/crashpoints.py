"""Deterministic crash sites for the crash suite (test-only).

Set ``SPARKY_CRASH_AT="site:n"`` and the process kills itself with SIGKILL the n-th time it
arrives at ``crashpoint("site")``. Sites: ``after_embed``, ``before_commit``, ``after_commit``,
``progress_tmp_written``, ``before_replace``, ``after_replace``, ``schema``. Unset, a crash point costs
one dictionary look-up.
"""

from __future__ import annotations

import os
import signal

_target = os.environ.get("SPARKY_CRASH_AT", "")
_site, _, _count = _target.partition(":")
_arrivals: dict[str, int] = {}


def crashpoint(site: str) -> None:
    """Kill this process with SIGKILL when the configured site is reached for the configured time."""
    if not _target or site != _site:
        return
    _arrivals[site] = _arrivals.get(site, 0) + 1
    if _arrivals[site] == int(_count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
