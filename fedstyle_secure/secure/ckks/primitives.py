"""CKKS (TenSEAL) primitives of the ``--secure ckks`` path: parameters, packing, encrypt / add / decrypt.

Roles and keys (threat model):

* Every artist holds the same **secret context** (CKKS secret key; symmetric encryption, so there
  is no public key at all).  Artists encrypt their vectors; a decryptor decrypts only a sum it
  checked and computed itself (:mod:`fedstyle_secure.secure.ckks.decryption`: who may decrypt
  what, and what a curious or malicious server can learn).
* The server holds a **public context**: the encryption parameters only -- no secret key, no
  public key, no Galois or relinearisation keys.  It can check, add and weight ciphertexts, but
  can neither decrypt nor encrypt.  :class:`CkksAggregator` refuses a context that holds a secret key.
* Since all artists share one key, any key holder that sees a ciphertext can decrypt it: a server
  colluding with one artist learns every vector, and so does a curious member of the decryption
  committee.  The masking path (``secagg``/``secagg+``) exists for that threat.
* A decryption never leaves an artist exact: :func:`released_plaintext` adds flooding noise.  The
  exact decoded slots of a ciphertext the server also holds give it ``c0 + c1 * s`` exactly, a
  linear equation in the secret key ``s`` (Li & Micciancio, Eurocrypt 2021); two full ciphertexts'
  worth of slots recover ``s`` and with it every artist's vector.
* Whoever receives a ciphertext checks it against its OWN context before using it
  (:func:`check_fresh`: parameters, top level, scale, size) and :class:`CkksSum` adds atomically,
  so a crafted ciphertext is refused whole and never changes a sum.

Wire format of an encrypted vector (little-endian, via :mod:`fedstyle_secure.secure.binary`)::

    magic "FSCV" | u8 version | 32-byte context fingerprint | u32 length | u32 chunks
    | chunks x (u32 nbytes | TenSEAL CKKSVector bytes)

A vector of ``length`` values is packed into ``ceil(length / slots)`` ciphertexts of at most
``slots = N / 2`` values each.  The fingerprint binds parameters *and* key identity: a
ciphertext made under other parameters or another key set is rejected before TenSEAL parses
it, and TenSEAL's own parameter check is a second, independent line of defence (fail closed).

This module is pure: no file or network I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.randomness import NoiseSource
from fedstyle_secure.secure.binary import ByteReader, pack_u8, pack_u32

if TYPE_CHECKING:  # imported where used: a process that never runs a CKKS round never loads TenSEAL
    import tenseal as ts

VECTOR_MAGIC = b"FSCV"
CONTEXT_MAGIC = b"FSCC"
FORMAT_VERSION = 1
KEY_ID_BYTES = 16
FINGERPRINT_BYTES = 32

#: Largest total coefficient-modulus bit count per ring degree for 128-bit classical security
#: (homomorphicencryption.org standard table, as enforced by Microsoft SEAL).
MAX_COEFF_BITS_128: dict[int, int] = {4096: 109, 8192: 218, 16384: 438, 32768: 881}


def _open(data: bytes, magic: bytes, what: str) -> ByteReader:
    """A reader positioned after ``magic``; anything else is not a fedstyle CKKS object."""
    reader = ByteReader(data, what)
    if reader.take(len(magic)) != magic:
        raise SecureAggregationError(f"{what}: not a fedstyle CKKS {magic.decode()} object (bad magic)")
    return reader


def _check_version(version: object, what: str) -> None:
    if version != FORMAT_VERSION:
        raise SecureAggregationError(f"{what}: unsupported format version {version}")


class CkksParamsJson(TypedDict):
    """:meth:`CkksParams.to_json`: what the key manifest and serialised contexts record."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: list[int]
    scale_bits: int


@dataclass(frozen=True)
class CkksParams:
    """CKKS encryption parameters.

    Defaults (measured, see docs/secure_ckks_keys.md): ring degree N = 8192 (4096 slots per
    ciphertext), modulus chain [60, 40, 60] bits, scale 2**40.  Fresh ciphertexts carry two data
    primes (~57 bytes per value serialised, 14x a float32); one plaintext-weight multiplication
    consumes the 40-bit prime.  Decrypted sums are accurate to ~1e-8 absolute for unit-scale
    inputs; values must stay below 2**(60 - 40 - 1) ~ 5e5 in magnitude after a weighting.
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    scale_bits: int = 40

    @property
    def slots(self) -> int:
        """Values per ciphertext (N / 2)."""
        return self.poly_modulus_degree // 2

    @property
    def max_abs_value(self) -> float:
        """Largest magnitude a weighted aggregate may reach without silent modular wrap-around."""
        return 2.0 ** (self.coeff_mod_bit_sizes[0] - self.scale_bits - 1)

    def validate(self) -> None:
        """Raise :class:`ConfigError` unless the parameters are usable at 128-bit security."""
        n, chain = self.poly_modulus_degree, self.coeff_mod_bit_sizes
        if n not in MAX_COEFF_BITS_128:
            raise ConfigError(f"CKKS poly_modulus_degree must be one of {sorted(MAX_COEFF_BITS_128)}, got {n}")
        if len(chain) < 3:
            raise ConfigError(
                f"CKKS coeff_mod_bit_sizes {list(chain)} needs >= 3 primes (data, one level for a weight, special)"
            )
        if sum(chain) > MAX_COEFF_BITS_128[n]:
            raise ConfigError(
                f"CKKS coeff_mod_bit_sizes {list(chain)} total {sum(chain)} bits > {MAX_COEFF_BITS_128[n]} "
                f"allowed for 128-bit security at N={n}"
            )
        if any(not 20 <= bits <= 60 for bits in chain):
            raise ConfigError(f"CKKS primes must be 20..60 bits, got {list(chain)}")
        if any(bits != self.scale_bits for bits in chain[1:-1]):
            raise ConfigError(
                f"CKKS middle primes {list(chain[1:-1])} must equal scale_bits={self.scale_bits} so rescaling keeps "
                "the scale"
            )
        if chain[0] <= self.scale_bits:
            raise ConfigError(f"CKKS first prime ({chain[0]} bits) must exceed scale_bits={self.scale_bits}")

    def to_json(self) -> CkksParamsJson:
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CkksParams:
        """Parse parameters from untrusted JSON (malformed: :class:`ConfigError`; out of range: ``validate``)."""
        try:
            params = cls(
                poly_modulus_degree=int(data["poly_modulus_degree"]),
                coeff_mod_bit_sizes=tuple(int(b) for b in data["coeff_mod_bit_sizes"]),
                scale_bits=int(data["scale_bits"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed CKKS parameters {data!r}: {exc}") from exc
        params.validate()
        return params


class CkksContext:
    """A TenSEAL CKKS context plus the key-set identity (``key_id``) that ciphertexts are bound to.

    :meth:`load_deferred` checks a serialised context's header at once and parses its TenSEAL part
    (with every check of :meth:`load`) on first use: a machine that never runs a CKKS round then
    never imports TenSEAL nor holds a parsed context (~10 MB resident, ``scripts/bench_round.py``)."""

    def __init__(self, params: CkksParams, key_id: bytes, context: ts.Context | None) -> None:
        if len(key_id) != KEY_ID_BYTES:
            raise SecureAggregationError(f"CKKS key id must be {KEY_ID_BYTES} bytes, got {len(key_id)}")
        self.params = params
        self.key_id = key_id
        self._context = context
        self._pending: tuple[bytes, bool, str] | None = None  # a deferred load's (TenSEAL bytes, claimed secret, what)

    @classmethod
    def generate(cls, params: CkksParams | None = None, *, n_threads: int | None = None) -> CkksContext:
        """Fresh secret context (symmetric CKKS: secret key only; no public, Galois or relin keys used)."""
        import tenseal as ts

        params = params or CkksParams()
        params.validate()
        kwargs = {"n_threads": n_threads} if n_threads else {}
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
            **kwargs,
        )
        context.global_scale = 2.0**params.scale_bits
        return cls(params, os.urandom(KEY_ID_BYTES), context)

    @property
    def has_secret_key(self) -> bool:
        """Whether the key material holds the secret key (before parsing: the header's claim, which
        parsing checks)."""
        if self._context is None and self._pending is not None:  # not parsed yet
            return self._pending[1]
        return bool(self.tenseal.has_secret_key())

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 over the canonical parameters and the key id (32 bytes)."""
        canonical = json.dumps(self.params.to_json(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(b"fedstyle-ckks/v1\x00" + canonical + self.key_id).digest()

    def release_key(self, label: bytes) -> bytes:
        """HMAC-SHA256 of ``label`` under a digest of this key set's secret key material: 32 bytes that
        every holder of the secret key derives alike and nobody else can (the server holds only the
        public context).  Raises unless this context holds the secret key."""
        if not self.has_secret_key:
            raise SecureAggregationError("only a context holding the secret key derives release keys")
        key = self.tenseal.secret_key().data.data()  # SEAL's secret key: a polynomial, as a Plaintext
        coefficients = np.fromiter((key.data(i) for i in range(key.coeff_count())), dtype="<u8")
        digest = hashlib.sha256(b"fedstyle-ckks-secret/v1\x00" + coefficients.tobytes()).digest()
        return hmac.new(digest, label, hashlib.sha256).digest()

    @property
    def tenseal(self) -> ts.Context:
        """The TenSEAL context; a deferred one is parsed and checked here, failing closed every time.
        Server threads may ask at once: each may parse (the same bytes), none sees a half-set state."""
        context = self._context
        if context is None:
            if self._pending is None:
                raise SecureAggregationError("CKKS context without TenSEAL key material")
            raw, claims_secret, what = self._pending  # kept: clearing it would race with a second caller
            context = self._context = _parse_tenseal(raw, self.params, claims_secret, what)
        return context

    def check_key_material(self) -> None:
        """Parse and check a deferred context's TenSEAL part now (raises :class:`SecureAggregationError`)."""
        _ = self.tenseal

    @property
    def fresh_parms_id(self) -> tuple[int, ...]:
        """SEAL's id of the top data level: where every fresh ciphertext of these parameters lives."""
        return tuple(self.tenseal.seal_context().data.first_parms_id())

    def public(self) -> CkksContext:
        """The server's copy: same parameters and key id, no key material at all."""
        import tenseal as ts

        stripped = ts.context_from(self._serialize_tenseal(with_secret_key=False))
        return CkksContext(self.params, self.key_id, stripped)

    def _serialize_tenseal(self, *, with_secret_key: bool) -> bytes:
        return self.tenseal.serialize(
            save_public_key=False,
            save_secret_key=with_secret_key,
            save_galois_keys=False,
            save_relin_keys=False,
        )

    def serialize(self) -> bytes:
        """``"FSCC" | u32 header length | JSON header | TenSEAL context bytes`` (secret key iff held)."""
        header = json.dumps(
            {
                "version": FORMAT_VERSION,
                "params": self.params.to_json(),
                "key_id": self.key_id.hex(),
                "secret": self.has_secret_key,
            },
            sort_keys=True,
        ).encode()
        return (
            CONTEXT_MAGIC
            + pack_u32(len(header))
            + header
            + self._serialize_tenseal(with_secret_key=self.has_secret_key)
        )

    @classmethod
    def load(cls, data: bytes, *, what: str = "CKKS context") -> CkksContext:
        """Parse :meth:`serialize` output; fail closed on any inconsistency."""
        loaded = cls.load_deferred(data, what=what)
        loaded.check_key_material()
        return loaded

    @classmethod
    def load_deferred(cls, data: bytes, *, what: str = "CKKS context") -> CkksContext:
        """:meth:`load` with the header (format, parameters, key id, secret claim) checked now and
        the TenSEAL part parsed and checked on first use (:attr:`tenseal`)."""
        reader = _open(data, CONTEXT_MAGIC, what)
        header_size = reader.u32()
        try:
            header = json.loads(reader.take(header_size))
            params = CkksParams.from_json(header["params"])
            key_id = bytes.fromhex(header["key_id"])
            claims_secret = bool(header["secret"])
            version = header["version"]
        except (ValueError, KeyError, TypeError, ConfigError) as exc:
            raise SecureAggregationError(f"{what}: malformed header: {exc}") from exc
        _check_version(version, what)
        raw = reader.take(len(data) - len(CONTEXT_MAGIC) - 4 - header_size)
        loaded = cls(params, key_id, None)
        loaded._pending = (raw, claims_secret, what)
        return loaded


def _parse_tenseal(raw: bytes, params: CkksParams, claims_secret: bool, what: str) -> ts.Context:
    """The TenSEAL context in ``raw``, checked against the header's secret claim and parameters."""
    import tenseal as ts

    try:
        context = ts.context_from(raw)
    except Exception as exc:  # TenSEAL raises ValueError/RuntimeError on corrupt streams
        raise SecureAggregationError(f"{what}: TenSEAL cannot parse the context: {exc}") from exc
    if bool(context.has_secret_key()) != claims_secret:
        raise SecureAggregationError(f"{what}: header says secret={claims_secret} but the key material disagrees")
    _check_tenseal_params(params, context, what)
    return context


def _check_tenseal_params(params: CkksParams, context: ts.Context, what: str) -> None:
    """The TenSEAL context must really use the declared parameters."""
    declared = 2.0**params.scale_bits
    if context.global_scale != declared:
        raise SecureAggregationError(
            f"{what}: TenSEAL scale {context.global_scale} differs from declared 2**{params.scale_bits}"
        )
    key_level = context.seal_context().data.key_context_data()
    degree = key_level.parms().poly_modulus_degree()
    chain = _coeff_modulus_bit_sizes(key_level)
    if (degree, chain) != (params.poly_modulus_degree, list(params.coeff_mod_bit_sizes)):
        raise SecureAggregationError(
            f"{what}: TenSEAL parameters (N={degree}, primes of {chain} bits) differ from the "
            f"declared {params.to_json()}"
        )


def _coeff_modulus_bit_sizes(key_level: Any) -> list[int]:
    """The bit size of every prime of the coefficient modulus, in order.

    TenSEAL's bindings cannot return SEAL's ``Modulus`` objects, but every level of the modulus chain
    drops the last prime of the level above, so the drop in total bits from one level to the next is
    that prime's size (the key level holds them all; the last level keeps only the first)."""
    totals = []
    level = key_level
    while level is not None:
        totals.append(int(level.total_coeff_modulus_bit_count()))
        level = level.next_context_data()
    dropped = [above - below for above, below in itertools.pairwise(totals)]
    return [totals[-1], *reversed(dropped)]


def chunk_bounds(length: int, slots: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges packing ``length`` values into ciphertexts of ``slots`` values."""
    if length <= 0:
        raise SecureAggregationError(f"cannot encrypt an empty vector (length {length})")
    return [(start, min(start + slots, length)) for start in range(0, length, slots)]


class EncryptedVector:
    """A float vector packed into CKKS ciphertexts, bound to one context fingerprint."""

    def __init__(self, context: CkksContext, chunks: Sequence[ts.CKKSVector], length: int) -> None:
        self.context = context
        self.chunks = list(chunks)
        self.length = length

    def add_(self, other: EncryptedVector) -> EncryptedVector:
        """Add ``other`` in place (TenSEAL cannot copy a ciphertext without the secret key); returns self.

        Every chunk pair is checked (context, length, level, scale, size) before the first one is
        touched, so a refused ``other`` leaves ``self`` unchanged."""
        self.check_compatible(other)
        for acc, chunk in zip(self.chunks, other.chunks):
            acc.add_(chunk)
        return self

    def scaled(self, weight: float) -> EncryptedVector:
        """Multiply by a plaintext scalar (consumes one modulus level)."""
        if not math.isfinite(weight):
            raise SecureAggregationError(f"plaintext weight must be finite, got {weight}")
        try:
            chunks = [chunk * float(weight) for chunk in self.chunks]
        except Exception as exc:  # TenSEAL: ValueError/RuntimeError (e.g. no level left, scale out of bounds)
            raise SecureAggregationError(f"cannot multiply by the plaintext weight {weight}: {exc}") from exc
        return EncryptedVector(self.context, chunks, self.length)

    def check_compatible(self, other: EncryptedVector) -> None:
        """Raise unless ``other`` can be added chunk by chunk without TenSEAL changing or refusing anything
        (same context and length; per chunk the same level, scale and polynomial count)."""
        if other.context.fingerprint != self.context.fingerprint:
            raise SecureAggregationError("cannot add ciphertexts of different CKKS contexts")
        if other.length != self.length or len(other.chunks) != len(self.chunks):
            raise SecureAggregationError(f"cannot add encrypted vectors of lengths {self.length} and {other.length}")
        for index, (mine, theirs) in enumerate(zip(self.chunks, other.chunks)):
            if _shape(mine) != _shape(theirs):
                raise SecureAggregationError(
                    f"chunk {index}: (level, scale, polynomials) {_shape(theirs)} differs from the sum's {_shape(mine)}"
                )

    def serialize(self) -> bytes:
        parts = [VECTOR_MAGIC, pack_u8(FORMAT_VERSION), self.context.fingerprint, pack_u32(self.length)]
        parts.append(pack_u32(len(self.chunks)))
        for chunk in self.chunks:
            raw = chunk.serialize()
            parts += [pack_u32(len(raw)), raw]
        return b"".join(parts)

    @classmethod
    def load(
        cls,
        context: CkksContext,
        data: bytes,
        *,
        length: int | None = None,
        what: str = "ciphertext",
        fresh: bool = False,
    ) -> EncryptedVector:
        """Parse a serialised vector, rejecting other contexts, wrong lengths and corrupt chunks; with
        ``fresh``, also any chunk that is not exactly what :func:`encrypt` makes (see :func:`check_fresh`)."""
        reader = _open(data, VECTOR_MAGIC, what)
        _check_version(reader.u8(), what)
        if reader.take(FINGERPRINT_BYTES) != context.fingerprint:
            raise SecureAggregationError(
                f"{what}: made under different CKKS parameters or another key set (context fingerprint mismatch)"
            )
        declared = reader.u32()
        if length is not None and declared != length:
            raise SecureAggregationError(f"{what}: vector length {declared}, expected {length}")
        bounds = chunk_bounds(declared, context.params.slots)
        if reader.u32() != len(bounds):
            raise SecureAggregationError(f"{what}: chunk count does not match length {declared}")
        top = context.fresh_parms_id if fresh else None
        chunks = []
        for index, (start, stop) in enumerate(bounds):  # each chunk checked before the next is parsed
            chunk = _load_chunk(context, reader.take(reader.u32()), stop - start, f"{what} chunk {index}")
            if top is not None:
                check_fresh(context, chunk, f"{what} chunk {index}", top)
            chunks.append(chunk)
        reader.finish()
        return cls(context, chunks, declared)

    def decrypt(self) -> np.ndarray:
        """The float64 plaintext (requires the secret context)."""
        if not self.context.has_secret_key:
            raise SecureAggregationError("decryption needs the CKKS secret context; this context has no secret key")
        try:
            plain = np.concatenate([np.asarray(chunk.decrypt(), dtype=np.float64) for chunk in self.chunks])
        except (MemoryError, RuntimeError, ValueError) as exc:  # TenSEAL's own failures: fail closed, named
            raise SecureAggregationError(f"decryption failed inside TenSEAL: {exc!r}") from exc
        if plain.shape != (self.length,):
            raise SecureAggregationError(f"decryption gave {plain.size} values for a vector of {self.length}")
        return plain


ChunkShape = tuple[tuple[int, ...], float, int]


def _ciphertext(chunk: ts.CKKSVector):  # -> the SEAL ciphertext (TenSEAL's sealapi type has no stub)
    ciphertexts = chunk.ciphertext()
    if len(ciphertexts) != 1:
        raise SecureAggregationError(f"a CKKS vector chunk must hold one ciphertext, holds {len(ciphertexts)}")
    return ciphertexts[0]


def _shape(chunk: ts.CKKSVector) -> ChunkShape:
    """(modulus level as SEAL's parms_id, scale, number of polynomials) of one chunk."""
    ciphertext = _ciphertext(chunk)
    return tuple(ciphertext.parms_id()), float(ciphertext.scale), int(ciphertext.size())


def check_fresh(context: CkksContext, chunk: ts.CKKSVector, what: str, top: tuple[int, ...] | None = None) -> None:
    """Raise unless ``chunk`` looks exactly like a fresh :func:`encrypt` output under ``context``'s OWN
    parameters: the top modulus level, scale ``2**scale_bits``, two polynomials, NTT form, not
    transparent.  Anything else (another scale, a lower level, an unrelinearised product) cannot be
    added to honest contributions, or could silently change the sum's precision."""
    ciphertext = _ciphertext(chunk)
    top = top or context.fresh_parms_id
    expected_scale = 2.0**context.params.scale_bits
    if tuple(ciphertext.parms_id()) != top:
        level = ciphertext.coeff_modulus_size()
        raise SecureAggregationError(
            f"{what}: at modulus level with {level} primes, not the fresh level of {context.params.to_json()}"
        )
    if float(ciphertext.scale) != expected_scale:
        raise SecureAggregationError(f"{what}: scale {ciphertext.scale:.6g}, expected 2**{context.params.scale_bits}")
    if ciphertext.size() != 2:
        raise SecureAggregationError(f"{what}: {ciphertext.size()} polynomials, a fresh ciphertext has 2")
    if not ciphertext.is_ntt_form() or ciphertext.is_transparent():
        raise SecureAggregationError(f"{what}: not a proper CKKS ciphertext (NTT form, not transparent)")


TENSEAL_VECTOR_FIELDS = {1: 2, 2: 2, 3: 1}
"""The fields of TenSEAL's serialised CKKS vector and their protobuf wire types: 1 the sizes of its
ciphertexts (packed varints), 2 a SEAL ciphertext (bytes), 3 the scale (a double)."""


def check_one_ciphertext(raw: bytes, size: int, what: str) -> None:
    """Raise unless ``raw`` is a TenSEAL CKKS vector of exactly ONE ciphertext holding ``size``
    values and no other field, read from its protobuf framing before TenSEAL parses anything.

    Threat model: a roster artist signs what it likes.  TenSEAL inflates and allocates every
    ciphertext of a vector before any check of ours runs, and a SEAL ciphertext is
    zstd-compressed: a few hundred bytes can declare up to 16 polynomials (2 MiB here); a 72 KB
    signed contribution holding 384 of them made the server allocate 1.6 GB.  And TenSEAL adds the
    ``sizes`` entries up in a C++ ``int``, so ``[X, L - X mod 2**32]`` passed as ``L`` values while
    the decryption copied ``X`` values out of a 4,096-slot buffer: heap bytes in the released
    plaintext, or ``std::bad_alloc`` (red-team reviews, 2026-11-30).  One ciphertext per chunk, one
    size equal to the chunk's, each chunk checked before the next is parsed: what one upload can
    make a party allocate is its honest size plus one ciphertext of at most SEAL's 16 polynomials."""
    seen: dict[int, int] = {}
    sizes: list[int] = []
    at = 0
    while at < len(raw):
        key, at = _varint(raw, at, what)
        field, wire = key >> 3, key & 7
        if TENSEAL_VECTOR_FIELDS.get(field) != wire:
            raise SecureAggregationError(f"{what}: not a TenSEAL CKKS vector (field {field}, wire type {wire})")
        seen[field] = seen.get(field, 0) + 1
        if wire == 2:
            length, at = _varint(raw, at, what)
            if field == 1:
                sizes += _packed_varints(raw[at : at + length], what)
            at += length
        else:
            at += 8
    if at != len(raw) or seen.get(2) != 1:
        raise SecureAggregationError(
            f"{what}: a CKKS vector chunk must hold one ciphertext, holds {seen.get(2, 0)}"
            + ("" if at == len(raw) else " (truncated)")
        )
    if sizes != [size]:
        raise SecureAggregationError(f"{what}: a CKKS vector chunk of {size} values declares sizes {sizes[:4]}")


def _packed_varints(raw: bytes, what: str) -> list[int]:
    values, at = [], 0
    while at < len(raw):
        value, at = _varint(raw, at, what)
        values.append(value)
    return values


def _varint(raw: bytes, at: int, what: str) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        if at >= len(raw):
            break
        byte = raw[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
    raise SecureAggregationError(f"{what}: not a TenSEAL CKKS vector (bad protobuf varint)")


def _load_chunk(context: CkksContext, raw: bytes, size: int, what: str) -> ts.CKKSVector:
    import tenseal as ts

    check_one_ciphertext(raw, size, what)
    try:
        chunk = ts.ckks_vector_from(context.tenseal, raw)
    except Exception as exc:  # TenSEAL: ValueError (parse) / RuntimeError (parameter mismatch)
        raise SecureAggregationError(f"{what}: TenSEAL rejected the ciphertext: {exc}") from exc
    if chunk.size() != size:
        raise SecureAggregationError(f"{what}: holds {chunk.size()} values, expected {size}")
    return chunk


def encrypt(context: CkksContext, vector: np.ndarray) -> EncryptedVector:
    """Encrypt a finite 1-D vector, packed into as few ciphertexts as the slot count allows."""
    import tenseal as ts

    if not context.has_secret_key:
        raise SecureAggregationError("encryption needs the CKKS secret context; this context has no secret key")
    values = np.asarray(vector, dtype=np.float64)
    if values.ndim != 1:
        raise SecureAggregationError(f"CKKS encrypts 1-D vectors, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise SecureAggregationError("CKKS input contains NaN or infinite values")
    chunks = [
        ts.ckks_vector(context.tenseal, values[start:stop])
        for start, stop in chunk_bounds(values.size, context.params.slots)
    ]
    return EncryptedVector(context, chunks, values.size)


#: Std of the flooding noise a decryptor adds, in units of the plaintext polynomial's coefficients
#: (SEAL's fresh encryption error has std 3.2 per coefficient; a sum of n ciphertexts ~3.2 sqrt(n)).
DECRYPTION_FLOOD_COEFFICIENT_STD = 2.0**8


def decryption_flood_std(params: CkksParams) -> float:
    """Std of the Gaussian noise added to every released slot value: iid slot noise of std
    ``sigma`` is coefficient noise of std ``sigma * scale / sqrt(N)``, so this is
    :data:`DECRYPTION_FLOOD_COEFFICIENT_STD` coefficients (2.1e-8 at the default N = 8192, scale 2^40;
    the decrypted sum's own error is ~1e-8)."""
    return DECRYPTION_FLOOD_COEFFICIENT_STD * math.sqrt(params.poly_modulus_degree) / 2.0**params.scale_bits


def released_plaintext(vector: EncryptedVector, noise: NoiseSource) -> np.ndarray:
    """The decryption of ``vector`` as it may leave the decryptor's process: every value plus
    ``N(0, decryption_flood_std^2)`` noise from ``noise`` (a CSPRNG outside tests).

    Threat model: whoever holds the ciphertext (the server, which relays every contribution and
    can add them itself) and its exact decoded slots learns ``c0 + c1 * s`` exactly -- a linear
    equation in the shared secret key per ciphertext (Li & Micciancio 2021, IND-CPA-D); two full
    chunks' slots solve for ``s``.  The flooding noise, unknown to everyone else and far above the
    encryption error, turns each release into an RLWE sample instead (heuristic: far below the
    ``2^(lambda/2)``-times flooding that proofs of IND-CPA-D security ask for, which these
    parameters' precision cannot afford)."""
    plain = vector.decrypt()
    return plain + noise.gaussian(decryption_flood_std(vector.context.params), plain.size)


def require_public(context: CkksContext) -> CkksContext:
    """Refuse a server-side context that holds the secret key (fail closed)."""
    if context.has_secret_key:
        raise SecureAggregationError(
            "the server's CKKS context holds the secret key; give the server only the public context"
        )
    return context


class CkksSum:
    """A homomorphic sum of serialised contributions, built atomically.

    :meth:`add` parses and checks EVERY chunk of a contribution against this object's own context
    (:func:`check_fresh`: parameters, level, scale, size), applies the weight, and checks the
    result against the running sum before the first chunk is added; a refused contribution
    (:class:`SecureAggregationError`, whatever TenSEAL raised) leaves the sum exactly as it was.
    Should TenSEAL still fail half-way through an add, the sum is marked broken and
    :meth:`result` refuses it (fail closed).  Contributions are either all unweighted or all
    weighted by a plaintext scalar (a weight consumes a modulus level).
    """

    def __init__(self, context: CkksContext, length: int) -> None:
        self.context = context
        self.length = length
        self.count = 0
        self._total: EncryptedVector | None = None
        self._weighted: bool | None = None
        self._broken: str | None = None

    def add(self, data: bytes, *, what: str, weight: float | None = None) -> None:
        """Parse and check one contribution, then add it (times ``weight`` if given) to the running sum."""
        if self._broken is not None:
            raise SecureAggregationError(f"{what}: refused, the sum is unusable: {self._broken}")
        vector = EncryptedVector.load(self.context, data, length=self.length, what=what, fresh=True)
        if self._weighted is not None and self._weighted != (weight is not None):
            raise SecureAggregationError(f"{what}: cannot mix weighted and unweighted contributions")
        if weight is not None:
            vector = vector.scaled(weight)
        if self._total is None:
            self._total, self._weighted = vector, weight is not None
        else:
            try:
                self._total.check_compatible(vector)
            except SecureAggregationError as exc:
                raise SecureAggregationError(f"{what}: {exc}") from exc
            try:
                self._total.add_(vector)
            except Exception as exc:  # checked above, so TenSEAL should never get here: fail closed
                self._broken = f"TenSEAL failed while adding {what}: {exc}"
                raise SecureAggregationError(self._broken) from exc
        self.count += 1

    def result(self) -> EncryptedVector:
        if self._broken is not None:
            raise SecureAggregationError(f"the sum is unusable: {self._broken}")
        if self._total is None:
            raise SecureAggregationError("nothing to aggregate")
        return self._total


class CkksAggregator(CkksSum):
    """:class:`CkksSum` on the server's side: refuses a context that holds the secret key."""

    def __init__(self, context: CkksContext, length: int) -> None:
        super().__init__(require_public(context), length)
