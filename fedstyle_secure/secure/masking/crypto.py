"""Cryptographic recipes of the pairwise-masking protocol, layered on ``cryptography`` primitives.

* Advertisement signatures: Ed25519 over ``tag || round_id || config_digest || artist_id || enc_pk
  || mask_pk || contribution`` with the artist's long-term identity key, so a server cannot
  substitute the ephemeral X25519 keys or the 32-byte random contribution it relays (the identity
  public keys reach every peer out of band), nor pass an advertisement made under one round
  configuration (participant list, layout, threshold) to an artist holding another.
* Transcript: SHA-256 over the config digest and every included advertisement (roster order);
  it seeds the SecAgg+ graph and is bound into survivor-set signatures.
* Survivor-set signatures (consistency phase): Ed25519 over ``tag || round_id || transcript ||
  u16 n || survivor bitmap`` -- see :mod:`fedstyle_secure.secure.masking.consistency`.
* Pairwise mask seeds: ``HKDF-SHA256(X25519(mask_sk_u, mask_pk_v), info = tag || round_id ||
  lower_id || higher_id)`` -- identical at both ends of a pair and fresh per round.
* Share encryption: ChaCha20-Poly1305 under ``HKDF-SHA256(X25519(enc_sk_u, enc_pk_v), info =
  tag || round_id || sender || receiver)`` (one key per direction), with a random 96-bit nonce
  and associated data ``round_id || sender || receiver``: the server relaying a share can
  neither read it nor redirect or replay it to another receiver or round undetected.

Every failure (bad signature, invalid public key, AEAD tag mismatch) raises
:class:`SecureAggregationError`; nothing falls back to an unauthenticated path.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.secure.binary import pack_id, pack_u16, pack_u64

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
CONTRIBUTION_BYTES = 32  # fresh OS randomness in every advertisement (seeds the SecAgg+ graph)
NONCE_BYTES = 12
AEAD_TAG_BYTES = 16

_ADVERTISE_TAG = b"fedstyle-secagg/v2/advertise"
_TRANSCRIPT_TAG = b"fedstyle-secagg/v2/transcript"
_SURVIVORS_TAG = b"fedstyle-secagg/v2/survivors"
_MASK_SEED_TAG = b"fedstyle-secagg/v1/pairwise-mask-seed"
_SHARE_KEY_TAG = b"fedstyle-secagg/v1/share-encryption-key"
_SHARE_AD_TAG = b"fedstyle-secagg/v1/share"


def advertisement_payload(
    round_id: int, config_digest: bytes, artist_id: str, enc_public: bytes, mask_public: bytes, contribution: bytes
) -> bytes:
    """The exact bytes an artist signs when advertising its two X25519 public keys and its contribution."""
    head = _ADVERTISE_TAG + pack_u64(round_id) + config_digest + pack_id(artist_id)
    return head + enc_public + mask_public + contribution


def sign_advertisement(
    identity_key: Ed25519PrivateKey,
    round_id: int,
    config_digest: bytes,
    artist_id: str,
    enc_public: bytes,
    mask_public: bytes,
    contribution: bytes,
) -> bytes:
    payload = advertisement_payload(round_id, config_digest, artist_id, enc_public, mask_public, contribution)
    return identity_key.sign(payload)


def verify_advertisement(
    identity_public: Ed25519PublicKey,
    round_id: int,
    config_digest: bytes,
    artist_id: str,
    enc_public: bytes,
    mask_public: bytes,
    contribution: bytes,
    signature: bytes,
) -> None:
    """Raise unless ``signature`` is ``artist_id``'s identity-key signature of these keys for this round
    and this round configuration, and both keys are usable X25519 public keys (:func:`require_usable_x25519`)."""
    for key, name in ((enc_public, "encryption"), (mask_public, "masking")):
        require_usable_x25519(key, f"round {round_id}: the {name} key advertised by {artist_id!r}")
    try:
        identity_public.verify(
            signature, advertisement_payload(round_id, config_digest, artist_id, enc_public, mask_public, contribution)
        )
    except InvalidSignature as exc:
        raise SecureAggregationError(
            f"round {round_id}: key advertisement of {artist_id!r} is not signed by its identity key for this "
            "round configuration (forged or substituted keys, or a different participant list / round parameters)"
        ) from exc


def transcript_digest(config_digest: bytes, adverts: Sequence[tuple[str, bytes, bytes, bytes]]) -> bytes:
    """SHA-256 over the config digest and the included ``(artist_id, enc_pk, mask_pk, contribution)``
    advertisements, in the given (roster) order."""
    digest = hashlib.sha256(_TRANSCRIPT_TAG + config_digest + pack_u16(len(adverts)))
    for artist_id, enc_public, mask_public, contribution in adverts:
        digest.update(pack_id(artist_id) + enc_public + mask_public + contribution)
    return digest.digest()


def survivors_payload(round_id: int, transcript: bytes, roster_size: int, bitmap: bytes) -> bytes:
    """The exact bytes an artist signs in the consistency phase: the survivor set it was shown."""
    return _SURVIVORS_TAG + pack_u64(round_id) + transcript + pack_u16(roster_size) + bitmap


def sign_survivors(
    identity_key: Ed25519PrivateKey, round_id: int, transcript: bytes, roster_size: int, bitmap: bytes
) -> bytes:
    return identity_key.sign(survivors_payload(round_id, transcript, roster_size, bitmap))


def survivors_signature_valid(
    identity_public: Ed25519PublicKey,
    round_id: int,
    transcript: bytes,
    roster_size: int,
    bitmap: bytes,
    signature: bytes,
) -> bool:
    """Whether ``signature`` is a valid identity-key signature of this survivor set, round and transcript."""
    try:
        identity_public.verify(signature, survivors_payload(round_id, transcript, roster_size, bitmap))
    except InvalidSignature:
        return False
    return True


def require_usable_x25519(public: bytes, what: str) -> None:
    """Raise unless ``public`` is an X25519 public key an agreement can use: a small-order point (the
    all-zero encoding, say) gives an all-zero shared secret, which ``cryptography`` refuses, so a
    signed advertisement of one made every honest artist fail one phase later, naming nobody
    (red-team review, 2026-11-30).  Checked when an advertisement is accepted: the advertiser is
    refused alone and counts as dropped."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:
        raise SecureAggregationError(f"{what} is not a usable X25519 public key ({exc})") from exc


def _agree(own: X25519PrivateKey, peer_public: bytes) -> bytes:
    try:
        return own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise SecureAggregationError(f"invalid X25519 public key: {exc}") from exc


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def pairwise_mask_seed(own_mask_key: X25519PrivateKey, peer_mask_public: bytes, round_id: int, a: str, b: str) -> bytes:
    """The 32-byte seed of the mask shared by artists ``a`` and ``b`` (symmetric in a, b)."""
    low, high = sorted((a, b))
    info = _MASK_SEED_TAG + pack_u64(round_id) + pack_id(low) + pack_id(high)
    return _hkdf(_agree(own_mask_key, peer_mask_public), info)


def share_associated_data(round_id: int, sender: str, receiver: str) -> bytes:
    """AEAD associated data binding an encrypted share to its round and direction."""
    return _SHARE_AD_TAG + pack_u64(round_id) + pack_id(sender) + pack_id(receiver)


def share_ciphers(
    own_enc_key: X25519PrivateKey, peer_enc_public: bytes, round_id: int, me: str, peer: str
) -> tuple[ChaCha20Poly1305, ChaCha20Poly1305]:
    """AEADs for shares ``me -> peer`` and ``peer -> me``, from one X25519 agreement."""
    secret = _agree(own_enc_key, peer_enc_public)

    def direction(sender: str, receiver: str) -> ChaCha20Poly1305:
        info = _SHARE_KEY_TAG + pack_u64(round_id) + pack_id(sender) + pack_id(receiver)
        return ChaCha20Poly1305(_hkdf(secret, info))

    return direction(me, peer), direction(peer, me)


def seal(cipher: ChaCha20Poly1305, plaintext: bytes, associated_data: bytes) -> bytes:
    """``nonce || ciphertext || tag`` with a fresh random nonce."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + cipher.encrypt(nonce, plaintext, associated_data)


def open_sealed(cipher: ChaCha20Poly1305, sealed: bytes, associated_data: bytes, what: str) -> bytes:
    """Inverse of :func:`seal`; raises naming ``what`` if the ciphertext or its binding was tampered with."""
    if len(sealed) < NONCE_BYTES + AEAD_TAG_BYTES:
        raise SecureAggregationError(f"{what}: ciphertext too short ({len(sealed)} bytes)")
    try:
        return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
    except InvalidTag as exc:
        raise SecureAggregationError(
            f"{what}: authentication failed (tampered, redirected or replayed ciphertext)"
        ) from exc


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes_raw()


def x25519_from_private_bytes(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)
