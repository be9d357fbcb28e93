"""CKKS aggregation path (real TenSEAL) and the summation factory."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.randomness import CsprngNoise
from fedstyle_secure.secure.api import DropoutSchedule, PlainSummation
from fedstyle_secure.secure.ckks.primitives import (
    CkksAggregator,
    CkksContext,
    CkksParams,
    CkksSum,
    EncryptedVector,
    chunk_bounds,
    decryption_flood_std,
    encrypt,
    released_plaintext,
)
from fedstyle_secure.secure.ckks.summation import CkksSummation
from fedstyle_secure.secure.factory import make_summation
from tests.ckks_key_recovery import decrypt_first_chunk, recover_key


@pytest.fixture(scope="module")
def context() -> CkksContext:
    return CkksContext.generate()


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    rows = rng.standard_normal((n, d))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_mean_of_100_unit_embeddings_within_1e_minus_5(context: CkksContext) -> None:
    rng = np.random.default_rng(0)
    rows = _unit_rows(rng, 100, 128)
    inputs = {f"artist_{i:02d}": row for i, row in enumerate(rows)}
    summation = CkksSummation(list(inputs), secret_context=context)

    result = summation.sum(inputs, round_id=1)
    server_weighted = summation.sum(inputs, round_id=2, weights=dict.fromkeys(inputs, 1 / 100))

    assert np.abs(result.total / 100 - rows.mean(axis=0)).max() <= 1e-5
    assert np.abs(server_weighted.total - rows.mean(axis=0)).max() <= 1e-5
    assert result.contributors == tuple(sorted(inputs))


@pytest.mark.parametrize("length", [1, 4095, 4096, 4097, 2 * 4096 + 5])
def test_packing_round_trip_across_chunk_boundaries(context: CkksContext, length: int) -> None:
    values = np.random.default_rng(length).uniform(-3, 3, size=length)
    encrypted = encrypt(context, values)
    restored = EncryptedVector.load(context, encrypted.serialize(), length=length)

    assert len(encrypted.chunks) == -(-length // context.params.slots)
    assert restored.decrypt().shape == (length,)
    assert np.abs(restored.decrypt() - values).max() < 1e-6


def test_chunk_bounds_cover_the_vector_without_overlap() -> None:
    bounds = chunk_bounds(10, 4)
    assert bounds == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(SecureAggregationError, match="empty"):
        chunk_bounds(0, 4)


def test_weighted_mean_via_encrypted_sums_and_counts(context: CkksContext) -> None:
    rng = np.random.default_rng(1)
    means = rng.normal(size=(5, 16))
    counts = np.array([3.0, 10.0, 1.0, 7.0, 4.0])
    expected = np.average(means, axis=0, weights=counts)
    ids = [f"a{i}" for i in range(5)]
    summation = CkksSummation(ids, secret_context=context)

    # artists send count-weighted sums plus their count as the last entry
    sums = summation.sum({a: np.append(c * m, c) for a, c, m in zip(ids, counts, means)}, round_id=1).total
    # or the server multiplies [mean, 1] by public plaintext weights
    weighted = summation.sum(
        {a: np.append(m, 1.0) for a, m in zip(ids, means)}, round_id=2, weights=dict(zip(ids, counts))
    ).total

    assert np.abs(sums[:-1] / sums[-1] - expected).max() < 1e-7
    assert np.abs(weighted[:-1] / weighted[-1] - expected).max() < 1e-5
    assert weighted[-1] == pytest.approx(counts.sum(), abs=1e-4)


def test_server_context_holds_no_secret_key(context: CkksContext) -> None:
    public = CkksContext.load(context.public().serialize())
    ciphertext = encrypt(context, np.ones(8)).serialize()

    assert context.has_secret_key and not public.has_secret_key
    assert public.fingerprint == context.fingerprint
    assert len(public.serialize()) < 1024  # parameters only: no public, Galois or relinearisation keys
    with pytest.raises(SecureAggregationError, match="secret key"):
        CkksAggregator(context, 8)
    with pytest.raises(SecureAggregationError, match="secret"):
        EncryptedVector.load(public, ciphertext).decrypt()
    with pytest.raises(SecureAggregationError, match="secret"):
        encrypt(public, np.ones(8))
    server = CkksAggregator(public, 8)
    for artist in "abc":
        server.add(ciphertext, what=artist)
    assert server.count == 3
    assert np.allclose(EncryptedVector.load(context, server.result().serialize()).decrypt(), 3.0, atol=1e-6)
    with pytest.raises(SecureAggregationError, match="mix weighted"):
        server.add(ciphertext, what="d", weight=2.0)


def test_ciphertext_of_other_parameters_or_keys_is_rejected(context: CkksContext) -> None:
    foreign = CkksContext.generate(CkksParams(8192, (50, 30, 50), 30))
    other_keys = CkksContext.generate()
    server = CkksAggregator(context.public(), 8)
    foreign_bytes = encrypt(foreign, np.ones(8)).serialize()

    with pytest.raises(SecureAggregationError, match="fingerprint"):
        server.add(foreign_bytes, what="upload")
    with pytest.raises(SecureAggregationError, match="fingerprint"):
        server.add(encrypt(other_keys, np.ones(8)).serialize(), what="upload")
    # a forged fingerprint does not help: TenSEAL refuses the foreign ciphertext itself
    forged = foreign_bytes[:5] + context.fingerprint + foreign_bytes[5 + 32 :]
    with pytest.raises(SecureAggregationError, match="TenSEAL rejected"):
        server.add(forged, what="upload")


def test_malformed_ciphertexts_are_rejected(context: CkksContext) -> None:
    server = CkksAggregator(context.public(), 8)
    data = encrypt(context, np.ones(8)).serialize()

    with pytest.raises(SecureAggregationError, match="length 8, expected 9"):
        CkksAggregator(context.public(), 9).add(data, what="upload")
    with pytest.raises(SecureAggregationError, match="truncated"):
        server.add(data[:-10], what="upload")
    with pytest.raises(SecureAggregationError, match="trailing"):
        server.add(data + b"\0", what="upload")
    with pytest.raises(SecureAggregationError, match="magic"):
        server.add(b"XXXX" + data[4:], what="upload")
    assert server.count == 0


def test_context_serialisation_round_trip_and_tampered_header(context: CkksContext) -> None:
    data = context.serialize()
    restored = CkksContext.load(data)
    lying = data.replace(b'"secret": true', b'"secret":false')  # same length

    assert restored.has_secret_key and restored.fingerprint == context.fingerprint
    with pytest.raises(SecureAggregationError, match="secret"):
        CkksContext.load(lying)


def test_a_deferred_context_checks_its_key_material_on_first_use_and_fails_closed(context: CkksContext) -> None:
    """A machine loads its CKKS context deferred (the key store): the header is checked at once; the
    TenSEAL part, parsed on first use, is checked as :meth:`CkksContext.load` checks it, and a bad one
    is refused on every use, never used."""
    data = context.serialize()
    lying = CkksContext.load_deferred(data.replace(b'"secret": true', b'"secret":false'))
    corrupt = CkksContext.load_deferred(data[:-64] + bytes(64))

    assert not lying.has_secret_key  # the header's claim, until parsed
    with pytest.raises(SecureAggregationError, match="key material disagrees"):
        lying.check_key_material()
    for _ in range(2):
        with pytest.raises(SecureAggregationError, match="TenSEAL cannot parse"):
            encrypt(corrupt, np.ones(4))
    with pytest.raises(SecureAggregationError, match="magic"):
        CkksContext.load_deferred(b"XXXX" + data[4:])
    deferred = CkksContext.load_deferred(data)
    assert deferred.fingerprint == context.fingerprint
    assert np.allclose(encrypt(deferred, np.arange(4.0)).decrypt(), np.arange(4.0), atol=1e-3)


def test_a_context_whose_primes_are_reordered_is_refused(context: CkksContext) -> None:
    """Attack: a crafted key file declares the default chain (60, 40, 60) but holds a TenSEAL context
    of (40, 60, 60): same ring, prime count and total bits, yet the first prime no longer exceeds the
    scale, so sums would wrap around silently.  Only the order of the primes tells them apart."""
    import tenseal as ts

    declared = CkksParams()
    crafted = ts.context(
        ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[40, 60, 60], encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC
    )
    crafted.global_scale = 2.0**declared.scale_bits
    forged = CkksContext(declared, context.key_id, crafted).serialize()

    with pytest.raises(SecureAggregationError, match=r"primes of \[40, 60, 60\] bits"):
        CkksContext.load(forged)
    assert CkksContext.load(context.serialize()).params == declared


@pytest.mark.parametrize(
    "params, message",
    [
        (CkksParams(2048, (30, 20, 30), 20), "poly_modulus_degree"),
        (CkksParams(4096, (60, 40, 60), 40), "128-bit security"),
        (CkksParams(8192, (60, 60), 40), ">= 3 primes"),
        (CkksParams(8192, (60, 30, 60), 40), "middle primes"),
    ],
)
def test_invalid_parameters_are_refused(params: CkksParams, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params.validate()


def test_dropouts_clip_range_and_byte_counts(context: CkksContext) -> None:
    inputs = {a: np.full(10, float(i)) for i, a in enumerate("abcd")}
    summation = CkksSummation("abcd", secret_context=context, clip_range=(-5.0, 5.0))
    result = summation.sum(inputs, round_id=3, dropouts=DropoutSchedule({"a": "upload", "b": "download"}))

    assert result.contributors == ("b", "c", "d") and result.dropped == ("a", "b")
    assert np.allclose(result.total, 1 + 2 + 3, atol=1e-6)
    assert set(result.bytes_down) == {"c", "d"} and min(result.bytes_up.values()) > 10 * 4
    # the committee (2 members, chosen among c and d) downloads every other contributor's ciphertext
    everyone = sum(result.bytes_up.values())
    assert {a: result.bytes_down[a] for a in "cd"} == {a: everyone - result.bytes_up[a] for a in "cd"}
    with pytest.raises(SecureAggregationError, match="clip range"):
        summation.sum({"a": np.full(10, 6.0), "b": np.zeros(10)}, round_id=4)
    with pytest.raises(ConfigError, match="dropout phases"):
        summation.sum(inputs, round_id=5, dropouts=DropoutSchedule({"a": "unmask"}))
    with pytest.raises(ConfigError, match="headroom"):
        CkksSummation("ab", secret_context=context, clip_range=(-1e6, 1e6))


def test_factory_builds_each_mode_and_rejects_bad_options(context: CkksContext) -> None:
    ids = ["a", "b", "c"]
    inputs = {a: np.linspace(-1, 1, 6) * (i + 1) for i, a in enumerate(ids)}
    plain = make_summation("none", ids).sum(inputs, round_id=0).total

    assert isinstance(make_summation("none", ids), PlainSummation)
    ckks = make_summation("ckks", ids, secret_context=context)
    assert ckks.mode == "ckks" and np.allclose(ckks.sum(inputs, round_id=0).total, plain, atol=1e-6)
    for mode in ("secagg", "secagg+"):
        masked = make_summation(mode, ids, clip_range=(-4.0, 4.0))
        assert masked.mode == mode and np.allclose(masked.sum(inputs, round_id=0).total, plain, atol=1e-4)
    with pytest.raises(ConfigError, match="clip_range"):
        make_summation("secagg", ids)
    with pytest.raises(ConfigError, match="does not take"):
        make_summation("ckks", ids, threshold=2)
    with pytest.raises(ConfigError, match="unknown secure mode"):
        make_summation("rot13", ids)


def _with_crafted_chunk(context: CkksContext, values: np.ndarray, index: int, how: str) -> bytes:
    """An honest encryption of ``values`` whose chunk ``index`` a malicious artist replaced."""
    honest = encrypt(context, values)
    start, stop = chunk_bounds(values.size, context.params.slots)[index]
    part = values[start:stop].tolist()
    crafted = {
        "scale": lambda: ts.ckks_vector(context.tenseal, part, scale=2.0**30),
        "level": lambda: ts.ckks_vector(context.tenseal, part) * 1.0,
    }[how]()
    honest.chunks[index] = crafted
    return honest.serialize()


@pytest.mark.parametrize(
    "how, words",
    [("scale", "chunk 1: scale 1.07374e\\+09, expected 2\\*\\*40"), ("level", "chunk 1: at modulus level")],
)
def test_a_crafted_chunk_is_refused_whole_and_leaves_the_sum_unchanged(
    context: CkksContext, how: str, words: str
) -> None:
    """Chunk 0 of the crafted upload is honest: it must not reach the sum either (atomic add)."""
    length = context.params.slots + 5
    rng = np.random.default_rng(7)
    a, b, c = (rng.uniform(-1, 1, length) for _ in range(3))
    for crafted_first in (False, True):
        server = CkksAggregator(context.public(), length)
        if not crafted_first:
            server.add(encrypt(context, a).serialize(), what="a")
        with pytest.raises(SecureAggregationError, match=f"ciphertext of mallory {words}"):
            server.add(_with_crafted_chunk(context, b, 1, how), what="ciphertext of mallory")
        if crafted_first:
            server.add(encrypt(context, a).serialize(), what="a")
        server.add(encrypt(context, c).serialize(), what="c")
        assert server.count == 2
        total = EncryptedVector.load(context, server.result().serialize()).decrypt()
        np.testing.assert_allclose(total, a + c, atol=1e-6)


def test_adding_ciphertexts_of_different_levels_is_refused_before_anything_changes(context: CkksContext) -> None:
    total = encrypt(context, np.ones(8))
    lower = EncryptedVector(context, [chunk * 1.0 for chunk in encrypt(context, np.ones(8)).chunks], 8)
    with pytest.raises(SecureAggregationError, match="chunk 0: \\(level, scale, polynomials\\)"):
        total.add_(lower)
    assert np.allclose(total.decrypt(), 1.0, atol=1e-6)  # TenSEAL would otherwise have switched it down and added


# --------------------------------------------------------------------------- key recovery from a decryption


def test_exact_decryption_gives_the_server_the_key_and_the_released_one_does_not(context: CkksContext) -> None:
    """Li & Micciancio's passive attack: the server adds the two contributions itself (public context)
    and solves for the shared secret key from the decrypted slots of that sum.  From the exact
    decryption it then reads the target's own vector; from what a decryptor releases it gets noise."""
    length = 2 * context.params.slots  # two full ciphertexts of decrypted slots
    rng = np.random.default_rng(3)
    target, other = rng.uniform(-8, 8, length), rng.uniform(-8, 8, length)
    payloads = [encrypt(context, x).serialize() for x in (target, other)]
    server = CkksAggregator(context.public(), length)
    for payload in payloads:
        server.add(payload, what="contribution")
    total, params = server.result(), context.params
    target_ciphertext = EncryptedVector.load(context.public(), payloads[0])

    committee = CkksSum(context, length)
    for payload in payloads:
        committee.add(payload, what="contribution")
    exact = committee.result().decrypt()
    read = decrypt_first_chunk(params, recover_key(params, total, exact), target_ciphertext)
    np.testing.assert_allclose(read, target[: params.slots], atol=1e-6)  # the attack works on exact slots

    released = released_plaintext(committee.result(), CsprngNoise())
    np.testing.assert_allclose(released, target + other, atol=1e-6)  # still the sum, to the sum checks' 1e-6
    assert 1e-9 < decryption_flood_std(params) < 1e-7
    read = decrypt_first_chunk(params, recover_key(params, total, released), target_ciphertext)
    assert np.median(np.abs(read - target[: params.slots])) > 1e3  # the recovered "key" decrypts nothing
