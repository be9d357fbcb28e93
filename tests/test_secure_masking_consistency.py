"""A lying server against the real masking artists: the consistency phase, the SecAgg+ graph
and participant-list lies (issue 10, item 2).

The server is the attacker, so these tests replace it: the honest :class:`MaskingServer` runs
the phases up to the masked inputs, then the test plays a deviating server against the real
:class:`MaskingArtist` state machines (never a fake artist).  The filer's attack: tell the
target T "only you survived" and every other artist H "T and H survived"; with T's self-mask
seed and every peer's mask key the server strips T's masks and reads T's input.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import numpy as np
import pytest

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.secure.masking import MaskingArtist, MaskingPhase, MaskingServer, RoundConfig, mask_sign
from fedstyle_secure.secure.masking.config import graph_seed
from fedstyle_secure.secure.masking.consistency import survivor_bitmap
from fedstyle_secure.secure.masking.crypto import pairwise_mask_seed, transcript_digest, x25519_from_private_bytes
from fedstyle_secure.secure.masking.graph import harary_graph
from fedstyle_secure.secure.masking.messages import (
    AdvertiseKeys,
    KeyRoster,
    MaskedInput,
    ShareDelivery,
    SurvivorSet,
    UnmaskRequest,
    UnmaskResponse,
)
from fedstyle_secure.secure.masking.prg import MaskGenerator
from fedstyle_secure.secure.masking.shamir import Share, field_element, reconstruct_secret
from fedstyle_secure.secure.masking.summation import MaskedSummation

CLIP = (-1.0, 1.0)
D = 32
RID = 7


def ids(n: int) -> list[str]:
    return [f"a{i}" for i in range(n)]


def inputs_for(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {a: rng.uniform(*CLIP, size=D) for a in ids(n)}


@dataclasses.dataclass
class Round:
    """State after advertise, share and masked_input ran through the honest server."""

    server: MaskingServer
    artists: dict[str, MaskingArtist]
    adverts: dict[str, AdvertiseKeys]
    masked: dict[str, MaskedInput]
    inputs: dict[str, np.ndarray]

    @property
    def config(self) -> RoundConfig:
        return self.server.config

    def show(self, artist: str, members: set[str]) -> SurvivorSet:
        roster = self.config.roster
        return SurvivorSet(RID, artist, len(roster), survivor_bitmap(roster, members))


def through_masked_input(mode: str, n: int, threshold: float | int, degree: int | None = None) -> Round:
    summation = MaskedSummation(mode, clip_range=CLIP, max_clients=16, threshold=threshold, degree=degree)
    inputs = inputs_for(n)
    server, artists = summation.prepare(list(inputs), round_id=RID, vector_length=D)
    adverts = {a: artists[a].advertise_keys() for a in artists}
    for message in adverts.values():
        server.receive(message)
    rosters = server.close_advertise()
    for a, roster in rosters.items():
        server.receive(artists[a].share_keys(roster))
    deliveries = server.close_shares()
    masked = {a: artists[a].masked_input(deliveries[a], inputs[a]) for a in artists}
    for masked_message in masked.values():
        server.receive(masked_message)
    return Round(server, artists, adverts, masked, inputs)


Signed = dict[str, tuple[frozenset[str], bytes]]  # artist -> (set it was shown, its signature)
Lie = Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]  # artist -> (survivors, dropped) asked


def sign_shown(r: Round, shown: Mapping[str, set[str]]) -> tuple[Signed, dict[str, str]]:
    """Show each artist its set; collect the signatures given and the refusals."""
    signatures, refusals = {}, {}
    for artist, members in shown.items():
        try:
            signature = r.artists[artist].sign_survivors(r.show(artist, members)).signature
            signatures[artist] = (frozenset(members), signature)
        except SecureAggregationError as exc:
            refusals[artist] = str(exc)
    return signatures, refusals


def ask(r: Round, requests: Mapping[str, UnmaskRequest]) -> tuple[dict[str, UnmaskResponse], dict[str, str]]:
    responses, refusals = {}, {}
    for artist, request in requests.items():
        try:
            responses[artist] = r.artists[artist].unmask(request)
        except SecureAggregationError as exc:
            refusals[artist] = str(exc)
    return responses, refusals


def reconstruct(r: Round, owner: str, index: int, responses: Mapping[str, UnmaskResponse]) -> bytes | None:
    """What the server can rebuild from the shares it got (index 0: self-mask seed, 1: mask key)."""
    shares = []
    for responder, response in responses.items():
        given = dict(response.key_shares if index else response.seed_shares)
        if owner in given:
            shares.append(Share(r.config.share_x[responder], field_element(given[owner])))
    return reconstruct_secret(shares, r.config.threshold) if len(shares) >= r.config.threshold else None


def strip_target(r: Round, target: str, responses: Mapping[str, UnmaskResponse]) -> np.ndarray | None:
    """The target's input if ``responses`` let the server remove every mask on it, else None."""
    seed = reconstruct(r, target, 0, responses)
    if seed is None:
        return None
    words = r.masked[target].words.copy()
    masks = MaskGenerator(D)
    masks.add_into(words, seed, -1)
    own_key = reconstruct(r, target, 1, responses)
    for peer in r.config.neighbours[target]:
        peer_key = reconstruct(r, peer, 1, responses)
        if peer_key is not None:
            key, public, low, high = peer_key, r.adverts[target].mask_public, peer, target
        elif own_key is not None:
            key, public, low, high = own_key, r.adverts[peer].mask_public, target, peer
        else:
            return None
        pair = pairwise_mask_seed(x25519_from_private_bytes(key), public, RID, low, high)
        masks.add_into(words, pair, -mask_sign(target, peer))
    return r.config.codec.decode_sum(words, 1)


def what_the_lie_needs(r: Round, lie: Lie) -> dict[str, UnmaskResponse]:
    """White-box control: the responses the lie asks for, built from the shares each artist holds."""
    out = {}
    for artist, (survivors, dropped) in lie.items():
        held = r.artists[artist]._held
        out[artist] = UnmaskResponse(
            RID, artist, tuple((a, held[a][1]) for a in survivors), tuple((a, held[a][0]) for a in dropped)
        )
    return out


def filers_lie(config: RoundConfig, target: str) -> Lie:
    """T: only T survived; every other H: T and H survived, everyone else dropped (each request
    restricted to the owners whose shares the artist holds: itself and its neighbours)."""
    lie = {}
    for artist in config.roster:
        held = set(config.holders(artist))
        survivors = {target} if artist == target else {target, artist}
        lie[artist] = (tuple(sorted(held & survivors)), tuple(sorted(held - survivors)))
    return lie


def assert_nothing_revealed(r: Round, responses: Mapping[str, UnmaskResponse], target: str) -> None:
    read = strip_target(r, target, responses)
    assert read is None, f"the server read {target}'s input (error {np.max(np.abs(read - r.inputs[target])):.1e})"
    assert responses == {}
    assert all(artist.phase in (MaskingPhase.CONSISTENCY, MaskingPhase.UNMASK) for artist in r.artists.values())


# --------------------------------------------------------------------------- the filer's attack


@pytest.mark.parametrize("n, t", [(3, 2), (6, 4)])
def test_filers_attack_gets_no_share_and_cannot_read_the_target(n: int, t: int) -> None:
    r = through_masked_input("secagg", n, t)
    target = "a0"
    lie = filers_lie(r.config, target)
    # Control: had the artists answered the lie, the server would read T's input exactly.
    exposed = strip_target(r, target, what_the_lie_needs(r, lie))
    assert exposed is not None and np.max(np.abs(exposed - r.inputs[target])) < 1e-6

    signatures, sign_refusals = sign_shown(r, {a: set(survivors) for a, (survivors, _) in lie.items()})
    # the server relays every signature it holds (its best shot at t of them), then only each set's own
    relayed = tuple(sorted((a, sig) for a, (_, sig) in signatures.items()))
    responses, refusals = ask(r, {a: UnmaskRequest(RID, a, *lie[a], relayed) for a in signatures})
    own_only = {a: UnmaskRequest(RID, a, *lie[a], ((a, signatures[a][1]),)) for a in signatures}
    responses_own, refusals_own = ask(r, own_only)
    assert_nothing_revealed(r, {**responses, **responses_own}, target)
    assert "survivor set has 1 members, threshold is" in sign_refusals[target]
    assert set(refusals) == set(signatures) and all("refusing to unmask" in why for why in refusals.values())
    assert set(refusals_own) == set(signatures) and all(f"threshold is {t}" in why for why in refusals_own.values())


def test_the_filers_attack_on_secagg_plus_is_refused_too() -> None:
    r = through_masked_input("secagg+", 12, 2 / 3, degree=4)  # holders 5, t = 4
    target = "a0"
    lie = filers_lie(r.config, target)
    exposed = strip_target(r, target, what_the_lie_needs(r, lie))
    assert exposed is not None and np.max(np.abs(exposed - r.inputs[target])) < 1e-6
    signatures, sign_refusals = sign_shown(r, {a: set(survivors) for a, (survivors, _) in lie.items()})
    relayed = tuple(sorted((a, sig) for a, (_, sig) in signatures.items()))
    forged = tuple((a, os.urandom(64)) for a in r.artists if a not in signatures)  # pad to everyone
    responses, _ = ask(r, {a: UnmaskRequest(RID, a, *lie[a], tuple(sorted(relayed + forged))) for a in r.artists})
    assert_nothing_revealed(r, responses, target)
    assert signatures == {} and len(sign_refusals) == 12  # {T, H} holds < t of H's share holders


# --------------------------------------------------------------------------- forged, duplicated, misplaced signatures


@pytest.fixture
def honest_signed() -> tuple[Round, dict[str, bytes]]:
    """n = 6, t = 4: every artist was shown the true survivor set (everyone) and signed it."""
    r = through_masked_input("secagg", 6, 4)
    signatures, refusals = sign_shown(r, {a: set(ids(6)) for a in ids(6)})
    assert refusals == {}
    return r, {a: sig for a, (_, sig) in signatures.items()}


def honest_request(r: Round, artist: str, signatures: tuple[tuple[str, bytes], ...]) -> UnmaskRequest:
    return UnmaskRequest(RID, artist, tuple(ids(6)), (), signatures)


def test_forged_signature_is_refused_and_the_genuine_request_still_answered(honest_signed) -> None:
    r, signatures = honest_signed
    genuine = tuple(sorted(signatures.items()))
    forged = tuple((a, os.urandom(64) if a == "a3" else sig) for a, sig in genuine)
    with pytest.raises(SecureAggregationError, match="signature of 'a3' is not valid on the set I signed"):
        r.artists["a1"].unmask(honest_request(r, "a1", forged))
    assert r.artists["a1"].phase is MaskingPhase.UNMASK  # refused without changing state
    response = r.artists["a1"].unmask(honest_request(r, "a1", genuine))
    assert [a for a, _ in response.seed_shares] == ids(6) and response.key_shares == ()


def test_duplicated_signatures_do_not_count_twice(honest_signed) -> None:
    r, signatures = honest_signed
    few = (("a1", signatures["a1"]), ("a2", signatures["a2"]), ("a2", signatures["a2"]), ("a3", signatures["a3"]))
    with pytest.raises(SecureAggregationError, match="duplicate entries in survivor-set signatures"):
        r.artists["a1"].unmask(honest_request(r, "a1", few))
    too_few = "only 3 share holders of 'a0' signed the survivor set, threshold is 4"
    with pytest.raises(SecureAggregationError, match=too_few):
        r.artists["a1"].unmask(honest_request(r, "a1", few[:2] + few[3:]))
    assert r.artists["a1"].phase is MaskingPhase.UNMASK


def test_request_not_implied_by_the_signed_set_is_refused(honest_signed) -> None:
    r, signatures = honest_signed
    genuine = tuple(sorted(signatures.items()))
    lie = UnmaskRequest(RID, "a1", ("a0", "a1", "a3", "a4", "a5"), ("a2",), genuine)  # a2 signed as survivor
    with pytest.raises(SecureAggregationError, match="is not the one the signed survivor set implies"):
        r.artists["a1"].unmask(lie)
    assert r.artists["a1"].phase is MaskingPhase.UNMASK


@pytest.mark.parametrize(
    "shown, reason",
    [
        ({"a0", "a2", "a3", "a4", "a5"}, "does not include me"),
        ({"a1", "a2", "a3"}, "survivor set has 3 members, threshold is 4"),
    ],
)
def test_survivor_set_without_me_or_below_threshold_is_not_signed(shown: set[str], reason: str) -> None:
    r = through_masked_input("secagg", 6, 4)
    with pytest.raises(SecureAggregationError, match=reason):
        r.artists["a1"].sign_survivors(r.show("a1", shown))
    assert r.artists["a1"].phase is MaskingPhase.CONSISTENCY  # it may still sign a proper set, once
    r.artists["a1"].sign_survivors(r.show("a1", set(ids(6))))
    with pytest.raises(SecureAggregationError, match="refusing SurvivorSet in phase 'unmask'"):
        r.artists["a1"].sign_survivors(r.show("a1", set(ids(6)) - {"a5"}))  # one set per session


def test_two_different_sets_to_two_groups_unlock_nobody() -> None:
    """n = 6, t = 4: group A is shown {a0..a3}, group B {a0, a3, a4, a5}; honest artists sign once, so
    neither set can collect 4 signatures."""
    r = through_masked_input("secagg", 6, 4)
    s1, s2 = {"a0", "a1", "a2", "a3"}, {"a0", "a3", "a4", "a5"}
    shown = {"a0": s1, "a1": s1, "a2": s1, "a3": s2, "a4": s2, "a5": s2}
    signatures, refusals = sign_shown(r, shown)
    assert refusals == {}
    everything = tuple(sorted((a, sig) for a, (_, sig) in signatures.items()))
    requests = {}
    for artist, members in shown.items():
        held = set(ids(6))
        requests[artist] = UnmaskRequest(RID, artist, tuple(sorted(members)), tuple(sorted(held - members)), everything)
    responses, refused = ask(r, requests)
    assert set(refused) == set(ids(6))
    matching = {
        a: UnmaskRequest(
            RID,
            a,
            requests[a].survivors,
            requests[a].dropped,
            tuple((s, sig) for s, (m, sig) in sorted(signatures.items()) if m == shown[a]),
        )
        for a in shown
    }
    responses_matching, refused_matching = ask(r, matching)
    assert all("signed the survivor set, threshold is 4" in why for why in refused_matching.values())
    assert_nothing_revealed(r, {**responses, **responses_matching}, "a0")


# --------------------------------------------------------------------------- SecAgg+: per-neighbourhood checks


def test_secagg_plus_needs_t_signatures_among_the_holders_of_every_held_owner() -> None:
    """Ring k = 4, t = 4 of 5 holders: signatures from an artist's own holders do not cover a neighbour
    two steps away, whose other holders must have signed too."""
    r = through_masked_input("secagg+", 10, 4, degree=4)
    signatures, refusals = sign_shown(r, {a: set(ids(10)) for a in ids(10)})
    assert refusals == {}
    artist = "a0"
    own_holders = set(r.config.holders(artist))
    partial = tuple(sorted((a, sig) for a, (_, sig) in signatures.items() if a in own_holders))
    too_few = r"only 3 share holders of 'a\d' signed the survivor set, threshold is 4"
    with pytest.raises(SecureAggregationError, match=too_few):
        r.artists[artist].unmask(UnmaskRequest(RID, artist, tuple(sorted(own_holders)), (), partial))
    needed = set().union(*(r.config.holders(v) for v in own_holders))
    enough = tuple(sorted((a, sig) for a, (_, sig) in signatures.items() if a in needed))
    response = r.artists[artist].unmask(UnmaskRequest(RID, artist, tuple(sorted(own_holders)), (), enough))
    assert [a for a, _ in response.seed_shares] == sorted(own_holders)


def test_secagg_plus_graph_comes_from_the_signed_adverts_not_from_the_server() -> None:
    """Same roster, round id and parameters twice: the graphs differ (fresh contributions), and each is
    the Harary graph seeded by the transcript of the signed adverts every artist verified."""
    first = through_masked_input("secagg+", 16, 2 / 3, degree=4)
    second = through_masked_input("secagg+", 16, 2 / 3, degree=4)
    assert first.config.digest == second.config.digest
    assert first.config.neighbours != second.config.neighbours
    for r in (first, second):
        transcript = transcript_digest(
            r.config.digest,
            [(a.sender, a.enc_public, a.mask_public, a.contribution) for a in (r.adverts[x] for x in r.config.roster)],
        )
        expected = harary_graph(r.config.roster, 4, graph_seed(transcript))
        assert dict(r.config.neighbours) == expected
        assert all(dict(artist.config.neighbours) == expected for artist in r.artists.values())


@pytest.mark.parametrize("change", ["grind a contribution", "drop my advert", "alter my advert"])
def test_secagg_plus_roster_steering_the_graph_is_refused(change: str) -> None:
    summation = MaskedSummation("secagg+", clip_range=CLIP, max_clients=16, degree=4)
    server, artists = summation.prepare(ids(12), round_id=RID, vector_length=D)
    for artist in artists.values():
        server.receive(artist.advertise_keys())
    roster = server.close_advertise()["a0"]
    adverts = list(roster.adverts)
    if change == "grind a contribution":
        adverts[5] = dataclasses.replace(adverts[5], contribution=os.urandom(32))
        reason = f"advertisement of '{adverts[5].sender}' is not signed by its identity key"
    else:
        mine = [] if change == "drop my advert" else [dataclasses.replace(adverts[0], contribution=bytes(32))]
        adverts = mine + adverts[1:]
        reason = "omits or alters my own advertisement"
    with pytest.raises(SecureAggregationError, match=reason):
        artists["a0"].share_keys(dataclasses.replace(roster, adverts=tuple(adverts)))
    assert artists["a0"].phase is MaskingPhase.SHARE and artists["a0"].config.transcript is None
    artists["a0"].share_keys(roster)  # the genuine roster is still accepted


def test_artist_shown_other_adverts_cannot_use_the_others_signatures() -> None:
    """A server hiding one advertisement from a1 (to steer a1's graph) gives a1 another transcript: a1
    and the others refuse each other's survivor-set signatures, so a1 reveals nothing."""
    summation = MaskedSummation("secagg", clip_range=CLIP, max_clients=16, threshold=4)
    inputs = inputs_for(6)
    server, artists = summation.prepare(ids(6), round_id=RID, vector_length=D)
    for artist in artists.values():
        server.receive(artist.advertise_keys())
    rosters = server.close_advertise()
    hidden = tuple(a for a in rosters["a1"].adverts if a.sender != "a5")
    rosters["a1"] = dataclasses.replace(rosters["a1"], adverts=hidden)
    inbox: dict[str, list[tuple[str, bytes]]] = {a: [] for a in artists}
    for sender, artist in artists.items():  # the lying server relays every share as addressed
        for receiver, sealed in artist.share_keys(rosters[sender]).sealed:
            if not (receiver == "a1" and sender == "a5"):
                inbox[receiver].append((sender, sealed))
    for artist_id, artist in artists.items():
        artist.masked_input(ShareDelivery(RID, artist_id, tuple(inbox[artist_id])), inputs[artist_id])
    # the same set for all: only a1's transcript differs
    five = SurvivorSet(RID, "", 6, survivor_bitmap(ids(6), set(ids(5))))
    signatures = {a: artists[a].sign_survivors(dataclasses.replace(five, receiver=a)).signature for a in ids(5)}
    relayed = tuple(sorted(signatures.items()))
    with pytest.raises(SecureAggregationError, match="signature of 'a0' is not valid on the set I signed"):
        artists["a1"].unmask(UnmaskRequest(RID, "a1", tuple(ids(5)), (), relayed))
    with pytest.raises(SecureAggregationError, match="signature of 'a1' is not valid on the set I signed"):
        artists["a0"].unmask(UnmaskRequest(RID, "a0", tuple(ids(5)), ("a5",), relayed))
    assert artists["a1"].phase is MaskingPhase.UNMASK and artists["a0"].phase is MaskingPhase.UNMASK


# --------------------------------------------------------------------------- participant-list lies


def test_artist_given_another_participant_list_refuses_every_peer_advert() -> None:
    """The server tells a0 that only a0, a1, a2 take part (e.g. to make a1, a2 its only share holders)
    and the others that all six do: every advertisement binds the config digest, so a0 refuses the
    others' keys before any share leaves it, and they refuse a0's."""
    honest = MaskedSummation("secagg", clip_range=CLIP, max_clients=16, threshold=2 / 3)
    server, artists = honest.prepare(ids(6), round_id=RID, vector_length=D)
    isolated_config = honest.round_config(ids(3), round_id=RID, vector_length=D)
    publics = {a: artists[a]._identity_key.public_key() for a in artists}
    artists["a0"] = MaskingArtist(isolated_config, "a0", artists["a0"]._identity_key, publics)
    adverts = {a: artist.advertise_keys() for a, artist in artists.items()}
    with pytest.raises(SecureAggregationError, match="advertisement of 'a0' is not signed by its identity key"):
        server.receive(adverts["a0"])  # the honest server notices at once
    mine = tuple(adverts[a] for a in ids(3))
    other_list = "advertisement of 'a1' is not signed .* different participant list"
    with pytest.raises(SecureAggregationError, match=other_list):
        artists["a0"].share_keys(KeyRoster(RID, "a0", mine))
    everyone = tuple(adverts[a] for a in ids(6))
    with pytest.raises(SecureAggregationError, match="advertisement of 'a0' is not signed"):
        artists["a1"].share_keys(KeyRoster(RID, "a1", everyone))
    assert artists["a0"].phase is MaskingPhase.SHARE and artists["a1"].phase is MaskingPhase.SHARE
