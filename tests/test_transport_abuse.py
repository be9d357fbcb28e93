"""Bad input and abuse over real gRPC + real mutual TLS on loopback: each refusal is a specific
status with a clear message, and the server keeps serving without losing state."""

from __future__ import annotations

import hashlib
import json
import time
from functools import partial
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedstyle_secure.data.public import default_public_set, public_set_name
from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.federation.packing import pack
from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM
from fedstyle_secure.privacy.budget import BudgetLedger, PrivacyBudget
from fedstyle_secure.privacy.mechanisms import GaussianRelease
from fedstyle_secure.privacy.reports import build_report, redacted_report, sign_report
from fedstyle_secure.randomness import SECURE_NOISE_SOURCE
from fedstyle_secure.secure.ckks.decryption import (
    COMMITTEE_SIZE,
    Attempt,
    layout_bytes,
    payload_digest,
    sign_contribution,
)
from fedstyle_secure.secure.ckks.primitives import encrypt
from fedstyle_secure.secure.keys.keystore import load_artist_keys, load_buyer_tls_pem
from fedstyle_secure.transport.artist.channel import ArtistSession, open_channel, query, with_layout
from fedstyle_secure.transport.auth import sign_registration
from fedstyle_secure.transport.loopback import write_fresh_keys
from fedstyle_secure.transport.server.servicer import SERVICE_NAME
from fedstyle_secure.transport.server.store import Snapshot
from fedstyle_secure.transport.server.upload_limits import expected_layout, payload_limit
from fedstyle_secure.transport.wire import PROTOCOL, chunk_payload, new_nonce, pb, pb_grpc
from tests.fakes import Clock
from tests.servers import ARTISTS, address, connect, refused

F = STYLE_FEATURE_DIM  # the set-up round's feature width in the server's plan (from its model)
MOMENTS = {"clients": np.array([1.0]), "feature_mean": np.full(F, 0.5), "feature_sq_mean": np.full(F, 0.5)}


@pytest.fixture(scope="module")
def foreign_keys(tmp_path_factory) -> Path:
    return write_fresh_keys(tmp_path_factory.mktemp("foreign") / "set", ARTISTS)


def _serve(serve, keys: Path, tmp_path: Path, secure_mode: str = "none"):
    clock = Clock()
    running = serve(
        keys,
        Schedule(rounds=1, quorum=2, phase_seconds=60, startup_seconds=0, secure_mode=secure_mode),
        clock,
        reports_dir=tmp_path / "reports",
        max_message_bytes=64 * 1024,
        max_payload_bytes=256 * 1024,
        stream_idle_seconds=1.0,
    )
    return running, clock


@pytest.fixture
def served(serve, keys, tmp_path):
    return _serve(serve, keys, tmp_path)


def _upload(session: ArtistSession, round_id: int = 0, arrays=MOMENTS, **kwargs) -> pb.Ack:
    vector, layout = pack(arrays)
    return session.upload(round_id, pb.PAYLOAD_KIND_PLAIN_VECTOR, vector.astype("<f8").tobytes(), layout, **kwargs)


def _still_serving(running, session: ArtistSession, accepted: int) -> None:
    """The server answers, nothing advanced, and exactly ``accepted`` submissions were kept."""
    status = session.stub.GetStatus(pb.StatusRequest(), timeout=5)
    assert (status.round_id, status.phase) == (0, "contribute")
    assert len(running.servicer.coordinator._collect.items) == accepted


def test_health_service_reports_serving(served, keys):
    running, _ = served
    with open_channel(address(running), load_artist_keys(keys, "artist_a").tls_pem()) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_certificate_from_foreign_ca_is_refused_at_handshake(served, keys, foreign_keys):
    running, _ = served
    real_ca = load_artist_keys(keys, "artist_a").tls_pem()[0]
    _, cert, key = load_artist_keys(foreign_keys, "artist_a").tls_pem()
    with open_channel(address(running), (real_ca, cert, key)) as channel:
        refused(
            lambda: pb_grpc.FederationStub(channel).GetStatus(pb.StatusRequest(), timeout=5),
            grpc.StatusCode.UNAVAILABLE,
            "",
        )
    assert not running.servicer.registered


def _refused_registration(
    served, keys: Path, claimed: str, status: grpc.StatusCode, words: str, *, protocol: str = PROTOCOL, signer: str = ""
) -> None:
    """artist_a's certificate registers as ``claimed`` speaking ``protocol``, the claim signed by
    ``signer``'s identity key (default: the claimed artist's); the server refuses with ``status``."""
    running, _ = served
    caller = load_artist_keys(keys, "artist_a")
    nonce = new_nonce() * 2
    request = pb.RegisterRequest(
        artist_id=claimed,
        nonce=nonce,
        protocol=protocol,
        identity_signature=sign_registration(load_artist_keys(keys, signer or claimed).identity_key, claimed, nonce),
    )
    with open_channel(address(running), caller.tls_pem()) as channel:
        refused(lambda: pb_grpc.FederationStub(channel).Register(request, timeout=5), status, words)
    assert not running.servicer.registered


def test_certificate_cannot_register_as_another_artist(served, keys):
    _refused_registration(
        served, keys, "artist_b", grpc.StatusCode.PERMISSION_DENIED, "cannot register as 'artist_b'", signer="artist_a"
    )


def test_an_artist_of_an_earlier_protocol_is_refused_at_registration_naming_both(served, keys):
    """An artist of an earlier version ("fedstyle.v1": no run id in its plan checks, several CKKS
    ciphertexts per chunk) would fail mid-round on what this server sends or refuses; it is refused
    when it registers, naming the protocol it spoke and the server's, and nothing is registered."""
    words = f"protocol 'fedstyle.v1': this server speaks '{PROTOCOL}' only"
    _refused_registration(served, keys, "artist_a", grpc.StatusCode.INVALID_ARGUMENT, words, protocol="fedstyle.v1")


def test_registration_needs_the_identity_key(served, keys):
    _refused_registration(
        served, keys, "artist_a", grpc.StatusCode.PERMISSION_DENIED, "identity key", signer="artist_b"
    )


def test_round_plan_carries_the_schedule(served, keys):
    running, _ = served
    channel, session = connect(running, keys, "artist_a")
    with channel:
        plan = session.plan()
    assert (plan.round_id, plan.kind, plan.phase, plan.secure_mode) == (0, pb.ROUND_KIND_SETUP, "contribute", "none")
    assert list(plan.participants) == list(ARTISTS) and plan.public_set.name == public_set_name(default_public_set())
    assert not plan.HasField("dp") and (plan.value_low, plan.value_high) == (-1024.0, 1024.0)
    assert plan.phase_deadline_unix == pytest.approx(1_060.0)


def test_calls_without_a_session_are_unauthenticated(served, keys):
    running, _ = served
    with open_channel(address(running), load_artist_keys(keys, "artist_a").tls_pem()) as channel:
        call = lambda: pb_grpc.FederationStub(channel).GetRoundPlan(pb.RoundPlanRequest(), timeout=5)
        refused(call, grpc.StatusCode.UNAUTHENTICATED, "call Register first")


def test_buyer_may_only_query(served, keys):
    running, _ = served
    tls = load_buyer_tls_pem(keys, "buyer_x")
    with open_channel(address(running), tls) as channel:
        request = pb.RegisterRequest(artist_id="buyer_x", protocol=PROTOCOL)
        refused(
            lambda: pb_grpc.FederationStub(channel).Register(request, timeout=5),
            grpc.StatusCode.PERMISSION_DENIED,
            "buyer certificate",
        )
    refused(
        lambda: query(address(running), tls, b"not an image"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "no published style index",
    )


def test_artist_may_not_query(served, keys):
    running, _ = served
    refused(
        lambda: query(address(running), load_artist_keys(keys, "artist_a").tls_pem(), b""),
        grpc.StatusCode.PERMISSION_DENIED,
        "may not call Query",
    )


def test_second_connection_claiming_the_same_artist_isrefused(served, keys):
    running, _ = served
    first, _ = connect(running, keys, "artist_a")
    with first:
        refused(lambda: connect(running, keys, "artist_a"), grpc.StatusCode.ALREADY_EXISTS, "already connected")


def test_malformed_contribution(served, keys):
    running, _ = served
    channel, session = connect(running, keys, "artist_a")
    with channel:
        vector, layout = pack(MOMENTS)
        bad = vector[:-1].astype("<f8").tobytes()  # one value short of its layout
        refused(
            lambda: session.upload(0, pb.PAYLOAD_KIND_PLAIN_VECTOR, bad, layout),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the layout needs",
        )
        nan = np.full_like(vector, np.nan).astype("<f8").tobytes()
        refused(
            lambda: session.upload(0, pb.PAYLOAD_KIND_PLAIN_VECTOR, nan, layout),
            grpc.StatusCode.INVALID_ARGUMENT,
            "NaN",
        )
        headless = iter([pb.Chunk(data=b"\0" * 8)])
        upload = session.stub.UploadContribution
        target = session.submission_metadata(0, "contribute")
        refused(lambda: upload(headless, metadata=target, timeout=5), grpc.StatusCode.INVALID_ARGUMENT, "header")
        refused(
            lambda: upload(iter([]), metadata=session.metadata, timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "must carry 'fedstyle-round'",
        )
        _still_serving(running, session, accepted=0)
        assert _upload(session).accepted_bytes == vector.nbytes


def test_oversized_message_and_payload(served, keys):
    running, _ = served
    channel, session = connect(running, keys, "artist_a")
    with channel:
        huge = pb.RegisterRequest(artist_id="artist_a", nonce=b"\0" * (128 * 1024))
        refused(lambda: session.stub.Register(huge, timeout=5), grpc.StatusCode.RESOURCE_EXHAUSTED, "")
        big = {**MOMENTS, "feature_mean": np.zeros(40_000)}  # 320 kB: over the set-up round's layout, < max_payload
        limit = payload_limit(expected_layout("fedstyle", 0, len(ARTISTS), 64), "contribute", "none", None)
        assert limit < 64 * 1024  # from the round's layout (2 x 1536 feature moments + 1), not the 256 KiB ceiling
        refused(
            lambda: _upload(session, arrays=big, chunk_bytes=32 * 1024),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"at most {limit} (the largest legitimate upload of round 0 phase 'contribute'",
        )
        _still_serving(running, session, accepted=0)


def test_wrong_round_id(served, keys):
    running, _ = served
    channel, session = connect(running, keys, "artist_a")
    with channel:
        refused(
            lambda: _upload(session, round_id=7),
            grpc.StatusCode.FAILED_PRECONDITION,
            "round 7 is not the current round 0",
        )
        _still_serving(running, session, accepted=0)


def test_replayed_and_duplicated_submissions(served, keys):
    running, _ = served
    channel, session = connect(running, keys, "artist_a")
    with channel:
        nonce = new_nonce()
        _upload(session, nonce=nonce)
        refused(lambda: _upload(session, nonce=nonce), grpc.StatusCode.ALREADY_EXISTS, "replayed")
        refused(lambda: _upload(session), grpc.StatusCode.ALREADY_EXISTS, "already submitted")
        _still_serving(running, session, accepted=1)


def test_submission_after_the_deadline(served, keys):
    """a and b answer; at the deadline the phase closes without c (quorum 2); c is then too late."""
    running, clock = served
    sessions = {a: connect(running, keys, a) for a in ARTISTS}
    for artist in ("artist_a", "artist_b"):
        _upload(sessions[artist][1])
    clock.now += 61
    late = sessions["artist_c"][1]
    assert late.plan(0, "contribute", wait_seconds=5).round_id == 1  # the server moved on without c
    refused(lambda: _upload(late), grpc.StatusCode.DEADLINE_EXCEEDED, "closed at its deadline")
    assert running.servicer.coordinator.standardisation is not None
    for channel, _ in sessions.values():
        channel.close()


def test_a_resend_after_the_own_answer_closed_the_phase_is_told_it_is_counted(served, keys):
    """The last answer closes the phase at once; if its ack is lost and the artist resends, it was told
    the phase 'closed at its deadline ... without' it, though no deadline had passed and its answer
    was in the sum (red-team review, 2026-12-01). It is now told it already answered."""
    running, _ = served
    sessions = {a: connect(running, keys, a) for a in ARTISTS}
    for _, session in sessions.values():
        _upload(session)
    assert running.servicer.coordinator.plan().round_id == 1  # every answer in: the phase closed
    details = refused(lambda: _upload(sessions["artist_c"][1]), grpc.StatusCode.ALREADY_EXISTS, "already answered")
    assert "without" not in (details.details() or "")
    for channel, _ in sessions.values():
        channel.close()


def test_a_refusal_quotes_at_most_a_bounded_part_of_the_callers_input(served, keys, caplog):
    """A layout field named with 60,000 characters was echoed whole: into the server's log at every
    refused call and into a status over gRPC's metadata limit, so the caller saw a transport error
    instead of what was wrong with its upload (red-team review, 2026-12-01)."""
    running, _ = served
    channel, session = connect(running, keys, "artist_a")
    data = np.zeros(1, "<f8").tobytes()
    header = pb.PayloadHeader(round_id=0, kind=pb.PAYLOAD_KIND_PLAIN_VECTOR, total_bytes=len(data), nonce=new_nonce())
    header.sha256 = hashlib.sha256(data).digest()
    header.layout.add(name="n" * 60_000, shape=[1])
    caplog.set_level("INFO", logger="fedstyle_secure.transport.server.admission")
    with channel:
        call = partial(
            session.stub.UploadContribution,
            iter([pb.Chunk(header=header, data=data)]),
            metadata=session.submission_metadata(0, "contribute"),
            timeout=10,
        )
        error = refused(call, grpc.StatusCode.INVALID_ARGUMENT, "layout")
        assert len(error.details() or "") < 2_200, len(error.details() or "")
        _still_serving(running, session, accepted=0)
    assert max(len(r.getMessage()) for r in caplog.records) < 4_000


def test_stalled_upload_is_cut_off(served, keys):
    running, _ = served
    channel, session = connect(running, keys, "artist_a")
    with channel:
        vector, layout = pack(MOMENTS)

        def stalling():
            yield from with_layout(
                chunk_payload(vector.astype("<f8").tobytes()[:8], round_id=0, kind=pb.PAYLOAD_KIND_PLAIN_VECTOR), layout
            )
            time.sleep(3)  # never finishes within the server's 1 s idle limit

        started = time.monotonic()
        target = session.submission_metadata(0, "contribute")
        refused(
            lambda: session.stub.UploadContribution(stalling(), metadata=target, timeout=10),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "stalled",
        )
        assert time.monotonic() - started < 5
        _, other = connect(running, keys, "artist_b")
        assert _upload(other).round_id == 0  # others are still served


def test_ciphertext_with_foreign_parameters(serve, keys, foreign_keys, tmp_path):
    running, _ = _serve(serve, keys, tmp_path, secure_mode="ckks")
    channel, session = connect(running, keys, "artist_a")
    with channel:
        vector, layout = pack(MOMENTS)
        artist = load_artist_keys(keys, "artist_a")
        at = Attempt(0, 0, artist.ckks.fingerprint, COMMITTEE_SIZE)

        def signed(payload: bytes) -> bytes:  # a valid signature: only the parameters are wrong
            return sign_contribution(
                artist.identity_key, at, "artist_a", layout_bytes(layout.fields), payload_digest(payload), 0
            )

        foreign = encrypt(load_artist_keys(foreign_keys, "artist_a").ckks, vector).serialize()
        refused(
            lambda: session.upload(
                0,
                pb.PAYLOAD_KIND_CKKS_CIPHERTEXT,
                foreign,
                layout,
                chunk_bytes=32 * 1024,
                signature=signed(foreign),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "fingerprint mismatch",
        )
        own = encrypt(artist.ckks, vector).serialize()
        ack = session.upload(
            0, pb.PAYLOAD_KIND_CKKS_CIPHERTEXT, own, layout, chunk_bytes=32 * 1024, signature=signed(own)
        )
        assert ack.accepted_bytes == len(own)


def test_restart_resumes_from_the_saved_round(serve, keys, tmp_path):
    """The set-up round completes, the server is stopped; a new server on the same database resumes."""
    running, _ = _serve(serve, keys, tmp_path)
    sessions = [connect(running, keys, a) for a in ARTISTS]
    for _, session in sessions:
        _upload(session)
    mean, std = running.servicer.coordinator.standardisation
    running.stop(0)
    for channel, _ in sessions:
        channel.close()
    resumed, _ = _serve(serve, keys, tmp_path)
    channel, session = connect(resumed, keys, "artist_a")
    with channel:
        plan = session.plan()
        assert (plan.round_id, plan.phase) == (1, "contribute")
        restored_mean, restored_std = resumed.servicer.coordinator.standardisation
        np.testing.assert_array_equal(restored_mean, mean)
        np.testing.assert_array_equal(restored_std, std)
        np.testing.assert_allclose(mean, 0.5, rtol=1e-6)


def test_epsilon_reports_must_be_signed_by_the_artist(served, keys, tmp_path):
    running, _ = served
    channel, session = connect(running, keys, "artist_a")
    with channel:
        ledger = BudgetLedger(PrivacyBudget(1.0, 1e-5), 20)
        ledger.record([GaussianRelease(1.0, 8.0, 0, "style-prototype-sums")])
        report = build_report(ledger, artist_id="artist_a", round_id=0, noise_source=SECURE_NOISE_SOURCE)
        signed = redacted_report(sign_report(report, load_artist_keys(keys, "artist_a").identity_key))
        assert session.report(0, json.dumps(signed).encode()).accepted_bytes > 0
        assert (tmp_path / "reports" / "artist_a" / "round-0000.json").exists()
        forged = redacted_report(sign_report(report, load_artist_keys(keys, "artist_b").identity_key))
        refused(
            lambda: session.report(0, json.dumps(forged).encode()), grpc.StatusCode.PERMISSION_DENIED, "signed by key"
        )
        refused(lambda: session.report(0, b"{not json"), grpc.StatusCode.INVALID_ARGUMENT, "not JSON")
        assert dict(session.stub.GetStatus(pb.StatusRequest(), timeout=5).reports) == {"artist_a": 0}


def test_epsilon_reports_for_rounds_that_have_not_happened_are_refused_and_written_nowhere(served, keys, tmp_path):
    """A malicious but enrolled artist signs reports for rounds that do not exist (a helper's attack:
    205 accepted, 205 files written, a full state save each, and the status showing round 2**40).
    Only rounds that have happened are taken, and resending a stored one saves nothing again."""
    running, _ = served
    channel, session = connect(running, keys, "artist_a")
    identity = load_artist_keys(keys, "artist_a").identity_key
    saves: list[int] = []
    save = running.servicer.store.save

    def counted_save(snapshot: Snapshot) -> None:
        saves.append(1)
        save(snapshot)

    running.servicer.store.save = counted_save

    def signed(round_id: int) -> bytes:
        ledger = BudgetLedger(PrivacyBudget(1.0, 1e-5), 20)
        ledger.record([GaussianRelease(1.0, 8.0, min(round_id, 10**6), "style-prototype-sums")])
        report = build_report(ledger, artist_id="artist_a", round_id=round_id, noise_source=SECURE_NOISE_SOURCE)
        return json.dumps(redacted_report(sign_report(report, identity))).encode()

    with channel:
        for round_id in (1, 5, 2**40):  # the run is in round 0, of 1
            report = signed(round_id)
            refused(partial(session.report, round_id, report), grpc.StatusCode.INVALID_ARGUMENT, "happened")
        report = signed(0)
        session.report(0, report)
        stored = len(saves)
        session.report(0, report)  # resent after a reconnect: accepted, nothing new to save
        assert len(saves) == stored
        assert dict(session.stub.GetStatus(pb.StatusRequest(), timeout=5).reports) == {"artist_a": 0}
    assert [p.name for p in (tmp_path / "reports" / "artist_a").glob("round-*.json")] == ["round-0000.json"]


def test_epsilon_reports_the_audit_could_not_recompute_are_refused_and_written_nowhere(served, keys, tmp_path):
    """A roster artist signs, with its own key, a history that stalls the audit (red-team review
    attack12: 10**18 DP-SGD steps had dp_accounting ask for 2 EiB, and no artist got a verdict), or
    sends a report nested beyond, or just under, Python's recursion limit (an UNKNOWN error and a
    traceback in the server's log before): each is refused naming the field and the limit, and nothing is stored."""
    running, _ = served
    channel, session = connect(running, keys, "artist_a")
    identity = load_artist_keys(keys, "artist_a").identity_key

    def signed(*mechanisms: dict) -> bytes:
        ledger = BudgetLedger(PrivacyBudget(1.0, 1e-5), 20)
        ledger.record([GaussianRelease(1.0, 8.0, 0, "style-prototype-sums")])
        report = build_report(ledger, artist_id="artist_a", round_id=0, noise_source=SECURE_NOISE_SOURCE)
        report["mechanisms"] += [{"round_id": 0, **m} for m in mechanisms]
        return json.dumps(redacted_report(sign_report(report, identity))).encode()

    def nested(depth: int) -> bytes:  # the artist's own key fingerprint, no valid signature needed
        head = json.loads(signed())
        return (json.dumps(head)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}").encode()

    dp_sgd = {"kind": "dp_sgd", "sample_rate": 0.01, "noise_multiplier": 1.0, "clip_norm": 1.0, "sampler": "poisson"}
    release = {"kind": "gaussian_release", "sensitivity": 1.0, "what": "style-prototype-sums"}
    hostile = [
        (signed({**dp_sgd, "steps": 10**18}), "mechanisms/1/steps: 1000000000000000000 is greater than the maximum"),
        (signed(*({**release, "sigma": 5.0 + i * 1e-6} for i in range(5))), "6 distinct parameter sets, more than"),
        (signed({**release, "sigma": 0.03}), "sigma / sensitivity = 0.03 is not a finite number of at least 0.2"),
        (b"[" * 30_000 + b"]" * 30_000, "epsilon report is not JSON: maximum recursion depth exceeded"),
        (nested(40), "epsilon report is not JSON: nested more than 32 levels deep"),
    ]
    # just under the parser's limit (the window moves with the worker thread's stack): the document
    # parsed, then overflowed the recursion limit when the signature check re-serialised it (UNKNOWN)
    hostile += [(nested(depth), "epsilon report is not JSON") for depth in range(960, 1000, 3)]
    with channel:
        for report, words in hostile:
            refused(partial(session.report, 0, report), grpc.StatusCode.INVALID_ARGUMENT, words)
        assert not (tmp_path / "reports" / "artist_a").exists()
        assert session.report(0, signed()).accepted_bytes > 0  # the honest report is taken, and stored
    assert [p.name for p in (tmp_path / "reports" / "artist_a").glob("round-*.json")] == ["round-0000.json"]


def test_query_after_a_run_that_gave_up_names_the_failure(served, keys):
    """No artist answers: the set-up round is retried, then the run gives up.  A buyer is told the run
    failed and why (not that the index is merely not written yet), and the server keeps answering."""
    running, clock = served
    deadline = time.monotonic() + 30
    while running.servicer.coordinator.failed is None and time.monotonic() < deadline:
        clock.now += 61  # a phase deadline passes; the ticker retries the round or gives up
        time.sleep(0.3)
    assert "gave up after 2 retries" in (running.servicer.coordinator.failed or "")
    refused(
        lambda: query(address(running), load_buyer_tls_pem(keys, "buyer_x"), b"not an image"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "run failed, so it publishes no style index: round 0 phase 'contribute': 0 of 3 answered",
    )


def test_a_report_bomb_neither_holds_the_server_lock_nor_reaches_the_schema(served, keys, monkeypatch):
    """One enrolled artist signed a 4 MiB report of 279,347 crafted mechanisms: the server validated it
    against the JSON schema for 100 s under its one lock, and every other artist's call and the phase
    deadlines waited (a 512 KiB one held it 11-13 s; an honest artist's 5 s call timed out; red-team
    review, 2026-12-01); 100,000 nested brackets gave a traceback.  Reports over 256 KiB are now refused
    before they are parsed, and every check runs before the lock: here the schema check is held open
    (named fake: a gate around the real ``report_schema_errors``) while another artist is answered."""
    import threading

    from fedstyle_secure.transport.server import report_intake

    running, _ = served
    monkeypatch.setattr(report_intake, "MAX_REPORT_BYTES", 32 * 1024)  # under this test server's 64 KiB messages
    identity = load_artist_keys(keys, "artist_a").identity_key
    ledger = BudgetLedger(PrivacyBudget(1.0, 1e-5), 20)
    ledger.record([GaussianRelease(1.0, 8.0, 0, "style-prototype-sums")])
    report = build_report(ledger, artist_id="artist_a", round_id=0, noise_source=SECURE_NOISE_SOURCE)
    bomb = dict(report, mechanisms=[{"kind": "x"}] * 4000)  # 56 KiB (under the record count's own cap)
    channel_a, attacker = connect(running, keys, "artist_a")
    channel_b, honest = connect(running, keys, "artist_b")
    with channel_a, channel_b:
        oversized = json.dumps(redacted_report(sign_report(bomb, identity))).encode()
        refused(partial(attacker.report, 0, oversized), grpc.StatusCode.INVALID_ARGUMENT, "bytes, over 32768")
        deep = b"[" * 16_000 + b"]" * 16_000  # under the cap: the parser's recursion limit
        refused(partial(attacker.report, 0, deep), grpc.StatusCode.INVALID_ARGUMENT, "not JSON")
        entered, release = threading.Event(), threading.Event()
        real_errors = report_intake.report_schema_errors

        def held_open(checked: object) -> list[str]:
            entered.set()
            release.wait(30)
            return real_errors(checked)

        monkeypatch.setattr(report_intake, "report_schema_errors", held_open)
        valid = json.dumps(redacted_report(sign_report(report, identity))).encode()
        outcome: list[object] = []

        def upload_valid() -> None:
            try:
                outcome.append(attacker.report(0, valid))
            except grpc.RpcError as exc:
                outcome.append(exc)

        upload = threading.Thread(target=upload_valid)
        upload.start()
        try:
            assert entered.wait(30)  # the server is checking artist_a's report ...
            honest.stub.GetStatus(pb.StatusRequest(), timeout=5)  # ... and answers artist_b meanwhile
        finally:
            release.set()
            upload.join(30)
        assert outcome and isinstance(outcome[0], pb.Ack), outcome  # and then stored
        assert dict(attacker.stub.GetStatus(pb.StatusRequest(), timeout=5).reports) == {"artist_a": 0}


def _assert_a_second_server_is_refused(keys, tmp_path, listen: str, words: str) -> None:
    """A server on ``listen`` beside one already serving fails to start, saying ``words``."""
    from fedstyle_secure.errors import ConfigError
    from fedstyle_secure.secure.keys.keystore import load_server_keys
    from fedstyle_secure.transport.config import ServerConfig
    from fedstyle_secure.transport.server.servicer import start_server

    config = ServerConfig(
        keys=keys,
        state_db=tmp_path / "stray.sqlite",
        listen=listen,
        schedule=Schedule(rounds=1, quorum=2, phase_seconds=600),
    )
    try:
        stray = start_server(config, load_server_keys(keys))
    except ConfigError as exc:
        assert words in str(exc)
    else:
        stray.stop(0)
        pytest.fail(f"a second server started on {listen} beside one already serving")


def test_a_second_server_on_a_port_in_use_is_refused(serve, keys, tmp_path):
    """A second `fedstyle server` on the first one's port started (gRPC sets SO_REUSEPORT on Linux)
    and the kernel split the artists' connections between the two: an artist joined the stray run
    and spent epsilon in it (a helper's walkthrough, 2026-12-02).  It must fail to bind."""
    port = serve(keys).port
    _assert_a_second_server_is_refused(keys, tmp_path, f"127.0.0.1:{port}", f"cannot bind 127.0.0.1:{port}")


def test_a_server_restarted_with_other_federation_settings_on_a_runs_state_is_refused(keys, tmp_path):
    """Restarted on a run's state_db with `rounds = 3` and `secure_mode = "none"` instead of one
    round under secagg, the server served the old run id with the new schedule: every artist of the
    run refused the plans (its pinned secure mode) and the run could never go on, with nothing in the
    server's log (a helper's walkthrough, 2026-12-02).  The same settings still resume it."""
    from fedstyle_secure.errors import ConfigError
    from tests.servers import start

    masked = Schedule(rounds=1, quorum=2, phase_seconds=600, secure_mode="secagg")
    start(keys, tmp_path, masked).stop(0)
    changed = Schedule(rounds=3, quorum=2, phase_seconds=600, secure_mode="none")
    with pytest.raises(ConfigError, match=r"rounds 1 -> 3; secure_mode 'secagg' -> 'none'"):
        start(keys, tmp_path, changed).stop(0)
    start(keys, tmp_path, masked).stop(0)  # resumed with the run's own settings


def test_a_query_to_a_host_the_server_certificate_does_not_name_hints_at_server_name(tmp_path, capsys):
    """Without --server-name, a query to an address the certificate does not name failed with gRPC's bare
    "Hostname Verification Check failed" (a helper's walkthrough, 2026-12-02)."""
    from PIL import Image

    from fedstyle_secure.cli.main import main
    from fedstyle_secure.secure.keys.keystore import generate_key_files, write_key_files
    from tests.servers import start

    keys = tmp_path / "keys"
    write_key_files(keys, generate_key_files(list(ARTISTS), server_hosts=("fed.example.org",), buyers=["shop"]))
    server = start(keys, tmp_path)
    try:
        image = tmp_path / "q.png"
        Image.new("RGB", (64, 64), (90, 40, 20)).save(image)
        argv = ["query", str(image), "--server", f"127.0.0.1:{server.port}", "--keys", str(keys), "--buyer", "shop"]
        assert main(argv) != 0
        assert "give --server-name" in capsys.readouterr().err
    finally:
        server.stop(0)


def test_a_second_server_on_localhost_beside_one_on_127_0_0_1_is_refused(serve, keys, tmp_path):
    """`localhost` resolves to ::1 and 127.0.0.1; gRPC started a second server when only the IPv6 half
    bound, with its own run id, reachable by artists configured with `localhost:P` (a helper's
    red-team review, 2026-12-02)."""
    port = serve(keys).port
    _assert_a_second_server_is_refused(keys, tmp_path, f"localhost:{port}", "127.0.0.1 port")


def test_a_restart_with_another_public_set_or_a_nan_setting_is_refused(keys, tmp_path, monkeypatch):
    """Artists pin the announced public set; a restart under another $FEDSTYLE_PUBLIC_SET started on the
    run's id and every artist refused every plan.  A NaN masking threshold (accepted outside masking
    modes) made every later restart of the same config look changed (a helper's red-team review)."""
    from fedstyle_secure.errors import ConfigError
    from tests.servers import start

    schedule = Schedule(rounds=1, quorum=2, phase_seconds=600)
    monkeypatch.setenv("FEDSTYLE_PUBLIC_SET", "generated:48")
    start(keys, tmp_path, schedule).stop(0)
    monkeypatch.setenv("FEDSTYLE_PUBLIC_SET", "generated:64")
    with pytest.raises(ConfigError, match="public_set"):
        start(keys, tmp_path, schedule).stop(0)
    with pytest.raises(ConfigError, match="masking_threshold and masking_seconds must be finite"):
        Schedule(rounds=1, quorum=2, masking_threshold=float("nan")).validate(3)
