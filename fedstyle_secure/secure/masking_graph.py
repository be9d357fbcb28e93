"""Who masks with whom: the complete graph (SecAgg) or a random k-regular graph (SecAgg+).

SecAgg+ (Bell et al., CCS 2020) lets each artist agree masks and share secrets only with
``k = O(log n)`` neighbours.  We use their *random Harary graph*: artists are placed on a
ring in a pseudorandom order derived from a public seed (sorted by ``SHA-256(seed || id)``),
and each is joined to the ``k/2`` nearest artists on either side.  Every party computes the
same graph from the roster and the seed, so the server cannot bias it.

Default degree: the smallest even ``k >= 2 * ceil(log2 n)`` (n=10 -> 8, n=50 -> 12,
n=200 -> 16, n=10^4 -> 28); when that reaches ``n - 1`` the graph is complete.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.secure.binary import pack_id

Graph = Mapping[str, tuple[str, ...]]


def default_degree(n: int) -> int:
    """Smallest even ``k >= 2 * ceil(log2 n)``, capped at ``n - 1``."""
    if n < 2:
        raise ConfigError(f"a masking round needs at least 2 artists, got {n}")
    return min(2 * math.ceil(math.log2(n)), n - 1)


def complete_graph(roster: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Every artist is a neighbour of every other (classic SecAgg)."""
    return {a: tuple(b for b in roster if b != a) for a in roster}


def harary_graph(roster: Sequence[str], degree: int, seed: bytes) -> dict[str, tuple[str, ...]]:
    """Random Harary graph H(degree, n) on ``roster`` with the artist order keyed by ``seed``."""
    n = len(roster)
    if degree >= n - 1:
        return complete_graph(roster)
    if degree < 2 or degree % 2:
        raise ConfigError(f"neighbourhood degree must be an even number >= 2, got {degree}")
    ring = sorted(roster, key=lambda a: hashlib.sha256(seed + pack_id(a)).digest())
    half = degree // 2
    graph = {}
    for position, artist in enumerate(ring):
        near = {ring[(position + step) % n] for step in range(-half, half + 1) if step}
        graph[artist] = tuple(sorted(near))
    return graph
