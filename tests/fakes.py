"""Fakes shared by tests (named as such; no fixtures here)."""

from __future__ import annotations


class Clock:
    """Fake clock for the server and artists (seconds): settable, so a test passes a deadline at once."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
