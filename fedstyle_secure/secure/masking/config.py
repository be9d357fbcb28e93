"""Public parameters of one pairwise-masking round, agreed by the server and every artist.

The transport must convey these out of band of the masking messages (or derive them from
public data): round id, roster, vector length, fixed-point codec, threshold, mode and SecAgg+
degree.  Everything here is public; nothing here is secret.

Two digests bind what artists sign to the configuration they used, so that a server handing
different artists different participant lists or parameters is caught (their signatures do
not verify for each other):

* :attr:`RoundConfig.digest` -- SHA-256 of every static parameter (mode, round id, roster,
  vector length, threshold, degree, codec); bound into every key advertisement.
* :attr:`RoundConfig.transcript` -- set once the key advertisements are in
  (:meth:`RoundConfig.bind`): SHA-256 of the static digest and of every included signed
  advertisement, each carrying a fresh 32-byte random contribution of its artist.  It seeds the
  SecAgg+ graph (so the server cannot pick the graph by choosing seeds or session ids) and is
  bound into every survivor-set signature of the consistency phase.
"""

from __future__ import annotations

import enum
import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.secure.binary import pack_id, pack_u16, pack_u32, pack_u64
from fedstyle_secure.secure.masking.fixedpoint import FixedPointCodec
from fedstyle_secure.secure.masking.graph import complete_graph, default_degree, harary_graph

MASKING_MODES: tuple[str, ...] = ("secagg", "secagg+")
DIGEST_BYTES = 32
_CONFIG_TAG = b"fedstyle-secagg/v2/round-config"
_GRAPH_TAG = b"fedstyle-secagg/v2/graph"


class MaskingPhase(str, enum.Enum):
    """Protocol phases; a :class:`~fedstyle_secure.secure.api.DropoutSchedule` names one of these values.

    An artist scheduled to drop at a phase sends nothing from that phase on:
    ``advertise`` (no keys), ``share`` (keys but no shares), ``masked_input`` (shares but no
    input: its pairwise masks are removed via its reconstructed key), ``consistency`` (input
    counted, but it signs no survivor set and is not asked to unmask), ``unmask`` (input counted
    and survivor set signed, but no unmasking answer).
    """

    ADVERTISE = "advertise"
    SHARE = "share"
    MASKED_INPUT = "masked_input"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


MASKING_PHASES: tuple[str, ...] = tuple(
    p.value
    for p in (
        MaskingPhase.ADVERTISE,
        MaskingPhase.SHARE,
        MaskingPhase.MASKED_INPUT,
        MaskingPhase.CONSISTENCY,
        MaskingPhase.UNMASK,
    )
)
"""The five protocol phases, in the order a round runs them; also what a dropout schedule names."""


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


def graph_seed(transcript: bytes) -> bytes:
    """Seed of the SecAgg+ neighbourhood graph: a hash of the round's advertisement transcript."""
    if len(transcript) != DIGEST_BYTES:
        raise SecureAggregationError(f"transcript digest must be {DIGEST_BYTES} bytes, got {len(transcript)}")
    return hashlib.sha256(_GRAPH_TAG + transcript).digest()


@dataclass(frozen=True)
class RoundConfig:
    """Everything public about a round.

    ``degree`` is the SecAgg+ neighbourhood size (``None`` for ``secagg``: complete graph).  The
    neighbourhood graph is known once the config is bound to the advertisement transcript
    (:meth:`bind`); for ``secagg`` it is complete and needs no transcript.
    """

    round_id: int
    roster: tuple[str, ...]
    vector_length: int
    threshold: int
    codec: FixedPointCodec
    mode: str = "secagg"
    degree: int | None = None
    transcript: bytes | None = None
    share_x: Mapping[str, int] = field(init=False, repr=False)
    _graph: Mapping[str, tuple[str, ...]] | None = field(init=False, repr=False)
    _holders: Mapping[str, tuple[str, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.round_id < 2**64:
            raise ConfigError(f"round id must fit in 64 unsigned bits, got {self.round_id}")
        if list(self.roster) != sorted(set(self.roster)):
            raise ConfigError("roster must be sorted and free of duplicates")
        if len(self.roster) < 2:
            raise ConfigError(f"a masking round needs at least 2 artists, got {len(self.roster)}")
        if len(self.roster) > self.codec.max_clients:
            raise ConfigError(f"{len(self.roster)} artists exceed the codec's max_clients={self.codec.max_clients}")
        if self.vector_length < 1:
            raise ConfigError(f"vector length must be >= 1, got {self.vector_length}")
        if self.mode not in MASKING_MODES:
            raise ConfigError(f"masking mode must be one of {MASKING_MODES}, got {self.mode!r}")
        if (self.mode == "secagg+") != (self.degree is not None):
            raise ConfigError("a SecAgg+ round needs a degree; a SecAgg round has none")
        holders = self.holder_count
        if not holders // 2 < self.threshold <= holders:
            raise ConfigError(f"threshold {self.threshold} must be a strict majority of {holders} share holders")
        object.__setattr__(self, "share_x", {a: i + 1 for i, a in enumerate(self.roster)})
        graph: Mapping[str, tuple[str, ...]] | None = None
        if self.mode == "secagg":
            graph = complete_graph(self.roster)
        elif self.transcript is not None:
            assert self.degree is not None  # secagg+ (checked above)
            graph = harary_graph(self.roster, self.degree, graph_seed(self.transcript))
        object.__setattr__(self, "_graph", graph)
        holders_of = {a: tuple(sorted((*near, a))) for a, near in graph.items()} if graph is not None else {}
        object.__setattr__(self, "_holders", holders_of)

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
        degree: int | None = None,
    ) -> RoundConfig:
        """The unbound config for ``mode`` ("secagg": complete graph; "secagg+": random Harary graph of
        ``degree``, default :func:`default_degree`, fixed later by :meth:`bind`)."""
        artists = tuple(sorted(roster))
        if len(set(artists)) != len(artists):
            raise ConfigError("roster contains duplicate artist ids")
        if mode not in MASKING_MODES:
            raise ConfigError(f"masking mode must be one of {MASKING_MODES}, got {mode!r}")
        k = None
        if mode == "secagg+":
            k = default_degree(len(artists)) if degree is None else degree
            if k < len(artists) - 1 and (k < 2 or k % 2):
                raise ConfigError(f"neighbourhood degree must be an even number >= 2, got {k}")
        holders = len(artists) if k is None else min(k, len(artists) - 1) + 1
        return cls(round_id, artists, vector_length, resolve_threshold(threshold, holders), codec, mode, k)

    @property
    def holder_count(self) -> int:
        """Share holders of every secret (artist plus neighbours): ``n`` for SecAgg, ``min(k, n - 1) + 1``
        for SecAgg+."""
        n = len(self.roster)
        return n if self.degree is None else min(self.degree, n - 1) + 1

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of every static parameter: what an artist's key advertisement commits to."""
        low, high = self.codec.clip_range
        data = (
            _CONFIG_TAG
            + pack_id(self.mode)
            + pack_u64(self.round_id)
            + pack_u16(len(self.roster))
            + b"".join(pack_id(a) for a in self.roster)
            + pack_u32(self.vector_length)
            + pack_u16(self.threshold)
            + pack_u16(self.degree or 0)
            + struct.pack("<ddI", low, high, self.codec.max_clients)
        )
        return hashlib.sha256(data).digest()

    def bind(self, transcript: bytes) -> RoundConfig:
        """This config with the advertisement transcript fixed (and with it the SecAgg+ graph)."""
        if self.transcript is not None:
            raise SecureAggregationError(f"round {self.round_id}: the advertisement transcript is already fixed")
        if len(transcript) != DIGEST_BYTES:
            raise SecureAggregationError(f"transcript digest must be {DIGEST_BYTES} bytes, got {len(transcript)}")
        return replace(self, transcript=transcript)

    @property
    def neighbours(self) -> Mapping[str, tuple[str, ...]]:
        """The neighbourhood graph (symmetric, irreflexive); SecAgg+ needs :meth:`bind` first."""
        return self._require_graph()

    def holders(self, artist: str) -> tuple[str, ...]:
        """Artists holding shares of ``artist``'s secrets: its neighbours and itself (sorted)."""
        self._require_graph()
        return self._holders[artist]

    def _require_graph(self) -> Mapping[str, tuple[str, ...]]:
        if self._graph is None:
            raise SecureAggregationError(
                f"round {self.round_id}: the SecAgg+ graph is not fixed before the key advertisements are in"
            )
        return self._graph
