"""Artist- and buyer-side calls of ``fedstyle.v1`` over one mutual-TLS channel (no training here)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np

from fedstyle_secure.federation.client import Broadcast, Publication
from fedstyle_secure.federation.packing import Layout
from fedstyle_secure.federation.round_layout import FederationShape
from fedstyle_secure.secure.keys.keystore import ArtistKeys
from fedstyle_secure.transport import auth
from fedstyle_secure.transport.wire import (
    DEFAULT_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    PROTOCOL,
    WireError,
    chunk_payload,
    from_tensor,
    join_chunks,
    layout_fields,
    new_nonce,
    optional_array,
    pb,
    pb_grpc,
    submission_metadata,
    to_tensor,
)

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 1 << 31
DOWNLOAD_SLACK_BYTES = 1 << 20  # protobuf framing and headers on top of a download's expected values


def broadcast_limit(shape: FederationShape, n_artists: int) -> int:
    """The most bytes a broadcast of a federation of ``shape`` and ``n_artists`` can need (bytes): the
    model, the public set's consensus, the prototype table and the standardisation, at 8 bytes a value
    (the wire's float32 is 4), plus slack.  Threat model: a server streaming a larger body would make
    the artist join, parse and convert it (three copies) before any shape check."""
    values = (shape.model.param_count if shape.model is not None else 0) + 2 * shape.feature_dim
    values += (shape.public_count + n_artists) * shape.embedding_dim
    return 8 * values + n_artists + DOWNLOAD_SLACK_BYTES


def open_channel(
    address: str,
    tls_pem: tuple[bytes, bytes, bytes],
    *,
    server_name: str = "localhost",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> grpc.Channel:
    """A mutual-TLS channel; ``server_name`` must be a host of the server certificate."""
    options = [
        ("grpc.ssl_target_name_override", server_name),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    return grpc.secure_channel(address, auth.channel_credentials(tls_pem), options=options)


@dataclass
class ArtistSession:
    """A registered artist's calls.  Every method raises :class:`grpc.RpcError` on refusal."""

    stub: pb_grpc.FederationStub
    artist_id: str
    token: str
    roster: tuple[str, ...]

    @classmethod
    def register(cls, channel: grpc.Channel, keys: ArtistKeys, timeout: float = 10.0) -> ArtistSession:
        stub = pb_grpc.FederationStub(channel)
        nonce = new_nonce() + new_nonce()
        reply = stub.Register(
            pb.RegisterRequest(
                artist_id=keys.artist_id,
                nonce=nonce,
                protocol=PROTOCOL,
                identity_signature=auth.sign_registration(keys.identity_key, keys.artist_id, nonce),
            ),
            timeout=timeout,
        )
        return cls(stub, keys.artist_id, reply.session, tuple(reply.roster))

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((auth.SESSION_METADATA, self.token),)

    def submission_metadata(self, round_id: int, phase: str) -> tuple[tuple[str, str], ...]:
        """Session metadata plus the round and phase a submission is for (checked before its body is read)."""
        return self.metadata + submission_metadata(round_id, phase)

    def plan(
        self, after_round: int = 0, after_phase: str = "", wait_seconds: float = 10.0, after_attempt: int = 0
    ) -> pb.RoundPlan:
        """The plan once (round, phase, attempt) differs from the given one (long poll)."""
        request = pb.RoundPlanRequest(
            after_round=after_round, after_phase=after_phase, after_attempt=after_attempt, wait_seconds=wait_seconds
        )
        return self.stub.GetRoundPlan(request, metadata=self.metadata, timeout=wait_seconds + 10)

    def broadcast(
        self, round_id: int, timeout: float = 60.0, max_bytes: int = MAX_DOWNLOAD_BYTES
    ) -> tuple[Broadcast, tuple[np.ndarray, np.ndarray] | None]:
        """The round's broadcast and the feature standardisation (mean, std) if set; a body declaring
        more than ``max_bytes`` (:func:`broadcast_limit`) is refused before it is read."""
        _, payload = join_chunks(
            self.stub.DownloadBroadcast(
                pb.BroadcastRequest(round_id=round_id), metadata=self.metadata, timeout=timeout
            ),
            max_bytes,
            MIN_CHUNK_BYTES,  # the server may be malicious too
        )
        body = pb.BroadcastBody.FromString(payload)
        del payload  # the parsed body holds its own copy; the model is a few MB
        return broadcast_from_body(body, round_id)

    def publish(self, round_id: int, publication: Publication, timeout: float = 30.0) -> pb.Ack:
        return self.stub.PublishPrototypes(
            publication_message(round_id, publication),
            metadata=self.submission_metadata(round_id, "publish"),
            timeout=timeout,
        )

    def upload(
        self,
        round_id: int,
        kind: pb.PayloadKind,
        payload: bytes | memoryview,
        layout: Layout | None = None,
        *,
        nonce: bytes | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        timeout: float = 120.0,
        signature: bytes = b"",
        min_quorum: int = 0,
    ) -> pb.Ack:
        """Stream a contribution (plain float64 bytes, or a CKKS ciphertext with its signature and the
        artist's signed floor) or a decrypted aggregate."""
        chunks = chunk_payload(
            payload,
            round_id=round_id,
            kind=kind,
            nonce=nonce,
            chunk_bytes=chunk_bytes,
            signature=signature,
            min_quorum=min_quorum,
        )
        phase = "decrypt" if kind == pb.PAYLOAD_KIND_DECRYPTED_AGGREGATE else "contribute"
        metadata = self.submission_metadata(round_id, phase)
        return self.stub.UploadContribution(with_layout(chunks, layout), metadata=metadata, timeout=timeout)

    def contribution_set(self, round_id: int, timeout: float = 30.0) -> pb.ContributionSet:
        """CKKS committee: the signed contributions of the current attempt (the server's claim, to be checked)."""
        request = pb.ContributionSetRequest(round_id=round_id)
        return self.stub.GetContributionSet(request, metadata=self.metadata, timeout=timeout)

    def contribution(
        self, round_id: int, artist_id: str, timeout: float = 120.0, max_bytes: int = MAX_DOWNLOAD_BYTES
    ) -> bytes:
        """CKKS committee: one listed contribution's ciphertext bytes (at most ``max_bytes``)."""
        request = pb.ContributionRequest(round_id=round_id, artist_id=artist_id)
        stream = self.stub.DownloadContribution(request, metadata=self.metadata, timeout=timeout)
        return join_chunks(stream, max_bytes, MIN_CHUNK_BYTES)[1]

    def commit_decryption(
        self, round_id: int, attempt: int, set_digest: bytes, signature: bytes, wait_seconds: float = 0.0
    ) -> pb.DecryptionCommits:
        """CKKS committee: commit to a set (idempotent); the commitments held once all are in or after
        ``wait_seconds``."""
        request = pb.DecryptionCommit(
            round_id=round_id, attempt=attempt, set_digest=set_digest, signature=signature, wait_seconds=wait_seconds
        )
        return self.stub.CommitDecryption(request, metadata=self.metadata, timeout=wait_seconds + 10)

    def submit_masking(
        self,
        round_id: int,
        phase: str,
        message: bytes,
        layout: Layout | None = None,
        *,
        nonce: bytes | None = None,
        timeout: float = 30.0,
    ) -> pb.Ack:
        """Send one pairwise-masking message (``masking_messages`` bytes) of ``phase``."""
        return self.send_masking(masking_upload(round_id, phase, message, layout), nonce=nonce, timeout=timeout)

    def send_masking(self, request: pb.MaskingUpload, *, nonce: bytes | None = None, timeout: float = 30.0) -> pb.Ack:
        """Send (or resend) a masking upload built once by :func:`masking_upload`, under ``nonce`` (default
        a fresh one).  Holding the request rather than its message's bytes keeps one copy fewer of a
        masked input alive while gRPC serialises it (3.5 MB at the default head)."""
        request.nonce = new_nonce() if nonce is None else nonce
        metadata = self.submission_metadata(request.round_id, request.phase)
        return self.stub.SubmitMasking(request, metadata=metadata, timeout=timeout)

    def fetch_masking(self, round_id: int, name: str, timeout: float = 60.0) -> bytes:
        """The server's masking message ``name`` ("roster", "delivery", "survivors", "unmask_request")."""
        reply = self.stub.FetchMasking(
            pb.MaskingDownloadRequest(round_id=round_id, phase=name), metadata=self.metadata, timeout=timeout
        )
        return bytes(reply.message)

    def report(self, round_id: int, signed_json: bytes, timeout: float = 30.0) -> pb.Ack:
        return self.stub.UploadEpsilonReport(
            pb.EpsilonReport(round_id=round_id, artist_id=self.artist_id, signed_json=signed_json),
            metadata=self.metadata,
            timeout=timeout,
        )


def broadcast_from_body(
    body: pb.BroadcastBody, round_id: int
) -> tuple[Broadcast, tuple[np.ndarray, np.ndarray] | None]:
    """The round's broadcast and the feature standardisation (mean, std) if set, from its wire body."""
    broadcast = Broadcast(
        round=round_id - 1,
        params=optional_array(body, "params", "params"),
        consensus=optional_array(body, "consensus", "consensus"),
        prototypes=from_tensor(body.prototypes, "prototypes"),
        known=np.asarray(body.known, dtype=bool),
    )
    mean, std = (
        optional_array(body, "feature_mean", "feature_mean"),
        optional_array(body, "feature_std", "feature_std"),
    )
    if mean is None and std is None:
        return broadcast, None
    if mean is None or std is None:
        raise WireError(f"broadcast of round {round_id} carries only one of feature_mean and feature_std")
    return broadcast, (mean, std)


def publication_message(round_id: int, publication: Publication) -> pb.PrototypePublication:
    """A prototype publication on the wire (fresh nonce)."""
    return pb.PrototypePublication(
        round_id=round_id,
        artist_rows=[int(r) for r in publication.artist_rows],
        prototypes=to_tensor(publication.prototypes.astype(np.float32)),
        nonce=new_nonce(),
    )


def masking_upload(round_id: int, phase: str, message: bytes, layout: Layout | None) -> pb.MaskingUpload:
    """One pairwise-masking message of ``phase`` on the wire, without its nonce (set per send)."""
    return pb.MaskingUpload(
        round_id=round_id,
        phase=phase,
        message=message,
        layout=layout_fields(layout) if layout is not None else [],
    )


def with_layout(chunks: Iterator[pb.Chunk], layout: Layout | None) -> Iterator[pb.Chunk]:
    for chunk in chunks:
        if layout is not None and chunk.HasField("header"):
            chunk.header.layout.extend(pb.LayoutField(name=name, shape=list(shape)) for name, shape in layout.fields)
        yield chunk


def query(
    address: str,
    tls_pem: tuple[bytes, bytes, bytes],
    image: bytes,
    top_k: int = 5,
    *,
    server_name: str = "localhost",
    timeout: float = 30.0,
) -> list[tuple[str, float]]:
    """Buyer: rank artists by style similarity to an encoded image, over mutual TLS."""
    with open_channel(address, tls_pem, server_name=server_name) as channel:
        reply = pb_grpc.FederationStub(channel).Query(pb.QueryRequest(image=image, top_k=top_k), timeout=timeout)
    return [(hit.artist, float(hit.score)) for hit in reply.hits]
