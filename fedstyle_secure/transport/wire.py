"""Conversions between NumPy arrays / byte payloads and the ``fedstyle.v1`` messages (no pickle).

Importing this module makes sure the generated protobuf code exists (see :mod:`.codegen`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from google.protobuf.message import Message as ProtoMessage

from fedstyle_secure.federation.packing import Layout
from fedstyle_secure.federation.rounds import FINAL, SETUP, TRAIN
from fedstyle_secure.transport.codegen import ensure_generated

ensure_generated()

from fedstyle_secure.transport._generated.fedstyle.v1 import federation_pb2 as pb  # noqa: E402
from fedstyle_secure.transport._generated.fedstyle.v1 import federation_pb2_grpc as pb_grpc  # noqa: E402, F401

# re-exported for the server and the channel (F401: not used here)

PROTOCOL = "fedstyle.v1.3"
"""The wire protocol of the server and every artist; a registration naming another is refused.  The
protobuf package stays ``fedstyle.v1`` (the messages parse across versions); the suffix counts changes
in what each side sends or checks that an artist of another version would otherwise fail on mid-run
(``.1``, 2026-11-30: plans carry the run id, a CKKS chunk holds exactly one ciphertext; ``.2``,
2026-12-02: plans carry the CKKS committee size, which every CKKS signature covers; ``.3``, 2026-12-02:
under DP at epsilon < 4 the starting model is the public augmentation-invariant projection with no
warm start, which an earlier artist would build differently from the same plan)."""
ROUND_METADATA = "fedstyle-round"  # call metadata of a submission: the round id it is for ...
PHASE_METADATA = "fedstyle-phase"  # ... and the phase; checked before the server reads the body
ALLOWED_DTYPES: tuple[str, ...] = ("float32", "float64")
DEFAULT_CHUNK_BYTES = 256 * 1024
MIN_CHUNK_BYTES = 16 * 1024
"""Smallest chunk a server takes (but for a payload's last): see :func:`join_chunks`."""
NONCE_BYTES = 16

WIRE_ROUND_KINDS: dict[str, pb.RoundKind] = {
    SETUP: pb.ROUND_KIND_SETUP,
    TRAIN: pb.ROUND_KIND_TRAIN,
    FINAL: pb.ROUND_KIND_FINAL,
}
"""A round kind of :mod:`fedstyle_secure.federation.rounds` as ``RoundPlan.kind`` carries it."""
ROUND_KINDS_OF_WIRE: dict[int, str] = {wire: kind for kind, wire in WIRE_ROUND_KINDS.items()}


class WireError(ValueError):
    """A message that does not decode to what it claims (maps to INVALID_ARGUMENT)."""


def to_tensor(array: np.ndarray) -> pb.Tensor:
    """A float32/float64 array as a :class:`Tensor` (little endian, C order)."""
    array = np.asarray(array)
    if array.dtype.name not in ALLOWED_DTYPES:
        raise WireError(f"only {ALLOWED_DTYPES} travel as tensors, got {array.dtype}")
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return pb.Tensor(dtype=array.dtype.name, shape=list(array.shape), data=little.tobytes())


def from_tensor(tensor: pb.Tensor, what: str) -> np.ndarray:
    """The array of a :class:`Tensor`, checking dtype and that the byte length matches the shape."""
    if tensor.dtype not in ALLOWED_DTYPES:
        raise WireError(f"{what}: dtype {tensor.dtype!r} is not one of {ALLOWED_DTYPES}")
    dtype = np.dtype(tensor.dtype).newbyteorder("<")
    shape = tuple(int(s) for s in tensor.shape)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    data = tensor.data  # every read of a bytes field copies it out of the message: read it once
    if expected != len(data):
        raise WireError(f"{what}: shape {shape} of {tensor.dtype} needs {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def optional_tensor(array: np.ndarray | None) -> pb.Tensor | None:
    return None if array is None else to_tensor(array)


def optional_array(message: ProtoMessage, field: str, what: str) -> np.ndarray | None:
    return from_tensor(getattr(message, field), what) if message.HasField(field) else None


def layout_from_fields(fields: Iterable[pb.LayoutField]) -> Layout:
    """The :class:`Layout` declared by ``LayoutField`` messages (empty when none were sent)."""
    return Layout(tuple((f.name, tuple(int(d) for d in f.shape)) for f in fields))


def layout_fields(layout: Layout) -> list[pb.LayoutField]:
    """Inverse of :func:`layout_from_fields`."""
    return [pb.LayoutField(name=name, shape=list(shape)) for name, shape in layout.fields]


def submission_metadata(round_id: int, phase: str) -> tuple[tuple[str, str], ...]:
    """Call metadata naming the round and phase a submission is for (see :func:`submission_target`)."""
    return ((ROUND_METADATA, str(int(round_id))), (PHASE_METADATA, phase))


def submission_target(metadata: Mapping[str, str]) -> tuple[int, str]:
    """``(round_id, phase)`` from a submission's call metadata; raises :class:`WireError` naming a
    missing or malformed key."""
    round_text, phase = metadata.get(ROUND_METADATA), metadata.get(PHASE_METADATA)
    if round_text is None or phase is None:
        raise WireError(
            f"a submission's call metadata must carry {ROUND_METADATA!r} (round id) and {PHASE_METADATA!r} (phase)"
        )
    if not round_text.isdigit() or len(round_text) > 19:
        raise WireError(f"call metadata {ROUND_METADATA!r} must be a round id (decimal), got {round_text[:40]!r}")
    return int(round_text), phase


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def chunk_payload(
    payload: bytes | memoryview,
    *,
    round_id: int,
    kind: pb.PayloadKind,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    nonce: bytes | None = None,
    signature: bytes = b"",
    min_quorum: int = 0,
) -> Iterator[pb.Chunk]:
    """Split ``payload`` (bytes, or a view of any contiguous buffer such as a float64 vector's) into
    Chunks; the first carries the header (size, SHA-256, nonce, and for a CKKS contribution its
    signature and the artist's signed floor)."""
    data = memoryview(payload).cast("B")  # a byte view: no copy of the payload
    header = pb.PayloadHeader(
        round_id=round_id,
        kind=kind,
        total_bytes=len(data),
        sha256=hashlib.sha256(data).digest(),
        nonce=nonce if nonce is not None else new_nonce(),
        signature=signature,
        min_quorum=min_quorum,
    )
    yield pb.Chunk(header=header, data=bytes(data[:chunk_bytes]))
    for start in range(chunk_bytes, len(data), chunk_bytes):  # sliced as sent: no second copy of the payload
        yield pb.Chunk(data=bytes(data[start : start + chunk_bytes]))


def join_chunks(chunks: Iterable[pb.Chunk], max_bytes: int, min_chunk_bytes: int = 1) -> tuple[pb.PayloadHeader, bytes]:
    """Reassemble a Chunk stream, enforcing the header, ``max_bytes`` and the SHA-256.

    The payload grows in one buffer, and a stream may hold at most ``total_bytes / min_chunk_bytes
    + 2`` chunks (the header's, the payload's in chunks of ``min_chunk_bytes`` or more, a last short
    one).  Threat model: the sender may be malicious; one-byte chunks kept as one Python object
    each cost the receiver about 90 times the payload, and empty chunks kept a stream open for as
    long as each came within the idle timeout (red-team review, 2026-12-01).

    Raises :class:`WireError` (malformed) or :class:`PayloadTooLarge` (over the limit).
    """
    iterator = iter(chunks)
    first = next(iterator, None)
    if first is None or not first.HasField("header"):
        raise WireError("a payload stream must start with a chunk carrying its header")
    header = first.header
    if header.total_bytes > max_bytes:
        raise PayloadTooLarge(f"payload declares {header.total_bytes} bytes; this server accepts at most {max_bytes}")
    most_chunks = header.total_bytes // max(min_chunk_bytes, 1) + 2
    buffer, count = bytearray(first.data), 1
    for chunk in iterator:
        if chunk.HasField("header"):
            raise WireError("only the first chunk of a payload may carry a header")
        count += 1
        if count > most_chunks:
            raise WireError(
                f"a payload of {header.total_bytes} bytes sent in more than {most_chunks} chunks (chunks below "
                f"{min_chunk_bytes} bytes are refused, but for the last)"
            )
        if len(buffer) + len(chunk.data) > header.total_bytes:
            raise PayloadTooLarge(f"payload exceeds its declared {header.total_bytes} bytes")
        buffer += chunk.data
    payload = bytes(buffer)
    del buffer
    if len(payload) != header.total_bytes:
        raise WireError(f"payload ended after {len(payload)} of its declared {header.total_bytes} bytes")
    if hashlib.sha256(payload).digest() != header.sha256:
        raise WireError("payload SHA-256 differs from its header (corrupted or truncated)")
    return header, payload


class PayloadTooLarge(WireError):
    """A payload over the configured limit (maps to RESOURCE_EXHAUSTED)."""


def vector_payload(vector: np.ndarray) -> memoryview:
    """A vector's wire form: its values as little-endian float64, flattened (a view of ``vector``'s
    memory when it already is that, else of one converted copy).  The only encoding of plain
    vectors on the wire; :func:`chunk_payload` sends whatever buffer it is given as is."""
    return np.ascontiguousarray(vector, dtype="<f8").reshape(-1).data.cast("B")
