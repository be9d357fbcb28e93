"""A whole federation over real gRPC + mutual TLS on loopback: a server and 3 artist clients
(StyleClient, real feature extraction) complete set-up, training and final publication."""

from __future__ import annotations

import time
from dataclasses import replace

import grpc
import numpy as np
import pytest

from fedstyle_secure.data.images import load_image_folder
from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.models.embed import embed_views, normalise_rows, prototype_sums
from fedstyle_secure.models.inputs import DEFAULT_BACKBONE, DEFAULT_VIEWS, build_input_bank
from fedstyle_secure.retrieval.index import StyleIndex
from fedstyle_secure.secure.keys.keystore import load_buyer_tls_pem, load_server_keys
from fedstyle_secure.transport.artist.channel import open_channel, query
from fedstyle_secure.transport.loopback import start_loopback
from fedstyle_secure.transport.server import servicer as servicer_module
from fedstyle_secure.transport.server.publish_index import index_from_run
from fedstyle_secure.transport.server.servicer import start_server
from fedstyle_secure.transport.server.store import StateStore
from fedstyle_secure.transport.wire import pb, pb_grpc
from tests.servers import address, refused


@pytest.mark.parametrize("secure_mode", ["none", "ckks"])
def test_federation_completes_and_persists(tmp_path, data, secure_mode):
    schedule = Schedule(rounds=2, quorum=3, phase_seconds=30, secure_mode=secure_mode, refreshes=frozenset({0, 1}))
    federation = start_loopback(tmp_path / "run", data, schedule, cache_dir=data.parent / "cache", epochs=1)
    try:
        assert federation.join(timeout=120)
        coordinator, port = federation.server.servicer.coordinator, federation.server.port
        assert coordinator.failed is None, coordinator.failed
        if secure_mode == "none":
            hits = query(
                f"127.0.0.1:{port}",
                load_buyer_tls_pem(tmp_path / "run" / "keys", "buyer"),
                next((data / "artist_01").iterdir()).read_bytes(),
                top_k=3,
            )
    finally:
        federation.close()
    assert federation.results == {a: 0 for a in ("artist_00", "artist_01", "artist_02")}
    assert coordinator.failed is None and coordinator.state.round == 3
    assert coordinator.state.known.all()
    np.testing.assert_allclose(np.linalg.norm(coordinator.state.prototypes, axis=1), 1.0, rtol=1e-5)
    assert coordinator.state.params is not None and np.isfinite(coordinator.state.params).all()
    if secure_mode == "none":  # a buyer queried the published index over mutual TLS
        assert sorted(a for a, _ in hits) == ["artist_00", "artist_01", "artist_02"]
        assert all(-1.0 <= s <= 1.0 for _, s in hits) and [s for _, s in hits] == sorted(
            (s for _, s in hits), reverse=True
        )
    saved = StateStore(tmp_path / "run" / "server.sqlite").load()
    assert saved is not None and saved.state.round == 3
    np.testing.assert_array_equal(saved.state.params, coordinator.state.params)
    np.testing.assert_array_equal(saved.state.prototypes, coordinator.state.prototypes)
    # every artist's final publication over the wire is view-averaged, as the index embeds buyers' images
    model = index_from_run(coordinator, federation.server.servicer.config.embedding_dim, data.parent / "cache").model
    artworks, _ = load_image_folder(data)
    assert artworks.artists == coordinator.roster
    bank = build_input_bank(
        artworks.images, artworks.keys, DEFAULT_BACKBONE, DEFAULT_VIEWS, cache_dir=data.parent / "cache"
    )
    sums, _ = prototype_sums(embed_views(model, bank), artworks.labels, len(artworks.artists))
    np.testing.assert_allclose(coordinator.state.prototypes, normalise_rows(sums), atol=1e-4)


def test_server_restart_mid_run_resumes_and_artists_reconnect(tmp_path, data):
    """Kill the server after round 1; a new server on the same port and database resumes at
    round 2 and the artists (retrying with backoff) finish the run."""
    schedule = Schedule(rounds=3, quorum=3, phase_seconds=30, refreshes=frozenset({0, 1, 2}))
    federation = start_loopback(tmp_path / "run", data, schedule, cache_dir=data.parent / "cache", epochs=1)
    first = federation.server
    try:
        store, deadline = StateStore(first.servicer.config.state_db), time.monotonic() + 60
        while _saved_round(store) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        with first.servicer._cond:  # no save in flight while we stop
            first.stop(0)
        saved = _saved_round(store)
        assert saved >= 1
        config = replace(first.servicer.config, listen=f"127.0.0.1:{first.port}")
        federation.server = start_server(config, load_server_keys(config.keys))
        assert federation.server.servicer.coordinator.plan().round_id == saved + 1
        assert federation.join(timeout=120)
    finally:
        federation.close()
    assert federation.results == {a: 0 for a in ("artist_00", "artist_01", "artist_02")}
    assert (
        federation.server.servicer.coordinator.state.round == 4
        and federation.server.servicer.coordinator.failed is None
    )


def test_failed_index_publication_answers_unavailable_and_the_retry_publishes_the_final_state(
    tmp_path, data, monkeypatch
):
    """The style index is written after the final round as a step of its own.  Its first attempt
    fails for real (the index path is occupied by a file): buyers get UNAVAILABLE naming the cause,
    the finished run is kept; once the path is freed the server's retry publishes the index of that
    same final state."""
    monkeypatch.setattr(servicer_module, "INDEX_RETRY_SECONDS", 0.2)  # product: 10 s between attempts
    work = tmp_path / "run"
    work.mkdir()
    (work / "index").write_text("an operator's file where the index goes")
    schedule = Schedule(rounds=1, quorum=3, phase_seconds=30, refreshes=frozenset({0}))
    federation = start_loopback(work, data, schedule, cache_dir=data.parent / "cache", epochs=1)
    try:
        assert federation.join(timeout=100)
        server, coordinator = federation.server, federation.server.servicer.coordinator
        tls, image = load_buyer_tls_pem(work / "keys", "buyer"), next((data / "artist_01").iterdir()).read_bytes()
        failed = refused(
            lambda: query(address(server), tls, image), grpc.StatusCode.UNAVAILABLE, "could not be written yet"
        )
        assert "FileExistsError" in failed.details() and "the server retries" in failed.details()
        assert not _status(server, tls).index_published
        time.sleep(0.5)  # retries keep failing while the path is occupied
        assert server.servicer._index_error and not (work / "index").is_dir()
        (work / "index").unlink()  # the operator frees the path; the ticker's next attempt succeeds
        deadline = time.monotonic() + 30
        while not _status(server, tls).index_published and time.monotonic() < deadline:
            time.sleep(0.05)
        hits = query(address(server), tls, image, top_k=3)
    finally:
        federation.close()
    assert federation.results == {a: 0 for a in ("artist_00", "artist_01", "artist_02")}
    assert coordinator.failed is None and coordinator.state.round == 2 and coordinator.state.known.all()
    assert sorted(a for a, _ in hits) == ["artist_00", "artist_01", "artist_02"]
    index = StyleIndex.load(work / "index")  # the final state's prototypes, nothing lost or stale
    assert tuple(index.artists) == coordinator.roster
    np.testing.assert_allclose(index.prototypes, coordinator.state.prototypes, rtol=1e-5, atol=1e-6)
    saved = StateStore(work / "server.sqlite").load()
    assert saved is not None and saved.state.round == 2
    np.testing.assert_array_equal(saved.state.prototypes, coordinator.state.prototypes)


def _status(server, tls) -> pb.Status:
    with open_channel(address(server), tls) as channel:
        return pb_grpc.FederationStub(channel).GetStatus(pb.StatusRequest(), timeout=5)


def _saved_round(store: StateStore) -> int:
    snapshot = store.load()
    return -1 if snapshot is None else snapshot.state.round
