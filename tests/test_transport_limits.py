"""One artist must not starve the server (real gRPC + mutual TLS on loopback): per-identity call
limits with a thread pool sized for them, round and phase checked from call metadata before a
body is read, upload sizes bounded by the round's layout."""

from __future__ import annotations

import hashlib
import time

import grpc
import numpy as np
import pytest

from fedstyle_secure.data.public import default_public_set, public_set_size
from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.federation.packing import pack
from fedstyle_secure.federation.strategy import algorithm_spec, client_contribution, feature_moments
from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM
from fedstyle_secure.models.factory import EncoderConfig, make_model
from fedstyle_secure.models.inputs import InputBank
from fedstyle_secure.models.params import get_flat_params
from fedstyle_secure.secure.ckks.primitives import encrypt
from fedstyle_secure.secure.keys import pki
from fedstyle_secure.secure.keys.keystore import load_artist_keys, load_buyer_tls_pem
from fedstyle_secure.transport.artist.channel import ArtistSession, open_channel, with_layout
from fedstyle_secure.transport.server.servicer import PUMP_AHEAD_CHUNKS
from fedstyle_secure.transport.server.upload_limits import ckks_ciphertext_bytes, expected_layout, payload_limit
from fedstyle_secure.transport.wire import chunk_payload, new_nonce, pb, pb_grpc, to_tensor
from tests.servers import ARTISTS, address, connect, refused

PER_IDENTITY = 4
MiB = 1024 * 1024
CHUNK = 256 * 1024
MOMENTS = {
    "clients": np.array([1.0]),
    "feature_mean": np.full(STYLE_FEATURE_DIM, 0.5),
    "feature_sq_mean": np.full(STYLE_FEATURE_DIM, 0.5),
}  # the plan's set-up layout


@pytest.fixture
def running(serve, keys):
    """A server with the default size ceilings (256 MiB payloads) and 4 calls per identity."""
    return serve(keys, Schedule(rounds=1, quorum=2, phase_seconds=600), max_calls_per_identity=PER_IDENTITY)


def _wait(condition, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_parked_long_polls_of_one_artist_do_not_delay_another(running, keys):
    """artist_a parks 20 long polls: 4 are held, 16 refused at once; artist_b and a buyer are
    answered at once; once artist_a's polls end, its slots are free again."""
    (channel_a, a), (channel_b, b) = connect(running, keys, "artist_a"), connect(running, keys, "artist_b")
    with channel_a, channel_b, open_channel(address(running), load_buyer_tls_pem(keys, "buyer_x")) as buyer:
        b.stub.GetStatus(pb.StatusRequest(), timeout=5)  # B's channel is connected before the attack
        current = pb.RoundPlanRequest(after_round=0, after_phase="contribute", after_attempt=0, wait_seconds=25)
        polls = [a.stub.GetRoundPlan.future(current, metadata=a.metadata, timeout=40) for _ in range(20)]
        _wait(lambda: sum(p.done() for p in polls) >= 20 - PER_IDENTITY, 10)

        started = time.monotonic()
        status = b.stub.GetStatus(pb.StatusRequest(), timeout=5)
        plan = b.plan(0, "", wait_seconds=0)
        pb_grpc.FederationStub(buyer).GetStatus(pb.StatusRequest(), timeout=5)
        elapsed = time.monotonic() - started
        assert status.round_id == 0 and plan.phase == "contribute"
        assert elapsed < 2.5, f"other identities waited {elapsed:.1f} s behind artist_a's parked polls"

        refused = [p for p in polls if p.done()]
        assert len(refused) == 20 - PER_IDENTITY and sum(not p.done() for p in polls) == PER_IDENTITY
        for poll in refused:
            assert poll.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"at most {PER_IDENTITY} concurrent calls per identity" in poll.details()
        assert running.gate.limiter.in_flight(pki.Role.ARTIST, "artist_a") == PER_IDENTITY

        for poll in polls:
            poll.cancel()  # the server notices within a second and frees the slots
        assert _wait(lambda: running.gate.limiter.in_flight(pki.Role.ARTIST, "artist_a") == 0, 10)
        assert a.stub.GetStatus(pb.StatusRequest(), timeout=5).round_id == 0


def _plain_stream(round_id: int, total: int, pulled: list[int], declared: int | None = None):
    """A plain-vector upload of ``total`` zero bytes (declaring ``declared``, default ``total``),
    counting the bytes gRPC takes from it."""
    zeros = bytes(CHUNK)
    header = pb.PayloadHeader(
        round_id=round_id,
        kind=pb.PAYLOAD_KIND_PLAIN_VECTOR,
        total_bytes=declared or total,
        sha256=hashlib.sha256(bytes(total)).digest(),
        nonce=new_nonce(),
    )
    for offset in range(0, total, CHUNK):
        pulled.append(CHUNK)
        yield pb.Chunk(header=header, data=zeros) if offset == 0 else pb.Chunk(data=zeros)


def _upload(session: ArtistSession, chunks, round_id: int) -> pb.Ack:
    metadata = session.submission_metadata(round_id, "contribute")
    return session.stub.UploadContribution(chunks, metadata=metadata, timeout=60)


def _received(server, method: str) -> int:
    """Protobuf bytes of the messages the server received for ``method`` (the byte meter)."""
    return server.servicer.meter.received[method]


# What the server may have read when it refuses: the chunk being checked, the one queued behind it,
# the one the pump holds while it waits for room, and one more it may already have pulled from gRPC
# (the pump is a separate thread: how far ahead it is depends on scheduling; measured 4 chunks in a
# full-suite run, 3 when run alone).  Bounded either way: a 48 MiB upload is cut at about 1 MiB.
READ_AHEAD = (2 + PUMP_AHEAD_CHUNKS) * (CHUNK + 1024)


def test_upload_for_a_wrong_round_is_refused_before_its_body_is_read(running, keys):
    """48 MiB for round 7: refused from the call metadata; the server receives none of it and
    gRPC takes at most the transport's flow-control window from the sender."""
    channel, a = connect(running, keys, "artist_a")
    with channel:
        pulled: list[int] = []
        refused(
            lambda: _upload(a, _plain_stream(7, 48 * MiB, pulled), 7),
            grpc.StatusCode.FAILED_PRECONDITION,
            "round 7 is not the current round 0",
        )
        assert _received(running, "UploadContribution") == 0  # no message was received by the server
        assert sum(pulled) <= 8 * MiB, f"{sum(pulled) / MiB:.0f} MiB left the sender"
        _, b = connect(running, keys, "artist_b")  # the server keeps serving the others
        vector, layout = pack(MOMENTS)
        ack = b.upload(0, pb.PAYLOAD_KIND_PLAIN_VECTOR, vector.astype("<f8").tobytes(), layout)
        assert ack.accepted_bytes == vector.nbytes and len(running.servicer.coordinator._collect.items) == 1


def test_upload_larger_than_the_rounds_layout_is_refused_after_its_header(running, keys):
    """For the current round: a declared size over the layout's limit is refused on the first
    chunk; a sender exceeding its declared size is cut off at the first chunk over it."""
    limit = payload_limit(expected_layout("fedstyle", 0, len(ARTISTS), 64), "contribute", "none", None)
    channel, a = connect(running, keys, "artist_a")
    with channel:
        refused(
            lambda: _upload(a, _plain_stream(0, 48 * MiB, []), 0),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"payload declares {48 * MiB} bytes; this server accepts at most {limit} (the largest legitimate",
        )
        assert _received(running, "UploadContribution") <= READ_AHEAD
        before = _received(running, "UploadContribution")
        refused(
            lambda: _upload(a, _plain_stream(0, 48 * MiB, [], declared=16), 0),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "exceeds its declared 16 bytes",
        )
        assert _received(running, "UploadContribution") - before <= READ_AHEAD
        assert not running.servicer.coordinator._collect.items


def test_unary_submission_for_a_wrong_phase_is_refused_before_its_body_is_read(running, keys):
    """A 2.8 MB prototype publication while the round is in 'contribute': refused from the
    metadata; nothing received.  A submission whose body names another round than its metadata
    is refused too."""
    channel, a = connect(running, keys, "artist_a")
    with channel:
        protos = to_tensor(np.zeros((1, 700_000), np.float32))
        big = pb.PrototypePublication(round_id=0, artist_rows=[0], prototypes=protos, nonce=new_nonce())
        publish = a.stub.PublishPrototypes
        refused(
            lambda: publish(big, metadata=a.submission_metadata(0, "publish"), timeout=30),
            grpc.StatusCode.FAILED_PRECONDITION,
            "is in phase 'contribute', not 'publish'",
        )
        refused(
            lambda: publish(big, metadata=a.submission_metadata(0, "contribute"), timeout=30),
            grpc.StatusCode.INVALID_ARGUMENT,
            "PublishPrototypes submits in phase publish",
        )
        assert _received(running, "PublishPrototypes") == 0

        vector, layout = pack(MOMENTS)
        chunks = chunk_payload(vector.astype("<f8").tobytes(), round_id=3, kind=pb.PAYLOAD_KIND_PLAIN_VECTOR)
        refused(
            lambda: _upload(a, with_layout(chunks, layout), 0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "for round 3, its call metadata for round 0",
        )
        assert not running.servicer.coordinator._collect.items


def test_layout_limits_bound_what_honest_artists_send(keys):
    """The server's expected layout is exactly the layout a real client packs (set-up moments and a
    FedStyle contribution of the model the transport builds), and the CKKS bound covers a real
    ciphertext of it within the margin."""
    features = np.random.default_rng(0).normal(size=(5, STYLE_FEATURE_DIM))
    assert pack(feature_moments(features))[1] == expected_layout("fedstyle", 0, len(ARTISTS), 64)
    bank = InputBank(np.zeros((1, 2, STYLE_FEATURE_DIM), np.float32), "features")
    model = make_model(EncoderConfig(embedding_dim=64), bank, bank, len(ARTISTS))
    public = np.zeros((public_set_size(default_public_set()), 64))  # the public set the server announces
    contribution = client_contribution(algorithm_spec("fedstyle"), get_flat_params(model), 1.0, public)
    vector, layout = pack(contribution)
    assert layout == expected_layout("fedstyle", 1, len(ARTISTS), 64)
    context = load_artist_keys(keys, "artist_a").ckks
    ciphertext = len(encrypt(context, np.random.default_rng(1).uniform(-8, 8, 5000)).serialize())
    assert 0.8 * ckks_ciphertext_bytes(5000, context.params) < ciphertext <= ckks_ciphertext_bytes(5000, context.params)
    assert payload_limit(layout, "contribute", "none", None) >= vector.nbytes
