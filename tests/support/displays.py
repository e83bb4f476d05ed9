"""Display stand-ins for the tests of the passes: a pass-2 display that stops the run after some batches."""

from __future__ import annotations

from sparky.pipeline.ingest import StopRequest


class StopAfter:
    """A pass-2 display that asks ``stop`` to stop once ``batches`` batches are committed (a Ctrl+C then)."""

    def __init__(self, stop: StopRequest | None = None, batches: int | None = None) -> None:
        self.stop, self.batches, self.stored = stop, batches, 0

    def start(self, space, chunks: int, held: int) -> None: ...
    def finish(self) -> None: ...
    def stopping(self, immediate: bool) -> None: ...

    def batch_stored(self, stored: int, failed: int) -> None:
        self.stored += 1
        if self.batches is not None and self.stored >= self.batches:
            self.stop.event.set()
