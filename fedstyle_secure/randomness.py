"""Where every random draw that differential privacy rests on comes from (pure: no I/O, no global state).

**Privacy-relevant draws** -- they must come from a :class:`NoiseSource` known only to the artist:

* the Gaussian noise of every DP-SGD step (the Opacus optimiser, :mod:`fedstyle_secure.training.dp_sgd`);
* the Poisson sampling of DP-SGD batches (each artwork joins each step's batch with probability ``q``);
* the Gaussian noise of every prototype release (:func:`fedstyle_secure.privacy.plan.release_prototype_sums`).

Threat model: the epsilon of a report holds only if nobody but the artist can predict this randomness.
A server that knows the generator's seed (it chose the plan seed; roster rows are public) recomputes the
noise, subtracts it and reads the exact statistic (issue 10, item 1).  So the secure source is keyed by
``os.urandom(32)`` inside the artist's process, kept in memory only, never persisted, logged, copied or
derived from anything another party knows.

**Not privacy-relevant, seeded on purpose**: model initialisation and the public warm start (every party
must start from the same model), the data split and synthetic artists of simulations, which augmented
view of an artwork or which public images a step uses, and dropout in the head.  The DP analysis holds
for every fixed value of these: they do not depend on the private artworks and are not what hides them.

Sources:

* :class:`CsprngNoise` (``"os-csprng/chacha20"``): the ChaCha20 keystream of ``cryptography`` (OpenSSL)
  under a fresh 256-bit OS key per source; every request uses its own 96-bit nonce (a counter), so no
  keystream is reused, and a request is capped below ChaCha20's 2^32-block counter.
* :class:`SeededNoise` (``"seeded-prng (INSECURE, research only)"``): NumPy's PCG64 from a seed, for
  reproducible in-process research runs only; anyone who knows the seed knows the noise.

Conversion, shared by both (so the secure source is exactly what the tests check): a 53-bit uniform
``k * 2^-53`` from the top bits of each 64-bit word; standard normals by Box-Muller in float64 (NumPy:
single-threaded, so its cost does not depend on torch's thread pool); and for a Gaussian of std
``sigma`` the floating-point precaution of Opacus's ``secure_mode`` (Holohan & Braghin 2021, sec. 5.1,
``n = 2``): the sum of four independent ``N(0, sigma^2)`` samples (from four different Box-Muller pairs)
divided by 2.  One Box-Muller output
takes only some floating-point values, and which ones reveals ``x`` from ``x + noise`` (Jin et al. 2021);
a sum of ``2n`` samples raises the attacker's search from ``2^53`` to ``2^(53 (2n - 1))``.  It costs four
normals per noise value (measured by ``scripts/bench_dp.py``).
"""

from __future__ import annotations

import math
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedstyle_secure.errors import PrivacyError

MAX_SEED = 2**63 - 1
"""Largest seed of a seeded (research, never privacy) generator: torch takes a signed 64-bit one."""

SECURE_NOISE_SOURCE = "os-csprng/chacha20"
SEEDED_NOISE_SOURCE = "seeded-prng (INSECURE, research only)"
SECURE_NOISE_SOURCES: frozenset[str] = frozenset({SECURE_NOISE_SOURCE})
"""Noise sources whose draws nobody but the artist can predict; the audit flags every other one."""

KEY_BYTES = 32
WORD_BYTES = 8
UNIFORM_BITS = 53
PRECAUTION_SAMPLES = 4  # Opacus secure_mode: 2n Gaussian samples with n = 2, their sum divided by sqrt(2n) = 2
_MAX_REQUEST_WORDS = (2**32 - 1) * 64 // WORD_BYTES  # one ChaCha20 nonce: 2^32 blocks of 64 bytes
_ZEROS = memoryview(bytes(1 << 18))  # reused plaintext (fresh zero buffers cost more than the cipher)
_CHUNK = 1 << 13  # noise values per chunk of :meth:`NoiseSource.gaussian` (its temporaries stay in cache)


class NoiseSource(ABC):
    """Uniform 64-bit words from some generator, and the conversions every DP draw uses.

    ``name`` is what reports record (``noise_source``); ``secure`` says whether nobody but the holder
    of this object can predict its draws.  Sources are never copied: a copy would repeat the noise.
    """

    name: str
    secure: bool

    @abstractmethod
    def words(self, count: int) -> np.ndarray:
        """``count`` independent, uniformly distributed ``uint64`` words."""

    def uniform(self, count: int) -> np.ndarray:
        """``count`` uniforms on ``[0, 1)`` with 53 random bits each (float64, ``k * 2^-53``)."""
        _check_count(count)
        top = (self.words(count) >> np.uint64(64 - UNIFORM_BITS)).view(np.int64)
        return top.astype(np.float64) * 2.0**-UNIFORM_BITS

    def standard_normal(self, count: int) -> np.ndarray:
        """``count`` independent N(0, 1) samples (float64): Box-Muller on 53-bit uniforms."""
        _check_count(count)
        pairs = (count + 1) // 2
        u = self.uniform(2 * pairs)
        radius, angle = u[:pairs], u[pairs:]
        np.subtract(1.0, radius, out=radius)  # in (0, 1] and exact: the log is finite
        np.log(radius, out=radius)
        radius *= -2.0
        np.sqrt(radius, out=radius)
        angle *= 2.0 * math.pi
        out = np.empty(2 * pairs)
        np.multiply(np.cos(angle), radius, out=out[:pairs])
        np.multiply(np.sin(angle, out=angle), radius, out=out[pairs:])
        return out[:count]

    def gaussian(self, sigma: float, count: int) -> np.ndarray:
        """``count`` independent N(0, sigma^2) samples (float64) with the floating-point precaution
        of the module docstring (the sum of four N(0, sigma^2) samples, divided by 2)."""
        if not (math.isfinite(sigma) and sigma >= 0):
            raise PrivacyError(f"noise std must be a finite number >= 0, got {sigma!r}")
        _check_count(count)
        out = np.zeros(max(count, 2))
        if sigma == 0:
            return out[:count]
        for start in range(0, len(out), _CHUNK):  # chunks keep the working set in cache
            part = out[start : start + _CHUNK]
            if len(part) == 1:
                part = out[start - 1 :]  # redraw the last two: a chunk needs >= 2 values (see below)
            self._sum_of_four(len(part), out=part)
        out *= sigma / math.sqrt(PRECAUTION_SAMPLES)
        return out[:count]

    def _sum_of_four(self, n: int, out: np.ndarray) -> None:
        """``out[j]`` = the sum of four N(0, 1) samples from four DIFFERENT Box-Muller pairs (``n >= 2``).

        :meth:`standard_normal` lays out ``r cos`` of pairs ``0..2n-1``, then ``r sin`` of the same pairs.
        The two outputs of one pair must never meet in one value: ``r cos t + r sin t`` is a single
        function of two uniforms, which would halve the precaution.  So value ``j`` takes the cosines of
        pairs ``j`` and ``n + j`` and the sines of pairs ``j - 1`` and ``n + j - 1`` (mod ``n``), as Opacus's
        four separate ``torch.normal`` calls also draw from four pairs."""
        rows = self.standard_normal(PRECAUTION_SAMPLES * n).reshape(PRECAUTION_SAMPLES, n)
        np.add(rows[0], rows[1], out=out)
        out += np.roll(rows[2], 1)
        out += np.roll(rows[3], 1)

    def gaussian_array(self, sigma: float, shape: Sequence[int]) -> np.ndarray:
        """:meth:`gaussian` as a float64 array of ``shape``."""
        shape = tuple(int(d) for d in shape)
        return self.gaussian(sigma, math.prod(shape)).reshape(shape)

    def poisson_sample(self, n: int, rate: float) -> np.ndarray:
        """Indices of ``range(n)`` each kept independently with probability ``rate`` (Poisson
        sampling, as every accountant here assumes)."""
        if not 0.0 < rate <= 1.0:
            raise PrivacyError(f"Poisson sample rate must be in (0, 1], got {rate!r}")
        return np.flatnonzero(self.uniform(n) < rate)

    def __copy__(self) -> Any:
        raise TypeError(f"{type(self).__name__} must not be copied: the copy would repeat the same noise")

    def __deepcopy__(self, memo: dict) -> Any:
        return self.__copy__()

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} must not be pickled or persisted")


class CsprngNoise(NoiseSource):
    """ChaCha20 keystream under a key from ``os.urandom``: unpredictable to everyone else (thread-safe).

    ``key``: a secret 256-bit key instead of a fresh one; a source made again from the same key
    repeats the same draws.  Only for a release that must come out bit for bit the same whenever it
    is asked for (a CKKS decryption, keyed by a PRF of the key set's secret key, see
    :func:`~fedstyle_secure.secure.ckks.decryption.release_noise`): fresh noise per request would
    let whoever asks average it away.  DP noise is always keyed fresh from the OS."""

    name = SECURE_NOISE_SOURCE
    secure = True

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != KEY_BYTES:
            raise PrivacyError(f"a noise key must be {KEY_BYTES} bytes, got {len(key)}")
        self._key = os.urandom(KEY_BYTES) if key is None else bytes(key)
        self._requests = 0
        self._lock = threading.Lock()

    def words(self, count: int) -> np.ndarray:
        _check_count(count)
        if count > _MAX_REQUEST_WORDS:
            raise PrivacyError(f"{count} noise words in one request exceed one ChaCha20 nonce's keystream")
        with self._lock:
            request, self._requests = self._requests, self._requests + 1
        nonce = bytes(4) + request.to_bytes(12, "little")  # block counter 0, then a never-repeated 96-bit nonce
        encryptor = Cipher(algorithms.ChaCha20(self._key, nonce), mode=None).encryptor()
        out = np.empty(count, dtype="<u8")
        keystream = out.data.cast("B")
        for start in range(0, len(keystream), len(_ZEROS)):  # the keystream is the encryption of zeros
            piece = keystream[start : start + len(_ZEROS)]
            encryptor.update_into(_ZEROS[: len(piece)], piece)
        return out

    def __repr__(self) -> str:
        return f"CsprngNoise({self.name!r})"  # never the key


class SeededNoise(NoiseSource):
    """PCG64 from ``seed``: reproducible, for in-process research runs only.  INSECURE: whoever knows
    the seed knows every draw, so the DP guarantee does not hold against them."""

    name = SEEDED_NOISE_SOURCE
    secure = False

    def __init__(self, seed: int | Sequence[int]) -> None:
        self._bits = np.random.PCG64(seed)

    def words(self, count: int) -> np.ndarray:
        _check_count(count)
        return np.asarray(self._bits.random_raw(count), dtype=np.uint64)

    def __repr__(self) -> str:
        return f"SeededNoise({self.name!r})"


def _check_count(count: int) -> None:
    if count < 0:
        raise PrivacyError(f"cannot draw a negative number ({count}) of samples")
