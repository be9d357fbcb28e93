"""Wire format of every pairwise-masking protocol message (explicit layouts, no pickle).

Every message starts with the same header (integers little-endian)::

    magic  b"FSMK"   4 bytes
    version u8       currently 2
    kind    u8       MessageKind
    round   u64      round id
    sender  id       u8 length + UTF-8; length 0 = the server
    receiver id      u8 length + UTF-8; length 0 = the server

followed by a kind-specific body (``id`` = u8 length + 1..255 UTF-8 bytes)::

    ADVERTISE_KEYS  artist->server  enc_pk[32] mask_pk[32] contribution[32] signature[64]
    KEY_ROSTER      server->artist  u16 count, count x (id enc_pk[32] mask_pk[32] contribution[32] signature[64])
                                    (every included advertisement, the receiver's own too)
    SHARE_KEYS      artist->server  u16 count, count x (receiver id, sealed_share[94])
    SHARE_DELIVERY  server->artist  u16 count, count x (sender id, sealed_share[94])
    MASKED_INPUT    artist->server  u32 d, d x u32 masked words
    SURVIVOR_SET    server->artist  u16 n, ceil(n/8) bytes: bit i (LSB first) set = roster[i]'s masked
                                    input arrived; bits past n are zero
    SURVIVOR_SIGNATURE artist->server  signature[64] over the survivor set (masking_crypto.survivors_payload)
    UNMASK_REQUEST  server->artist  u16 count, count x survivor id, u16 count, count x dropped id,
                                    u16 count, count x (signer id, signature[64])
    UNMASK_RESPONSE artist->server  u16 count, count x (survivor id, seed_share[33]),
                                    u16 count, count x (dropped id, key_share[33])

``sealed_share`` is ``nonce[12] || ChaCha20-Poly1305(key_share[33] || seed_share[33]) || tag[16]``
(see :mod:`fedstyle_secure.secure.masking.crypto`).  Parsing rejects wrong magic, version,
kind, lengths, truncation and trailing bytes with :class:`SecureAggregationError`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.secure.binary import (
    ByteReader,
    pack_id,
    pack_optional_id,
    pack_u8,
    pack_u16,
    pack_u32,
    pack_u64,
)
from fedstyle_secure.secure.masking.crypto import (
    AEAD_TAG_BYTES,
    CONTRIBUTION_BYTES,
    NONCE_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
)
from fedstyle_secure.secure.masking.shamir import SHARE_VALUE_BYTES, field_element

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; annotations are not evaluated at runtime

MAGIC = b"FSMK"
VERSION = 2
SERVER = ""  # the server's endpoint name in headers
SHARE_PLAINTEXT_BYTES = 2 * SHARE_VALUE_BYTES
SEALED_SHARE_BYTES = NONCE_BYTES + SHARE_PLAINTEXT_BYTES + AEAD_TAG_BYTES
_MAX_COUNT = 0xFFFF


class MessageKind(enum.IntEnum):
    ADVERTISE_KEYS = 1
    KEY_ROSTER = 2
    SHARE_KEYS = 3
    SHARE_DELIVERY = 4
    MASKED_INPUT = 5
    UNMASK_REQUEST = 6
    UNMASK_RESPONSE = 7
    SURVIVOR_SET = 8
    SURVIVOR_SIGNATURE = 9


def encode_share_plaintext(key_share: bytes, seed_share: bytes) -> bytes:
    """Plaintext of one sealed share: the mask-key share then the self-mask-seed share."""
    if len(key_share) != SHARE_VALUE_BYTES or len(seed_share) != SHARE_VALUE_BYTES:
        raise SecureAggregationError(f"share values must be {SHARE_VALUE_BYTES} bytes each")
    return key_share + seed_share


def decode_share_plaintext(plaintext: bytes) -> tuple[bytes, bytes]:
    """Inverse of :func:`encode_share_plaintext`: ``(key_share, seed_share)``, each a field element.
    A value at or above the prime, planted by a dishonest dealer, would otherwise be revealed by the
    honest holders at unmasking and get THEIR answers refused (red-team review, 2026-11-30)."""
    if len(plaintext) != SHARE_PLAINTEXT_BYTES:
        raise SecureAggregationError(f"share plaintext must be {SHARE_PLAINTEXT_BYTES} bytes, got {len(plaintext)}")
    key_share, seed_share = plaintext[:SHARE_VALUE_BYTES], plaintext[SHARE_VALUE_BYTES:]
    field_element(key_share)
    field_element(seed_share)
    return key_share, seed_share


def _pack_count(items: Sequence[object]) -> bytes:
    if len(items) > _MAX_COUNT:
        raise SecureAggregationError(f"too many entries in one message ({len(items)} > {_MAX_COUNT})")
    return pack_u16(len(items))


def _pack_fixed(data: bytes, size: int, what: str) -> bytes:
    if len(data) != size:
        raise SecureAggregationError(f"{what} must be {size} bytes, got {len(data)}")
    return data


def _pack_entries(entries: Sequence[tuple[str, bytes]], size: int, what: str) -> bytes:
    return _pack_count(entries) + b"".join(pack_id(i) + _pack_fixed(v, size, what) for i, v in entries)


def _read_entries(reader: ByteReader, size: int) -> tuple[tuple[str, bytes], ...]:
    return tuple((reader.identifier(), reader.take(size)) for _ in range(reader.u16()))


def _pack_ids(ids: Sequence[str]) -> bytes:
    return _pack_count(ids) + b"".join(pack_id(i) for i in ids)


def _read_ids(reader: ByteReader) -> tuple[str, ...]:
    return tuple(reader.identifier() for _ in range(reader.u16()))


class _Message:
    """Header handling shared by all messages; subclasses define the body."""

    KIND: ClassVar[MessageKind]
    round_id: int

    @property
    def endpoints(self) -> tuple[str, str]:
        """``(sender, receiver)`` with :data:`SERVER` for the server side."""
        raise NotImplementedError

    def _body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def _parse_body(cls, reader: ByteReader, round_id: int, artist: str) -> Message:
        """Build the message from its body; ``artist`` is its artist endpoint (sender or receiver)."""
        raise NotImplementedError

    @classmethod
    def _check_endpoints(cls, sender: str, receiver: str) -> None:
        """Refuse a header whose ``(sender, receiver)`` does not fit the message's direction."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        sender, receiver = self.endpoints
        header = MAGIC + pack_u8(VERSION) + pack_u8(self.KIND) + pack_u64(self.round_id)
        return b"".join((header, pack_optional_id(sender), pack_optional_id(receiver), *self._body_parts()))

    def _body_parts(self) -> tuple[bytes | memoryview, ...]:
        """The body as buffers :meth:`to_bytes` joins (a long vector as a view: copied once, there)."""
        return (self._body(),)

    @classmethod
    def from_bytes(cls, data: bytes) -> Message:
        message = parse_message(data)
        if not isinstance(message, cls):
            raise SecureAggregationError(f"expected a {cls.__name__} message, got {type(message).__name__}")
        return message


class _FromArtist(_Message):
    sender: str

    @property
    def endpoints(self) -> tuple[str, str]:
        return self.sender, SERVER

    @classmethod
    def _check_endpoints(cls, sender: str, receiver: str) -> None:
        if not sender or receiver != SERVER:
            raise SecureAggregationError(f"{cls.__name__} must go from an artist to the server")


class _ToArtist(_Message):
    receiver: str

    @property
    def endpoints(self) -> tuple[str, str]:
        return SERVER, self.receiver

    @classmethod
    def _check_endpoints(cls, sender: str, receiver: str) -> None:
        if sender != SERVER or not receiver:
            raise SecureAggregationError(f"{cls.__name__} must go from the server to an artist")


@dataclass(frozen=True)
class AdvertiseKeys(_FromArtist):
    """Phase "advertise": an artist's two ephemeral X25519 public keys and a fresh 32-byte random
    contribution (seeding the SecAgg+ graph), signed by its identity key over the round config."""

    KIND: ClassVar[MessageKind] = MessageKind.ADVERTISE_KEYS
    round_id: int
    sender: str
    enc_public: bytes
    mask_public: bytes
    contribution: bytes
    signature: bytes

    def _body(self) -> bytes:
        return (
            _pack_fixed(self.enc_public, PUBLIC_KEY_BYTES, "encryption public key")
            + _pack_fixed(self.mask_public, PUBLIC_KEY_BYTES, "masking public key")
            + _pack_fixed(self.contribution, CONTRIBUTION_BYTES, "random contribution")
            + _pack_fixed(self.signature, SIGNATURE_BYTES, "signature")
        )

    @classmethod
    def _parse_body(cls, reader: ByteReader, round_id: int, artist: str) -> AdvertiseKeys:
        enc_public, mask_public = reader.take(PUBLIC_KEY_BYTES), reader.take(PUBLIC_KEY_BYTES)
        contribution = reader.take(CONTRIBUTION_BYTES)
        return cls(round_id, artist, enc_public, mask_public, contribution, reader.take(SIGNATURE_BYTES))


@dataclass(frozen=True)
class KeyRoster(_ToArtist):
    """Server -> artist: every included signed advertisement (the artist's own too), in roster order.

    All of them, not only the neighbours': the artist recomputes the transcript, hence the SecAgg+
    graph, and verifies every signature, so the server can neither fabricate contributions nor
    choose the graph."""

    KIND: ClassVar[MessageKind] = MessageKind.KEY_ROSTER
    round_id: int
    receiver: str
    adverts: tuple[AdvertiseKeys, ...]

    def _body(self) -> bytes:
        return _pack_count(self.adverts) + b"".join(pack_id(a.sender) + a._body() for a in self.adverts)

    @classmethod
    def _parse_body(cls, reader: ByteReader, round_id: int, artist: str) -> KeyRoster:
        adverts = tuple(AdvertiseKeys._parse_body(reader, round_id, reader.identifier()) for _ in range(reader.u16()))
        return cls(round_id, artist, adverts)


class _SealedShares:
    """Body shared by both legs of share routing: ``(peer id, sealed_share)`` entries."""

    sealed: tuple[tuple[str, bytes], ...]

    if TYPE_CHECKING:  # the dataclasses this is mixed into take (round id, artist endpoint, entries)

        def __init__(self, round_id: int, artist: str, sealed: tuple[tuple[str, bytes], ...]) -> None: ...

    def _body(self) -> bytes:
        return _pack_entries(self.sealed, SEALED_SHARE_BYTES, "sealed share")

    @classmethod
    def _parse_body(cls, reader: ByteReader, round_id: int, artist: str) -> Self:
        return cls(round_id, artist, _read_entries(reader, SEALED_SHARE_BYTES))


@dataclass(frozen=True)
class ShareKeys(_SealedShares, _FromArtist):
    """Phase "share": sealed Shamir shares for each neighbour, as ``(receiver, sealed_share)``."""

    KIND: ClassVar[MessageKind] = MessageKind.SHARE_KEYS
    round_id: int
    sender: str
    sealed: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class ShareDelivery(_SealedShares, _ToArtist):
    """Server -> artist: the sealed shares addressed to it, as ``(sender, sealed_share)``."""

    KIND: ClassVar[MessageKind] = MessageKind.SHARE_DELIVERY
    round_id: int
    receiver: str
    sealed: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, eq=False)
class MaskedInput(_FromArtist):
    """Phase "masked_input": the artist's fixed-point vector plus all its masks, mod 2^32."""

    KIND: ClassVar[MessageKind] = MessageKind.MASKED_INPUT
    round_id: int
    sender: str
    words: np.ndarray

    def _body_parts(self) -> tuple[bytes | memoryview, ...]:
        words = np.ascontiguousarray(self.words, dtype="<u4")
        if words.ndim != 1:
            raise SecureAggregationError(f"masked input must be a 1-D vector, got shape {words.shape}")
        return pack_u32(words.size), words.data.cast("B")

    @classmethod
    def _parse_body(cls, reader: ByteReader, round_id: int, artist: str) -> MaskedInput:
        length = reader.u32()
        words = np.frombuffer(reader.take_view(4 * length), dtype="<u4").astype(np.uint32)
        return cls(round_id, artist, words)


@dataclass(frozen=True)
class SurvivorSet(_ToArtist):
    """Phase "consistency": the survivor set (artists whose masked input arrived) as a roster bitmap."""

    KIND: ClassVar[MessageKind] = MessageKind.SURVIVOR_SET
    round_id: int
    receiver: str
    roster_size: int
    bitmap: bytes

    def _body(self) -> bytes:
        check_bitmap(self.roster_size, self.bitmap)
        return pack_u16(self.roster_size) + self.bitmap

    @classmethod
    def _parse_body(cls, reader: ByteReader, round_id: int, artist: str) -> SurvivorSet:
        size = reader.u16()
        bitmap = reader.take((size + 7) // 8)
        check_bitmap(size, bitmap)
        return cls(round_id, artist, size, bitmap)


def check_bitmap(size: int, bitmap: bytes) -> None:
    """Reject a bitmap of the wrong length or with bits set past ``size`` (one canonical form per set)."""
    if not 0 <= size <= _MAX_COUNT or len(bitmap) != (size + 7) // 8:
        raise SecureAggregationError(f"survivor bitmap of {len(bitmap)} bytes does not fit {size} roster entries")
    if size % 8 and bitmap[-1] >> (size % 8):
        raise SecureAggregationError("survivor bitmap has bits set past the end of the roster")


@dataclass(frozen=True)
class SurvivorSignature(_FromArtist):
    """Artist -> server: its identity-key signature of the survivor set it was shown (one per session)."""

    KIND: ClassVar[MessageKind] = MessageKind.SURVIVOR_SIGNATURE
    round_id: int
    sender: str
    signature: bytes

    def _body(self) -> bytes:
        return _pack_fixed(self.signature, SIGNATURE_BYTES, "signature")

    @classmethod
    def _parse_body(cls, reader: ByteReader, round_id: int, artist: str) -> SurvivorSignature:
        return cls(round_id, artist, reader.take(SIGNATURE_BYTES))


@dataclass(frozen=True)
class UnmaskRequest(_ToArtist):
    """Phase "unmask": whose self-mask seeds (survivors) and mask keys (dropped) to reveal shares of,
    with the survivor-set signatures the receiver needs before it reveals anything."""

    KIND: ClassVar[MessageKind] = MessageKind.UNMASK_REQUEST
    round_id: int
    receiver: str
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    signatures: tuple[tuple[str, bytes], ...] = ()

    def _body(self) -> bytes:
        signatures = _pack_entries(self.signatures, SIGNATURE_BYTES, "signature")
        return _pack_ids(self.survivors) + _pack_ids(self.dropped) + signatures

    @classmethod
    def _parse_body(cls, reader: ByteReader, round_id: int, artist: str) -> UnmaskRequest:
        return cls(round_id, artist, _read_ids(reader), _read_ids(reader), _read_entries(reader, SIGNATURE_BYTES))


@dataclass(frozen=True)
class UnmaskResponse(_FromArtist):
    """Artist -> server: its shares of survivors' self-mask seeds and of dropped artists' mask keys."""

    KIND: ClassVar[MessageKind] = MessageKind.UNMASK_RESPONSE
    round_id: int
    sender: str
    seed_shares: tuple[tuple[str, bytes], ...]
    key_shares: tuple[tuple[str, bytes], ...]

    def _body(self) -> bytes:
        return _pack_entries(self.seed_shares, SHARE_VALUE_BYTES, "seed share") + _pack_entries(
            self.key_shares, SHARE_VALUE_BYTES, "key share"
        )

    @classmethod
    def _parse_body(cls, reader: ByteReader, round_id: int, artist: str) -> UnmaskResponse:
        return cls(round_id, artist, _read_entries(reader, SHARE_VALUE_BYTES), _read_entries(reader, SHARE_VALUE_BYTES))


Message = (
    AdvertiseKeys
    | KeyRoster
    | ShareKeys
    | ShareDelivery
    | MaskedInput
    | SurvivorSet
    | SurvivorSignature
    | UnmaskRequest
    | UnmaskResponse
)
_BY_KIND: dict[int, type[_Message]] = {
    cls.KIND: cls
    for cls in (
        AdvertiseKeys,
        KeyRoster,
        ShareKeys,
        ShareDelivery,
        MaskedInput,
        SurvivorSet,
        SurvivorSignature,
        UnmaskRequest,
        UnmaskResponse,
    )
}


def parse_message(data: bytes) -> Message:
    """Parse any masking message, checking header, endpoints, lengths and trailing bytes."""
    reader = ByteReader(data, "masking message")
    if reader.take(len(MAGIC)) != MAGIC:
        raise SecureAggregationError("not a masking message (bad magic)")
    version, kind = reader.u8(), reader.u8()
    if version != VERSION:
        raise SecureAggregationError(f"unsupported masking message version {version} (expected {VERSION})")
    if kind not in _BY_KIND:
        raise SecureAggregationError(f"unknown masking message kind {kind}")
    cls = _BY_KIND[kind]
    round_id, sender, receiver = reader.u64(), reader.optional_identifier(), reader.optional_identifier()
    cls._check_endpoints(sender, receiver)
    message = cls._parse_body(reader, round_id, sender or receiver)
    reader.finish()
    return message
