"""What the server exposes and accepts, over real gRPC + mutual TLS on loopback: decompression
bombs through a buyer's Query, what GetStatus shows to a buyer and to artists, and epsilon
reports that never carry the artist's dataset size to the server."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.models.factory import EncoderConfig
from fedstyle_secure.models.heads import ScratchStyleCNN, StyleModel
from fedstyle_secure.privacy.budget import BudgetLedger, PrivacyBudget
from fedstyle_secure.privacy.mechanisms import GaussianRelease
from fedstyle_secure.privacy.reports import (
    DATASET_SIZE_COMMITMENT,
    DATASET_SIZE_OPENING,
    build_report,
    opened_dataset_size,
    redacted_report,
    sign_report,
    verify_report_signature,
)
from fedstyle_secure.randomness import SECURE_NOISE_SOURCE
from fedstyle_secure.retrieval.index import build_index
from fedstyle_secure.secure.keys.keystore import load_artist_keys, load_buyer_tls_pem
from fedstyle_secure.transport.artist.channel import open_channel, query
from fedstyle_secure.transport.server.servicer import MAX_QUERY_PIXELS
from fedstyle_secure.transport.wire import new_nonce, pb, pb_grpc
from tests.crafted import png_bomb
from tests.servers import ARTISTS, address, connect

DATASET_SIZE = 437  # a distinctive number of artworks


def _scratch_index(directory: Path) -> Path:
    """A small published style index (scratch CNN encoder, random prototypes) for Query."""
    torch.manual_seed(0)
    model = StyleModel(ScratchStyleCNN(out_dim=8), None, 8)
    prototypes = np.random.default_rng(0).normal(size=(len(ARTISTS), 8))
    build_index(model, EncoderConfig(backbone="scratch", embedding_dim=8), ARTISTS, prototypes).save(directory)
    return directory


@pytest.fixture
def running(serve, keys, tmp_path):
    return serve(
        keys,
        Schedule(rounds=1, quorum=2, phase_seconds=600),
        reports_dir=tmp_path / "reports",
        index=_scratch_index(tmp_path / "index"),
    )


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 40, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_query_decompression_bomb_is_refused_from_its_header(running, keys):
    """A 10 kB PNG of 9000 x 9000 pixels (81 M: under PIL's own limit, ~0.3 GB decoded as RGB)
    is refused naming the server's limit; an ordinary image is ranked, before and after."""
    tls = load_buyer_tls_pem(keys, "buyer_x")
    assert sorted(a for a, _ in query(address(running), tls, _png(300, 200), top_k=3)) == sorted(ARTISTS)
    bomb = png_bomb(9000, 9000)
    assert len(bomb) < 16 * 1024
    with pytest.raises(grpc.RpcError) as info:
        query(address(running), tls, bomb, top_k=3)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"9000x9000 = 81000000 pixels; at most {MAX_QUERY_PIXELS} pixels are decoded" in info.value.details()
    assert len(query(address(running), tls, _png(64, 64), top_k=2)) == 2  # the server keeps serving


def test_get_status_shows_retirement_reasons_only_to_the_retired_artist(running, keys, caplog):
    reason = "privacy budget: planned spend 9.1 would exceed the budget epsilon=0.5"
    channels = {}
    for artist in ("artist_a", "artist_b"):
        channels[artist] = connect(running, keys, artist)
    with caplog.at_level(logging.WARNING, logger="fedstyle_secure.transport.server.servicer"):
        b = channels["artist_b"][1]
        b.stub.Withdraw(pb.Withdrawal(round_id=0, reason=reason, nonce=new_nonce()), metadata=b.metadata, timeout=5)
    assert reason in caplog.text  # the operator's log has it
    with open_channel(address(running), load_buyer_tls_pem(keys, "buyer_x")) as buyer:
        seen_by_buyer = pb_grpc.FederationStub(buyer).GetStatus(pb.StatusRequest(), timeout=5)
    assert (seen_by_buyer.round_id, seen_by_buyer.phase, seen_by_buyer.index_published) == (0, "contribute", True)
    assert not seen_by_buyer.retired and not seen_by_buyer.registered and not seen_by_buyer.reports
    assert seen_by_buyer.last_error == ""
    seen_by_a = channels["artist_a"][1].stub.GetStatus(pb.StatusRequest(), timeout=5)
    assert list(seen_by_a.registered) == ["artist_a", "artist_b"] and not seen_by_a.retired
    assert dict(b.stub.GetStatus(pb.StatusRequest(), timeout=5).retired) == {"artist_b": reason}
    for channel, _ in channels.values():
        channel.close()


def _stored_bytes(server_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(server_dir.rglob("*")) if p.is_file())


def test_uploaded_reports_carry_no_dataset_size(running, keys, tmp_path):
    """The artist's signed report commits to n; the server accepts and stores the redacted copy
    (signature intact), refuses one carrying the opening, and stores n nowhere."""
    artist_keys = load_artist_keys(keys, "artist_a")
    ledger = BudgetLedger(PrivacyBudget(1.0, 1e-5), DATASET_SIZE)
    ledger.record([GaussianRelease(1.0, 8.0, 0, "style-prototype-sums")])
    full = sign_report(
        build_report(ledger, artist_id="artist_a", round_id=0, noise_source=SECURE_NOISE_SOURCE),
        artist_keys.identity_key,
    )
    assert opened_dataset_size(full) == DATASET_SIZE and "dataset_size" not in full
    channel, session = connect(running, keys, "artist_a")
    with channel:
        with pytest.raises(grpc.RpcError) as info:
            session.report(0, json.dumps(full).encode())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and DATASET_SIZE_OPENING in info.value.details()
        assert not (tmp_path / "reports" / "artist_a").exists()
        session.report(0, json.dumps(redacted_report(full)).encode())
    stored = json.loads((tmp_path / "reports" / "artist_a" / "round-0000.json").read_text())
    verify_report_signature(stored, artist_keys.identity_public_keys["artist_a"])
    assert stored[DATASET_SIZE_COMMITMENT] == full[DATASET_SIZE_COMMITMENT] and opened_dataset_size(stored) is None
    everything = _stored_bytes(tmp_path / "reports") + _stored_bytes(tmp_path)  # reports, manifest, SQLite (+ WAL)
    assert b'"dataset_size"' not in everything and DATASET_SIZE_OPENING.encode() not in everything
    assert DATASET_SIZE not in set(_numbers(stored))


def _numbers(value: object) -> list[float]:
    """Every number anywhere in a JSON value."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []
