"""Who may decrypt what under ``--secure ckks``: signed contributions, the decryption committee and
the checks an artist makes before it decrypts anything (pure: no file or network I/O).

All artists share one CKKS secret key, so an artist that decrypts whatever the server calls "the
aggregate" is a decryption oracle: the server could hand it one artist's ciphertext and read that
artist's vector.  Here an artist decrypts only a sum it computed itself from ciphertexts that at
least ``quorum`` distinct artists of its own roster signed for this very round and attempt.

Protocol of attempt ``a`` of round ``r`` (driven by ``federation/coordinator.py`` on the server and
``transport/artist/ckks.py`` on the artist):

1. **Contribute.**  Artist ``i`` encrypts its packed vector once per round (a retried attempt
   resends the same ciphertext) and signs with its Ed25519 identity key
   :func:`contribution_statement` = (domain, ``r``, ``a``, key-set fingerprint, ``i``, layout,
   SHA-256 of the ciphertext, its floor), every statement under the attempt's committee size ``K``.
   The server checks the signature and the ciphertext
   (:class:`ContributionCollector`) and keeps both; nothing is summed on the server.
2. **Committee.**  The set ``S`` of accepted contributions is fixed when the phase closes; its
   committee is the ``K`` members of ``S`` (the plan's ``committee_size``, at least
   :data:`COMMITTEE_SIZE`) with the lowest :func:`committee_score` -- a public hash of (``r``, ``a``,
   ``K``, artist id) that nobody chooses; a set of fewer than ``K`` artists is decrypted by nobody.
3. **Decrypt.**  A committee member downloads ``S`` as (artist, digest, signature) and checks it
   (:func:`check_contribution_set`: distinct artists of ITS roster, >= quorum, its own contribution
   included unchanged, every signature valid under the identity keys of ITS key bundle, itself on
   the committee); signs a commitment to the set digest (:func:`commit_statement`); downloads every
   ciphertext, checks it against the signed digest and against its own CKKS parameters, sums them
   itself (:class:`~fedstyle_secure.secure.ckks.primitives.CkksSum`); waits until EVERY committee member has
   signed a commitment to the same set digest (:func:`commitments_complete`); then decrypts its own
   sum and returns the plaintext.
4. The server needs every committee member's plaintext and checks that they agree.

Each artist keeps a :class:`DecryptionGuard` per round: attempts only go forward, it commits to at
most one set per attempt, and once it committed in attempt ``a`` it contributes to and commits in
no other attempt of the round (it sits later attempts out: a retry after a failed decrypt phase
runs without the committee's ``K`` members, so ``max(quorum, K) <= n - K`` keeps such a round alive).

Why the commitments.  Without them a server could show committee member ``X`` the set ``S1`` and
member ``Y`` the set ``S2 = S1 - {D}`` and read ``D``'s vector from the difference of the two
decryptions.  With them, two different sets decrypted in one attempt have disjoint committees
(each member commits once), and committees are the lowest scores of their sets.

Why the committee size ``K`` is announced, signed and pinned.  Lemma: if every set decrypted in an
attempt has a committee of the same size ``K`` (its ``K`` lowest scores) and the committees are
pairwise disjoint, every non-zero linear combination of their sums holds at least ``K`` artists.
Proof: among the sets with a non-zero coefficient take ``Sa``, whose committee's highest score is
the lowest.  A member ``y`` of that committee in another such set ``Sl`` is not on ``Sl``'s
committee (disjoint), so all ``K`` members of ``Sl``'s committee score below ``y``, and ``Sl``'s
committee's highest score is below ``Sa``'s -- a contradiction.  So ``Sa``'s ``K`` committee members
are in no other set, and the combination keeps ``Sa``'s coefficient on each of them.  Across
attempts: by the guard, a committee member of a set decrypted in attempt ``a`` signs nothing for a
later attempt, so the argument applied to the earliest attempt with a non-zero coefficient covers
every sum decrypted in the round.  Committees of *different* sizes break the lemma (``{0,1,3,4,6}``
with committee ``{0,1}`` and ``{2,3,4,6}`` with committee ``{2,3,4,6}`` differ by three artists,
while a size-4 committee promised four; found by an exhaustive search, 2026-12-02), so ``K`` is part
of :class:`Attempt` -- in every signed statement, so contributions signed for one ``K`` verify in no
set of another -- and an artist's guard pins the ``K`` of its first signature in a round and signs
nothing under another ``K`` in that round: every set holding one artist has one ``K``, and sets of
different ``K`` share no artist.  An artist signs only under ``K >= max(2, client.min_quorum)``
(:func:`check_committee_size`), so its floor bounds every combination of the round's decrypted
sums that holds it, not only each sum (before 2026-12-02 the difference of two nested sets could
hold two artists whatever their floors).

Threat model (CKKS mode; ``docs/secure_ckks_keys.md`` has the full table):

* **Curious server** (follows the protocol): learns each round's sum, which artists are in it,
  ciphertext sizes; nothing about an individual vector.
* **Malicious server, no colluding artist**: may drop, reorder, substitute, replay or withhold any
  message.  It gets no plaintext except the sum of a set of at least ``quorum`` distinct roster
  artists' contributions signed for this round and attempt, and every linear combination of the
  sums it gets decrypted in a round -- across all its attempts -- holds at least ``K`` artists, the
  committee size, which is at least every contributor's own floor.  It can always stall a round
  (denial of service).  **Not guaranteed**: combinations of ``K`` or more artists' vectors (e.g. the
  sum of the ``K`` committee members' vectors, from a faked abort and a retry without them, or from
  two nested sets of one attempt decrypted by disjoint committees); artists whose process
  restarted mid-round without a ``client.state_dir`` (the transport keeps the guard there,
  ``ckks-guard.sqlite``; otherwise it lives in memory); and across two runs with the same key set
  and round ids, a server can replay the first run's signed contributions (use one key set per
  federation).
* **Server + one artist**, or **one curious committee member**: every artist holds the secret key,
  and a committee member downloads every contribution of the round to check the sum -- each of them
  decrypts.  With CKKS, individual vectors are confidential only against parties without the key;
  the masking modes (``secagg``/``secagg+``) exist for this threat.  Under DP each contribution is
  itself an (epsilon, delta)-DP release of one artist's artworks.
* **Malicious artist**: its ciphertext is checked against the server's own parameters (refused,
  named, the others unaffected); it cannot sign for another artist; on the committee it can refuse
  to decrypt (the attempt fails) or return a wrong plaintext (the server sees the disagreement).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.randomness import CsprngNoise, NoiseSource
from fedstyle_secure.secure.binary import pack_id, pack_u32, pack_u64
from fedstyle_secure.secure.ckks.primitives import CkksContext, EncryptedVector

COMMITTEE_SIZE = 2
"""Smallest committee size ``K`` (and the server's default): with one member a difference of two sets
isolates one artist.  Every member downloads and sums every contribution of the set."""
MAX_COMMITTEE_SIZE = 64  # honest committees are a few artists (each downloads and sums every contribution)
DIGEST_BYTES = 32
_CONTRIBUTION = b"fedstyle.v1/ckks-contribution"
_SET = b"fedstyle.v1/ckks-contribution-set"
_COMMIT = b"fedstyle.v1/ckks-decryption-commit"
_SCORE = b"fedstyle.v1/ckks-committee"

LayoutFields = Sequence[tuple[str, Sequence[int]]]


@dataclass(frozen=True)
class Attempt:
    """What every CKKS signature is bound to: one attempt of one round under one key set."""

    round_id: int
    attempt: int
    fingerprint: bytes  # CkksContext.fingerprint: parameters + key-set id
    committee_size: int  # K, the plan's announced committee size (module docstring: why it is signed)

    def header(self, domain: bytes) -> bytes:
        """``domain || 0 || u64 round || u32 attempt || 32-byte fingerprint || u32 K`` (domain-separated)."""
        if not 0 <= self.committee_size < 2**32:
            raise SecureAggregationError(f"{self}: a committee size must fit 32 bits, got {self.committee_size}")
        return (
            domain
            + b"\0"
            + pack_u64(self.round_id)
            + pack_u32(self.attempt)
            + self.fingerprint
            + pack_u32(self.committee_size)
        )

    def __str__(self) -> str:
        return f"round {self.round_id} attempt {self.attempt}"


def largest_committee(roster: int) -> int:
    """The largest committee size a federation of ``roster`` artists can have (server and artist alike)."""
    return min(roster, MAX_COMMITTEE_SIZE)


def check_committee_size(at: Attempt, floor: int, roster: int = MAX_COMMITTEE_SIZE) -> None:
    """Raise unless an artist with floor ``floor`` (``client.min_quorum``) and a roster of ``roster``
    artists may sign in ``at``: its committee size ``K`` must be at least ``max(COMMITTEE_SIZE, floor)``,
    since ``K`` is what bounds every combination of decrypted sums, and at most the roster (and
    :data:`MAX_COMMITTEE_SIZE`): a larger committee can never be formed."""
    needed, largest = max(COMMITTEE_SIZE, floor), largest_committee(roster)
    if needed > largest:
        raise SecureAggregationError(
            f"{at}: my floor client.min_quorum = {floor} is above any decryption committee of this federation "
            f"(at most {largest}: the roster, and never above {MAX_COMMITTEE_SIZE}); under ckks the committee size "
            "bounds every combination of a round's decrypted sums, so I never contribute -- lower client.min_quorum"
        )
    if at.committee_size < needed:
        raise SecureAggregationError(
            f"{at}: the announced decryption committee size {at.committee_size} is below my floor {needed} "
            "(client.min_quorum; under ckks the committee size bounds every combination of a round's decrypted "
            f"sums); not contributing -- the server's [federation] committee_size must be at least {needed} "
            f"(a new run), or this artist's client.min_quorum at most {at.committee_size}"
        )
    if at.committee_size > largest:
        raise SecureAggregationError(
            f"{at}: the announced decryption committee size {at.committee_size} is above {largest} (my roster "
            f"and the limit {MAX_COMMITTEE_SIZE}): no such committee can be formed"
        )


@dataclass(frozen=True)
class SignedContribution:
    """One accepted contribution as the committee sees it: who, SHA-256 of the ciphertext, signature,
    and the contributor's own floor on the size of a set that includes it (signed with the rest)."""

    artist: str
    digest: bytes
    signature: bytes
    min_quorum: int


def payload_digest(payload: bytes) -> bytes:
    """SHA-256 of a serialised :class:`~fedstyle_secure.secure.ckks.primitives.EncryptedVector` (32 bytes)."""
    return hashlib.sha256(payload).digest()


def layout_bytes(fields: LayoutFields) -> bytes:
    """Canonical bytes of a packed vector's layout (names and shapes, in order)."""
    return json.dumps([[name, [int(d) for d in shape]] for name, shape in fields], separators=(",", ":")).encode()


def layout_from_bytes(data: bytes) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The layout fields :func:`layout_bytes` encoded."""
    return tuple((str(name), tuple(int(d) for d in shape)) for name, shape in json.loads(data))


def contribution_statement(at: Attempt, artist: str, layout: bytes, digest: bytes, min_quorum: int) -> bytes:
    """The exact bytes artist ``artist`` signs for its ciphertext of SHA-256 ``digest`` in ``at``, with
    its own floor ``min_quorum`` on the size of any set whose sum includes it."""
    if len(digest) != DIGEST_BYTES:
        raise SecureAggregationError(f"{at}: a contribution digest is {DIGEST_BYTES} bytes, got {len(digest)}")
    if not 0 <= min_quorum < 2**32:
        raise SecureAggregationError(f"{at}: a contribution's floor must fit 32 bits, got {min_quorum}")
    return at.header(_CONTRIBUTION) + pack_id(artist) + pack_u32(len(layout)) + layout + digest + pack_u32(min_quorum)


def sign_contribution(
    key: Ed25519PrivateKey, at: Attempt, artist: str, layout: bytes, digest: bytes, min_quorum: int
) -> bytes:
    return key.sign(contribution_statement(at, artist, layout, digest, min_quorum))


def verify_contribution(public: Ed25519PublicKey, at: Attempt, layout: bytes, contribution: SignedContribution) -> None:
    """Raise unless ``contribution`` carries its artist's identity-key signature of this contribution in
    ``at`` (its ciphertext's digest and its floor included)."""
    artist = contribution.artist
    try:
        public.verify(
            contribution.signature,
            contribution_statement(at, artist, layout, contribution.digest, contribution.min_quorum),
        )
    except InvalidSignature:
        raise SecureAggregationError(
            f"{at}: the contribution listed for {artist!r} is not signed by {artist!r}'s identity key for this "
            "round, attempt, layout, ciphertext and floor (forged, substituted, replayed or altered)"
        ) from None


def honoured_floors(floors: Mapping[str, int]) -> set[str]:
    """The largest set of contributors whose size meets every member's own signed floor (artist ->
    ``min_quorum``): contributors whose floor the set cannot meet are left out, repeatedly.  Any set
    an honest committee accepts is a subset of it, so an honest server that lists it loses no
    contribution the committee would sum, and one artist's impossible floor (a crafted 2**32 - 1)
    costs only its own contribution, not the round."""
    kept = set(floors)
    while unmet := {artist for artist in kept if floors[artist] > len(kept)}:
        kept -= unmet
    return kept


def set_digest(at: Attempt, contributions: Iterable[SignedContribution]) -> bytes:
    """SHA-256 naming one set of contributions of ``at`` (order-independent)."""
    entries = sorted(contributions, key=lambda c: c.artist)
    return hashlib.sha256(at.header(_SET) + b"".join(pack_id(c.artist) + c.digest for c in entries)).digest()


def committee_score(at: Attempt, artist: str) -> bytes:
    """A public pseudo-random rank of ``artist`` in ``at``; nobody chooses it."""
    return hashlib.sha256(at.header(_SCORE) + pack_id(artist)).digest()


def decryption_committee(at: Attempt, artists: Iterable[str]) -> tuple[str, ...]:
    """The ``at.committee_size`` artists of ``artists`` with the lowest :func:`committee_score`, lowest
    first (all of them if the set is smaller; :func:`check_contribution_set` refuses such a set)."""
    return tuple(sorted(set(artists), key=lambda a: committee_score(at, a))[: at.committee_size])


def commit_statement(at: Attempt, digest: bytes) -> bytes:
    """The bytes a committee member signs to commit to decrypting the set of ``digest`` in ``at``."""
    return at.header(_COMMIT) + digest


def sign_commit(key: Ed25519PrivateKey, at: Attempt, digest: bytes) -> bytes:
    return key.sign(commit_statement(at, digest))


def verify_commit(public: Ed25519PublicKey, at: Attempt, artist: str, digest: bytes, signature: bytes) -> None:
    """Raise unless ``signature`` is ``artist``'s commitment to the set of ``digest`` in ``at``."""
    try:
        public.verify(signature, commit_statement(at, digest))
    except InvalidSignature:
        raise SecureAggregationError(
            f"{at}: the commitment shown for {artist!r} is not its signature on this set"
        ) from None


def check_contribution_set(
    contributions: Sequence[SignedContribution],
    *,
    at: Attempt,
    me: str,
    my_digest: bytes,
    layout: bytes,
    publics: Mapping[str, Ed25519PublicKey],
    quorum: int,
) -> tuple[str, ...]:
    """The set's committee, if ``me`` may help decrypt its sum; else raise naming what is wrong.

    ``publics`` are the identity keys of ``me``'s own key bundle (its roster); ``my_digest`` and
    ``layout`` describe the contribution ``me`` itself sent in this round.  A set without ``me``'s
    own contribution is refused: the committee rule (lowest scores OF THE SET) only stops a server
    from choosing its decryptors if every decryptor is in the set it decrypts.
    """
    check_committee_size(at, 0)  # the artist checked K against its own floor when it signed (guard: one K a round)
    artists = [c.artist for c in contributions]
    if len(set(artists)) != len(artists):
        raise SecureAggregationError(f"{at}: the contribution set lists an artist twice: {sorted(artists)}")
    strangers = sorted(set(artists) - set(publics))
    if strangers:
        raise SecureAggregationError(f"{at}: the contribution set names artists outside my roster: {strangers}")
    if len(artists) < quorum:
        raise SecureAggregationError(
            f"{at}: the contribution set has {len(artists)} artists, fewer than the quorum {quorum}"
        )
    if len(artists) < at.committee_size:
        raise SecureAggregationError(
            f"{at}: the contribution set has {len(artists)} artists, fewer than the committee size {at.committee_size}"
        )
    mine = next((c for c in contributions if c.artist == me), None)
    if mine is None:
        raise SecureAggregationError(f"{at}: the contribution set leaves out my own contribution")
    if mine.digest != my_digest:
        raise SecureAggregationError(f"{at}: the contribution set lists a ciphertext under my name that I did not send")
    for contribution in contributions:
        verify_contribution(publics[contribution.artist], at, layout, contribution)
    strictest = max(contributions, key=lambda c: c.min_quorum)
    if len(artists) < strictest.min_quorum:
        raise SecureAggregationError(
            f"{at}: the contribution set has {len(artists)} artists, fewer than the floor {strictest.min_quorum} "
            f"that {strictest.artist!r} signed into its contribution"
        )
    committee = decryption_committee(at, artists)
    if me not in committee:
        raise SecureAggregationError(f"{at}: by the public rule the committee of this set is {list(committee)}, not me")
    return committee


def commitments_complete(
    commitments: Mapping[str, bytes],
    *,
    at: Attempt,
    digest: bytes,
    committee: Sequence[str],
    publics: Mapping[str, Ed25519PublicKey],
) -> bool:
    """True once every committee member's valid signature on ``digest`` is in ``commitments``
    (artist -> signature); raise if one present does not verify under ``publics``."""
    for artist in committee:
        signature = commitments.get(artist)
        if signature is None:
            return False
        verify_commit(publics[artist], at, artist, digest, signature)
    return True


@dataclass
class DecryptionGuard:
    """An artist's memory of its current round (kept across restarts by the transport's journal when
    the artist has a ``state_dir``; otherwise in memory only).

    * attempts only go forward: nothing is signed or committed for an attempt older than one seen;
    * one committee size a round: the ``K`` of its first act in a round is pinned, and a signature or
      commitment under another ``K`` in that round is refused;
    * one commitment per attempt: a second, different set in the same attempt is refused;
    * after committing in attempt ``a``, the artist signs and commits nothing in any other attempt
      of the round (it sits later attempts out).

    Then a committee member of a set decrypted in attempt ``a`` is in no set of a later attempt,
    and the lemma of this module extends to every sum decrypted in the round: the earliest attempt
    with a non-zero coefficient can only be cancelled within itself.
    """

    _round: int = -1
    _latest: int = -1
    _commitment: tuple[int, bytes] | None = None  # (attempt, set digest)
    _committee_size: int | None = None  # K pinned in _round (None: nothing done in it yet)

    def to_dict(self) -> dict[str, object]:
        """The guard's memory as JSON-able data (to survive a restart, see ``CkksGuardJournal``)."""
        commitment = None if self._commitment is None else [self._commitment[0], self._commitment[1].hex()]
        return {
            "round": self._round,
            "latest": self._latest,
            "commitment": commitment,
            "committee_size": self._committee_size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> DecryptionGuard:
        commitment: Any = data.get("commitment")
        size: Any = data.get("committee_size")
        try:
            restored = None if commitment is None else (int(commitment[0]), bytes.fromhex(str(commitment[1])))
            pinned = None if size is None else int(size)
            return cls(int(str(data["round"])), int(str(data["latest"])), restored, pinned)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise SecureAggregationError(f"unreadable CKKS decryption guard {data!r}: {exc}") from exc

    @classmethod
    def merged(cls, copies: Sequence[DecryptionGuard]) -> DecryptionGuard:
        """One guard from the copies an artist keeps in two places (a restored backup of one holds an
        older state): the latest round's, with its latest attempt, its commitment and its pinned
        committee size.  Copies of one round naming two different commitments or committee sizes are
        refused: the artist acted twice in the round."""
        if not copies:
            return cls()
        round_id = max(g._round for g in copies)
        current = [g for g in copies if g._round == round_id]
        commitments = {g._commitment for g in current if g._commitment is not None}
        sizes = {g._committee_size for g in current if g._committee_size is not None}
        if len(commitments) > 1 or len(sizes) > 1:
            raise SecureAggregationError(
                f"round {round_id}: the copies of the CKKS decryption guard name two commitments or committee sizes"
            )
        return cls(round_id, max(g._latest for g in current), next(iter(commitments), None), next(iter(sizes), None))

    def check_committee_size(self, at: Attempt) -> None:
        """Raise if this artist acted under another committee size in ``at``'s round (no change)."""
        if at.round_id == self._round and self._committee_size not in (None, at.committee_size):
            raise SecureAggregationError(
                f"{at}: I acted under decryption committee size {self._committee_size} in this round; refusing "
                f"committee size {at.committee_size} (sums under two sizes could be differenced below either)"
            )

    def _enter(self, at: Attempt) -> None:
        if at.round_id < self._round:
            raise SecureAggregationError(f"{at}: round {self._round} has begun; refusing to act in an earlier round")
        if at.round_id > self._round:
            self._round, self._latest, self._commitment, self._committee_size = at.round_id, -1, None, None
        if at.attempt < self._latest:
            raise SecureAggregationError(f"{at}: I already acted in attempt {self._latest}; attempts only go forward")
        self.check_committee_size(at)
        self._latest, self._committee_size = at.attempt, at.committee_size

    def may_sign(self, at: Attempt) -> None:
        """Raise unless this artist may sign its contribution for ``at``."""
        self._enter(at)
        if self._commitment is not None and self._commitment[0] != at.attempt:
            raise SecureAggregationError(
                f"{at}: I committed to decrypting a set in attempt {self._commitment[0]} of this round; "
                "not contributing to another attempt (its sum could be differenced with that one)"
            )

    def commit(self, at: Attempt, digest: bytes) -> None:
        """Record the commitment to the set of ``digest`` (idempotent); raise if it contradicts the rules."""
        self._enter(at)
        if self._commitment is not None and self._commitment != (at.attempt, digest):
            where = "this attempt" if self._commitment[0] == at.attempt else f"attempt {self._commitment[0]}"
            raise SecureAggregationError(
                f"{at}: I already committed to decrypting another set in {where} of this round"
            )
        self._commitment = (at.attempt, digest)


def release_noise(context: CkksContext, at: Attempt, digest: bytes) -> NoiseSource:
    """The flooding noise of a committee member's decryption of the set ``digest`` in ``at``: a
    ChaCha20 stream keyed by a PRF of the key set's secret key (:meth:`CkksContext.release_key`) and
    of the round, attempt and set.

    Threat model: the noise keeps the server (which relays every ciphertext) from solving the exact
    decryption for the secret key (:func:`released_plaintext`).  Independent draws of one sum would
    let it average the noise away: N releases divide it by sqrt(N).  Keyed like this, every release
    of one set -- both committee members', a replayed message's, a restarted process's -- is the same
    bytes.  The key is unknown to the server; the artists know it, but they hold the secret key itself
    (a colluding artist can hand the server everything; not defended, see the threat table)."""
    label = at.header(b"fedstyle-ckks-release/v1") + digest
    return CsprngNoise(context.release_key(label))


@dataclass(frozen=True)
class CheckedCiphertext:
    """Serialised ciphertext bytes that :func:`check_ciphertext` parsed as a fresh encryption of
    ``length`` values under the context of ``fingerprint``.  The check (0.1-0.2 s of TenSEAL for a
    model-sized vector) runs once, where the caller chooses: the server runs it before its lock, so
    an artist resending crafted ciphertexts holds no lock the other artists' calls need."""

    payload: bytes
    fingerprint: bytes
    length: int


def check_ciphertext(context: CkksContext, payload: bytes, length: int, what: str) -> CheckedCiphertext:
    """``payload`` as a :class:`CheckedCiphertext`: raise :class:`SecureAggregationError` unless it is a
    fresh encryption of ``length`` values under ``context`` (:meth:`EncryptedVector.load`)."""
    EncryptedVector.load(context, payload, length=length, what=what, fresh=True)
    return CheckedCiphertext(payload, context.fingerprint, length)


@dataclass
class _Held:
    contribution: SignedContribution
    payload: bytes


class ContributionCollector:
    """Server side of one attempt: checks and keeps signed contributions, fixes the set and its
    committee, collects the committee's commitments.  Nothing is summed here."""

    def __init__(
        self, context: CkksContext, at: Attempt, publics: Mapping[str, Ed25519PublicKey], length: int, layout: bytes
    ) -> None:
        if context.fingerprint != at.fingerprint:
            raise SecureAggregationError(f"{at}: the server's CKKS context is not the key set the attempt is bound to")
        self.context, self.at, self.publics, self.length, self.layout = context, at, publics, length, layout
        self._held: dict[str, _Held] = {}
        self._committee: tuple[str, ...] | None = None
        self._digest: bytes | None = None
        self._commitments: dict[str, tuple[bytes, bytes]] = {}  # member -> (set digest, signature)
        self.left_out: list[str] = []  # contributors whose signed floor the closed set could not meet

    def receive(self, artist: str, ciphertext: bytes | CheckedCiphertext, signature: bytes, min_quorum: int) -> None:
        """Check ``artist``'s signed ciphertext (signature, then every chunk against the server's own
        context, unless :func:`check_ciphertext` checked it for this context and length already) and
        keep it; raise :class:`SecureAggregationError` naming the artist otherwise."""
        if self._committee is not None:
            raise SecureAggregationError(f"{self.at}: the contribution set is already fixed")
        public = self.publics.get(artist)
        if public is None:
            raise SecureAggregationError(f"{self.at}: no identity key for {artist!r}")
        payload = ciphertext.payload if isinstance(ciphertext, CheckedCiphertext) else ciphertext
        contribution = SignedContribution(artist, payload_digest(payload), signature, min_quorum)
        verify_contribution(public, self.at, self.layout, contribution)
        if not isinstance(ciphertext, CheckedCiphertext):
            ciphertext = check_ciphertext(self.context, payload, self.length, f"{self.at} ciphertext of {artist}")
        if (ciphertext.fingerprint, ciphertext.length) != (self.context.fingerprint, self.length):
            raise SecureAggregationError(f"{self.at}: the ciphertext of {artist} was checked for another context")
        self._held[artist] = _Held(contribution, payload)

    def close(self) -> tuple[str, ...]:
        """Fix the set of contributions received so far, without those whose signed floor it cannot
        meet (:func:`honoured_floors`; named in :attr:`left_out`); its committee."""
        kept = honoured_floors({artist: held.contribution.min_quorum for artist, held in self._held.items()})
        self.left_out = sorted(set(self._held) - kept)
        self._held = {artist: self._held[artist] for artist in sorted(kept)}
        if len(self._held) < self.at.committee_size:
            raise SecureAggregationError(
                f"{self.at}: {len(self._held)} contributions to decrypt, fewer than the committee size "
                f"{self.at.committee_size} (left out for their floors: {self.left_out})"
            )
        self._committee = decryption_committee(self.at, self._held)
        self._digest = set_digest(self.at, self.contributions)
        return self._committee

    @property
    def contributions(self) -> list[SignedContribution]:
        return [self._held[a].contribution for a in sorted(self._held)]

    @property
    def committee(self) -> tuple[str, ...]:
        if self._committee is None:
            raise SecureAggregationError(f"{self.at}: the contribution set is not fixed yet")
        return self._committee

    @property
    def digest(self) -> bytes:
        """:func:`set_digest` of the fixed set."""
        if self._digest is None:
            raise SecureAggregationError(f"{self.at}: the contribution set is not fixed yet")
        return self._digest

    def payload(self, artist: str) -> bytes:
        held = self._held.get(artist)
        if held is None:
            raise SecureAggregationError(f"{self.at}: no contribution of {artist!r} in the set")
        return held.payload

    def commit(self, artist: str, digest: bytes, signature: bytes) -> None:
        """Keep a committee member's commitment to this attempt's set (idempotent)."""
        if artist not in self.committee:
            raise SecureAggregationError(
                f"{self.at}: {artist} is not on the decryption committee {list(self.committee)}"
            )
        if digest != self._digest:
            raise SecureAggregationError(
                f"{self.at}: {artist} committed to a set digest that is not this attempt's set"
            )
        verify_commit(self.publics[artist], self.at, artist, digest, signature)
        self._commitments[artist] = (digest, signature)

    @property
    def commitments(self) -> dict[str, tuple[bytes, bytes]]:
        """Committee member -> (set digest, signature) of its commitment."""
        return dict(self._commitments)

    @property
    def committed(self) -> bool:
        return self._committee is not None and set(self._committee) <= set(self._commitments)
