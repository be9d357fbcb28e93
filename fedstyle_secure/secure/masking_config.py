"""Public parameters of one pairwise-masking round, agreed by the server and every artist.

The transport must convey these out of band of the masking messages (or derive them from
public data): round id, roster, vector length, fixed-point codec, threshold and the
neighbourhood graph.  Everything here is public; nothing here is secret.
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.secure.fixedpoint import FixedPointCodec
from fedstyle_secure.secure.masking_graph import complete_graph, default_degree, harary_graph
from fedstyle_secure.secure.wire import pack_u64

MASKING_MODES: tuple[str, ...] = ("secagg", "secagg+")


class Phase(str, enum.Enum):
    """Protocol phases; a :class:`~fedstyle_secure.secure.api.DropoutSchedule` names one of these values.

    An artist scheduled to drop at a phase sends nothing from that phase on:
    ``advertise`` (no keys), ``share`` (keys but no shares), ``masked_input`` (shares but no
    input: its pairwise masks are removed via its reconstructed key), ``unmask`` (input counted
    but no unmasking answer).
    """

    ADVERTISE = "advertise"
    SHARE = "share"
    MASKED_INPUT = "masked_input"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


DROPOUT_PHASES: tuple[str, ...] = tuple(
    p.value for p in (Phase.ADVERTISE, Phase.SHARE, Phase.MASKED_INPUT, Phase.UNMASK)
)


def resolve_threshold(threshold: float | int, holders: int) -> int:
    """Shares needed per secret: an ``int`` is a count, a ``float`` in (0, 1] a fraction of ``holders``.

    The result must be a strict majority of the ``holders`` share holders (artist plus
    neighbours): a server that tells disjoint groups different dropout stories can then never
    collect ``threshold`` shares of both secrets of one artist, because every honest artist
    answers one unmasking request per round.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ConfigError(f"threshold must be an int count or a float fraction, got {threshold!r}")
    if isinstance(threshold, float):
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"threshold fraction must be in (0, 1], got {threshold}")
        count = math.ceil(threshold * holders - 1e-9)
    else:
        count = threshold
    if not holders // 2 < count <= holders:
        raise ConfigError(
            f"threshold {threshold!r} gives {count} of {holders} share holders; it must be a strict "
            f"majority, i.e. between {holders // 2 + 1} and {holders}"
        )
    return count


def graph_seed(session_seed: bytes, round_id: int) -> bytes:
    """Public per-round seed of the SecAgg+ neighbourhood graph."""
    return hashlib.sha256(b"fedstyle-secagg/v1/graph" + pack_u64(round_id) + session_seed).digest()


@dataclass(frozen=True)
class RoundConfig:
    """Everything public about a round.  ``neighbours`` must be symmetric and irreflexive."""

    round_id: int
    roster: tuple[str, ...]
    vector_length: int
    threshold: int
    codec: FixedPointCodec
    neighbours: Mapping[str, tuple[str, ...]]
    share_x: Mapping[str, int] = field(init=False, repr=False)
    _holders: Mapping[str, tuple[str, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.round_id < 2**64:
            raise ConfigError(f"round id must fit in 64 unsigned bits, got {self.round_id}")
        if list(self.roster) != sorted(set(self.roster)):
            raise ConfigError("roster must be sorted and free of duplicates")
        if len(self.roster) > self.codec.max_clients:
            raise ConfigError(f"{len(self.roster)} artists exceed the codec's max_clients={self.codec.max_clients}")
        if self.vector_length < 1:
            raise ConfigError(f"vector length must be >= 1, got {self.vector_length}")
        if set(self.neighbours) != set(self.roster):
            raise ConfigError("neighbourhood graph must list exactly the roster")
        for artist, near in self.neighbours.items():
            if artist in near or any(artist not in self.neighbours.get(v, ()) for v in near):
                raise ConfigError(f"neighbourhood of {artist!r} is not symmetric and irreflexive")
        object.__setattr__(self, "_holders", {a: tuple(sorted((*near, a))) for a, near in self.neighbours.items()})
        smallest = min(len(h) for h in self._holders.values())
        if not smallest // 2 < self.threshold <= smallest:
            raise ConfigError(f"threshold {self.threshold} must be a strict majority of {smallest} share holders")
        object.__setattr__(self, "share_x", {a: i + 1 for i, a in enumerate(self.roster)})

    @classmethod
    def create(
        cls,
        *,
        mode: str,
        round_id: int,
        roster: Sequence[str],
        vector_length: int,
        codec: FixedPointCodec,
        threshold: float | int,
        session_seed: bytes,
        degree: int | None = None,
    ) -> "RoundConfig":
        """Build the graph for ``mode`` ("secagg": complete; "secagg+": random Harary of ``degree``)."""
        artists = tuple(sorted(roster))
        if len(set(artists)) != len(artists):
            raise ConfigError("roster contains duplicate artist ids")
        if mode == "secagg":
            graph = complete_graph(artists)
        elif mode == "secagg+":
            k = default_degree(len(artists)) if degree is None else degree
            graph = harary_graph(artists, k, graph_seed(session_seed, round_id))
        else:
            raise ConfigError(f"masking mode must be one of {MASKING_MODES}, got {mode!r}")
        holders = min(len(near) for near in graph.values()) + 1
        return cls(round_id, artists, vector_length, resolve_threshold(threshold, holders), codec, graph)

    def holders(self, artist: str) -> tuple[str, ...]:
        """Artists holding shares of ``artist``'s secrets: its neighbours and itself."""
        return self._holders[artist]
