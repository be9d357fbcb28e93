"""Who may decrypt what under CKKS (pure module, real Ed25519 and TenSEAL): statements, the public
committee rule, the checks of a contribution set, the decryptor's memory, the server's collector."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.secure.ckks.decryption import (
    COMMITTEE_SIZE,
    Attempt,
    ContributionCollector,
    DecryptionGuard,
    SignedContribution,
    check_committee_size,
    check_contribution_set,
    commitments_complete,
    decryption_committee,
    honoured_floors,
    layout_bytes,
    payload_digest,
    release_noise,
    set_digest,
    sign_commit,
    sign_contribution,
    verify_contribution,
)
from fedstyle_secure.secure.ckks.primitives import CkksContext, CkksSum, encrypt

ARTISTS = ("a", "b", "c", "d")
LAYOUT = layout_bytes([("x", (6,))])


@pytest.fixture(scope="module")
def context() -> CkksContext:
    return CkksContext.generate()


@pytest.fixture(scope="module")
def identities() -> dict[str, Ed25519PrivateKey]:
    return {a: Ed25519PrivateKey.generate() for a in ARTISTS}


def _publics(identities):
    return {a: k.public_key() for a, k in identities.items()}


FLOOR = 2  # every artist's own floor on the set's size, unless a test says otherwise


def _entry(identities, at: Attempt, artist: str, digest: bytes, floor: int = FLOOR, layout: bytes = LAYOUT):
    """``artist``'s signed listing entry for the ciphertext of SHA-256 ``digest``."""
    signature = sign_contribution(identities[artist], at, artist, layout, digest, floor)
    return SignedContribution(artist, digest, signature, floor)


def _signed(context, identities, at: Attempt, artists=ARTISTS, floors=None):
    """Each artist's ciphertext of a constant vector and its signed listing entry."""
    payloads = {a: encrypt(context, np.full(6, float(i + 1))).serialize() for i, a in enumerate(artists)}
    floors = floors or {}
    entries = [_entry(identities, at, a, payload_digest(p), floors.get(a, FLOOR)) for a, p in payloads.items()]
    return payloads, entries


def _check(entries, at, me, payloads, identities, quorum=3):
    return check_contribution_set(
        entries,
        at=at,
        me=me,
        my_digest=payload_digest(payloads[me]),
        layout=LAYOUT,
        publics=_publics(identities),
        quorum=quorum,
    )


def test_committee_is_the_lowest_scores_of_the_set_and_changes_with_the_attempt(context):
    at = Attempt(3, 0, context.fingerprint, COMMITTEE_SIZE)
    committee = decryption_committee(at, ARTISTS)
    assert len(committee) == 2 and decryption_committee(at, reversed(ARTISTS)) == committee
    assert (
        decryption_committee(at, set(ARTISTS) - {committee[0]})[0] == committee[1]
    )  # removing a member promotes the next
    assert {decryption_committee(Attempt(3, k, context.fingerprint, COMMITTEE_SIZE), ARTISTS) for k in range(12)} != {
        committee
    }


def test_a_member_accepts_the_honest_set_and_refuses_every_tampered_one(context, identities):
    at = Attempt(1, 0, context.fingerprint, COMMITTEE_SIZE)
    payloads, entries = _signed(context, identities, at)
    me, other = decryption_committee(at, ARTISTS)
    outsider = next(a for a in ARTISTS if a not in (me, other))
    assert _check(entries, at, me, payloads, identities) == (me, other)

    def refused(listing, words, quorum=3, who=me):
        with pytest.raises(SecureAggregationError, match=words):
            _check(listing, at, who, payloads, identities, quorum)

    refused([e for e in entries if e.artist in (me, other)], "fewer than the quorum 3")
    refused([e for e in entries if e.artist != me], "leaves out my own contribution")
    refused(entries + [entries[0]], "lists an artist twice")
    refused(entries + [SignedContribution("mallory", b"\0" * 32, b"\0" * 64, FLOOR)], "outside my roster")
    mine = next(e.digest for e in entries if e.artist == me)
    swapped = [
        SignedContribution(e.artist, mine if e.artist == outsider else e.digest, e.signature, e.min_quorum)
        for e in entries
    ]
    refused(swapped, f"not signed by '{outsider}'")
    old_at = Attempt(0, 0, context.fingerprint, COMMITTEE_SIZE)
    replayed = [_entry(identities, old_at, outsider, e.digest) if e.artist == outsider else e for e in entries]
    refused(replayed, f"not signed by '{outsider}'")
    other_layout = [_entry(identities, at, e.artist, e.digest, layout=b"[]") for e in entries]
    refused(other_layout, "not signed by")
    not_mine = [
        SignedContribution(me, next(x.digest for x in entries if x.artist == other), e.signature, e.min_quorum)
        if e.artist == me
        else e
        for e in entries
    ]
    refused(not_mine, "that I did not send")
    refused(entries, "the committee of this set is", who=outsider)


def test_a_member_enforces_every_contributors_signed_floor(context, identities):
    """A contributor off the committee cannot check the set itself: its own floor (``client.min_quorum``)
    is signed into its contribution, and every committee member refuses a set below it.  A server that
    lists the contribution with a lower floor breaks the signature."""
    at = Attempt(1, 0, context.fingerprint, COMMITTEE_SIZE)
    me, other = decryption_committee(at, ARTISTS)
    strict = next(a for a in ARTISTS if a not in (me, other))
    payloads, entries = _signed(context, identities, at, floors={strict: 4})
    three = [e for e in entries if e.artist in (me, other, strict)]
    assert decryption_committee(at, [e.artist for e in three]) == (me, other)
    with pytest.raises(SecureAggregationError, match=f"fewer than the floor 4 that '{strict}' signed"):
        _check(three, at, me, payloads, identities, quorum=3)  # the plan's quorum and mine allow 3
    lowered = [SignedContribution(e.artist, e.digest, e.signature, FLOOR) if e.artist == strict else e for e in three]
    with pytest.raises(SecureAggregationError, match=f"not signed by '{strict}'"):
        _check(lowered, at, me, payloads, identities, quorum=3)
    assert _check(entries, at, me, payloads, identities) == (me, other)  # all four artists meet the floor 4


def test_commitments_are_complete_only_with_every_members_signature_on_the_same_set(context, identities):
    at = Attempt(1, 0, context.fingerprint, COMMITTEE_SIZE)
    _, entries = _signed(context, identities, at)
    committee = decryption_committee(at, ARTISTS)
    digest, other = set_digest(at, entries), set_digest(at, entries[:3])
    publics = _publics(identities)
    signatures = {a: sign_commit(identities[a], at, digest) for a in committee}
    assert commitments_complete(signatures, at=at, digest=digest, committee=committee, publics=publics)
    assert not commitments_complete(
        {committee[0]: signatures[committee[0]]}, at=at, digest=digest, committee=committee, publics=publics
    )
    with pytest.raises(SecureAggregationError, match="not its signature on this set"):
        commitments_complete(
            {**signatures, committee[1]: sign_commit(identities[committee[1]], at, other)},
            at=at,
            digest=digest,
            committee=committee,
            publics=publics,
        )
    assert (
        set_digest(at, reversed(entries)) == digest
        and set_digest(Attempt(1, 1, context.fingerprint, COMMITTEE_SIZE), entries) != digest
    )


def test_guard_commits_once_per_attempt_and_never_contributes_to_another_attempt_after_committing(context):
    guard = DecryptionGuard()
    first, retry = (
        Attempt(2, 0, context.fingerprint, COMMITTEE_SIZE),
        Attempt(2, 1, context.fingerprint, COMMITTEE_SIZE),
    )
    guard.may_sign(first)
    guard.commit(first, b"1" * 32)
    guard.commit(first, b"1" * 32)  # the same set again (a reconnect): fine
    guard.may_sign(first)  # resending the same attempt's contribution: fine
    with pytest.raises(SecureAggregationError, match="another set in this attempt"):
        guard.commit(first, b"2" * 32)
    with pytest.raises(SecureAggregationError, match="not contributing to another attempt"):
        guard.may_sign(retry)
    with pytest.raises(SecureAggregationError, match="another set in attempt 0"):
        guard.commit(retry, b"3" * 32)
    with pytest.raises(SecureAggregationError, match="attempts only go forward"):
        guard.may_sign(first)  # the server went back to attempt 0 after showing attempt 1
    with pytest.raises(SecureAggregationError, match="earlier round"):
        guard.may_sign(Attempt(1, 5, context.fingerprint, COMMITTEE_SIZE))
    fresh = DecryptionGuard()
    fresh.may_sign(first)
    fresh.may_sign(retry)  # no commitment: a retried attempt may be joined
    with pytest.raises(SecureAggregationError, match="attempts only go forward"):
        fresh.commit(first, b"4" * 32)
    guard.may_sign(Attempt(3, 0, context.fingerprint, COMMITTEE_SIZE))  # a new round starts afresh


def test_a_sets_release_noise_is_one_draw_for_every_member_and_replay_and_unknown_without_the_secret(context):
    """The flooding noise of a set's decryption is a PRF of the key set's secret key and of (round,
    attempt, set): both committee members, a replayed message and a restarted process (here: the key
    file loaded again) draw the same noise, so the server never gets two independent draws of one sum
    to average; another set or attempt gets other noise; the public context cannot derive it."""
    at, digest = Attempt(2, 0, context.fingerprint, COMMITTEE_SIZE), b"1" * 32
    first = release_noise(context, at, digest).gaussian(1.0, 64)
    member_two = CkksContext.load(context.serialize())  # another member's (or a restarted) process

    np.testing.assert_array_equal(release_noise(context, at, digest).gaussian(1.0, 64), first)
    np.testing.assert_array_equal(release_noise(member_two, at, digest).gaussian(1.0, 64), first)
    for other_at, other_digest in ((at, b"2" * 32), (Attempt(2, 1, context.fingerprint, COMMITTEE_SIZE), digest)):
        assert not np.array_equal(release_noise(context, other_at, other_digest).gaussian(1.0, 64), first)
    assert not np.array_equal(release_noise(CkksContext.generate(), at, digest).gaussian(1.0, 64), first)
    with pytest.raises(SecureAggregationError, match="secret key"):
        release_noise(context.public(), at, digest)


def _isolates_one_artist(sets: list[frozenset[int]], n: int) -> bool:
    """Whether some real combination of the sets' indicator vectors is a unit vector."""
    rows = np.array([[1.0 if i in s else 0.0 for i in range(n)] for s in sets])
    for target in np.eye(n):
        solution = np.linalg.lstsq(rows.T, target, rcond=None)[0]
        if np.allclose(rows.T @ solution, target, atol=1e-9):
            return True
    return False


@pytest.mark.parametrize("size, isolates", [(1, True), (2, False)])
def test_committees_of_lowest_scores_stop_differencing_within_an_attempt(size, isolates):
    """Exhaustive over 6 artists (index = score order): for every family of sets of >= 2 artists whose
    committees are pairwise disjoint (each member commits to one set), no combination of their sums
    isolates one artist when committees have 2 members; with 1 member it can (the docstring's lemma)."""
    n = 6
    sets = [frozenset(c) for k in range(2, n + 1) for c in itertools.combinations(range(n), k)]
    committee = {s: frozenset(sorted(s)[:size]) for s in sets}
    found = False
    for count in (2, 3):
        for family in itertools.combinations(sets, count):
            if all(committee[a].isdisjoint(committee[b]) for a, b in itertools.combinations(family, 2)):
                found = found or _isolates_one_artist(list(family), n)
    assert found is isolates


@pytest.mark.parametrize("guarded, isolates", [(True, False), (False, True)])
def test_the_guard_stops_differencing_across_two_attempts(guarded, isolates):
    """Exhaustive over 5 artists and two attempts with different score orders, up to two decrypted
    sets per attempt: committees are disjoint (one commitment per artist and round); with the guard
    a committee member of attempt 0 is in no attempt-1 set, and then no combination isolates one
    artist.  Without that rule (a faked abort, then a rerun without one artist) one does."""
    n = 5
    orders = (list(range(n)), [3, 1, 4, 0, 2])  # score order of each attempt
    sets = [frozenset(c) for k in range(2, n + 1) for c in itertools.combinations(range(n), k)]

    def committee(s: frozenset[int], attempt: int) -> frozenset[int]:
        return frozenset(sorted(s, key=orders[attempt].index)[:2])

    def families(attempt: int):
        for count in (1, 2):
            for family in itertools.combinations(sets, count):
                committees = [committee(s, attempt) for s in family]
                if all(a.isdisjoint(b) for a, b in itertools.combinations(committees, 2)):
                    yield family, frozenset().union(*committees)

    found = False
    for first, committed_first in families(0):
        for second, committed_second in families(1):
            if not committed_first.isdisjoint(committed_second):
                continue  # an artist commits in one attempt of a round
            if guarded and any(committed_first & s for s in second):
                continue  # ... and then contributes to no other attempt
            if _isolates_one_artist(list(first + second), n):
                found = True
                break
        if found:
            break
    assert found is isolates


def _smallest_combination(sets: list[frozenset[int]], below: int) -> int | None:
    """The fewest artists a non-zero real combination of the sets' indicator vectors can hold, if
    fewer than ``below`` (else None): is there a coefficient vector that is zero on every artist
    outside some ``T`` with ``|T| < below`` and not zero on ``T``?"""
    universe = sorted(frozenset().union(*sets))
    rows = np.array([[1.0 if artist in s else 0.0 for s in sets] for artist in universe])
    for size in range(below):
        for inside in itertools.combinations(range(len(universe)), size):
            outside = rows[[i for i in range(len(universe)) if i not in inside]]
            _, singular, vt = np.linalg.svd(outside) if len(outside) else (None, np.zeros(0), np.eye(len(sets)))
            null = vt[int((singular > 1e-9).sum()) :].T
            if null.shape[1] and (size == 0 or np.abs(rows[list(inside)] @ null).max() > 1e-9):
                return size
    return None


@pytest.mark.parametrize("size", [2, 3])
def test_every_combination_of_one_attempts_sums_holds_at_least_the_committee_size(size):
    """Exhaustive over 7 artists (index = score order): for every pair of sets whose committees (their
    ``size`` lowest scores) are disjoint -- each member commits to one set of an attempt -- every
    non-zero combination of the two sums holds at least ``size`` artists, and some pair attains it
    (the nested sets S and S minus its committee: the committee's sum)."""
    n = 7
    sets = [frozenset(c) for k in range(size, n + 1) for c in itertools.combinations(range(n), k)]
    committee = {s: frozenset(sorted(s)[:size]) for s in sets}
    for first, second in itertools.combinations(sets, 2):
        if committee[first].isdisjoint(committee[second]):
            assert _smallest_combination([first, second], size) is None, (sorted(first), sorted(second))
    whole = frozenset(range(n))
    assert _smallest_combination([whole, whole - committee[whole]], size + 1) == size


def test_committees_of_two_sizes_in_one_round_break_the_floor_so_the_size_is_pinned():
    """Why one committee size a round: {0,1,3,4,6} under committee size 2 (committee {0,1}) and
    {2,3,4,6} under size 4 (committee {2,3,4,6}) have disjoint committees, yet their difference holds
    three artists, below the four the second set promised (found by an exhaustive search).  Signing
    K into every statement and pinning it in the guard rules the pair out."""
    small, large = frozenset({0, 1, 3, 4, 6}), frozenset({2, 3, 4, 6})
    assert frozenset(sorted(small)[:2]).isdisjoint(sorted(large)[:4])
    assert _smallest_combination([small, large], 4) == 3


def test_an_artist_signs_only_under_a_committee_size_of_at_least_its_floor_and_one_size_a_round(context):
    """The committee size bounds every combination, so it must meet the artist's own floor; a
    contribution signed under one size verifies under no other; the guard pins the size of its
    first act in a round (kept across a restart), and refuses another until the next round."""
    with pytest.raises(SecureAggregationError, match="committee size 2 is below my floor 3"):
        check_committee_size(Attempt(1, 0, context.fingerprint, 2), 3)
    with pytest.raises(SecureAggregationError, match="committee size 1 is below my floor 2"):
        check_committee_size(Attempt(1, 0, context.fingerprint, 1), 0)
    check_committee_size(Attempt(1, 0, context.fingerprint, 3), 3)
    with pytest.raises(SecureAggregationError, match="above any decryption committee of this federation"):
        check_committee_size(Attempt(1, 0, context.fingerprint, 64), 65)  # no server can meet it: said so
    with pytest.raises(SecureAggregationError, match="no such committee can be formed"):
        check_committee_size(Attempt(1, 0, context.fingerprint, 4), 2, roster=3)
    key = Ed25519PrivateKey.generate()
    two, three = (Attempt(1, 0, context.fingerprint, k) for k in (2, 3))
    entry = SignedContribution("a", b"1" * 32, sign_contribution(key, two, "a", LAYOUT, b"1" * 32, 2), 2)
    verify_contribution(key.public_key(), two, LAYOUT, entry)
    with pytest.raises(SecureAggregationError, match="not signed by 'a'"):
        verify_contribution(key.public_key(), three, LAYOUT, entry)
    guard = DecryptionGuard()
    guard.may_sign(two)
    for other in (three, Attempt(1, 1, context.fingerprint, 3)):
        with pytest.raises(SecureAggregationError, match="acted under decryption committee size 2"):
            guard.may_sign(other)
        with pytest.raises(SecureAggregationError, match="acted under decryption committee size 2"):
            guard.commit(other, b"d" * 32)
    restarted = DecryptionGuard.from_dict(guard.to_dict())
    with pytest.raises(SecureAggregationError, match="acted under decryption committee size 2"):
        restarted.may_sign(three)
    with pytest.raises(SecureAggregationError, match="two commitments or committee sizes"):
        DecryptionGuard.merged([guard, DecryptionGuard(1, 0, None, 3)])
    restarted.may_sign(Attempt(2, 0, context.fingerprint, 3))  # a new round may use another size


def test_a_member_refuses_a_set_smaller_than_the_committee_size(context, identities):
    """A set of fewer artists than the committee size would have a smaller committee, and the bound
    on every combination would shrink with it: refused, even where the quorum allows it."""
    at = Attempt(1, 0, context.fingerprint, 4)
    payloads, entries = _signed(context, identities, at)
    me = decryption_committee(at, ARTISTS)[0]
    three = [e for e in entries if e.artist != next(a for a in ARTISTS if a != me)]
    with pytest.raises(SecureAggregationError, match="3 artists, fewer than the committee size 4"):
        _check(three, at, me, payloads, identities, quorum=2)
    assert _check(entries, at, me, payloads, identities, quorum=2) == decryption_committee(at, ARTISTS)


def test_the_honoured_set_is_the_largest_whose_size_meets_every_floor():
    assert honoured_floors({"a": 2, "b": 2, "c": 2**32 - 1}) == {"a", "b"}
    assert honoured_floors({"a": 2, "b": 3, "c": 3}) == {"a", "b", "c"}
    assert honoured_floors({"a": 3, "b": 3, "c": 4}) == set()  # c out, then 2 < 3 for the rest
    assert honoured_floors({}) == set()


def test_collector_keeps_checked_contributions_and_only_matching_commitments(context, identities):
    public = context.public()
    at = Attempt(1, 0, context.fingerprint, COMMITTEE_SIZE)
    payloads, entries = _signed(context, identities, at, ("a", "b", "c"))
    collector = ContributionCollector(public, at, _publics(identities), 6, LAYOUT)
    for entry in entries:
        collector.receive(entry.artist, payloads[entry.artist], entry.signature, entry.min_quorum)
    with pytest.raises(SecureAggregationError, match="not signed by 'd'"):
        collector.receive("d", payloads["a"], entries[0].signature, FLOOR)
    with pytest.raises(SecureAggregationError, match="not signed by 'a'"):  # the floor is part of what is signed
        collector.receive("a", payloads["a"], entries[0].signature, FLOOR + 1)
    committee = collector.close()
    assert collector.contributions == sorted(entries, key=lambda e: e.artist) and committee == decryption_committee(
        at, "abc"
    )
    with pytest.raises(SecureAggregationError, match="already fixed"):
        collector.receive("d", payloads["a"], entries[0].signature, FLOOR)
    outsider = next(a for a in "abc" if a not in committee)
    with pytest.raises(SecureAggregationError, match="not on the decryption committee"):
        collector.commit(outsider, collector.digest, sign_commit(identities[outsider], at, collector.digest))
    with pytest.raises(SecureAggregationError, match="not this attempt's set"):
        collector.commit(committee[0], b"\0" * 32, sign_commit(identities[committee[0]], at, b"\0" * 32))
    for member in committee:
        assert not collector.committed
        collector.commit(member, collector.digest, sign_commit(identities[member], at, collector.digest))
    assert collector.committed
    total = CkksSum(context, 6)
    for entry in collector.contributions:
        total.add(collector.payload(entry.artist), what=entry.artist)
    np.testing.assert_allclose(total.result().decrypt(), 6.0, atol=1e-6)
