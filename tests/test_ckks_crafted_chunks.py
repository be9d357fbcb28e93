"""Crafted CKKS chunks and deadlines against the parties that parse and decrypt them (red-team
review of 2026-11-30, second night; each test fails on the code before its defence).

* A roster artist signing a chunk whose TenSEAL ``sizes`` field is ``[X, L - X mod 2**32]``: TenSEAL
  sums it in a C++ ``int``, which wraps to the honest length ``L``, so every check passed, and the
  committee member's decryption copied ``X`` values out of a 4,096-slot buffer (heap bytes in the
  released plaintext) or died of ``std::bad_alloc``.  The chunk's framing must now declare exactly
  its own size (:func:`~fedstyle_secure.secure.ckks.primitives.check_one_ciphertext`), and a
  decryption of another length, or a failure inside TenSEAL, is a refusal.
* A plan whose phase deadline is NaN lifted a committee member's own wait cap (``min(nan, x)`` is
  NaN): the member now waits at most its own cap whatever the plan says.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest

from fedstyle_secure.errors import SecureAggregationError
from fedstyle_secure.federation.packing import pack
from fedstyle_secure.secure.binary import pack_u8, pack_u32
from fedstyle_secure.secure.ckks.primitives import FORMAT_VERSION, VECTOR_MAGIC, CkksContext, EncryptedVector, encrypt
from fedstyle_secure.secure.keys.keystore import load_artist_keys
from tests.fakes import Clock
from tests.test_server_resource_bounds import _proto_fields, _varint
from tests.test_transport_ckks import VALUES, Federation, _moments


def crafted_sizes_contribution(context: CkksContext, vector: np.ndarray, claimed_first: int) -> bytes:
    """An honest encryption of ``vector`` (one chunk) whose TenSEAL vector proto says the chunk
    holds ``[claimed_first, (L - claimed_first) mod 2**32]`` values: TenSEAL's ``size()`` sums them in
    a C++ ``int`` (std::accumulate(..., 0)), which wraps to ``L``; ``decrypt`` uses the first alone."""
    honest = encrypt(context, vector)
    assert len(honest.chunks) == 1
    length = vector.size
    fields = _proto_fields(honest.chunks[0].serialize())
    sizes = _varint(claimed_first) + _varint((length - claimed_first) % 2**32)
    chunk = b"".join(
        _varint((1 << 3) | 2) + _varint(len(sizes)) + sizes if number == 1 else encoded for number, encoded, _ in fields
    )
    return (
        VECTOR_MAGIC
        + pack_u8(FORMAT_VERSION)
        + context.fingerprint
        + pack_u32(length)
        + pack_u32(1)
        + pack_u32(len(chunk))
        + chunk
    )


@pytest.mark.parametrize("claimed_first", [4 * 4096, 2**32 - 1])
def test_a_chunk_declaring_other_sizes_is_refused_before_tenseal_parses_it(keys, claimed_first: int) -> None:
    """What the server's collector and every committee member's sum load (``EncryptedVector.load``
    with ``fresh``): the crafted ``sizes`` are refused, naming them; the honest bytes load."""
    context = load_artist_keys(keys, "artist_a").ckks
    vector, _ = pack(_moments(VALUES["artist_a"]))
    crafted = crafted_sizes_contribution(context, vector, claimed_first)
    with pytest.raises(SecureAggregationError, match=r"chunk 0: a CKKS vector chunk of \d+ values declares sizes"):
        EncryptedVector.load(context, crafted, length=int(vector.size), fresh=True)
    honest = encrypt(context, vector).serialize()
    loaded = EncryptedVector.load(context, honest, length=int(vector.size), fresh=True)
    np.testing.assert_allclose(loaded.decrypt(), vector, atol=1e-3)


def test_a_nan_phase_deadline_does_not_lift_a_committee_members_wait_cap(keys, tmp_path, monkeypatch):
    """Guarantee (transport/artist/ckks.py, MAX_COMMIT_WAIT_SECONDS): whatever deadline the server
    announces, a committee member waits for the committee's commitments at most 600 s and then
    REFUSES (a logged SecureAggregationError; the runner acts once per round, phase and attempt).
    Before the fix, a plan whose ``phase_deadline_unix`` (a proto double) is NaN makes ``give_up =
    min(nan, now + 600)`` NaN; ``remaining <= 0`` is never true and the next long poll goes out with
    ``timeout = nan + 10``, which gRPC fails at once with DEADLINE_EXCEEDED.  That RpcError escapes
    ``decrypt_step``; the runner counts it as a connection problem (RETRYABLE), re-registers (which
    resets its back-off and give-up clock, Reachability.reached) and acts on the same plan again:
    re-downloads and re-sums every contribution of the set, without end, at the initial back-off.
    Now it waits at most its own cap and refuses."""
    from fedstyle_secure.federation.coordinator import Coordinator
    from fedstyle_secure.transport.artist.ckks import MAX_COMMIT_WAIT_SECONDS
    from fedstyle_secure.transport.server.servicer import FederationServicer

    f = Federation(keys, tmp_path)
    try:
        x, y = f.contribute()
        f.turn_malicious()
        monkeypatch.setattr(Coordinator, "decryption_committed", property(lambda c: True))  # polls return at once
        real_plan = FederationServicer._plan_message

        def nan_deadline(self):
            message = real_plan(self)
            message.phase_deadline_unix = float("nan")
            return message

        monkeypatch.setattr(FederationServicer, "_plan_message", nan_deadline)
        started = f.clock.now
        # each member keeps its own FAKE clock, advanced by its own sleeps only: on one shared clock the
        # other member's sleeps during a slow poll (a loaded machine) counted as this member's wait
        own = {member: Clock(started) for member in (x, y)}
        longest = {x: 0.0, y: 0.0}
        first_poll: dict[str, float] = {}  # each member's wait starts at its own first poll

        def only_own(artist: str, round_id: int):  # the other member's commitment is withheld ...
            now = own[artist].now
            longest[artist] = now - first_poll.setdefault(artist, now)
            if now - started > 5 * MAX_COMMIT_WAIT_SECONDS:  # ... until the test lets them go
                return f.coordinator.attempt, dict(f.commitments)
            return f.coordinator.attempt, ({artist: f.commitments[artist]} if artist in f.commitments else {})

        monkeypatch.setattr(f.coordinator, "decryption_commits", only_own)

        def sleeper(clock: Clock) -> Callable[[float], None]:
            def fake_sleep(seconds: float) -> None:
                clock.now += seconds

            return fake_sleep

        for member in (x, y):
            f.ckks(member).clock, f.ckks(member).sleep = own[member], sleeper(own[member])
        try:
            f.act((x, y))
            escaped = None
        except grpc.RpcError as exc:
            escaped = exc
        assert escaped is None, (
            f"the decrypt step let a gRPC error out (the runner retries it as a lost connection): "
            f"{escaped.code().name}: {escaped.details()}"
        )
        assert all("by the deadline" in f.refusal(a) for a in (x, y)), [f.refusal(a) for a in (x, y)]
        assert max(longest.values()) <= MAX_COMMIT_WAIT_SECONDS + 2, longest
    finally:
        f.close()
