"""The artist side of a broadcast download, against a server that lies about the standardisation.

``_FakeBroadcastStub`` is a unit-test fake of the gRPC stub: it serves a crafted broadcast exactly as
the server streams one (``chunk_payload`` of a ``BroadcastBody``); parsing is the real channel code.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from fedstyle_secure.transport.artist.channel import ArtistSession
from fedstyle_secure.transport.wire import WireError, chunk_payload, join_chunks, pb, pb_grpc, to_tensor, vector_payload


class _FakeBroadcastStub(pb_grpc.FederationStub):
    def __init__(self, body: pb.BroadcastBody) -> None:  # no channel: only DownloadBroadcast is called
        self.body = body

    def DownloadBroadcast(self, request: pb.BroadcastRequest, metadata: object, timeout: float) -> Iterator[pb.Chunk]:
        return chunk_payload(self.body.SerializeToString(), round_id=request.round_id, kind=pb.PAYLOAD_KIND_BROADCAST)


def _session(**features: np.ndarray) -> ArtistSession:
    body = pb.BroadcastBody(prototypes=to_tensor(np.zeros((2, 4), dtype=np.float32)), known=[False, False])
    for name, array in features.items():
        getattr(body, name).CopyFrom(to_tensor(array))
    return ArtistSession(_FakeBroadcastStub(body), "alice", "token", ("alice", "bob"))


def test_broadcast_with_mean_and_std_yields_the_standardisation() -> None:
    mean, std = np.arange(3, dtype=np.float64), np.ones(3)
    _, standardisation = _session(feature_mean=mean, feature_std=std).broadcast(1)
    assert standardisation is not None
    np.testing.assert_array_equal(standardisation[0], mean)
    np.testing.assert_array_equal(standardisation[1], std)
    assert _session().broadcast(1)[1] is None


@pytest.mark.parametrize("present", ["feature_mean", "feature_std"])
def test_broadcast_with_only_one_standardisation_half_is_refused(present: str) -> None:
    with pytest.raises(WireError, match="only one of feature_mean and feature_std"):
        _session(**{present: np.ones(3)}).broadcast(1)


def test_a_stream_of_chunks_below_the_minimum_is_refused_but_a_short_last_chunk_is_not() -> None:
    """A malicious sender's tiny chunks (each one a Python object the receiver kept) or endless empty
    ones: at most ``total / min_chunk_bytes + 2`` chunks; the honest sender's chunks pass."""
    payload = bytes(range(100))
    tiny = list(chunk_payload(payload, round_id=2, kind=pb.PAYLOAD_KIND_PLAIN_VECTOR, chunk_bytes=4))
    with pytest.raises(WireError, match="sent in more than 8 chunks"):
        join_chunks(tiny, max_bytes=100, min_chunk_bytes=16)
    empty = tiny[:1] + [pb.Chunk(data=b"")] * 10
    with pytest.raises(WireError, match="more than 8 chunks"):
        join_chunks(empty, max_bytes=100, min_chunk_bytes=16)
    honest = list(chunk_payload(payload, round_id=2, kind=pb.PAYLOAD_KIND_PLAIN_VECTOR, chunk_bytes=16))
    assert join_chunks(honest, max_bytes=100, min_chunk_bytes=16)[1] == payload  # 7 chunks, the last of 4 bytes


@pytest.mark.parametrize("size", [0, 1, 4, 5, 9])
def test_chunked_payloads_reassemble_exactly(size: int) -> None:
    """Chunks are cut as they are sent (no list of pieces): every size, including an empty payload
    and exact multiples of the chunk size, comes back byte for byte, the header on the first only."""
    payload = bytes(range(size))
    chunks = list(chunk_payload(payload, round_id=2, kind=pb.PAYLOAD_KIND_PLAIN_VECTOR, chunk_bytes=4))
    assert len(chunks) == max(1, -(-size // 4))
    assert [c.HasField("header") for c in chunks] == [True] + [False] * (len(chunks) - 1)
    header, joined = join_chunks(chunks, max_bytes=16)
    assert joined == payload and header.total_bytes == size and header.round_id == 2


@pytest.mark.parametrize("dtype", ["<f8", ">f8", "<f4", ">f4"])
def test_a_vector_goes_on_the_wire_as_little_endian_float64_whatever_its_dtype(dtype: str) -> None:
    """``vector_payload`` is the one encoding of plain vectors: a float32 or big-endian vector is
    converted, never sent as its raw bytes (which the server would read as other values); a vector
    already in the wire form is sent from its own memory."""
    vector = np.linspace(-2.5, 3.0, 11).astype(dtype)
    chunks = chunk_payload(vector_payload(vector), round_id=1, kind=pb.PAYLOAD_KIND_PLAIN_VECTOR, chunk_bytes=16)
    _, joined = join_chunks(chunks, max_bytes=1024)

    np.testing.assert_array_equal(np.frombuffer(joined, dtype="<f8"), vector.astype(np.float64))
    assert np.shares_memory(np.frombuffer(vector_payload(vector), dtype="<f8"), vector) == (dtype == "<f8")


def test_a_broadcast_larger_than_the_federation_can_need_is_refused_before_it_is_read() -> None:
    """A server streaming a broadcast body far larger than the federation's model, public set,
    prototype table and standardisation (a helper's attack: a 400 MB body cost the artist 1.2 GB of
    peak memory before any shape check) is refused from the header's declared size; an honest one
    of the same federation is read."""
    from fedstyle_secure.federation.round_layout import FederationShape, ModelShape
    from fedstyle_secure.transport.artist.channel import broadcast_limit
    from fedstyle_secure.transport.wire import PayloadTooLarge

    shape = FederationShape(feature_dim=8, embedding_dim=4, public_count=3, model=ModelShape(1000, ((0, 1000),)))
    limit = broadcast_limit(shape, n_artists=2)
    honest = _session(params=np.zeros(1000, dtype=np.float32))
    crafted = _session(params=np.zeros(limit // 4 + 1, dtype=np.float32))  # more values than any model of the shape

    assert honest.broadcast(1, max_bytes=limit)[0].params is not None
    with pytest.raises(PayloadTooLarge, match="declares"):
        crafted.broadcast(1, max_bytes=limit)
