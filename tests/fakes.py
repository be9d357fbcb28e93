"""Fakes shared by tests (named as such; no fixtures here)."""

from __future__ import annotations

from collections.abc import Sequence

from fedstyle_secure.privacy.mechanisms import GaussianRelease, Mechanism
from fedstyle_secure.privacy.plan import PORTFOLIO_SIZE_RELEASE


class Clock:
    """Fake clock for the server and artists (seconds): settable, so a test passes a deadline at once."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def charges(history: Sequence[Mechanism]) -> list[Mechanism]:
    """A ledger's history without the planning size's count, which every DP ledger holds first."""
    return [m for m in history if not (isinstance(m, GaussianRelease) and m.what == PORTFOLIO_SIZE_RELEASE)]
