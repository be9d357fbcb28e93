"""What one artist or buyer can make the server spend (red-team review of 2026-11-30, second night).

Each attack is played by a party with its own valid credentials through the real gRPC server with
mutual TLS and real key files, and each test fails on the code before its defence: a signed CKKS
contribution that inflated to gigabytes inside TenSEAL (one ciphertext per chunk, checked before the
next, :func:`~fedstyle_secure.secure.ckks.primitives.check_one_ciphertext`), replayed withdrawals that
each rewrote the whole server state (a repeat saves nothing), and a query JPEG of bounded pixels but
thousands of scans (:data:`~fedstyle_secure.data.images.MAX_JPEG_SCANS`)."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import time
import zlib

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.federation.packing import pack
from fedstyle_secure.models.backbone import STYLE_FEATURE_DIM
from fedstyle_secure.privacy.jsonio import read_json
from fedstyle_secure.privacy.reports import canonical_json, sign_report
from fedstyle_secure.privacy.withdrawals import build_withdrawal
from fedstyle_secure.secure.binary import pack_u8, pack_u32
from fedstyle_secure.secure.ckks.decryption import (
    COMMITTEE_SIZE,
    Attempt,
    layout_bytes,
    payload_digest,
    sign_contribution,
)
from fedstyle_secure.secure.ckks.primitives import FORMAT_VERSION, VECTOR_MAGIC, chunk_bounds, encrypt
from fedstyle_secure.secure.keys.keystore import load_artist_keys
from fedstyle_secure.transport.wire import pb
from tests.fakes import Clock
from tests.servers import connect

F = STYLE_FEATURE_DIM
MOMENTS = {"clients": np.array([1.0]), "feature_mean": np.full(F, 0.5), "feature_sq_mean": np.full(F, 0.5)}
MiB = 1024 * 1024


# ---------------------------------------------------------------- helpers: hand-made bytes


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(b: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        c = b[i]
        i += 1
        value |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return value, i


def _proto_fields(raw: bytes) -> list[tuple[int, bytes, bytes | None]]:
    """(field number, the field's encoded bytes, its LEN payload or None) of a protobuf message."""
    i, fields = 0, list[tuple[int, bytes, bytes | None]]()
    while i < len(raw):
        key, j = _read_varint(raw, i)
        wire = key & 7
        if wire == 2:
            length, k = _read_varint(raw, j)
            fields.append((key >> 3, raw[i : k + length], raw[k : k + length]))
            i = k + length
        elif wire == 0:
            _, k = _read_varint(raw, j)
            fields.append((key >> 3, raw[i:k], None))
            i = k
        else:
            width = 8 if wire == 1 else 4
            fields.append((key >> 3, raw[i : j + width], None))
            i = j + width
    return fields


ZSTD_BLOCK = 1 << 17


def _zstd_frame(prefix: bytes, zeros: int) -> bytes:
    """A valid zstd frame (written by hand): one raw block holding ``prefix``, then RLE blocks of
    ``zeros`` zero bytes -- 4 bytes on the wire per 128 KiB decompressed."""
    out = bytearray(b"\x28\xb5\x2f\xfd\x00\x38")  # magic, no content size, 128 KiB window
    blocks = (zeros + ZSTD_BLOCK - 1) // ZSTD_BLOCK
    out += ((1 if blocks == 0 else 0) | (len(prefix) << 3)).to_bytes(3, "little") + prefix
    left = zeros
    for k in range(blocks):
        size = min(ZSTD_BLOCK, left)
        left -= size
        out += ((1 if k == blocks - 1 else 0) | (1 << 1) | (size << 3)).to_bytes(3, "little") + b"\x00"
    return bytes(out)


def _seal_header(template: bytes, compression: int, total: int) -> bytes:
    """SEAL's 16-byte serialisation header (magic and version copied from a real one)."""
    return template[:5] + bytes([compression]) + b"\0\0" + struct.pack("<Q", total)


def _zero_ciphertext(template: bytes, parms_id, polys: int, degree: int, primes: int, scale: float) -> bytes:
    """A SEAL ciphertext of ``polys`` all-zero polynomials at ``parms_id``, zstd-compressed: a few
    hundred bytes that SEAL inflates to ``polys * degree * primes * 8`` bytes before any check."""
    count = polys * degree * primes
    members = struct.pack("<4Q", *parms_id) + b"\x01" + struct.pack("<QQQ", polys, degree, primes)
    members += struct.pack("<d", scale) + struct.pack("<Q", 1)
    dyn_array = _seal_header(template, 0, 16 + 8 + 8 * count) + struct.pack("<Q", count)
    body = _zstd_frame(members + dyn_array, 8 * count)
    return _seal_header(template, 2, 16 + len(body)) + body


def _peak_rss_during(call) -> tuple[object, int]:
    """(what ``call()`` returned or raised, the largest rise of this process's resident memory
    while it ran, in bytes) -- the server runs in this process."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    base, peak, stop = rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss() - base)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result: object = call()
    except Exception as exc:  # the refusal is part of what we observe
        result = exc
    finally:
        stop.set()
        sampler.join()
    return result, peak[0]


# ---------------------------------------------------------------- finding 1: CKKS decompression bomb


def test_ckks_contribution_decompression_bomb_is_bounded_by_the_payload_limit(serve, keys):
    """A malicious artist signs (with its own identity key) a CKKS contribution whose first chunk
    is a TenSEAL vector holding 384 zstd-compressed SEAL ciphertexts of 16 all-zero polynomials:
    72 KB that ``ckks_vector_from`` inflated to 1.6 GB before the server's ``check_fresh`` ran.  A
    chunk of more than one ciphertext is now refused from its framing, before TenSEAL parses it,
    and each chunk is checked before the next is parsed: refused whole, at a cost near its size."""
    running = serve(
        keys, Schedule(rounds=1, quorum=2, phase_seconds=60, startup_seconds=0, secure_mode="ckks"), Clock()
    )
    coordinator = running.servicer.coordinator
    limit, _ = running.servicer._upload_limit(0, "contribute")
    channel, session = connect(running, keys, "artist_a")
    with channel:
        artist = load_artist_keys(keys, "artist_a")
        vector, layout = pack(MOMENTS)
        honest = encrypt(artist.ckks, vector)
        chunk = honest.chunks[0]
        ciphertext = chunk.ciphertext()[0]
        fields = _proto_fields(chunk.serialize())
        template = next(p for f, _, p in fields if f == 2 and p is not None)
        head = b"".join(b for f, b, _ in fields if f == 1)
        tail = b"".join(b for f, b, _ in fields if f not in (1, 2))
        one = _zero_ciphertext(
            template,
            tuple(ciphertext.parms_id()),
            16,
            ciphertext.poly_modulus_degree(),
            ciphertext.coeff_modulus_size(),
            ciphertext.scale,
        )
        inflated_each = 16 * ciphertext.poly_modulus_degree() * ciphertext.coeff_modulus_size() * 8
        copies = max(1, (768 * MiB) // inflated_each)  # kept small here; a 4 MiB upload would ask ~20000x
        bomb_chunk = head + b"".join(b"\x12" + _varint(len(one)) + one for _ in range(copies)) + tail
        bounds = chunk_bounds(layout.size, artist.ckks.params.slots)
        payload = VECTOR_MAGIC + pack_u8(FORMAT_VERSION) + artist.ckks.fingerprint + pack_u32(layout.size)
        payload += pack_u32(len(bounds)) + pack_u32(len(bomb_chunk)) + bomb_chunk
        for other in honest.chunks[1:]:
            raw = other.serialize()
            payload += pack_u32(len(raw)) + raw
        at = Attempt(0, 0, artist.ckks.fingerprint, COMMITTEE_SIZE)
        signature = sign_contribution(
            artist.identity_key, at, "artist_a", layout_bytes(layout.fields), payload_digest(payload), 0
        )
        assert len(payload) < limit, (len(payload), limit)  # well inside the plan's upload limit

        outcome, rise = _peak_rss_during(
            lambda: session.upload(
                0, pb.PAYLOAD_KIND_CKKS_CIPHERTEXT, payload, layout, chunk_bytes=256 * 1024, signature=signature
            )
        )
        print(
            f"payload {len(payload)} bytes (limit {limit}); {copies} ciphertexts of {inflated_each} bytes each; "
            f"server resident memory rose by {rise / MiB:.0f} MiB; outcome: "
            f"{outcome.code() if isinstance(outcome, grpc.RpcError) else outcome}: "
            f"{outcome.details() if isinstance(outcome, grpc.RpcError) else ''}"
        )
        assert isinstance(outcome, grpc.RpcError) and outcome.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "artist_a" not in coordinator._collect.items  # refused whole, as promised ...
        # ... but only after the server had allocated hundreds of times the upload's size:
        assert rise <= max(8 * limit, 64 * MiB), (
            f"a {len(payload)}-byte signed contribution made the server allocate {rise / MiB:.0f} MiB "
            f"({rise / len(payload):.0f}x its size) before refusing it"
        )


# ---------------------------------------------------------------- finding 2: Withdraw saves the whole state per call


def test_repeated_withdrawals_do_not_rewrite_the_server_state_each_time(serve, keys, tmp_path):
    """An artist (its own key bundle) withdraws once, then keeps calling ``Withdraw`` with the same
    message.  Each call used to rewrite the server's whole snapshot (model, optimiser moments,
    consensus, prototypes) in a ``synchronous=FULL`` SQLite transaction under the lock every other
    artist's call needs (40 calls: 40 saves, 1.2 s).  A repeat now changes nothing and saves nothing."""
    running = serve(keys, Schedule(rounds=1, quorum=2, phase_seconds=600, startup_seconds=0), Clock())
    store = running.servicer.store
    saves: list[float] = []
    original = store.save

    def counting_save(snapshot):
        started = time.perf_counter()
        original(snapshot)
        saves.append(time.perf_counter() - started)

    store.save = counting_save  # instrumentation only: the real save still runs
    channel, session = connect(running, keys, "artist_c")
    with channel:
        nonce = os.urandom(16)
        request = pb.Withdrawal(round_id=0, reason="privacy budget: done", nonce=nonce)
        first = session.stub.Withdraw(request, metadata=session.metadata, timeout=10)
        assert "retired" in first.detail
        after_first = len(saves)
        calls = 40
        started = time.perf_counter()
        for _ in range(calls):  # the very same message: same nonce, same round, already retired
            session.stub.Withdraw(request, metadata=session.metadata, timeout=10)
        elapsed = time.perf_counter() - started
    snapshot_bytes = sum(
        os.path.getsize(p) for p in (store.path, store.path.with_name(store.path.name + "-wal")) if p.exists()
    )
    print(
        f"{calls} replayed Withdraw calls ({request.ByteSize()} bytes each) -> {len(saves) - after_first} full state "
        f"saves, {sum(saves[after_first:]):.2f} s of fsync'd writes under the server lock ({elapsed:.2f} s wall); "
        f"database + WAL now {snapshot_bytes / MiB:.1f} MiB"
    )
    assert len(saves) - after_first == 0, f"{len(saves) - after_first} state saves for {calls} replayed withdrawals"


# ---------------------------------------------------------------- finding 3: buyer, progressive-JPEG scan bomb


class _Bits:
    """MSB-first bit writer with JPEG byte stuffing (0xFF -> 0xFF 0x00)."""

    def __init__(self) -> None:
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, value: int, width: int) -> None:
        for i in range(width - 1, -1, -1):
            self.acc, self.n = (self.acc << 1) | ((value >> i) & 1), self.n + 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc, self.n = 0, 0

    def flush(self) -> bytes:
        while self.n:
            self.put(1, 1)
        return bytes(self.out)


def _segment(marker: int, body: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


def progressive_scan_bomb(side: int, scans: int) -> bytes:
    """A valid grey progressive JPEG of ``side`` x ``side`` pixels (within the query's pixel limit)
    whose one AC scan -- ~30 bytes: one end-of-band run over every block -- is repeated ``scans``
    times.  libjpeg walks every block of the image once per scan (a warning, not an error, for a
    repeated scan), so decoding costs ``scans`` passes over 262,144 blocks."""
    blocks = (side // 8) ** 2
    out = bytearray(b"\xff\xd8")
    out += _segment(0xDB, b"\x00" + bytes([1]) * 64)
    out += _segment(0xC2, struct.pack(">BHHB", 8, side, side, 1) + b"\x01\x11\x00")
    out += _segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")  # DC: one code, category 0
    out += _segment(0xC4, b"\x10" + bytes([1, 1] + [0] * 14) + b"\xe0\x30")  # AC: EOBRUN 2^14.., 2^3..
    out += _segment(0xDA, b"\x01\x01\x00\x00\x00\x00") + bytes((blocks + 7) // 8)  # DC first scan
    bits, left = _Bits(), blocks
    while left >= 32767:
        bits.put(0, 1)
        bits.put(0x3FFF, 14)
        left -= 32767
    while left:  # runs of 8 blocks
        bits.put(2, 2)
        bits.put(0, 3)
        left -= 8
    ac_scan = _segment(0xDA, b"\x01\x01\x00\x01\x3f\x00") + bits.flush()
    return bytes(out) + ac_scan * scans + b"\xff\xd9"


def test_a_query_jpeg_of_thousands_of_scans_is_refused_before_it_is_decoded(serve, keys, tmp_path):
    """A buyer (its own certificate) sent a ~130 kB progressive JPEG of 4096 x 4096 pixels -- exactly
    the query's pixel limit, so the header check passed -- repeating one tiny scan 3,000 times:
    libjpeg walks every block once per scan, 4.4 s of a core (an ordinary image of that size: 0.2 s;
    a 4 MiB one ~140 s, and 8 buyer calls run at once).  It is now refused, naming the rule, before
    any pixel is decoded; an ordinary progressive JPEG is answered."""
    import io

    from PIL import Image

    from fedstyle_secure.data.images import MAX_JPEG_SCANS
    from fedstyle_secure.secure.keys.keystore import load_buyer_tls_pem
    from fedstyle_secure.transport.artist.channel import query
    from fedstyle_secure.transport.server.servicer import MAX_QUERY_PIXELS
    from tests.servers import address
    from tests.test_transport_exposure import _scratch_index

    running = serve(keys, Schedule(rounds=1, quorum=2, phase_seconds=600), index=_scratch_index(tmp_path / "index"))
    tls = load_buyer_tls_pem(keys, "buyer_x")
    ordinary = io.BytesIO()
    Image.new("L", (512, 512), 128).save(ordinary, format="JPEG", progressive=True)
    assert len(query(address(running), tls, ordinary.getvalue(), top_k=3)) == 3
    bomb = progressive_scan_bomb(4096, 3000)
    assert MAX_QUERY_PIXELS >= 4096 * 4096 and len(bomb) < 160 * 1024
    with pytest.raises(grpc.RpcError) as refused:
        query(address(running), tls, bomb, top_k=3, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"a JPEG of more than {MAX_JPEG_SCANS} scans is refused" in refused.value.details()
    assert len(query(address(running), tls, ordinary.getvalue(), top_k=3)) == 3  # and it keeps serving


def _mpf_segment() -> bytes:
    """The APP2 "MPF" segment Pillow writes for a two-frame MPO (entry 2 points nowhere useful: only
    frame 0 is ever decoded)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "MPO", save_all=True, append_images=[Image.new("L", (8, 8))])
    raw, i = buffer.getvalue(), 2
    while True:
        size = struct.unpack(">H", raw[i + 2 : i + 4])[0]
        if raw[i + 1] == 0xE2 and raw[i + 4 : i + 8] == b"MPF\0":
            return raw[i : i + 2 + size]
        i += 2 + size


def mpo_scan_bomb(side: int, scans: int) -> bytes:
    """:func:`progressive_scan_bomb` with an MPF segment after SOI: Pillow's JPEG factory returns an
    ``MpoImageFile`` (format "MPO") whose frame 0 is the bomb."""
    bomb = progressive_scan_bomb(side, scans)
    return bomb[:2] + _mpf_segment() + bomb[2:]


def test_a_query_jpeg_wrapped_as_mpo_still_gets_its_thousands_of_scans_refused(serve, keys, tmp_path):
    """Guarantee (README / MAX_JPEG_SCANS): a query JPEG of more than 64 scans is refused before it
    is decoded.  Observed: the same 3,000-scan bomb with a 100-byte MPF header is decoded by the
    server (several seconds of a core per ~130 kB query)."""
    from fedstyle_secure.data.images import MAX_JPEG_SCANS
    from fedstyle_secure.secure.keys.keystore import load_buyer_tls_pem
    from fedstyle_secure.transport.artist.channel import query
    from tests.servers import address
    from tests.test_transport_exposure import _scratch_index

    running = serve(keys, Schedule(rounds=1, quorum=2, phase_seconds=600), index=_scratch_index(tmp_path / "index"))
    tls = load_buyer_tls_pem(keys, "buyer_x")
    plain = progressive_scan_bomb(4096, 3000)
    with pytest.raises(grpc.RpcError) as refused:
        query(address(running), tls, plain, top_k=3, timeout=60)
    assert f"a JPEG of more than {MAX_JPEG_SCANS} scans is refused" in refused.value.details()  # the old fix holds
    bomb = mpo_scan_bomb(4096, 3000)
    assert len(bomb) < 160 * 1024
    started = time.monotonic()
    try:
        hits = query(address(running), tls, bomb, top_k=3, timeout=120)
    except grpc.RpcError as exc:
        hits = exc
    elapsed = time.monotonic() - started
    assert isinstance(hits, grpc.RpcError) and "scans is refused" in hits.details(), (
        f"the MPO-wrapped 3,000-scan JPEG ({len(bomb)} bytes) was decoded and answered in {elapsed:.1f} s: {hits!r}"
    )


def _padded_jpeg(padding: bytes) -> bytes:
    """An ordinary 64 x 64 JPEG with ``padding`` between its SOI and its first segment."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 40, 20)).save(buffer, format="JPEG")
    return buffer.getvalue()[:2] + padding + buffer.getvalue()[2:]


@pytest.mark.parametrize(
    ("padding", "rule"),
    [
        (b"\xff" * (4 * 1024 * 1024 - 1024), "fill or stray bytes before its first scan is refused"),
        (b"\xff\xfe\x00\x02" * (1024 * 1024 - 256), "marker segments before its first scan is refused"),
        (b"\xff\x00" * (2 * 1024 * 1024 - 1024), "fill or stray bytes before its first scan is refused"),
    ],
    ids=["fill-bytes", "empty-comments", "stuffed-pairs"],
)
def test_a_query_jpeg_header_padded_to_the_message_limit_is_refused_before_pillow_walks_it(
    serve, keys, tmp_path, padding, rule
):
    """A buyer (its own certificate) sent a 4 MiB query JPEG whose header is ``FF`` fill bytes, a
    million empty comment segments, or (getting past the first fix: a walk that read ``FF 00`` as a
    segment of length 65,278) two million stuffed ``FF 00`` pairs, before an ordinary 64 x 64 image:
    Pillow's header parser walks each byte or segment in Python, 1.0-1.8 s of a core per query before
    the scan check ran (red-team reviews, 2026-11-30 and 2026-12-01).  Now refused from a walk of the
    segment lengths, naming the rule; the server keeps answering ordinary queries."""
    from fedstyle_secure.secure.keys.keystore import load_buyer_tls_pem
    from fedstyle_secure.transport.artist.channel import query
    from tests.servers import address
    from tests.test_transport_exposure import _scratch_index

    running = serve(keys, Schedule(rounds=1, quorum=2, phase_seconds=600), index=_scratch_index(tmp_path / "index"))
    tls = load_buyer_tls_pem(keys, "buyer_x")
    crafted = _padded_jpeg(padding)
    assert len(crafted) < 4 * 1024 * 1024
    with pytest.raises(grpc.RpcError) as refused:
        query(address(running), tls, crafted, top_k=3, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rule in refused.value.details()
    assert len(query(address(running), tls, _padded_jpeg(b""), top_k=3)) == 3  # and it keeps serving


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(before_data: bytes = b"", data_chunks: int = 1, after_data: bytes = b"") -> bytes:
    """An ordinary grey 64 x 64 PNG; ``before_data`` / ``after_data``: chunks around its image data,
    which comes in one chunk and ``data_chunks - 1`` empty ones."""
    raw = b"".join(b"\x00" + bytes([128]) * 64 for _ in range(64))
    header = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0))
    data = _png_chunk(b"IDAT", zlib.compress(raw, 9)) + _png_chunk(b"IDAT", b"") * (data_chunks - 1)
    return header + before_data + data + after_data + _png_chunk(b"IEND", b"")


_PROFILE = _png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * (1024 * 1024 - 1), 9))  # ~1 KB -> 1 MiB


@pytest.mark.parametrize(
    ("crafted", "rule"),
    [
        (_png(before_data=_PROFILE * 3900), "or of more than one ICC profile, is refused"),
        (_png(before_data=_png_chunk(b"zzZz", b"") * 340_000), "chunks besides its image data"),
        (_png(data_chunks=340_000), "in more than 64 chunks of under 1024 bytes on average is refused"),
        (_png(after_data=_png_chunk(b"iCCP", b"")), "index out of range"),
    ],
    ids=["3900-icc-profiles", "empty-chunks", "empty-image-data-chunks", "empty-profile-after-data"],
)
def test_a_query_png_of_thousands_of_chunks_is_refused_before_pillow_reads_them(serve, keys, tmp_path, crafted, rule):
    """A buyer sent a 4 MiB query PNG of an ordinary 64 x 64 image behind ~4,000 iCCP chunks (each ~1 KB
    inflating to 1 MiB: 4 GB inflated, 3.3 s of a core), 340,000 empty chunks (1.1 s) or 340,000
    empty image-data chunks (0.9 s): Pillow reads every chunk in Python and caps each profile, not
    their number (red-team review, 2026-12-01).  An empty profile after the image data made Pillow
    raise IndexError: the buyer got UNKNOWN and the server logged a traceback.  Each is now refused
    with INVALID_ARGUMENT naming the rule, and the server keeps answering."""
    from fedstyle_secure.secure.keys.keystore import load_buyer_tls_pem
    from fedstyle_secure.transport.artist.channel import query
    from tests.servers import address
    from tests.test_transport_exposure import _scratch_index

    running = serve(keys, Schedule(rounds=1, quorum=2, phase_seconds=600), index=_scratch_index(tmp_path / "index"))
    tls = load_buyer_tls_pem(keys, "buyer_x")
    assert len(crafted) < 4 * 1024 * 1024
    with pytest.raises(grpc.RpcError) as refused:
        query(address(running), tls, crafted, top_k=3, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rule in refused.value.details()
    assert len(query(address(running), tls, _png(), top_k=3)) == 3  # an ordinary PNG is answered


# ---------------------------------------------------------------- sixteenth review: signed withdrawals


def test_a_crafted_signed_withdrawal_is_refused_and_the_honest_one_is_kept_beside_the_reports(serve, keys, tmp_path):
    """A malicious artist sends a withdrawal statement signed by another key, one claiming another
    artist, one of another run, one of another round and one signing another reason than the request
    states (the server would keep and log the unsigned one): each is refused (INVALID_ARGUMENT, naming
    it) before the artist is retired, so it cannot plant a statement an audit would trust.  Its honest
    withdrawal is then kept in the reports folder, the first one only (fails without the check: the
    forged statement is stored)."""
    reports = tmp_path / "reports"
    running = serve(
        keys, Schedule(rounds=1, quorum=2, phase_seconds=600, startup_seconds=0), Clock(), reports_dir=reports
    )
    run_id = running.servicer.coordinator.run_id
    own = load_artist_keys(keys, "artist_c").identity_key
    reason = "privacy budget: done"

    def statement(key, artist="artist_c", run=run_id, round_id=0, signed_reason=reason) -> bytes:
        return canonical_json(sign_report(build_withdrawal(artist, round_id, signed_reason, run, None), key))

    channel, session = connect(running, keys, "artist_c")
    with channel:
        crafted = {
            "not signed by 'artist_c'": statement(Ed25519PrivateKey.generate()),
            "not 'artist_c''s": statement(load_artist_keys(keys, "artist_a").identity_key, artist="artist_a"),
            "signed for run": statement(own, run="0" * 32),
            "signed for round 3": statement(own, round_id=3),
            "states another reason than it signs": statement(own, signed_reason="moved to another platform"),
        }
        for words, signed in crafted.items():
            request = pb.Withdrawal(round_id=0, reason=reason, nonce=os.urandom(16), signed_json=signed)
            with pytest.raises(grpc.RpcError) as info:
                session.stub.Withdraw(request, metadata=session.metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in str(info.value.details())
        assert "artist_c" not in running.servicer.coordinator.state.retired
        honest = statement(own)
        request = pb.Withdrawal(round_id=0, reason=reason, nonce=os.urandom(16), signed_json=honest)
        assert "retired" in session.stub.Withdraw(request, metadata=session.metadata, timeout=10).detail
    assert read_json(reports / "artist_c" / "withdrawal.json") == json.loads(honest)
