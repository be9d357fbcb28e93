"""An enrolled artist repeating work the server did under its one lock (real gRPC server with
mutual TLS, real key files, real TenSEAL).

1. A signed CKKS ciphertext of the wrong length was refused only after TenSEAL had parsed it, 0.15-
   0.23 s under the server's lock, and nothing stopped the artist from resending it with fresh nonces
   as often as its call slots allowed, holding the lock the honest artists' calls need.  The
   ciphertext is now checked before the lock (``checked_payload``), on the gRPC and Flower servers.
2. ``DownloadBroadcast`` builds the round's broadcast under the lock (about 5 ms for a 3 MiB model);
   one artist re-requesting it without end held that lock about 30 % of the time.  An artist now
   gets at most ``MAX_BROADCAST_DOWNLOADS`` downloads per plan step (round, phase, attempt).
"""

from __future__ import annotations

import os

import grpc
import numpy as np
import pytest

from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.secure.ckks import decryption as ckks_decryption
from fedstyle_secure.secure.ckks.decryption import (
    COMMITTEE_SIZE,
    Attempt,
    layout_bytes,
    payload_digest,
    sign_contribution,
)
from fedstyle_secure.secure.ckks.primitives import encrypt
from fedstyle_secure.transport.server.servicer import MAX_BROADCAST_DOWNLOADS
from fedstyle_secure.transport.wire import pb
from tests.fakes import Clock, LockProbingVector
from tests.servers import ARTISTS, connect
from tests.test_transport_ckks import Federation


def test_a_crafted_ckks_contribution_is_checked_outside_the_server_lock(keys, tmp_path, monkeypatch):
    f = Federation(keys, tmp_path)
    try:
        attacker = f.parties[ARTISTS[0]]
        LockProbingVector.lock, LockProbingVector.free = f.running.servicer._cond, []
        monkeypatch.setattr(ckks_decryption, "EncryptedVector", LockProbingVector)
        layout = f.coordinator.layout
        assert layout is not None
        payload = encrypt(attacker.keys.ckks, np.zeros(layout.size - 1)).serialize()  # one value short
        plan = f.coordinator.plan()
        at = Attempt(plan.round_id, plan.attempt, attacker.keys.ckks.fingerprint, COMMITTEE_SIZE)
        signature = sign_contribution(
            attacker.keys.identity_key,
            at,
            attacker.keys.artist_id,
            layout_bytes(layout.fields),
            payload_digest(payload),
            2,
        )
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as refused:
                attacker.session.upload(
                    plan.round_id,
                    pb.PAYLOAD_KIND_CKKS_CIPHERTEXT,
                    payload,
                    layout,
                    nonce=os.urandom(16),
                    signature=signature,
                    min_quorum=2,
                )
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert f"vector length {layout.size - 1}, expected {layout.size}" in (refused.value.details() or "")
        assert LockProbingVector.free == [True] * 3, "TenSEAL checked a crafted ciphertext under the server's lock"

        f.contribute()  # every artist, the attacker now honest, is accepted
        assert len(LockProbingVector.free) == 6 and all(LockProbingVector.free)
    finally:
        f.close()


def test_an_artist_cannot_download_one_round_s_broadcast_without_end(serve, keys):
    running = serve(keys, Schedule(rounds=2, quorum=2, phase_seconds=600, startup_seconds=0), Clock())
    round_id = running.servicer.coordinator.plan().round_id
    channel, attacker = connect(running, keys, ARTISTS[0])
    other_channel, honest = connect(running, keys, ARTISTS[1])
    with channel, other_channel:
        for _ in range(MAX_BROADCAST_DOWNLOADS):
            attacker.broadcast(round_id)
        with pytest.raises(grpc.RpcError) as refused:
            attacker.broadcast(round_id)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "MAX_BROADCAST_DOWNLOADS" in (refused.value.details() or "")
        broadcast, _ = honest.broadcast(round_id)  # the others are still served
        assert broadcast.prototypes is not None
