"""One malicious artist with a valid key bundle against pairwise masking (red-team review of
2026-11-30, second night).  Each test fails on the code before its defence.

Played through the real :class:`Coordinator` (the server's masking driver and state machine, fed the
bytes the servicer would feed it) and the real :class:`MaskingClient` of every honest artist, each with
its durable :class:`MaskingJournal`, as in ``tests/test_transport_masking.py``.  The malicious artist
uses only what its own process holds (its identity key, its session's ephemeral keys).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.federation.coordinator import Phase
from fedstyle_secure.federation.masking_session import FETCH_NAMES
from fedstyle_secure.federation.packing import pack
from fedstyle_secure.federation.rejections import Malformed
from fedstyle_secure.secure.keys.keystore import load_artist_keys
from fedstyle_secure.secure.masking.crypto import (
    open_sealed,
    seal,
    share_associated_data,
    share_ciphers,
    sign_advertisement,
)
from fedstyle_secure.secure.masking.messages import AdvertiseKeys, ShareKeys, parse_message
from fedstyle_secure.secure.masking.shamir import PRIME, SHARE_VALUE_BYTES
from fedstyle_secure.transport.artist.masking import MaskingClient
from fedstyle_secure.transport.artist.state import MaskingJournal
from fedstyle_secure.transport.loopback import write_fresh_keys
from fedstyle_secure.transport.wire import new_nonce
from tests.test_transport_masking import _as_message, _Federation, _moments

ROSTER = ("artist_a", "artist_b", "artist_c", "artist_d", "artist_e")
MALICIOUS = "artist_a"
HONEST = ROSTER[1:]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    return write_fresh_keys(tmp_path_factory.mktemp("keys") / "set", ROSTER)


def _federation(keys: Path, tmp_path: Path) -> _Federation:
    """secagg over 5 artists (t = 4), quorum 3, two retries; honest artists keep their masking journal
    (``client.state_dir``, always set under DP) exactly as ``masking_client`` builds it."""
    f = _Federation(keys, ROSTER, quorum=3, max_retries=2)
    for artist in HONEST:
        k = load_artist_keys(keys, artist)
        f.clients[artist] = MaskingClient(
            artist, k.identity_key, k.identity_public_keys, journal=MaskingJournal(tmp_path / artist)
        )
    return f


def test_an_out_of_field_share_is_refused_by_its_holders_naming_the_dealer_before_anything_is_revealed(keys, tmp_path):
    """The malicious artist seals, to each honest peer, a self-mask-seed share of value 2**264 - 1
    (33 bytes of 0xff, at or above the field prime) under a genuine AEAD.  The honest artists used to
    store it unchecked and reveal it at unmasking, where the server refused each HONEST artist's whole
    answer and named the honest artist; journaled as having answered round 0, they refused every
    retry of it, so the run could never pass round 0.  Now each holder refuses the share when it
    opens it, naming the dealer, before it masks or reveals anything: it has answered nothing, and
    it joins the retry."""
    f = _federation(keys, tmp_path)
    f.step(ROSTER, 1.0)  # advertise: all five, keys genuine
    f.step(HONEST, 1.0)  # share: honest artists as usual; the malicious one re-seals a crafted seed share
    plan = f.c.plan()
    assert plan.phase is Phase.SHARE
    m_client = f.clients[MALICIOUS]
    roster_message = f.c.masking_message(MALICIOUS, 0, FETCH_NAMES["share"])
    assert roster_message is not None
    genuine = parse_message(m_client.respond(_as_message(plan, f.schedule), roster_message))
    assert isinstance(genuine, ShareKeys)
    assert m_client._current is not None
    machine = m_client._current.machine  # the malicious process's own session: its X25519 keys
    sid = machine.config.round_id
    crafted = []
    for receiver, sealed in genuine.sealed:
        outbound, _ = share_ciphers(machine._enc_key, machine._peers[receiver].enc_public, sid, MALICIOUS, receiver)
        ad = share_associated_data(sid, MALICIOUS, receiver)
        key_share = open_sealed(outbound, sealed, ad, "own share")[:SHARE_VALUE_BYTES]
        out_of_field = b"\xff" * SHARE_VALUE_BYTES
        assert int.from_bytes(out_of_field, "big") >= PRIME
        crafted.append((receiver, seal(outbound, key_share + out_of_field, ad)))
    f.c.submit_masking(
        MALICIOUS, 0, "share", ShareKeys(sid, MALICIOUS, tuple(crafted)).to_bytes(), None, new_nonce(), 1.0
    )
    plan = f.c.plan()
    assert plan.phase is Phase.MASKED_INPUT
    message = _as_message(plan, f.schedule)
    for artist in HONEST:
        delivery, journal = f.c.masking_message(artist, 0, FETCH_NAMES["masked_input"]), f.clients[artist].journal
        assert delivery is not None and journal is not None
        with pytest.raises(SecureAggregationError, match="share from 'artist_a'.*not a field element"):
            f.clients[artist].respond(message, delivery)
        assert not journal.answered(0)  # nothing revealed, nothing answered
    f.c.tick(60.0)  # masked_input deadline: the round aborts, and is retried
    retry = f.c.plan()
    assert f.c.attempt == 1 and retry.phase is Phase.ADVERTISE
    for artist in HONEST:  # the honest artists can run the round again (without the dealer)
        f.clients[artist].check_can_advertise(_as_message(retry, f.schedule))


def test_an_advertisement_of_a_small_order_x25519_key_is_refused_and_the_round_goes_on(keys, tmp_path):
    """The malicious artist signs, with its own identity key, an advertisement whose encryption key is
    the all-zero X25519 point.  The server used to accept it; every honest artist then failed the key
    agreement one phase later and sat the session out, and the round aborted naming no one.  The
    server now refuses that advertisement alone, naming the advertiser, and the honest artists go on."""
    f = _federation(keys, tmp_path)
    plan = f.c.plan()
    message = _as_message(plan, f.schedule)
    vector, layout = pack(_moments(1.0))
    m_client = f.clients[MALICIOUS]
    genuine = parse_message(m_client.advertise(message, vector))
    assert isinstance(genuine, AdvertiseKeys) and m_client._current is not None
    machine = m_client._current.machine
    low_order = bytes(32)  # u = 0: a point of small order; X25519 with it gives all zeros
    k = load_artist_keys(keys, MALICIOUS)
    signature = sign_advertisement(
        k.identity_key,
        genuine.round_id,
        machine.config.digest,
        MALICIOUS,
        low_order,
        genuine.mask_public,
        genuine.contribution,
    )
    forged = AdvertiseKeys(genuine.round_id, MALICIOUS, low_order, genuine.mask_public, genuine.contribution, signature)
    with pytest.raises(Malformed, match="the encryption key advertised by 'artist_a' is not a usable X25519"):
        f.c.submit_masking(MALICIOUS, 0, "advertise", forged.to_bytes(), layout, new_nonce(), 1.0)
    f.step(HONEST, 1.0)
    f.c.tick(60.0)  # advertise deadline: four of five, above the quorum
    assert f.c.plan().phase is Phase.SHARE
    f.step(HONEST, 61.0)  # every honest artist agrees keys with the others and shares
    assert f.c.plan().phase is Phase.MASKED_INPUT
