"""The server's round state machine: plans, phases, deadlines, quorum, submissions (no I/O).

One :class:`Coordinator` drives a whole run with the *same* pure functions as the in-process
simulator (:mod:`fedstyle_secure.federation.strategy`, :class:`~fedstyle_secure.secure.api.PlainSummation`,
:class:`~fedstyle_secure.secure.ckks.decryption.ContributionCollector`).  The gRPC servicer only decodes calls,
forwards them here and maps :mod:`.rejections` to status codes; time is passed in, so every
deadline path is unit-testable.

Rounds: ``0`` is the set-up round (sum of feature moments -> input standardisation),
``1..R`` are training rounds (simulator round ``r = id - 1``), ``R + 1`` the final publication.
Phases of a round: ``publish`` (prototype releases, when the round refreshes them),
``contribute`` (plain vector or signed CKKS ciphertext), ``decrypt`` (CKKS only: a committee of
``committee_size`` contributors, 2 by default, checks the signed contributions, sums them itself
and returns the plaintext; see :mod:`fedstyle_secure.secure.ckks.decryption`).  With
``secagg``/``secagg+`` the contribute step is the five phases of pairwise masking, ``advertise``
(local training, then signed keys; deadline ``phase_seconds``), ``share``, ``masked_input``,
``consistency`` (signed survivor sets) and ``unmask`` (deadline ``masking_seconds`` each), driven by
:class:`~fedstyle_secure.federation.masking_rounds.MaskingRound`; the server learns only the sum.
Every round's layout (the names and shapes of the summed arrays) comes from the server's own
plan (:func:`~fedstyle_secure.federation.round_layout.round_layout` of ``shape``), never from
an upload; every decoded sum is checked against that plan
(:mod:`fedstyle_secure.federation.sum_checks`) before any state changes, and a sum that fails
aborts the round, naming the reason.  With ``none`` each upload is also checked alone.
A phase closes when every participant answered, or at its deadline
with at least ``quorum`` answers (stragglers are left out: every mode allows it); with fewer
the round is aborted and retried, at most ``max_retries`` times, after which the run stops
with ``failed`` set -- it never waits forever.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.federation.masking_rounds import MaskingRound
from fedstyle_secure.federation.masking_session import (
    TAG_BITS,
    MaskingParams,
    is_masking_mode,
    round_config,
    session_id,
)
from fedstyle_secure.federation.packing import Layout, compact_lossless, unpack
from fedstyle_secure.federation.rejections import Duplicate, Malformed, PastDeadline, WrongRound
from fedstyle_secure.federation.round_layout import FederationShape, round_layout, round_value_range
from fedstyle_secure.federation.rounds import FINAL, RoundRules
from fedstyle_secure.federation.strategy import CONTRIBUTION_RANGE, ServerState, algorithm_spec, publish_prototypes
from fedstyle_secure.federation.sum_checks import (
    InvalidSum,
    check_round_sum,
    checked_aggregate,
    checked_standardisation,
    decode_tolerance,
)
from fedstyle_secure.models.embed import normalise_rows
from fedstyle_secure.privacy.reports import new_run_id
from fedstyle_secure.randomness import MAX_SEED
from fedstyle_secure.secure.api import PlainSummation
from fedstyle_secure.secure.ckks.decryption import (
    COMMITTEE_SIZE,
    Attempt,
    CheckedCiphertext,
    ContributionCollector,
    SignedContribution,
    check_ciphertext,
    largest_committee,
    layout_bytes,
)
from fedstyle_secure.secure.ckks.primitives import CkksContext
from fedstyle_secure.secure.masking.summation import DEFAULT_THRESHOLD

TRANSPORT_SECURE_MODES: tuple[str, ...] = ("none", "ckks", "secagg", "secagg+")
MIN_NONCE_BYTES, MAX_NONCE_BYTES = 16, 64
"""A submission's nonce (bytes): enough randomness, and a bound on what the replay set keeps for the
run (a 3.5 MB nonce fitted one header chunk and was kept whole; red-team review, 2026-12-01)."""
DECRYPT_AGREEMENT = 1e-6  # max relative disagreement between artists' decrypted aggregates


class Phase(str, enum.Enum):
    PUBLISH = "publish"
    CONTRIBUTE = "contribute"
    DECRYPT = "decrypt"
    ADVERTISE = "advertise"  # masking phases: see fedstyle_secure.secure.masking.config.MaskingPhase
    SHARE = "share"
    MASKED_INPUT = "masked_input"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"
    FINISHED = "finished"


MASKING_STEPS: tuple[Phase, ...] = (Phase.ADVERTISE, Phase.SHARE, Phase.MASKED_INPUT, Phase.CONSISTENCY, Phase.UNMASK)


def phases_of_mode(secure_mode: str) -> frozenset[str]:
    """The phases a round of ``secure_mode`` has (the coordinator enters no other): ``contribute`` only
    where contributions are sent in the clear (``none``) or encrypted (``ckks``, then ``decrypt``),
    the masking phases only in ``secagg`` / ``secagg+``.  An artist refuses a plan whose phase is
    not its mode's (a ``contribute`` plan under ``secagg`` would ask for the vector in the clear)."""
    if is_masking_mode(secure_mode):
        steps = MASKING_STEPS
    else:
        steps = (Phase.CONTRIBUTE, Phase.DECRYPT) if secure_mode == "ckks" else (Phase.CONTRIBUTE,)
    return frozenset(p.value for p in (Phase.PUBLISH, *steps))


MASKING_DOWNLOADS: dict[str, Phase] = {  # FetchMasking name -> the phase whose server message it is
    "roster": Phase.SHARE,
    "delivery": Phase.MASKED_INPUT,
    "survivors": Phase.CONSISTENCY,
    "unmask_request": Phase.UNMASK,
}


def _has_unit_direction(rows: np.ndarray) -> bool:
    """Whether every row normalises to unit length as the published index will normalise it
    (:func:`~fedstyle_secure.models.embed.normalise_rows`, in the rows' own dtype): a zero row, or one
    whose square under- or overflows (float32 1e-30, 1e30), would leave the index with a zero row that
    every buyer's load refuses."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        lengths = np.linalg.norm(normalise_rows(rows), axis=1)
    return bool(np.all(np.abs(lengths - 1.0) < 1e-3))


@dataclass(frozen=True)
class Schedule:
    """What the run does.  Times in seconds."""

    algorithm: str = "fedstyle"
    rounds: int = 3
    secure_mode: str = "none"
    quorum: int = 2
    committee_size: int = COMMITTEE_SIZE  # ckks: decryption committee size K (secure/ckks/decryption.py)
    phase_seconds: float = 60.0
    max_retries: int = 2
    standardise: bool = True
    refreshes: frozenset[int] = frozenset()  # plan rounds r that refresh prototypes (federation.rounds)
    seed: int = 0
    masking_seconds: float = 30.0  # deadline of each of share, masked_input, consistency, unmask (crypto only)
    masking_threshold: float = DEFAULT_THRESHOLD  # fraction of share holders needed per secret
    masking_degree: int = 0  # SecAgg+ neighbourhood degree (0: default)
    # extra seconds for the first phase after the server starts or restarts: before its first submission an
    # artist loads its portfolio, extracts style statistics and builds the starting model (minutes on a slow
    # or busy machine); the phase still closes as soon as everyone answered
    startup_seconds: float = 300.0

    def validate(self, n_artists: int) -> None:
        algorithm_spec(self.algorithm)
        if self.secure_mode not in TRANSPORT_SECURE_MODES:
            raise ConfigError(
                f"secure_mode: the gRPC transport supports {TRANSPORT_SECURE_MODES}, got {self.secure_mode!r}"
            )
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if not 1 <= self.quorum <= n_artists:
            raise ConfigError(f"quorum must be within 1..{n_artists} (the roster), got {self.quorum}")
        largest = largest_committee(n_artists)
        if self.secure_mode != "ckks" and self.committee_size != COMMITTEE_SIZE:
            raise ConfigError(
                f"committee_size applies to secure_mode 'ckks' only (the decryption committee); under "
                f"{self.secure_mode!r} it would be ignored, got {self.committee_size}"
            )
        if self.secure_mode == "ckks" and not COMMITTEE_SIZE <= self.committee_size <= largest:
            raise ConfigError(
                f"committee_size must be within {COMMITTEE_SIZE}..{largest} (at most the roster), "
                f"got {self.committee_size}"
            )
        if not (math.isfinite(self.phase_seconds) and self.phase_seconds > 0):
            raise ConfigError(f"phase_seconds must be a finite number > 0, got {self.phase_seconds}")
        if not (math.isfinite(self.startup_seconds) and self.startup_seconds >= 0):
            raise ConfigError(f"startup_seconds must be a finite number >= 0, got {self.startup_seconds}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if not (math.isfinite(self.masking_threshold) and math.isfinite(self.masking_seconds)):
            # checked in masking modes only, a NaN was kept in the run's parameters, where it never equals itself
            raise ConfigError(
                f"masking_threshold and masking_seconds must be finite, got {self.masking_threshold} and "
                f"{self.masking_seconds}"
            )
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be within 0..{MAX_SEED}, got {self.seed}")
        if algorithm_spec(self.algorithm).pooled:
            raise ConfigError("algorithm 'central' pools all data in one place; it has no federated transport")
        if is_masking_mode(self.secure_mode):
            if not (math.isfinite(self.masking_seconds) and self.masking_seconds > 0):
                raise ConfigError(f"masking_seconds must be a finite number > 0, got {self.masking_seconds}")
            params = MaskingParams(0, self.masking_threshold, self.masking_degree)
            round_config(
                self.secure_mode, [f"artist{i}" for i in range(n_artists)], CONTRIBUTION_RANGE, params, 1
            )  # ConfigError if invalid


@dataclass(frozen=True)
class Plan:
    """The current round as artists see it."""

    round_id: int
    kind: str  # "setup" | "train" | "final"
    phase: Phase
    phase_deadline: float
    participants: tuple[str, ...]
    publish: bool
    value_range: tuple[float, float]
    attempt: int
    masking: MaskingParams | None = None  # public parameters of the masking session (masking phases)
    decryptors: tuple[str, ...] = ()  # CKKS decrypt phase: the decryption committee


Submission = tuple[np.ndarray, np.ndarray] | np.ndarray | int
"""What the coordinator keeps of one answer: see :class:`_Collect`."""


@dataclass
class _Collect:
    """Submissions of one phase, by artist (one answer each, kept in one of the three)."""

    publications: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (artist rows, prototypes)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # plain contribution or CKKS decryption (float64)
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of what a collector keeps (CKKS, masking messages)

    @property
    def items(self) -> dict[str, Submission]:
        """Every answer of the phase, by artist."""
        return {**self.publications, **self.vectors, **self.sizes}

    def add(self, artist: str, value: Submission) -> None:
        if isinstance(value, tuple):
            self.publications[artist] = value
        elif isinstance(value, np.ndarray):
            self.vectors[artist] = value
        else:
            self.sizes[artist] = value


@dataclass(frozen=True)
class SecureSum:
    """The last masked round's outcome as the server learnt it: the decoded sum and who is in it."""

    round_id: int
    contributors: tuple[str, ...]
    dropped: tuple[str, ...]
    total: np.ndarray


def random_tag() -> int:
    """A fresh random masking-session tag (:data:`TAG_BITS` bits)."""
    return int.from_bytes(os.urandom(TAG_BITS // 8), "little")


@dataclass
class Coordinator:
    schedule: Schedule
    roster: tuple[str, ...]
    state: ServerState
    shape: FederationShape  # what every round sums, computed by the server from its own model and plan
    ckks: CkksContext | None = None
    identity_publics: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)  # verify masking key advertisements
    tag_source: Callable[[], int] = random_tag
    standardisation: tuple[np.ndarray, np.ndarray] | None = None
    reports: dict[str, int] = field(default_factory=dict)
    run_id: str = field(default_factory=new_run_id)  # announced in every plan, signed into every epsilon report
    failed: str | None = None
    last_error: str = ""
    attempt: int = 0
    _phase: Phase = Phase.CONTRIBUTE
    _deadline: float = 0.0
    _round_id: int = 0
    _collect: _Collect = field(default_factory=_Collect)
    _layout: Layout | None = None
    _ckks_round: ContributionCollector | None = None  # CKKS: this attempt's signed contributions and commitments
    _nonces: set[bytes] = field(default_factory=set)
    _last_closed: tuple[int, str, float, frozenset[str]] = (
        -1,
        "",
        0.0,
        frozenset(),
    )  # round, phase, deadline, answered
    _masking: MaskingRound | None = None
    last_sum: SecureSum | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, now: float) -> None:
        """Open the first round not yet completed (``state.round`` counts completed training rounds)."""
        self.schedule.validate(len(self.roster))
        if self.schedule.secure_mode == "ckks":
            if self.ckks is None:
                raise SecureAggregationError("secure_mode 'ckks' needs the server's public CKKS context")
            self.ckks.check_key_material()  # a bad key file stops the server here, not every artist's round
        needs_identities = is_masking_mode(self.schedule.secure_mode) or self.schedule.secure_mode == "ckks"
        if needs_identities and not set(self.roster) <= set(self.identity_publics):
            raise SecureAggregationError(
                f"secure_mode {self.schedule.secure_mode!r} needs every artist's identity public key"
            )
        needs_setup = self.schedule.standardise and self.standardisation is None and self.state.round == 0
        self._open(0 if needs_setup else self.state.round + 1, now)
        self._deadline += self.schedule.startup_seconds  # artists set up before their first submission

    @property
    def spec(self):
        return algorithm_spec(self.schedule.algorithm)

    @property
    def rules(self) -> RoundRules:
        """Which round publishes, trains or finishes (:mod:`~fedstyle_secure.federation.rounds`, as the simulator)."""
        return RoundRules(self.spec, self.schedule.rounds, self.schedule.refreshes)

    def _open(self, round_id: int, now: float) -> None:
        if round_id > self.schedule.rounds + 1:
            self._phase = Phase.FINISHED
            return
        self._round_id = round_id
        self._ckks_round, self._masking = None, None
        self._layout = round_layout(self.spec, self.shape, self.rules.kind(round_id))  # the plan's, never an upload's
        self._enter(Phase.PUBLISH if self.rules.sends_prototypes(round_id) else self._contribution_phase(), now)

    def _contribution_phase(self) -> Phase:
        """``contribute``, or with masking a fresh session (new random tag) and its ``advertise`` phase."""
        if not is_masking_mode(self.schedule.secure_mode):
            return Phase.CONTRIBUTE
        s = self.schedule
        params = MaskingParams(session_id(self._round_id, self.tag_source()), s.masking_threshold, s.masking_degree)
        assert self._layout is not None
        self._masking = MaskingRound(
            s.secure_mode, params, self.participants, self._value_range(), self.identity_publics, self._layout
        )
        return Phase.ADVERTISE

    def _enter(self, phase: Phase, now: float) -> None:
        """Open ``phase``; its deadline is ``masking_seconds`` for the crypto-only masking phases,
        else ``phase_seconds``."""
        seconds = self.schedule.masking_seconds if phase in MASKING_STEPS[1:] else self.schedule.phase_seconds
        self._phase, self._deadline, self._collect = phase, now + seconds, _Collect()

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(a for a in self.roster if a not in self.state.retired)

    def _value_range(self) -> tuple[float, float]:
        """Every entry of this round's packed contribution lies in it (the masking codec's range)."""
        return round_value_range(self.rules.kind(self._round_id))

    @property
    def layout(self) -> Layout | None:
        """The current round's contribution layout, from the plan (None: the round sums nothing)."""
        return self._layout

    def plan(self) -> Plan:
        decrypting = self._decryption_round
        return Plan(
            round_id=self._round_id,
            kind=self.rules.kind(self._round_id),
            phase=self._phase,
            phase_deadline=self._deadline,
            participants=self.participants,
            publish=self.rules.sends_prototypes(self._round_id),
            value_range=self._value_range(),
            attempt=self.attempt,
            masking=self._masking.params if self._masking is not None and self._phase in MASKING_STEPS else None,
            decryptors=decrypting.committee if decrypting is not None else (),
        )

    @property
    def finished(self) -> bool:
        return self._phase is Phase.FINISHED

    # ------------------------------------------------------------------ submissions

    def _admit(self, artist: str, round_id: int, phase: Phase, nonce: bytes, now: float) -> None:
        """Common checks of every submission, in the order that gives the most precise refusal."""
        if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:  # each accepted one is kept for the run
            raise Malformed(
                f"a submission needs a nonce of {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} random bytes, got {len(nonce)}"
            )
        if nonce in self._nonces:
            raise Duplicate(f"replayed submission: nonce already seen (round {round_id}, {artist})")
        self.check_open(artist, round_id, phase, now)
        if artist in self._collect.items:
            raise Duplicate(f"{artist} already submitted in round {round_id} phase {phase.value!r}")

    def check_open(self, artist: str, round_id: int, phase_name: str, now: float) -> None:
        """Raise unless ``artist`` may submit for ``(round_id, phase_name)`` now (the checks a call's
        metadata allows before its body is read; :meth:`_admit` adds nonce and duplicate checks)."""
        phase = _submission_phase(phase_name)
        if self.finished:
            raise WrongRound("the run is finished")
        closed_round, closed_phase, deadline, answered = self._last_closed
        if (closed_round, closed_phase) == (round_id, phase.value):
            if artist in answered:  # e.g. a resend whose first answer closed the phase and whose ack was lost
                raise Duplicate(f"{artist} already answered round {round_id} phase {phase.value!r}, now closed")
            raise PastDeadline(
                f"round {round_id} phase {phase.value!r} closed at its deadline {deadline:.3f} without {artist}"
            )
        if round_id != self._round_id:
            raise WrongRound(f"round {round_id} is not the current round {self._round_id}")
        if self._phase is not phase:
            raise WrongRound(f"round {round_id} is in phase {self._phase.value!r}, not {phase.value!r}")
        if artist not in self.participants:
            raise WrongRound(f"{artist} is not a participant of round {round_id}")
        if now > self._deadline:
            raise PastDeadline(f"round {round_id} phase {phase.value!r} closed at its deadline {self._deadline:.3f}")

    def submit_publication(
        self, artist: str, round_id: int, rows: np.ndarray, prototypes: np.ndarray, nonce: bytes, now: float
    ) -> None:
        if self._holds_identical_publication(artist, round_id, rows, prototypes):
            return  # the artist retried a publication we already hold (its answer was lost): acknowledged, no change
        self._admit(artist, round_id, Phase.PUBLISH, nonce, now)
        own = self.roster.index(artist)
        if rows.tolist() != [own]:
            raise Malformed(f"{artist} may publish only its own artist row {own}, got rows {rows.tolist()}")
        if prototypes.shape != (1, self.state.prototypes.shape[1]) or not np.all(np.isfinite(prototypes)):
            raise Malformed(
                f"prototypes must be finite with shape (1, {self.state.prototypes.shape[1]}), got {prototypes.shape}"
            )
        if not _has_unit_direction(prototypes.astype(self.state.prototypes.dtype)):  # a DP release always has
            raise Malformed(
                f"{artist} published a prototype with no direction to rank queries by (zero, or "
                "too small or too large to normalise)"
            )
        self._accept(artist, (rows, prototypes), nonce, now)

    def _holds_identical_publication(
        self, artist: str, round_id: int, rows: np.ndarray, prototypes: np.ndarray
    ) -> bool:
        """True if this phase already holds exactly this publication from ``artist``.  A different
        one is still refused as a duplicate by :meth:`_admit` (a publication is a DP release: an
        artist must not swap it for a second draw)."""
        publishing = (round_id, self._phase) == (self._round_id, Phase.PUBLISH)
        held = self._collect.publications.get(artist) if publishing else None
        if held is None:
            return False
        held_rows, held_prototypes = held
        return bool(np.array_equal(held_rows, rows) and np.array_equal(held_prototypes, prototypes))

    def submit_contribution(
        self,
        artist: str,
        round_id: int,
        layout: Layout,
        payload: bytes | CheckedCiphertext,
        nonce: bytes,
        now: float,
        signature: bytes = b"",
        min_quorum: int = 0,
    ) -> None:
        """A packed contribution: float64 bytes (``none``) or a serialised CKKS vector with the
        artist's signature and its signed floor ``min_quorum`` (``ckks``; checked, then kept
        unchanged for the decryption committee; :meth:`check_ciphertext` may have checked it)."""
        self._admit(artist, round_id, Phase.CONTRIBUTE, nonce, now)
        expected = self._check_layout(artist, round_id, layout)
        what = f"round {round_id} contribution of {artist}"
        if self.schedule.secure_mode == "ckks":
            collector = self._ckks_round or self._new_ckks_round(expected)
            try:
                collector.receive(artist, payload, signature, min_quorum)
            except SecureAggregationError as exc:
                raise Malformed(f"{what} refused: {exc}") from exc
            self._ckks_round = collector
            value: np.ndarray | int = len(payload.payload if isinstance(payload, CheckedCiphertext) else payload)
        elif isinstance(payload, CheckedCiphertext):
            raise Malformed(f"{what}: a CKKS ciphertext, but the secure mode is {self.schedule.secure_mode!r}")
        else:  # the server sees this vector: check it alone, as a sum of one contribution
            value_range = self._value_range()
            value = _finite_vector(payload, expected.size, what, value_range)
            try:
                check_round_sum(
                    self.spec, self.shape, self.rules.kind(round_id), unpack(value, expected), 1, value_range
                )
            except InvalidSum as exc:
                raise Malformed(f"{what} refused: {exc}") from exc
            value = compact_lossless(value)  # kept until the phase closes: float32 halves it where exact
        self._accept(artist, value, nonce, now)

    def _check_layout(self, artist: str, round_id: int, layout: Layout) -> Layout:
        """The plan's layout of this round, if ``layout`` (what the artist declares) is exactly it."""
        if self._layout is None:
            raise WrongRound(f"round {round_id} sums no contributions (algorithm {self.schedule.algorithm!r})")
        if layout != self._layout:
            raise Malformed(
                f"{artist}: contribution layout {layout.describe()}, round {round_id} expects "
                f"{self._layout.describe()} (from the plan)"
            )
        return self._layout

    def submit_masking(
        self, artist: str, round_id: int, phase: str, message: bytes, layout: Layout | None, nonce: bytes, now: float
    ) -> None:
        """One pairwise-masking message (``masking_messages`` bytes) of the current masking phase;
        ``layout`` (advertise only) declares the packed vector the artist will mask."""
        step = next((p for p in MASKING_STEPS if p.value == phase), None)
        if step is None:
            raise Malformed(f"unknown masking phase {phase!r}; expected one of {[p.value for p in MASKING_STEPS]}")
        self._admit(artist, round_id, step, nonce, now)
        assert self._masking is not None
        if step is Phase.ADVERTISE:
            if layout is not None:
                self._check_layout(artist, round_id, layout)
        elif layout is not None:
            raise Malformed(f"only an 'advertise' upload declares a layout, not {phase!r}")
        self._masking.receive(artist, phase, message, layout)
        self._accept(artist, len(message), nonce, now)

    def masking_message(self, artist: str, round_id: int, fetch_name: str) -> bytes | None:
        """The server's masking message ``fetch_name`` for ``artist``; None while the phase that
        produces it has not opened yet (the caller may wait), refused once it cannot come."""
        if self.finished or round_id != self._round_id:
            raise WrongRound(
                f"no masking messages for round {round_id} (current round {self._round_id}, phase {self._phase.value})"
            )
        if self._masking is None:
            raise WrongRound(
                f"round {round_id} is in phase {self._phase.value!r}, not a masking phase (secure mode "
                f"{self.schedule.secure_mode!r})"
            )
        wanted = MASKING_DOWNLOADS.get(fetch_name)
        if wanted is None:
            raise Malformed(f"unknown masking download {fetch_name!r}; expected one of {sorted(MASKING_DOWNLOADS)}")
        if self._phase in MASKING_STEPS and MASKING_STEPS.index(wanted) > MASKING_STEPS.index(self._phase):
            return None
        return self._masking.download(artist, fetch_name)

    def _new_ckks_round(self, layout: Layout) -> ContributionCollector:
        """This attempt's collector; the vector length and signed layout come from the plan's ``layout``."""
        context = self._ckks_public
        at = Attempt(self._round_id, self.attempt, context.fingerprint, self.schedule.committee_size)
        return ContributionCollector(context, at, self.identity_publics, layout.size, layout_bytes(layout.fields))

    @cached_property
    def _ckks_public(self) -> CkksContext:
        """The run's CKKS context without key material (the server never needs any)."""
        assert self.ckks is not None  # a 'ckks' schedule without a context is refused at start
        return self.ckks.public() if self.ckks.has_secret_key else self.ckks

    def check_ciphertext(self, artist: str, round_id: int, payload: bytes) -> bytes | CheckedCiphertext:
        """``payload`` checked as a fresh ciphertext of the current round's plan layout under the run's
        context (``Malformed`` otherwise); a payload for another round is returned as it is, for
        :meth:`submit_contribution` to refuse.  Needs no lock: it reads the run's fixed context and
        plan and the round id (a stale read only skips the check, which the submission then makes),
        so the server runs it before taking its lock (:class:`CheckedCiphertext`)."""
        if round_id != self._round_id:
            return payload
        layout = round_layout(self.spec, self.shape, self.rules.kind(round_id))  # as _open() computes it
        if layout is None:
            return payload
        try:
            return check_ciphertext(self._ckks_public, payload, layout.size, f"round {round_id} ciphertext of {artist}")
        except SecureAggregationError as exc:
            raise Malformed(f"round {round_id} contribution of {artist} refused: {exc}") from exc

    def submit_decrypted(self, artist: str, round_id: int, payload: bytes, nonce: bytes, now: float) -> None:
        """A committee member's plaintext of the set's sum, once every member committed to the set."""
        self._admit(artist, round_id, Phase.DECRYPT, nonce, now)
        collector = self._decrypting(artist, round_id)
        if not collector.committed:
            raise WrongRound(f"round {round_id}: not every committee member has committed to the set yet")
        assert self._layout is not None
        what = f"round {round_id} decrypted aggregate of {artist}"
        self._accept(artist, _finite_vector(payload, self._layout.size, what, None), nonce, now)

    def _decrypting(self, artist: str, round_id: int) -> ContributionCollector:
        """The attempt's collector, for a committee member in this round's decrypt phase."""
        if self.finished or round_id != self._round_id or self._phase is not Phase.DECRYPT or self._ckks_round is None:
            raise WrongRound(
                f"round {round_id} has no CKKS contribution set to decrypt "
                f"(current round {self._round_id}, phase {self._phase.value})"
            )
        if artist not in self._ckks_round.committee:
            committee = list(self._ckks_round.committee)
            raise WrongRound(f"{artist} is not on round {round_id}'s decryption committee {committee}")
        return self._ckks_round

    def contribution_set(self, artist: str, round_id: int) -> tuple[int, list[SignedContribution], dict[str, int]]:
        """(attempt, the signed contributions, their sizes in bytes) for a committee member."""
        collector = self._decrypting(artist, round_id)
        contributions = collector.contributions
        return self.attempt, contributions, {c.artist: len(collector.payload(c.artist)) for c in contributions}

    def contribution_payload(self, artist: str, round_id: int, contributor: str) -> bytes:
        try:
            return self._decrypting(artist, round_id).payload(contributor)
        except SecureAggregationError as exc:
            raise Malformed(str(exc)) from exc

    def commit_decryption(self, artist: str, round_id: int, attempt: int, digest: bytes, signature: bytes) -> None:
        """Keep a committee member's signed commitment to this attempt's set (idempotent)."""
        collector = self._decrypting(artist, round_id)
        if attempt != self.attempt:
            raise WrongRound(f"round {round_id} is at attempt {self.attempt}, not {attempt}")
        try:
            collector.commit(artist, digest, signature)
        except SecureAggregationError as exc:
            raise Malformed(str(exc)) from exc

    @property
    def _decryption_round(self) -> ContributionCollector | None:
        """The CKKS collector whose decryption committee is at work (its set is fixed), if any."""
        return self._ckks_round if self._phase is Phase.DECRYPT else None

    @property
    def decryption_phase(self) -> bool:
        """Whether a CKKS decryption committee is at work (its set is fixed)."""
        return self._decryption_round is not None

    @property
    def decryption_committed(self) -> bool:
        """Whether every member of the current decryption committee has committed to the set."""
        decrypting = self._decryption_round
        return decrypting is not None and decrypting.committed

    def decryption_commits(self, artist: str, round_id: int) -> tuple[int, dict[str, tuple[bytes, bytes]]]:
        """(attempt, committee member -> (set digest, signature)) of the commitments held so far."""
        return self.attempt, self._decrypting(artist, round_id).commitments

    def check_report_round(self, round_id: int) -> None:
        """Refuse (``Malformed``) an ε report for a plan round that has not happened: plan round ``r``
        is training round ``r + 1`` (``R``: the final publication), so a report's round is at most the
        current round id and the schedule's rounds.  Threat model: an enrolled artist uploading signed
        reports for any round would fill the reports folder and show a false reporting progress."""
        last = min(self.schedule.rounds, self._round_id)
        if not 0 <= round_id <= last:
            raise Malformed(f"an epsilon report for plan round {round_id}; rounds 0..{last} have happened")

    def record_report(self, artist: str, round_id: int) -> bool:
        """Note ``artist``'s latest reported plan round; whether that changed it."""
        latest = max(round_id, self.reports.get(artist, 0))
        changed = self.reports.get(artist) != latest
        self.reports[artist] = latest
        return changed

    def halt(self, reason: str) -> None:
        """Stop the run for good (``failed`` names ``reason``), e.g. when its state cannot be persisted."""
        self.failed, self._phase = reason, Phase.FINISHED

    def retire(self, artist: str, reason: str) -> bool:
        """Retire ``artist`` for good with ``reason``; False if it had retired already (nothing changes)."""
        if artist in self.state.retired:
            return False
        self.state.retired[artist] = reason
        return True

    def _accept(self, artist: str, value: Submission, nonce: bytes, now: float) -> None:
        self._nonces.add(nonce)
        self._collect.add(artist, value)
        self.tick(now)

    # ------------------------------------------------------------------ closing phases

    def tick(self, now: float) -> bool:
        """Close the phase if everyone answered, or its deadline passed; True when something changed."""
        if self.finished:
            return False
        got = len(self._collect.items)
        everyone = self._expected() <= set(self._collect.items)
        if not everyone and now <= self._deadline:
            return False
        if got < self._needed():
            self._abort(
                f"round {self._round_id} phase {self._phase.value!r}: {got} of {len(self._expected())} "
                f"answered by the deadline, quorum {self._needed()}",
                now,
            )
            return True
        try:
            self._close(now)
        except (ValueError, KeyError, SecureAggregationError) as exc:  # fail closed: rerun the round
            self._abort(f"round {self._round_id} phase {self._phase.value!r} could not be aggregated: {exc}", now)
        return True

    def _expected(self) -> set[str]:
        """Who can still answer this phase (masking: only the artists the server sent a message, but
        the ones retired since -- a withdrawal at a round's start no longer holds the session until
        the advertise deadline; CKKS decrypt: the committee)."""
        if self._masking is not None and self._phase in MASKING_STEPS:
            return set(self._masking.expected(self._phase.value)) - set(self.state.retired)
        if self._phase is Phase.DECRYPT and self._ckks_round is not None:
            return set(self._ckks_round.committee)
        return set(self.participants)

    def _needed(self) -> int:
        """Answers needed to proceed at the deadline: ``quorum`` contributors; every committee
        member's decryption (CKKS: they must agree); one survivor-set signature or one unmasking
        answer (the masking state machine itself checks the threshold)."""
        if self._phase is Phase.DECRYPT:
            return len(self._expected())
        if self._phase in (Phase.CONSISTENCY, Phase.UNMASK):
            return 1
        return min(self.schedule.quorum, max(len(self.participants), 1))

    def _abort(self, reason: str, now: float) -> None:
        self.last_error = reason
        self.attempt += 1
        if self.attempt > self.schedule.max_retries:
            self.failed = f"{reason}; gave up after {self.schedule.max_retries} retries"
            self._phase = Phase.FINISHED
            return
        self._last_closed = (-1, "", 0.0, frozenset())  # the retried attempt reopens every phase of the round
        self._open(self._round_id, now)

    def _close(self, now: float) -> None:
        collected = self._collect
        self._last_closed = (self._round_id, self._phase.value, self._deadline, frozenset(collected.items))
        if self._phase is Phase.PUBLISH:
            for rows, protos in collected.publications.values():
                publish_prototypes(self.state, rows, protos)
            if self.rules.kind(self._round_id) == FINAL:
                return self._complete(now)
            return self._enter(self._contribution_phase(), now)
        # the phases below exist only in a round that sums (a layout), each with its protocol's state
        assert self._layout is not None
        if self._phase in MASKING_STEPS[:-1]:
            assert self._masking is not None
            self._masking.close(self._phase.value)
            return self._enter(MASKING_STEPS[MASKING_STEPS.index(self._phase) + 1], now)
        if self._phase is Phase.UNMASK:
            assert self._masking is not None
            outcome = self._masking.finish()
            self.last_sum = SecureSum(self._round_id, outcome.contributors, outcome.dropped, outcome.total)
            self._apply(unpack(outcome.total, self._layout), len(outcome.contributors))
            return self._complete(now)
        if self._phase is Phase.CONTRIBUTE and self.schedule.secure_mode == "ckks":
            assert self._ckks_round is not None
            self._ckks_round.close()  # fixes the set and its committee, without floors it cannot meet
            kept = len(self._ckks_round.contributions)
            if kept < self._needed():
                raise SecureAggregationError(
                    f"round {self._round_id}: {kept} contributions meet their own signed floors, fewer than the "
                    f"quorum {self._needed()} (left out: {self._ckks_round.left_out})"
                )
            return self._enter(Phase.DECRYPT, now)
        if self._phase is Phase.CONTRIBUTE:
            result = PlainSummation().sum(collected.vectors, round_id=self._round_id)
            total, contributors = result.total, len(result.contributors)
        else:
            assert self._ckks_round is not None
            total = self._agreed_total(collected.vectors)
            contributors = len(self._ckks_round.contributions)
        self._apply(unpack(total, self._layout), contributors)
        self._complete(now)

    def _agreed_total(self, decrypted: Mapping[str, np.ndarray]) -> np.ndarray:
        """Every artist decrypts the same ciphertext; disagreeing answers mean someone lies."""
        values = list(decrypted.values())
        scale = max(1.0, float(np.max(np.abs(values[0]))))
        for artist, vector in decrypted.items():
            if np.max(np.abs(vector - values[0])) > DECRYPT_AGREEMENT * scale:
                raise SecureAggregationError(
                    f"round {self._round_id}: {artist}'s decrypted aggregate disagrees with the others"
                )
        return values[0]

    def _apply(self, sums: dict[str, np.ndarray], contributors: int) -> None:
        """The round's new state from its decoded sum of ``contributors`` contributions, checked
        against the plan first: an impossible sum raises :class:`InvalidSum` (the round aborts
        naming it) and nothing changes."""
        tolerance = decode_tolerance(self._value_range(), contributors, len(self.participants))
        if self._round_id == 0:
            self.standardisation = checked_standardisation(self.spec, self.shape, sums, contributors, tolerance)
        else:
            self.state = checked_aggregate(self.spec, self.shape, self.state, sums, contributors, tolerance)

    def _complete(self, now: float) -> None:
        if self.rules.kind(self._round_id) == FINAL:
            self.state.round = self.schedule.rounds + 1
        self.attempt, self.last_error = 0, ""
        self._open(self._round_id + 1, now)


def _submission_phase(name: str) -> Phase:
    """The phase called ``name``; raises :class:`Malformed` for an unknown one (or ``finished``)."""
    try:
        phase = Phase(name)
    except ValueError:
        phase = Phase.FINISHED
    if phase is Phase.FINISHED:
        names = [p.value for p in Phase if p is not Phase.FINISHED]
        raise Malformed(f"unknown phase {name!r}; expected one of {names}")
    return phase


def _finite_vector(payload: bytes, length: int, what: str, value_range: tuple[float, float] | None) -> np.ndarray:
    if len(payload) != 8 * length:
        raise Malformed(f"{what}: {len(payload)} bytes, the layout needs {8 * length} (float64 x {length})")
    vector = np.frombuffer(payload, dtype="<f8").astype(np.float64)
    if not np.all(np.isfinite(vector)):
        raise Malformed(f"{what}: contains NaN or infinite values")
    if value_range is not None and (vector.min(initial=0) < value_range[0] or vector.max(initial=0) > value_range[1]):
        raise Malformed(f"{what}: values outside the declared range {value_range}")
    return vector
