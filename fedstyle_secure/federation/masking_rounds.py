"""Server side of one pairwise-masking session over gRPC: wraps :class:`MaskingServer` (no I/O).

The :class:`~fedstyle_secure.federation.coordinator.Coordinator` owns phases, deadlines, quorum,
nonces and retries; this driver only turns the uploaded bytes into protocol messages, checks
they come from the authenticated artist and belong to this session, feeds them to the state
machine, and keeps each artist's encoded server message of the current phase for
``FetchMasking``.  Every refusal is a :mod:`.rejections` exception raised *before* any state
changes (the state machine itself refuses without changing state), so one bad message never
disturbs the others.

What the server learns (honest-but-curious server, at most ``threshold - 1`` colluding
artists per neighbourhood): the decoded sum of the contributors' packed vectors, who
contributed and who dropped, the public layout and the (public) ephemeral keys.  It never sees
a single unmasked vector or a share in the clear.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.federation.masking_session import FETCH_NAMES, MaskingParams, round_config
from fedstyle_secure.federation.packing import Layout
from fedstyle_secure.federation.rejections import Forbidden, Malformed, WrongRound
from fedstyle_secure.secure.masking import MaskingOutcome, MaskingPhase, MaskingServer
from fedstyle_secure.secure.masking.config import MASKING_PHASES
from fedstyle_secure.secure.masking.messages import (
    AdvertiseKeys,
    MaskedInput,
    Message,
    ShareKeys,
    SurvivorSignature,
    UnmaskResponse,
    parse_message,
)
from fedstyle_secure.secure.masking.server import ArtistMessage

_UPLOAD_TYPES: dict[str, type[ArtistMessage]] = {
    MaskingPhase.ADVERTISE.value: AdvertiseKeys,
    MaskingPhase.SHARE.value: ShareKeys,
    MaskingPhase.MASKED_INPUT.value: MaskedInput,
    MaskingPhase.CONSISTENCY.value: SurvivorSignature,
    MaskingPhase.UNMASK.value: UnmaskResponse,
}


@dataclass
class MaskingRound:
    """One session: ``participants`` may advertise; later phases only those the server answered.

    ``value_range`` is the plan's (low, high) for every packed entry; ``identity_publics`` are
    the artists' Ed25519 identity keys from the server bundle (advertisements are verified here
    too, so a forged one is refused at once instead of poisoning every peer's roster);
    ``layout`` is the round's packed layout from the server's plan: it sizes the session, and
    an advertisement declaring any other layout is refused alone.
    """

    mode: str
    params: MaskingParams
    participants: tuple[str, ...]
    value_range: tuple[float, float]
    identity_publics: Mapping[str, Ed25519PublicKey]
    layout: Layout
    outcome: MaskingOutcome | None = None
    _server: MaskingServer | None = None
    _outgoing: dict[str, bytes] = field(default_factory=dict)
    _fetch_name: str = ""

    # ------------------------------------------------------------------ uploads

    def expected(self, phase: str) -> frozenset[str]:
        """Artists that can still answer ``phase``: everyone for advertise, else those sent a message."""
        return frozenset(self.participants) if phase == MaskingPhase.ADVERTISE.value else frozenset(self._outgoing)

    def receive(self, artist: str, phase: str, data: bytes, layout: Layout | None) -> None:
        """Validate and record ``artist``'s message of the current ``phase`` (checked by the caller)."""
        if artist not in self.expected(phase):
            raise WrongRound(
                f"{artist} is no longer part of masking session {self.params.session_id:#x} (it missed an earlier "
                "phase)"
            )
        message = self._parse(artist, phase, data)
        server = self._server_for(artist, layout) if phase == MaskingPhase.ADVERTISE.value else self._server
        assert server is not None
        try:
            server.receive(message)
        except SecureAggregationError as exc:
            raise Malformed(f"{phase} message of {artist}: {exc}") from exc
        if phase == MaskingPhase.ADVERTISE.value:  # commit only once the message was accepted
            self._server = server

    def _parse(self, artist: str, phase: str, data: bytes) -> Message:
        try:
            message = parse_message(data)
        except SecureAggregationError as exc:
            raise Malformed(f"{phase} message of {artist} does not decode: {exc}") from exc
        expected = _UPLOAD_TYPES[phase]
        if not isinstance(message, expected):
            raise Malformed(f"a {phase!r} upload must carry {expected.__name__}, got {type(message).__name__}")
        if message.sender != artist:
            raise Forbidden(f"certificate of {artist!r} cannot send a masking message as {message.sender!r}")
        if message.round_id != self.params.session_id:
            raise WrongRound(
                f"masking message of session {message.round_id:#x}, the current session is {self.params.session_id:#x}"
            )
        return message

    def _server_for(self, artist: str, layout: Layout | None) -> MaskingServer:
        """The session's state machine, sized by the plan's layout (built at the first accepted
        advertisement); every advertisement must declare exactly that layout."""
        if layout is None or not layout.fields:
            raise Malformed(f"{artist}: an 'advertise' upload must declare the layout of the vector it will mask")
        if layout != self.layout:
            raise Malformed(
                f"{artist}: layout {layout.describe()} differs from this round's "
                f"{self.layout.describe()} (from the plan)"
            )
        if self._server is not None:
            return self._server
        try:
            config = round_config(self.mode, self.participants, self.value_range, self.params, self.layout.size)
        except ConfigError as exc:
            raise Malformed(f"the round's layout {self.layout.describe()} cannot be masked: {exc}") from exc
        return MaskingServer(config, self.identity_publics)

    # ------------------------------------------------------------------ closing phases

    def close(self, phase: str) -> None:
        """End ``phase`` (advertise, share, masked_input or consistency) and prepare each live artist's next message.

        Raises :class:`SecureAggregationError` when the session must abort (fewer than the
        threshold remain, or a needed secret has too few share holders left)."""
        if self._server is None:
            raise SecureAggregationError("no artist advertised keys")
        closers: dict[str, Callable[[], Mapping[str, Message]]] = {
            MaskingPhase.ADVERTISE.value: self._server.close_advertise,
            MaskingPhase.SHARE.value: self._server.close_shares,
            MaskingPhase.MASKED_INPUT.value: self._server.close_masked_inputs,
            MaskingPhase.CONSISTENCY.value: self._server.close_consistency,
        }
        replies = closers[phase]()
        self._outgoing = {artist: message.to_bytes() for artist, message in replies.items()}
        self._fetch_name = FETCH_NAMES[MASKING_PHASES[MASKING_PHASES.index(phase) + 1]]

    def finish(self) -> MaskingOutcome:
        """End phase ``unmask``: the decoded float64 sum of the contributors' vectors."""
        if self._server is None:
            raise SecureAggregationError("no artist advertised keys")
        self.outcome = self._server.finish()
        self._outgoing = {}
        return self.outcome

    # ------------------------------------------------------------------ downloads

    def download(self, artist: str, fetch_name: str) -> bytes:
        """The server's message ``fetch_name`` for ``artist`` in the current phase."""
        if fetch_name != self._fetch_name:
            raise WrongRound(
                f"masking message {fetch_name!r} is not available now (current: {self._fetch_name or 'none'!r})"
            )
        if artist not in self._outgoing:
            raise WrongRound(
                f"{artist} dropped out of masking session {self.params.session_id:#x}; no {fetch_name!r} for it"
            )
        return self._outgoing[artist]
