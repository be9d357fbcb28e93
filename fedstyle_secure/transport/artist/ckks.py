"""Artist side of ``--secure ckks`` over gRPC: signed contributions, and decryption of nothing but a
sum the artist checked and computed itself (protocol and threat model:
:mod:`fedstyle_secure.secure.ckks.decryption`).

* The round's contribution is encrypted once and resent unchanged in a retried attempt; it is
  signed per attempt (round, attempt, key set, artist, layout, SHA-256 of the ciphertext).
* In the decrypt phase only a committee member acts.  It checks the listed set, commits to it,
  downloads and checks every other contribution, sums them itself, waits for every committee
  member's commitment to the same set, and only then decrypts its own sum; what it uploads is
  flooded with noise (:func:`~fedstyle_secure.secure.ckks.primitives.released_plaintext`), never the exact
  decryption, from which the server could solve for the shared secret key.  Every check uses the
  artist's own key bundle -- its roster, the identity keys of ``identity/<id>.pub``, its CKKS
  parameters -- and the quorum is the larger of the plan's and its own ``client.min_quorum``:
  never just what the server says.  It signs and decrypts only under a committee size of at least
  its own floor, and under one committee size a round (the guard), which makes the floor bound
  every combination of the round's decrypted sums.
* A failed check makes the artist refuse with a warning and send nothing for that attempt; it
  never crashes the artist.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.federation.packing import Layout
from fedstyle_secure.secure.api import DEFAULT_MIN_QUORUM
from fedstyle_secure.secure.ckks.decryption import (
    Attempt,
    DecryptionGuard,
    SignedContribution,
    check_committee_size,
    check_contribution_set,
    commitments_complete,
    layout_bytes,
    layout_from_bytes,
    payload_digest,
    release_noise,
    set_digest,
    sign_commit,
    sign_contribution,
)
from fedstyle_secure.secure.ckks.primitives import CkksSum, encrypt, released_plaintext
from fedstyle_secure.secure.keys.keystore import ArtistKeys
from fedstyle_secure.transport.artist.channel import DOWNLOAD_SLACK_BYTES, ArtistSession
from fedstyle_secure.transport.artist.state import CkksGuardJournal, witness_folder
from fedstyle_secure.transport.wire import pb, vector_payload

log = logging.getLogger(__name__)
Send = Callable[[ArtistSession, pb.RoundPlan], object]
MAX_COMMIT_POLL_SECONDS = 30.0
COMMIT_POLL_PAUSE_SECONDS = 1.0  # polls come at most about this often, whatever the server answers
MAX_COMMIT_WAIT_SECONDS = 600.0  # the artist's own cap on the wait for the committee, whatever deadline is announced


@dataclass(frozen=True)
class SentContribution:
    """What this artist sent in a round: the ciphertext, its digest, the signed layout and length."""

    round_id: int
    payload: bytes
    digest: bytes
    layout: bytes
    length: int

    def packed_layout(self) -> Layout:
        """The layout it was packed in (``layout`` holds its canonical bytes, :func:`layout_bytes`)."""
        return Layout(layout_from_bytes(self.layout))


@dataclass
class CkksClient:
    """One artist's CKKS rounds over the life of its process (the network calls go through ``session``)."""

    keys: ArtistKeys
    min_quorum: int = DEFAULT_MIN_QUORUM
    guard: DecryptionGuard = field(default_factory=DecryptionGuard)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    journal: CkksGuardJournal | None = None  # keeps ``guard`` across restarts (with a state_dir)
    last_refusal: str | None = None
    _own: SentContribution | None = None

    def __post_init__(self) -> None:
        if self.journal is not None:
            self.guard = DecryptionGuard.merged([DecryptionGuard.from_dict(s) for s in self.journal.load()])

    def _keep_guard(self) -> None:
        """Persist the guard before what it allowed is signed (no-op without a journal)."""
        if self.journal is not None:
            self.journal.save(self.guard.to_dict())

    def contribution(self, round_id: int, pack_once: Callable[[], tuple[np.ndarray, Layout]]) -> SentContribution:
        """The round's ciphertext: packed (trained) by ``pack_once`` and encrypted once per round; a
        retried attempt, a replayed message and a resumed process (Flower: one per message) send these
        same bytes.  An earlier round than the one sent is refused: re-training and re-encrypting for
        it would give the server a second signed ciphertext of this artist to combine."""
        own = self._own
        if own is not None and round_id < own.round_id:
            raise SecureAggregationError(
                f"round {round_id}: my contribution of round {own.round_id} was sent; refusing an earlier round"
            )
        if own is None or own.round_id != round_id:
            vector, layout = pack_once()
            payload = encrypt(self.keys.ckks, vector).serialize()
            own = SentContribution(
                round_id, payload, payload_digest(payload), layout_bytes(layout.fields), int(np.asarray(vector).size)
            )
            self._own = own
        return own

    @property
    def sent(self) -> SentContribution | None:
        """The round's encrypted contribution as sent (a process that resumes the artist keeps it)."""
        return self._own

    def resume(self, sent: SentContribution) -> None:
        """Continue a round whose contribution an earlier process of this artist encrypted and sent."""
        self._own = sent

    def declines(self, plan: pb.RoundPlan) -> str | None:
        """Why this artist can take no part in the run ``plan`` belongs to (None: it can): a committee
        size below its own floor, above its roster, or a floor no committee of the roster meets.  The
        committee size is a run parameter (a server restarted with another is refused), so this holds
        for the whole run: the runner withdraws rather than sit out every attempt."""
        try:
            self._sized_attempt(plan)
        except SecureAggregationError as exc:
            return str(exc).split(": ", 1)[-1]  # without the "round r attempt a" prefix
        return None

    def _sized_attempt(self, plan: pb.RoundPlan) -> Attempt:
        """The plan's attempt, its committee size checked against this artist's floor and roster."""
        at = Attempt(plan.round_id, plan.attempt, self.keys.ckks.fingerprint, plan.committee_size)
        check_committee_size(at, self.min_quorum, len(self.keys.identity_public_keys))
        return at

    def _attempt(self, plan: pb.RoundPlan) -> Attempt:
        """:meth:`_sized_attempt`, and the committee size this artist pinned for the round."""
        at = self._sized_attempt(plan)
        self.guard.check_committee_size(at)  # a clear refusal before any signature is checked under it
        return at

    def _contributed(self, round_id: int) -> SentContribution:
        if self._own is None or self._own.round_id != round_id:
            raise SecureAggregationError(f"round {round_id}: I sent no contribution in this round")
        return self._own

    def signature(self, plan: pb.RoundPlan) -> bytes:
        """This artist's signature of its round contribution for the plan's attempt (SecureAggregationError
        if its guard forbids contributing to that attempt)."""
        own, at = self._contributed(plan.round_id), self._attempt(plan)
        self.guard.may_sign(at)
        self._keep_guard()
        return sign_contribution(
            self.keys.identity_key, at, self.keys.artist_id, own.layout, own.digest, self.min_quorum
        )

    def decrypt(self, session: ArtistSession, plan: pb.RoundPlan) -> bytes:
        """The plaintext (float64 bytes) of the sum of the set the server lists, once checked,
        recomputed here and committed to by the whole committee; raise SecureAggregationError otherwise."""
        own, at, me = self._contributed(plan.round_id), self._attempt(plan), self.keys.artist_id
        listed = session.contribution_set(plan.round_id)
        if (listed.round_id, listed.attempt) != (plan.round_id, plan.attempt):
            raise SecureAggregationError(
                f"{at}: the server listed the contributions of round {listed.round_id} attempt {listed.attempt}"
            )
        contributions = [
            SignedContribution(c.artist_id, bytes(c.sha256), bytes(c.signature), c.min_quorum)
            for c in listed.contributions
        ]
        publics = self.keys.identity_public_keys
        committee = check_contribution_set(
            contributions,
            at=at,
            me=me,
            my_digest=own.digest,
            layout=own.layout,
            publics=publics,
            quorum=max(int(plan.quorum), self.min_quorum),
        )
        digest = set_digest(at, contributions)
        self.guard.commit(at, digest)
        self._keep_guard()
        signature = sign_commit(self.keys.identity_key, at, digest)
        commits = session.commit_decryption(plan.round_id, plan.attempt, digest, signature)
        total = CkksSum(self.keys.ckks, own.length)
        for contribution in contributions:
            data = (
                own.payload
                if contribution.artist == me
                else session.contribution(plan.round_id, contribution.artist, max_bytes=_contribution_limit(own))
            )
            if payload_digest(data) != contribution.digest:
                raise SecureAggregationError(
                    f"{at}: the ciphertext served for {contribution.artist!r} is not the one it signed"
                )
            total.add(data, what=f"{at} contribution of {contribution.artist}")
        # the server's deadline, but never longer than this artist's own cap; at most about a poll a
        # second, whatever a poll brings (a server answering at once must not make the artist spin)
        give_up = self.clock() + MAX_COMMIT_WAIT_SECONDS
        if math.isfinite(plan.phase_deadline_unix):  # a NaN deadline would lift the cap (min(nan, x) is nan)
            give_up = min(plan.phase_deadline_unix, give_up)
        seen, asked = _signatures_on(commits, digest, committee), None
        while not commitments_complete(seen, at=at, digest=digest, committee=committee, publics=publics):
            remaining = give_up - self.clock()
            if asked is not None and (pause := COMMIT_POLL_PAUSE_SECONDS - (self.clock() - asked)) > 0:
                self.sleep(min(pause, max(remaining, 0.0)))  # the last poll came back early and incomplete
                remaining = give_up - self.clock()
            if remaining <= 0:
                raise SecureAggregationError(
                    f"{at}: not every committee member {list(committee)} committed to this set by the deadline"
                )
            asked = self.clock()
            commits = session.commit_decryption(
                plan.round_id, plan.attempt, digest, signature, wait_seconds=min(remaining, MAX_COMMIT_POLL_SECONDS)
            )
            seen = _signatures_on(commits, digest, committee)
        return bytes(vector_payload(released_plaintext(total.result(), release_noise(self.keys.ckks, at, digest))))


def _contribution_limit(own: SentContribution) -> int:
    """The most bytes another artist's ciphertext of this round may have: every contribution encrypts
    a vector of the same layout, so about as many bytes as this artist's own (twice, plus slack)."""
    return 2 * len(own.payload) + DOWNLOAD_SLACK_BYTES


def ckks_client(
    keys: ArtistKeys,
    state_dir: Path | None,
    min_quorum: int = DEFAULT_MIN_QUORUM,
    clock: Callable[[], float] = time.time,
    reports_dir: Path | None = None,
) -> CkksClient:
    """The artist process's CKKS client; with a ``state_dir`` its decryption guard survives restarts
    (and, with a ``reports_dir`` outside it, a restored backup of the ``state_dir``)."""
    journal = None if state_dir is None else CkksGuardJournal(state_dir, witness_folder(reports_dir, keys.artist_id))
    return CkksClient(keys, min_quorum=min_quorum, clock=clock, journal=journal)


def _signatures_on(commits: pb.DecryptionCommits, digest: bytes, committee: Sequence[str]) -> dict[str, bytes]:
    """Committee member -> signature, for the members' commitments to ``digest`` (anything else the
    server shows is not a commitment to this set)."""
    return {
        c.artist_id: bytes(c.signature)
        for c in commits.commits
        if bytes(c.set_digest) == digest and c.artist_id in committee
    }


def contribute_step(client: CkksClient, round_id: int, pack_once: Callable[[], tuple[np.ndarray, Layout]]) -> Send:
    """The round's contribution, encrypted once (:meth:`CkksClient.contribution`); return how to send
    it, signed for the plan's attempt (or, when the guard forbids contributing to that attempt or
    the round is earlier than the one sent, log why and send nothing)."""
    try:
        own = client.contribution(round_id, pack_once)
    except SecureAggregationError as exc:  # an earlier round than the one sent: nothing to send
        client.last_refusal = str(exc)
        log.warning("round %d: not contributing: %s", round_id, exc)
        return lambda s, p: None
    payload, layout = own.payload, own.packed_layout()

    def send(session: ArtistSession, plan: pb.RoundPlan) -> object:
        try:
            signature = client.signature(plan)
        except SecureAggregationError as exc:
            client.last_refusal = str(exc)
            log.warning("round %d attempt %d: sitting this attempt out: %s", plan.round_id, plan.attempt, exc)
            return None
        return session.upload(
            round_id,
            pb.PAYLOAD_KIND_CKKS_CIPHERTEXT,
            payload,
            layout,
            signature=signature,
            min_quorum=client.min_quorum,
        )

    return send


def decrypt_step(client: CkksClient, session: ArtistSession, plan: pb.RoundPlan) -> Send:
    """A committee member's part of the decrypt phase; return how to send the plaintext (resendable).

    Refusals (the set or a signature does not check out, this artist is not on the set's committee,
    the committee did not commit) are logged and send nothing; :class:`grpc.RpcError` from the
    server passes through."""
    if session.artist_id not in plan.decryptors:
        return lambda s, p: None  # not asked: the committee decrypts
    try:
        payload = client.decrypt(session, plan)
    except SecureAggregationError as exc:
        client.last_refusal = str(exc)
        log.warning("round %d attempt %d: refusing to decrypt: %s", plan.round_id, plan.attempt, exc)
        return lambda s, p: None
    round_id = plan.round_id
    return lambda s, p: s.upload(round_id, pb.PAYLOAD_KIND_DECRYPTED_AGGREGATE, payload)
