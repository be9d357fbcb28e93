"""Certificate expiry and revocation over real gRPC + mutual TLS: an expired certificate fails the
handshake; a CA-signed CRL (`fedstyle keys revoke`)
makes the server refuse a revoked artist or buyer at its next call, keep serving the others,
pick up a changed CRL without a restart, and fail closed on a tampered one or one that goes
stale while the server runs."""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import grpc
import pytest

from fedstyle_secure.cli.main import main
from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.secure.keys import pki
from fedstyle_secure.secure.keys.keystore import load_artist_keys, load_buyer_tls_pem, revoke
from fedstyle_secure.transport.artist.channel import ArtistSession, open_channel, query
from fedstyle_secure.transport.loopback import write_fresh_keys
from fedstyle_secure.transport.wire import pb, pb_grpc
from tests.fakes import Clock
from tests.servers import ARTISTS, BUYER, address, start


@pytest.fixture
def keys(tmp_path) -> Path:
    return write_fresh_keys(tmp_path / "keys", ARTISTS, [BUYER])  # per test: revocations change it


def _start(keys: Path, tmp_path: Path, crl: Path | None, clock=time.time):
    return start(keys, tmp_path, Schedule(rounds=1, quorum=2, phase_seconds=60), clock, crl=crl)


def _register(port: int, keys: Path, artist: str) -> None:
    artist_keys = load_artist_keys(keys, artist)
    with open_channel(f"127.0.0.1:{port}", artist_keys.tls_pem()) as channel:
        ArtistSession.register(channel, artist_keys)


def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


def test_revoked_artist_and_buyer_are_refused_and_others_served(keys, tmp_path):
    crl = tmp_path / "crl.pem"
    assert main(["keys", "revoke", "--keys", str(keys), "--artist", "artist_c", "--crl", str(crl)]) == 0
    running = _start(keys, tmp_path, crl)
    try:
        _register(running.port, keys, "artist_a")  # not revoked: served
        code, details = _status(lambda: _register(running.port, keys, "artist_c"))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in details
        # revoking the buyer later: the server re-reads the changed CRL without a restart
        assert main(["keys", "revoke", "--keys", str(keys), "--buyer", "buyer_x", "--crl", str(crl)]) == 0
        code, details = _status(lambda: query(address(running), load_buyer_tls_pem(keys, "buyer_x"), b"x"))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in details
        code, _ = _status(lambda: _register(running.port, keys, "artist_c"))  # earlier entries kept
        assert code == grpc.StatusCode.PERMISSION_DENIED
        _register(running.port, keys, "artist_b")  # still serving the others
    finally:
        running.stop(0)


def test_tampered_or_foreign_crl_fails_closed(keys, tmp_path):
    crl = tmp_path / "crl.pem"
    assert main(["keys", "revoke", "--keys", str(keys), "--artist", "artist_c", "--crl", str(crl)]) == 0
    foreign = write_fresh_keys(tmp_path / "foreign", ARTISTS)
    foreign_crl = tmp_path / "foreign.pem"
    assert main(["keys", "revoke", "--keys", str(foreign), "--artist", "artist_a", "--crl", str(foreign_crl)]) == 0
    with pytest.raises(SecureAggregationError, match="not signed by this key set's CA"):
        _start(keys, tmp_path, foreign_crl)  # refuses to start
    running = _start(keys, tmp_path, crl)
    try:
        crl.write_bytes(foreign_crl.read_bytes())  # swapped while running: every call refused
        code, details = _status(lambda: _register(running.port, keys, "artist_a"))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "revocation list" in details
    finally:
        running.stop(0)


def test_revoking_needs_the_ca_key(keys, tmp_path):
    bundle = tmp_path / "server_bundle"
    assert main(["keys", "bundle", "--keys", str(keys), "--server", "--out", str(bundle)]) == 0
    assert main(["keys", "revoke", "--keys", str(bundle), "--artist", "artist_a"]) == 2  # clear error, exit 2


def test_expired_certificate_from_the_right_ca_is_refused_at_handshake(keys, tmp_path):
    import datetime as dt

    from fedstyle_secure.secure.keys import pki

    ca = pki.IssuedCertificate(
        pki.load_certificate_pem((keys / "ca.crt").read_bytes(), "ca"),
        pki.load_tls_private_key_pem((keys / "ca.key").read_bytes(), "ca key"),
    )
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)
    expired = pki.issue_client_certificate(ca, "artist_a", now=past, validity_days=1)
    tls = (
        (keys / "ca.crt").read_bytes(),
        pki.certificate_pem(expired.certificate),
        pki.private_key_pem(expired.private_key),
    )
    running = _start(keys, tmp_path, crl=None)
    try:
        with open_channel(address(running), tls) as channel:
            code, _ = _status(lambda: pb_grpc.FederationStub(channel).GetStatus(pb.StatusRequest(), timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails: nothing reaches the servicer
        assert not running.servicer.registered
        _register(running.port, keys, "artist_b")  # and the server keeps serving
    finally:
        running.stop(0)


def test_crl_going_stale_while_running_fails_closed_until_a_fresh_one_is_installed(keys, tmp_path, caplog):
    """The server's clock passes the CRL's next_update (30 days): every call is refused with the
    reason (logged once); re-issuing the CRL (`fedstyle keys revoke` keeps earlier entries, even
    from a stale list) restores service without a restart, and the revocation still holds."""
    crl, clock = tmp_path / "crl.pem", Clock(time.time())
    revoke(keys, pki.Role.ARTIST, "artist_c", crl)
    running = _start(keys, tmp_path, crl, clock)
    try:
        _register(running.port, keys, "artist_a")
        clock.now += 31 * 86400
        with caplog.at_level(logging.ERROR, logger="fedstyle_secure.transport.auth"):
            for call in (
                lambda: _register(running.port, keys, "artist_b"),
                lambda: query(address(running), load_buyer_tls_pem(keys, "buyer_x"), b"x"),
                lambda: _get_status(running.port, keys, "artist_a"),
            ):
                code, details = _status(call)
                assert code == grpc.StatusCode.PERMISSION_DENIED
                assert "revocation list" in details and "stale since" in details
        assert caplog.text.count("stale since") == 1
        later = dt.datetime.fromtimestamp(clock.now, dt.timezone.utc)
        revoke(keys, pki.Role.ARTIST, "artist_c", crl, now=later)  # the administrator re-issues it
        _register(running.port, keys, "artist_b")
        assert _get_status(running.port, keys, "artist_a").round_id == 0
        code, details = _status(lambda: _register(running.port, keys, "artist_c"))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in details
    finally:
        running.stop(0)


def _get_status(port: int, keys: Path, artist: str) -> pb.Status:
    with open_channel(f"127.0.0.1:{port}", load_artist_keys(keys, artist).tls_pem()) as channel:
        return pb_grpc.FederationStub(channel).GetStatus(pb.StatusRequest(), timeout=5)
