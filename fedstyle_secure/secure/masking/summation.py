"""In-process driver of the pairwise-masking protocol: ``--secure secagg`` and ``--secure secagg+``.

:class:`MaskedSummation` implements :class:`~fedstyle_secure.secure.api.SecureSummation`
by running one :class:`MaskingServer` and one :class:`MaskingArtist` per input through all
five phases, serialising every message to bytes and parsing it back (so byte counts are the
real wire sizes).  :class:`InProcessRound` is the reusable loop; tests and simulations can
pass an ``intercept`` hook that plays a malicious network/server (tamper, replay, drop).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.secure.api import AggregationResult, DropoutSchedule
from fedstyle_secure.secure.masking import (
    MASKING_MODES,
    MASKING_PHASES,
    MaskingArtist,
    MaskingOutcome,
    MaskingPhase,
    MaskingServer,
    RoundConfig,
)
from fedstyle_secure.secure.masking.fixedpoint import FixedPointCodec
from fedstyle_secure.secure.masking.messages import Message, parse_message

Intercept = Callable[[Message], Sequence[Message]]
SERVER_PARTY = "server"
DEFAULT_THRESHOLD = 2 / 3  # shares needed per secret, as a fraction of each artist's share holders


def _deliver_unchanged(message: Message) -> Sequence[Message]:
    return (message,)


@dataclass(frozen=True)
class Rejection:
    """A message a party refused (``party`` is an artist id or ``"server"``)."""

    party: str
    reason: str


@dataclass
class MaskingRecord:
    """What an in-process round produced: the outcome, wire byte counts and every refusal."""

    outcome: MaskingOutcome
    bytes_up: dict[str, int]
    bytes_down: dict[str, int]
    rejections: list[Rejection] = field(default_factory=list)


class InProcessRound:
    """Drive one server and its artists through the five phases, honouring a dropout schedule.

    An artist that refuses every message of a phase (or whose message the server refused)
    stops participating, exactly like a dropout.  Server aborts propagate as
    :class:`SecureAggregationError`.
    """

    def __init__(
        self,
        server: MaskingServer,
        artists: Mapping[str, MaskingArtist],
        *,
        intercept: Intercept = _deliver_unchanged,
    ) -> None:
        self.server = server
        self.artists = artists
        self.intercept = intercept
        self.alive = set(artists)
        self.bytes_up: Counter[str] = Counter()
        self.bytes_down: Counter[str] = Counter()
        self.rejections: list[Rejection] = []

    def run(self, inputs: Mapping[str, np.ndarray], drops: Mapping[str, str]) -> MaskingRecord:
        unknown = {p for p in drops.values() if p not in MASKING_PHASES}
        if unknown:
            raise ConfigError(f"unknown dropout phases {sorted(unknown)}; use one of {MASKING_PHASES}")
        steps: list[tuple[MaskingPhase, Callable[[], Mapping[str, Message | None]], Callable]] = [
            (MaskingPhase.ADVERTISE, lambda: dict.fromkeys(self.alive), lambda artist, _: artist.advertise_keys()),
            (MaskingPhase.SHARE, self.server.close_advertise, lambda artist, m: artist.share_keys(m)),
            (
                MaskingPhase.MASKED_INPUT,
                self.server.close_shares,
                lambda artist, m: artist.masked_input(m, inputs[artist.artist_id]),
            ),
            (MaskingPhase.CONSISTENCY, self.server.close_masked_inputs, lambda artist, m: artist.sign_survivors(m)),
            (MaskingPhase.UNMASK, self.server.close_consistency, lambda artist, m: artist.unmask(m)),
        ]
        for phase, close_previous, respond in steps:
            outgoing = close_previous()
            self.alive -= {a for a, p in drops.items() if p == phase.value}
            self._exchange(outgoing, respond)
        return MaskingRecord(self.server.finish(), dict(self.bytes_up), dict(self.bytes_down), self.rejections)

    def _exchange(self, outgoing: Mapping[str, Message | None], respond: Callable) -> None:
        self.alive &= set(outgoing)
        for artist_id in sorted(self.alive):
            incoming = outgoing[artist_id]
            deliveries = [None] if incoming is None else self._transmit(incoming, artist_id, self.bytes_down, artist_id)
            reply = None
            for message in deliveries:
                try:
                    answer = respond(self.artists[artist_id], message)
                except SecureAggregationError as exc:
                    self.rejections.append(Rejection(artist_id, str(exc)))
                    continue
                reply = answer if reply is None else reply
            if reply is None:
                self.alive.discard(artist_id)
                continue
            for message in self._transmit(reply, artist_id, self.bytes_up, SERVER_PARTY):
                try:
                    self.server.receive(message)
                except SecureAggregationError as exc:
                    self.rejections.append(Rejection(SERVER_PARTY, str(exc)))

    def _transmit(self, message: Message, artist_id: str, counter: Counter[str], receiver: str) -> list[Message]:
        """Pass ``message`` through the network: intercept, serialise, count bytes, parse."""
        arrived = []
        for sent in self.intercept(message):
            data = sent.to_bytes()
            counter[artist_id] += len(data)
            try:
                arrived.append(parse_message(data))
            except SecureAggregationError as exc:
                self.rejections.append(Rejection(receiver, str(exc)))
        return arrived


class MaskedSummation:
    """Secure summation by pairwise masking: ``mode="secagg"`` (complete graph) or ``"secagg+"``.

    ``threshold``: shares needed per secret, an int count or a float fraction of each
    artist's share holders (itself plus neighbours); must be a strict majority.
    ``clip_range``/``max_clients``: fixed-point codec (inputs outside the range are refused).
    ``identity_keys``: each artist's long-term Ed25519 key; ephemeral ones are generated (and
    kept for this object's lifetime) for artists without one.  ``degree``: SecAgg+
    neighbourhood size (default: smallest even k >= 2*ceil(log2 n)).  The SecAgg+ graph is not a
    parameter: it is fixed by the artists' signed random contributions (see ``RoundConfig.bind``).
    """

    def __init__(
        self,
        mode: str = "secagg",
        *,
        clip_range: tuple[float, float],
        max_clients: int,
        threshold: float | int = DEFAULT_THRESHOLD,
        identity_keys: Mapping[str, Ed25519PrivateKey] | None = None,
        degree: int | None = None,
    ) -> None:
        if mode not in MASKING_MODES:
            raise ConfigError(f"masking mode must be one of {MASKING_MODES}, got {mode!r}")
        self.mode = mode
        self.codec = FixedPointCodec(clip_range, max_clients)
        self.threshold = threshold
        self.degree = degree
        self._identity_keys = dict(identity_keys or {})
        self._generate_missing_keys = identity_keys is None

    def round_config(self, roster: Sequence[str], *, round_id: int, vector_length: int) -> RoundConfig:
        """The public parameters of one round (threshold, codec, degree); equal for every party that
        builds this summation with the same mode and options.  Unbound: the SecAgg+ graph is fixed
        by the key advertisements (``RoundConfig.bind``)."""
        return RoundConfig.create(
            mode=self.mode,
            round_id=round_id,
            roster=roster,
            vector_length=vector_length,
            codec=self.codec,
            threshold=self.threshold,
            degree=self.degree,
        )

    def prepare(
        self, roster: Sequence[str], *, round_id: int, vector_length: int
    ) -> tuple[MaskingServer, dict[str, MaskingArtist]]:
        """Fresh server and artist state machines for one round."""
        config = self.round_config(roster, round_id=round_id, vector_length=vector_length)
        for artist in config.roster:
            if artist not in self._identity_keys:
                if not self._generate_missing_keys:
                    raise ConfigError(f"no identity key for artist {artist!r}")
                self._identity_keys[artist] = Ed25519PrivateKey.generate()
        publics = {a: self._identity_keys[a].public_key() for a in config.roster}
        artists = {a: MaskingArtist(config, a, self._identity_keys[a], publics) for a in config.roster}
        return MaskingServer(config, publics), artists

    def validate_inputs(self, inputs: Mapping[str, np.ndarray]) -> int:
        """Check every input is a 1-D vector of one length inside the clip range; return the length."""
        if len(inputs) < 2:
            raise SecureAggregationError(f"masking needs at least 2 artists, got {len(inputs)}")
        shapes = {a: np.shape(v) for a, v in inputs.items()}
        if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
            raise SecureAggregationError(f"inputs must be 1-D vectors of one length, got {shapes}")
        for artist, vector in inputs.items():
            self.codec.check_in_range(np.asarray(vector, dtype=np.float64), owner=f"artist {artist!r}")
        return int(next(iter(shapes.values()))[0])

    def sum(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        round_id: int,
        dropouts: DropoutSchedule | None = None,
    ) -> AggregationResult:
        """Run one masking round in-process; see :class:`~fedstyle_secure.secure.api.SecureSummation`."""
        drops = dict(dropouts.drops) if dropouts else {}
        strangers = set(drops) - set(inputs)
        if strangers:
            raise ConfigError(f"dropout schedule names artists without input: {sorted(strangers)}")
        server, artists = self.prepare(list(inputs), round_id=round_id, vector_length=self.validate_inputs(inputs))
        record = InProcessRound(server, artists).run(inputs, drops)
        return AggregationResult(
            total=record.outcome.total,
            contributors=record.outcome.contributors,
            dropped=record.outcome.dropped,
            bytes_up=record.bytes_up,
            bytes_down=record.bytes_down,
        )
