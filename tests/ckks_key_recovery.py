"""A server's passive key recovery against CKKS (Li & Micciancio, Eurocrypt 2021), for tests.

What the attacker uses is only what the server holds in ``--secure ckks``: the public context, the
artists' ciphertexts (it can add them itself) and the decrypted real slots of their sum that a
committee member uploads.  For a ciphertext ``(c0, c1)`` with exact decryption ``d = c0 + c1 s``
(mod q), the real parts of the decoded slots, times two, re-encode to ``d + tau(d)`` exactly
(``tau: X -> X^-1``); in SEAL's NTT domain ``tau`` pairs evaluation points, so every pair of NTT
indices gives one linear equation in two unknowns of the secret key per ciphertext.  Two full
ciphertexts (2 x N/2 decrypted values) solve for ``s`` mod the first prime, which then decrypts any
ciphertext of the key set.  Reads SEAL objects through ``tenseal.sealapi``; no secret key used.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import tenseal.sealapi as sa

from fedstyle_secure.secure.ckks.primitives import CkksParams, EncryptedVector

Key = tuple[list[int], int, list[int]]  # s in NTT form mod p, p, the NTT evaluation points


def _seal_context(params: CkksParams) -> sa.SEALContext:
    parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(sa.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_mod_bit_sizes)))
    return sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)


def _ciphertexts(context: sa.SEALContext, vector: EncryptedVector) -> list[sa.Ciphertext]:
    out = []
    for chunk in vector.chunks:
        path = tempfile.mktemp()
        try:
            chunk.ciphertext()[0].save(path)
            ciphertext = sa.Ciphertext()
            ciphertext.load(context, path)
        finally:
            os.unlink(path)
        out.append(ciphertext)
    return out


def _first_prime_polys(ciphertext: sa.Ciphertext, n: int) -> tuple[list[int], list[int]]:
    """(c0, c1) mod the first prime, NTT form."""
    data, k = ciphertext.dyn_array(), ciphertext.coeff_modulus_size()
    return [data.at(i) for i in range(n)], [data.at(k * n + i) for i in range(n)]


def _encoded(context: sa.SEALContext, values: list, parms_id, scale: float, n: int) -> list[int]:
    plain = sa.Plaintext()
    sa.CKKSEncoder(context).encode(values, parms_id, scale, plain)
    data = plain.dyn_array()
    return [data.at(i) for i in range(n)]


def _points(context: sa.SEALContext, parms_id, n: int, p: int) -> list[int]:
    """Evaluation point of each NTT index: the NTT of the monomial X, encoded from its slots (SEAL's
    slot j is the root zeta^(3^j))."""
    scale = 2**30
    slots = [complex(np.exp(1j * np.pi * pow(3, j, 2 * n) / n)) for j in range(n // 2)]
    inverse = pow(scale, -1, p)
    return [v * inverse % p for v in _encoded(context, slots, parms_id, float(scale), n)]


def recover_key(params: CkksParams, total: EncryptedVector, released: np.ndarray) -> Key:
    """The secret key (NTT form, first prime) from the sum ``total`` and its released plaintext
    (at least two full chunks of it)."""
    context, n, slots = _seal_context(params), params.poly_modulus_degree, params.slots
    ciphertexts = _ciphertexts(context, total)[:2]
    parms_id = ciphertexts[0].parms_id()
    p = context.get_context_data(parms_id).parms().coeff_modulus()[0].value()
    points = _points(context, parms_id, n, p)
    index = {v: i for i, v in enumerate(points)}
    pair = [index[pow(v, -1, p)] for v in points]
    equations = []
    for k, ciphertext in enumerate(ciphertexts):
        c0, c1 = _first_prime_polys(ciphertext, n)
        doubled = (2.0 * np.asarray(released[k * slots : (k + 1) * slots], dtype=np.float64)).tolist()
        equations.append((c0, c1, _encoded(context, doubled, parms_id, float(ciphertext.scale), n)))
    (a0, a1, pa), (b0, b1, pb) = equations
    s = [0] * n
    for i in range(n):
        j = pair[i]
        if j < i:
            continue
        ra, rb = (pa[i] - a0[i] - a0[j]) % p, (pb[i] - b0[i] - b0[j]) % p
        if i == j:
            s[i] = ra * pow(2 * a1[i], -1, p) % p
            continue
        inverse = pow((a1[i] * b1[j] - a1[j] * b1[i]) % p, -1, p)
        s[i] = (ra * b1[j] - rb * a1[j]) * inverse % p
        s[j] = (a1[i] * rb - b1[i] * ra) * inverse % p
    return s, p, points


def decrypt_first_chunk(params: CkksParams, key: Key, vector: EncryptedVector) -> np.ndarray:
    """The first chunk's slot values of ``vector``, decrypted with a recovered ``key``."""
    s, p, points = key
    context, n = _seal_context(params), params.poly_modulus_degree
    ciphertext = _ciphertexts(context, vector)[0]
    c0, c1 = _first_prime_polys(ciphertext, n)
    coefficients = _interpolate([(c0[i] + c1[i] * s[i]) % p for i in range(n)], points, p)
    centred = np.array([c - p if c > p // 2 else c for c in coefficients], dtype=np.float64)
    zeta = np.exp(1j * np.pi * np.arange(n) / n)
    at_odd_roots = np.fft.ifft(centred * zeta) * n  # [m] = a(zeta^(2m + 1))
    slots = [(pow(3, j, 2 * n) - 1) // 2 for j in range(n // 2)]
    return at_odd_roots[slots].real / float(ciphertext.scale)


def _interpolate(values: list[int], points: list[int], p: int) -> list[int]:
    """Coefficients of the polynomial taking ``values[i]`` at ``points[i]`` (odd powers of a
    primitive 2N-th root of unity mod ``p``)."""
    n, psi = len(values), points[0]
    omega = psi * psi % p
    where, x = {}, psi
    for m in range(n):  # psi^(2m + 1) -> m
        where[x] = m
        x = x * omega % p
    ordered = [0] * n
    for i, point in enumerate(points):
        ordered[where[point]] = values[i]
    twisted = _ntt(ordered, pow(omega, -1, p), p)  # [k] = n * a_k * psi^k
    scale, unpsi, out, factor = pow(n, -1, p), pow(psi, -1, p), [], 1
    for k in range(n):
        out.append(twisted[k] * scale % p * factor % p)
        factor = factor * unpsi % p
    return out


def _ntt(a: list[int], root: int, p: int) -> list[int]:
    """Iterative radix-2 transform: ``[k] = sum_m a[m] root^(m k)`` mod ``p``."""
    n, a, j = len(a), list(a), 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            a[i], a[j] = a[j], a[i]
    length = 2
    while length <= n:
        step, half = pow(root, n // length, p), length // 2
        powers = [1] * half
        for k in range(1, half):
            powers[k] = powers[k - 1] * step % p
        for start in range(0, n, length):
            for k in range(half):
                u, v = a[start + k], a[start + k + half] * powers[k] % p
                a[start + k], a[start + k + half] = (u + v) % p, (u - v) % p
        length <<= 1
    return a
