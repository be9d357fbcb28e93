"""Fakes shared by tests (named as such; no fixtures here)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

from fedstyle_secure.privacy.mechanisms import GaussianRelease, Mechanism
from fedstyle_secure.privacy.plan import PORTFOLIO_SIZE_RELEASE
from fedstyle_secure.secure.ckks.primitives import EncryptedVector

if TYPE_CHECKING:
    from fedstyle_secure.federation.client import StyleClient


class Clock:
    """Fake clock for the server and artists (seconds): settable, so a test passes a deadline at once."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def charges(history: Sequence[Mechanism]) -> list[Mechanism]:
    """A ledger's history without the planning size's count, which every DP ledger holds first."""
    return [m for m in history if not (isinstance(m, GaussianRelease) and m.what == PORTFOLIO_SIZE_RELEASE)]


def fake_style_client(n_train: int) -> StyleClient:
    """FAKE StyleClient: only the parts ``ArtistPrivacy.open`` reads and stores (its own CSPRNG, a
    tiny model, no data), for an artist of ``n_train`` private artworks."""
    import numpy as np
    import torch

    from fedstyle_secure.randomness import CsprngNoise
    from fedstyle_secure.training.local import LocalConfig

    fake = SimpleNamespace(
        n_train=n_train,
        config=LocalConfig(epochs=1, batch_size=16),
        noise=CsprngNoise(),
        model=torch.nn.Linear(2, 2),
        own=None,
        rng=np.random.default_rng(0),
        retired_reason=None,
        dp=None,
        ledger=None,
    )
    return cast("StyleClient", fake)


class LockProbingVector(EncryptedVector):
    """A spy around the real :meth:`EncryptedVector.load` (TenSEAL's parse and checks), which first asks another
    thread to take the server's lock and records whether it could."""

    lock: threading.Condition
    free: list[bool]

    @classmethod
    def load(cls, *args, **kwargs):
        def try_the_lock() -> None:
            taken = cls.lock.acquire(timeout=1.0)
            if taken:
                cls.lock.release()
            cls.free.append(taken)

        probe = threading.Thread(target=try_the_lock)
        probe.start()
        probe.join()
        return EncryptedVector.load(*args, **kwargs)


def fake_portfolio(folder: Path) -> Path:
    """A data folder ``<folder>/portfolio/artist_00/`` holding two FAKE artworks (small random PNGs,
    their pixels seeded by ``folder``: another folder, other artworks) for tests whose artist's style
    features are fakes too: the lifetime ledger keys a portfolio by its decoded pixels."""
    import hashlib

    import numpy as np
    from PIL import Image

    artist = folder / "portfolio" / "artist_00"
    artist.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(str(folder).encode()).digest()[:8], "big"))
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(artist / f"fake-{i}.png")
    return artist.parent
