"""A malicious artist and an auditor's adversary against the real server and audit (ninth attack
review, 2026-12-01).

Each test plays one attack through the real code path (a real gRPC server with mutual TLS and real
key files, real TenSEAL; the real ``fedstyle audit`` command) and fails on the code it was written
against:

1. a CKKS decryption-committee member sends ``CommitDecryption`` with ``wait_seconds = NaN``: the
   server's ``Condition.wait_for(timeout=nan)`` never times out and spins at a full core, taking and
   releasing the server's one lock, until the other member commits, the phase ends or the caller
   hangs up (``MAX_POLL_SECONDS`` does not apply: ``min(max(nan, 0), 30)`` is NaN);
2. an artist streams its upload in one-byte chunks: ``join_chunks`` keeps one Python ``bytes``
   object per chunk (plus a list slot), ~40x the declared payload, for as long as the stream lasts
   (only the idle timeout between chunks bounds it);
3. a FIFO named ``round-0001.json`` in a reports folder hangs ``fedstyle audit`` forever (no verdict);
4. every accepted submission's nonce, of any length up to the message limit, is kept for the life
   of the server process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedstyle_secure.errors import DataError
from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.federation.packing import Layout, pack
from fedstyle_secure.federation.sum_checks import CLIENT_WEIGHT
from fedstyle_secure.secure.ckks.decryption import COMMITTEE_SIZE, Attempt, SignedContribution, set_digest, sign_commit
from fedstyle_secure.secure.keys.keystore import load_buyer_tls_pem
from fedstyle_secure.transport.artist.channel import query
from fedstyle_secure.transport.server import servicer as server_module
from fedstyle_secure.transport.wire import pb, vector_payload
from tests.fakes import Clock
from tests.servers import ARTISTS, BUYER, address, connect

# ---------------------------------------------------------------- 1: NaN commit wait


def test_a_nan_commit_wait_is_bounded_and_does_not_spin(keys, tmp_path, monkeypatch):
    """A committee member (its own bundle, a valid signed commitment to the real set) asks the server
    to hold ``CommitDecryption`` for NaN seconds while the other member has not committed yet.  The
    call must end like any long poll (at most ``MAX_POLL_SECONDS``) without burning a core; on the
    code under review it spins until the caller's own deadline."""
    from tests.test_transport_ckks import Federation

    monkeypatch.setattr(server_module, "MAX_POLL_SECONDS", 2.0)  # keep the honest bound short
    f = Federation(keys, tmp_path)
    try:
        x, _ = f.contribute()
        attacker = f.parties[x]
        listed = attacker.session.contribution_set(0)
        at = Attempt(0, listed.attempt, attacker.keys.ckks.fingerprint, COMMITTEE_SIZE)
        contributions = [
            SignedContribution(c.artist_id, c.sha256, c.signature, c.min_quorum) for c in listed.contributions
        ]
        digest = set_digest(at, contributions)
        request = pb.DecryptionCommit(
            round_id=0,
            attempt=listed.attempt,
            set_digest=digest,
            signature=sign_commit(attacker.keys.identity_key, at, digest),
            wait_seconds=float("nan"),
        )
        cpu0, wall0 = time.process_time(), time.monotonic()
        try:
            reply = attacker.session.stub.CommitDecryption(request, metadata=attacker.session.metadata, timeout=8)
            outcome = f"returned {len(reply.commits)} commitment(s)"
        except grpc.RpcError as exc:
            outcome = f"{exc.code().name}: {exc.details()}"
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        assert outcome.startswith("returned"), f"the NaN-second commit poll never ended on its own ({outcome})"
        assert wall < 6.0 and cpu < 0.5 * wall + 0.5, f"{cpu:.1f} s of CPU in {wall:.1f} s: the server spun"
    finally:
        f.close()


# ---------------------------------------------------------------- 2: one-byte chunks


def test_an_upload_in_one_byte_chunks_costs_the_server_about_its_size(serve, keys):
    """An artist declares a 60,000-byte contribution and streams it one byte per Chunk.  The server
    kept every chunk's ``bytes`` object and a list slot until the stream ended (~40 x the payload; a
    training round's 7.5 MB plain limit is ~0.3 GB per stream, 4 streams per identity, ~2.5 GB per
    stream at the CKKS limit).  Python-level memory the server allocates for the stream must stay
    within a small multiple of the payload."""
    running = serve(
        keys, Schedule(rounds=1, quorum=2, phase_seconds=600, startup_seconds=0, standardise=False), Clock()
    )
    coordinator = running.servicer.coordinator
    round_id = coordinator.plan().round_id
    assert coordinator.plan().phase.value == "contribute"
    declared = 60_000
    channel, session = connect(running, keys, "artist_a")

    def peak_of(chunk_bytes: int) -> int:
        """Python-level peak while the server takes (and refuses, for its digest) a stream of
        ``declared`` bytes in chunks of ``chunk_bytes``."""
        header = pb.PayloadHeader(
            round_id=round_id,
            kind=pb.PAYLOAD_KIND_PLAIN_VECTOR,
            total_bytes=declared,
            sha256=b"\0" * 32,  # the digest is only checked once the stream ends
            nonce=os.urandom(16),
        )

        def chunks():
            yield pb.Chunk(header=header)
            piece = pb.Chunk(data=b"\x01" * chunk_bytes)
            for _ in range(declared // chunk_bytes):
                yield piece

        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            with pytest.raises(grpc.RpcError) as refused:
                session.stub.UploadContribution(
                    chunks(), metadata=session.submission_metadata(round_id, "contribute"), timeout=120
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    with channel:
        peak_of(10_000)  # warm-up: one-time allocations of the first call
        ordinary = peak_of(10_000)
        tiny = peak_of(1)
    assert tiny <= ordinary + 8 * declared, (
        f"a {declared}-byte upload in one-byte chunks made the server allocate {(tiny - ordinary) / 1e6:.1f} MB more "
        f"than the same upload in ordinary chunks ({(tiny - ordinary) / declared:.0f}x its size)"
    )


# ---------------------------------------------------------------- 3: a FIFO in the reports folder


def test_a_fifo_among_the_report_files_does_not_hang_the_audit(keys, tmp_path):
    """Whoever hands the auditor a reports folder (a dishonest server, a tar archive) puts a FIFO named
    like a report in it: ``read_json`` opens it and blocks forever waiting for a writer -- no verdict.
    The audit must finish and flag the file."""
    folder = tmp_path / "reports" / "artist_a"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "round-0001.json")
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "fedstyle_secure.cli", "audit", str(tmp_path / "reports"), "--keys", str(keys)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[1],
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"fedstyle audit hung on a FIFO named round-0001.json ({time.monotonic() - started:.0f} s)")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "round-0001.json" in done.stdout + done.stderr


# ---------------------------------------------------------------- 4: nonces kept forever


def _zero_contribution(coordinator) -> tuple[np.ndarray, Layout]:
    arrays = {name: np.zeros(shape) for name, shape in coordinator.layout.fields}
    arrays["clients"][:] = 1.0
    if "weight" in arrays:
        arrays["weight"][:] = CLIENT_WEIGHT
    return pack(arrays)


def test_an_accepted_submission_cannot_make_the_server_keep_megabytes_of_nonce(serve, keys):
    """An artist's accepted contribution carries a 3.5 MB nonce (the header chunk fits the 4 MiB message
    limit).  The coordinator kept every accepted nonce, whole, for the life of the process (never pruned
    across rounds): megabytes per submission, per phase, per attempt, per round.  A nonce needs 16 bytes."""
    clock = Clock()
    running = serve(keys, Schedule(rounds=2, quorum=2, phase_seconds=600, startup_seconds=0, standardise=False), clock)
    coordinator = running.servicer.coordinator
    round_id = coordinator.plan().round_id
    channel, session = connect(running, keys, "artist_a")
    with channel:
        vector, layout = _zero_contribution(coordinator)
        try:
            session.upload(
                round_id,
                pb.PAYLOAD_KIND_PLAIN_VECTOR,
                vector_payload(vector),
                layout,
                nonce=os.urandom(3_500_000),
                chunk_bytes=64 * 1024,
            )
        except grpc.RpcError as exc:  # refusing an oversized nonce is a fix too
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), exc.details()
    kept = sum(map(len, coordinator._nonces))
    count = len(coordinator._nonces)
    assert kept <= 1024 * max(count, 1), f"{kept} bytes of nonces kept for {count} submission(s) of {ARTISTS[0]}"


# ---------------------------------------------------------------- 5: query images decoded at once


def test_query_images_are_decoded_and_embedded_a_few_at_a_time(serve, keys, monkeypatch):
    """Buyers' queries in flight (up to ``server.max_buyer_calls``) each decoded a query image at once:
    a 186-byte animated WebP declaring a 4096 x 4096 canvas costs 252 MiB and 0.34 s of a core to
    decode, so eight were about 2 GB.  At most ``QUERY_SLOTS`` are decoded and embedded at a time;
    the others wait their turn.  The decoder is a FAKE that counts how many run at once and blocks."""
    running = serve(keys, Schedule(rounds=1, quorum=2, phase_seconds=600, startup_seconds=0), Clock())
    monkeypatch.setattr(running.servicer, "_index_published", lambda: True)  # FAKE: as after a finished run
    inside, most, lock, go = 0, 0, threading.Lock(), threading.Event()

    def counting_decoder(*args, **kwargs):  # FAKE decode_image: records concurrency, then refuses the image
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        go.wait(20)
        with lock:
            inside -= 1
        raise DataError("not an image (fake decoder)")

    monkeypatch.setattr(server_module, "decode_image", counting_decoder)
    codes: list[grpc.StatusCode] = []

    def buyer_query() -> None:
        try:
            query(address(running), load_buyer_tls_pem(keys, BUYER), b"x", timeout=30)
        except grpc.RpcError as exc:
            codes.append(exc.code())

    buyers = [threading.Thread(target=buyer_query) for _ in range(4)]  # one buyer's whole call limit
    for thread in buyers:
        thread.start()
    deadline = time.monotonic() + 10
    while most < server_module.QUERY_SLOTS and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the other two calls are in flight by now: they must be waiting, not decoding
    assert most == server_module.QUERY_SLOTS, f"{most} query images decoded at once"
    go.set()
    for thread in buyers:
        thread.join(30)
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 4  # every query answered, one slot after another
