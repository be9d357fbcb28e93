"""How many bytes a legitimate upload of the current round and phase can have (pure: no gRPC, no I/O).

The server refuses a streamed payload whose declared size exceeds the largest legitimate
upload of the round and phase it is for, plus a small margin, instead of a fixed ceiling of
hundreds of MiB.  The size follows from the round's packed layout (:func:`expected_layout`)
and the secure mode: ``8`` bytes per float64 entry for a plain vector or a decrypted CKKS
aggregate, the CKKS ciphertext size (:func:`ckks_ciphertext_bytes`) for an encrypted one.

Threat model: an artist may declare and send any size; these bounds only have to be *upper*
bounds of what an honest artist sends, so that an oversized upload is refused after its
header, never read in full.
"""

from __future__ import annotations

import functools

import numpy as np

from fedstyle_secure.federation.packing import Layout
from fedstyle_secure.federation.strategy import algorithm_spec
from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM
from fedstyle_secure.models.factory import EncoderConfig, make_model
from fedstyle_secure.models.inputs import InputBank
from fedstyle_secure.models.params import get_flat_params
from fedstyle_secure.secure.ckks.primitives import CkksParams, chunk_bounds
from fedstyle_secure.training.dataset import DEFAULT_PUBLIC_IMAGES

MARGIN_FRACTION = 0.125  # legitimate size + 12.5 % ...
MARGIN_BYTES = 4096  # ... + 4 KiB (serialisation headers)
CKKS_CHUNK_OVERHEAD_BYTES = 1024  # TenSEAL / SEAL headers of one serialised ciphertext, and its length prefix
CKKS_VECTOR_HEADER_BYTES = 64  # EncryptedVector magic, version, fingerprint, length, chunk count


@functools.cache
def parameter_count(algorithm: str, n_artists: int, embedding_dim: int) -> int:
    """Length of the flat parameter vector artists average (:func:`get_flat_params` of the
    model :func:`make_model` builds for the transport's encoder on frozen style statistics)."""
    spec = algorithm_spec(algorithm)
    bank = InputBank(np.zeros((1, 2, STYLE_FEATURE_DIM), dtype=np.float32), "features")  # shapes only
    classes = n_artists if spec.needs_classifier else None
    model = make_model(EncoderConfig(embedding_dim=embedding_dim), bank, bank, classes)
    return int(get_flat_params(model).size)


def expected_layout(algorithm: str, round_id: int, n_artists: int, embedding_dim: int) -> Layout:
    """The packed layout of round ``round_id``'s contribution as the server derives it from its own
    configuration (never from an upload): the set-up round's feature moments, or the fields of
    :func:`~fedstyle_secure.federation.strategy.client_contribution` for ``algorithm``.

    The ONE place the limits take the round's layout from (the plan's layout function can replace it).
    """
    if round_id == 0:
        features = (STYLE_FEATURE_DIM,)
        return Layout((("clients", (1,)), ("feature_mean", features), ("feature_sq_mean", features)))
    spec = algorithm_spec(algorithm)
    fields: list[tuple[str, tuple[int, ...]]] = []
    if spec.aligns_public:
        fields += [("clients", (1,)), ("public_embeddings", (DEFAULT_PUBLIC_IMAGES, embedding_dim))]
    if spec.averages_parameters:
        fields += [("weight", (1,)), ("weighted_params", (parameter_count(algorithm, n_artists, embedding_dim),))]
    return Layout(tuple(sorted(fields)))


def ckks_ciphertext_bytes(length: int, params: CkksParams) -> int:
    """Upper bound of a serialised fresh CKKS encryption of ``length`` values (bytes): per
    ciphertext of ``slots`` values two polynomials of ``N`` 64-bit coefficients per data prime
    (every prime of the chain but the special one), uncompressed, plus headers."""
    per_chunk = 2 * params.poly_modulus_degree * (len(params.coeff_mod_bit_sizes) - 1) * 8 + CKKS_CHUNK_OVERHEAD_BYTES
    return CKKS_VECTOR_HEADER_BYTES + len(chunk_bounds(max(length, 1), params.slots)) * per_chunk


def payload_limit(layout: Layout, phase: str, secure_mode: str, ckks: CkksParams | None) -> int:
    """Most bytes a streamed upload of ``phase`` may declare: the legitimate size + margin.

    ``contribute`` with ``ckks``: a ciphertext of the layout; otherwise (``none``, or the
    ``decrypt`` phase's plaintext aggregate) ``8`` bytes per float64 entry.
    """
    if phase == "contribute" and secure_mode == "ckks":
        if ckks is None:
            raise ValueError("secure mode 'ckks' needs the CKKS parameters to bound a ciphertext")
        legitimate = ckks_ciphertext_bytes(layout.size, ckks)
    else:
        legitimate = 8 * layout.size
    return legitimate + int(legitimate * MARGIN_FRACTION) + MARGIN_BYTES
