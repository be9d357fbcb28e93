"""The federation as a Flower app (optional extra ``flower``): Flower's simulation runtime with 3
synthetic DP artists, real Opacus, real key files, the project's signed identities and reports.
Skipped with a reason when flwr is not installed (`pip install -e ".[flower]"`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")
pytest.importorskip("ray", reason="Flower's simulation runtime needs ray (flwr[simulation])")

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.simulation import run_simulation

from fedstyle_secure.cli.main import main
from fedstyle_secure.federation.client import Publication
from fedstyle_secure.federation.rejections import Duplicate, Forbidden
from fedstyle_secure.flower.apps import client_app, server_app
from fedstyle_secure.flower.artist import SentCkksJournal, artist_from_config
from fedstyle_secure.flower.records import PHASE_ACTIONS, ArtistReply, registration_nonce, registration_reply
from fedstyle_secure.flower.server import FlowerFederation, apply_reply, verified_artist
from fedstyle_secure.retrieval.index import StyleIndex
from fedstyle_secure.secure.keys.keystore import load_artist_keys, load_server_keys
from fedstyle_secure.transport.artist.channel import publication_message
from fedstyle_secure.transport.auth import sign_registration
from fedstyle_secure.transport.config import load_server_config
from fedstyle_secure.transport.loopback import artist_folders, write_fresh_keys
from fedstyle_secure.transport.processes import MachineConfigs, federation_tables, write_machine_configs
from fedstyle_secure.transport.server.servicer import new_servicer

ARTISTS = ("artist_00", "artist_01", "artist_02")


@pytest.fixture(autouse=True)
def ray_runtime():
    """Ray started while this process is quiet, before each simulation (Flower shuts it down at the
    end of every simulation).  Left to Flower, ``ray.init`` forks its helper processes (with a
    ``preexec_fn``) from the main thread while the ServerApp's thread is already computing the
    starting model in torch; a fork taken while that thread holds a lock hung the whole suite (twice:
    the main thread stuck in ``Popen._execute_child``, no CPU, and pytest-timeout never fired).
    Flower's backend skips ``ray.init`` when Ray is already running."""
    import ray

    if not ray.is_initialized():
        pythonpath = os.pathsep.join([*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])])
        ray.init(num_cpus=1, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    yield
    if ray.is_initialized():
        ray.shutdown()


ROUNDS, EPSILON = 1, 8.0  # few messages: each one rebuilds the artist from its state folder
REPORTS = ["round-0000.json", "round-0001.json"]  # 1 training round + the final publication


def machines(work: Path, data: Path, secure: str = "none", **federation: object) -> MachineConfigs:
    """A server folder and one folder per artist, each with its own key bundle and TOML config."""
    keys = write_fresh_keys(work / "keys", ARTISTS)
    tables, server, client = federation_tables(ROUNDS, secure, EPSILON, len(ARTISTS), quorum=len(ARTISTS))
    return write_machine_configs(
        work,
        keys,
        artist_folders(data, work),
        federation={**tables, "phase_seconds": 240, "startup_seconds": 0, **federation},
        server={**server, "cache_dir": str(data.parent / "cache")},
        client={**client, "cache_dir": str(data.parent / "cache"), "min_training_artworks": 1},
    )


def simulate(configs: MachineConfigs, client_configs: list[Path]) -> FlowerFederation:
    finished: list[FlowerFederation] = []
    run_simulation(
        server_app=server_app(configs.server, done=finished.append),
        client_app=client_app(client_configs),
        num_supernodes=len(client_configs),
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 1}},
    )
    assert len(finished) == 1, "the ServerApp did not finish"
    return finished[0]


@pytest.mark.parametrize("secure", ["none", pytest.param("ckks", marks=pytest.mark.slow)])
def test_flower_simulation_builds_the_index_and_auditable_reports(tmp_path, data, secure):
    """The whole federation over Flower messages; with ``ckks`` the server sees only ciphertexts and
    the committee's decryptions (two messages per member: commit to the signed set, then decrypt)."""
    work = tmp_path / "run"
    configs = machines(work, data, secure)
    federation = simulate(configs, [configs.artists[a] for a in ARTISTS])
    coordinator = federation.coordinator
    assert coordinator.failed is None and coordinator.state.round == ROUNDS + 1
    assert sorted(federation.binding.artists.values()) == list(ARTISTS) and federation.refusals == []
    assert coordinator.reports == {a: ROUNDS for a in ARTISTS}
    server_dir = configs.server.parent
    index = StyleIndex.load(server_dir / "index")
    assert sorted(index.artists) == list(ARTISTS)
    for artist in ARTISTS:
        assert sorted(p.name for p in (server_dir / "reports" / artist).glob("round-*.json")) == REPORTS
        final = json.loads((server_dir / "reports" / artist / REPORTS[-1]).read_text())
        assert 0 < final["epsilon"]["prv"] <= EPSILON
    assert main(["audit", str(server_dir / "reports"), "--keys", str(work / "keys")]) == 0
    if secure == "ckks":  # every artist's signed ciphertext of the last summed round, kept across its processes
        for artist in ARTISTS:
            sent = SentCkksJournal(configs.artists[artist].parent / "state").load()
            assert sent is not None and sent.round_id == ROUNDS and len(sent.payload) > 1000


def impostor_client_app(client_configs: list[Path], impostor: int, victim: str) -> ClientApp:
    """Honest ClientApps, except node ``impostor``: it holds its own artist's key bundle and claims
    to be ``victim`` at registration, signing the server's nonce with the key it has."""
    honest = client_app(client_configs)
    app = ClientApp()

    @app.query("register")
    def claim(message: Message, context: Context) -> Message:
        if int(context.node_config["partition-id"]) != impostor:
            return honest(message, context)
        keys = artist_from_config(client_configs[impostor])[1]
        signature = sign_registration(keys.identity_key, victim, registration_nonce(message.content))
        return Message(registration_reply(victim, signature), reply_to=message)

    for message_type in PHASE_ACTIONS.values():
        category, action = message_type.split(".")
        (app.train(action) if category == "train" else app.query(action))(honest)
    return app


def test_a_node_claiming_another_artists_identity_is_refused(tmp_path, data):
    """Node 2 holds artist_02's keys and claims artist_00: it is bound to no artist, the real
    artist_00 keeps its node, and the federation finishes with the two honest artists (quorum 2)."""
    work = tmp_path / "run"
    configs = machines(work, data, quorum=2)
    client_configs = [configs.artists[a] for a in ARTISTS]
    finished: list[FlowerFederation] = []
    run_simulation(
        server_app=server_app(configs.server, done=finished.append),
        client_app=impostor_client_app(client_configs, impostor=2, victim=ARTISTS[0]),
        num_supernodes=3,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 1}},
    )
    (federation,) = finished
    binding = federation.binding
    assert sorted(binding.artists.values()) == list(ARTISTS[:2])
    (refused,) = binding.refusals.values()
    assert "does not verify under artist_00's identity key" in refused
    assert set(binding.refusals).isdisjoint(binding.artists)
    coordinator = federation.coordinator
    assert coordinator.failed is None and coordinator.state.round == ROUNDS + 1
    assert coordinator.reports == {a: ROUNDS for a in ARTISTS[:2]}  # nothing reported for the impostor's claim
    assert not (configs.server.parent / "reports" / ARTISTS[2]).exists()


def test_registration_binds_only_a_proven_unbound_roster_artist(tmp_path):
    """The pure check behind the node binding (no Flower): wrong key, unknown artist, second node."""
    keys_dir = write_fresh_keys(tmp_path / "keys", ARTISTS)
    server = load_server_keys(keys_dir)
    own = load_artist_keys(keys_dir, ARTISTS[1])
    nonce = os.urandom(32)
    good = sign_registration(own.identity_key, ARTISTS[1], nonce)
    assert verified_artist(server.identity_public_keys, {}, ARTISTS[1], nonce, good) == ARTISTS[1]
    with pytest.raises(Forbidden, match="does not verify"):  # artist_01's key, artist_00's name
        verified_artist(
            server.identity_public_keys, {}, ARTISTS[0], nonce, sign_registration(own.identity_key, ARTISTS[0], nonce)
        )
    with pytest.raises(Forbidden, match="does not verify"):  # a signature of another nonce (replayed)
        verified_artist(server.identity_public_keys, {}, ARTISTS[1], os.urandom(32), good)
    with pytest.raises(Forbidden, match="not in this federation's roster"):
        verified_artist(server.identity_public_keys, {}, "mallory", nonce, good)
    with pytest.raises(Duplicate, match="already bound"):
        verified_artist(server.identity_public_keys, {7: ARTISTS[1]}, ARTISTS[1], nonce, good)


def test_a_reply_claiming_another_artist_is_refused_and_changes_nothing(tmp_path, data):
    """The ServerApp's own servicer (no Flower): artist_01's node replies with a publication that
    claims to be artist_00's; refused whole, the round holds nothing; the same publication from
    artist_00's node is accepted (control)."""
    configs = machines(tmp_path / "run", data, refreshes=[0])  # round 1 opens with a prototype release
    config = load_server_config(configs.server)
    servicer = new_servicer(config, load_server_keys(config.keys))
    plan = servicer.coordinator.plan()
    assert (plan.round_id, plan.phase.value) == (1, "publish")
    width = servicer.coordinator.state.prototypes.shape[1]
    prototype = np.full((1, width), 1 / np.sqrt(width), dtype=np.float32)
    forged = ArtistReply(ARTISTS[0], publication=publication_message(1, Publication(np.array([0]), prototype)))
    refusals = apply_reply(servicer, ARTISTS[1], forged)
    assert len(refusals) == 1 and "claiming to be 'artist_00'" in refusals[0]
    assert servicer.coordinator._collect.items == {}
    assert apply_reply(servicer, ARTISTS[0], forged) == []
    assert set(servicer.coordinator._collect.items) == {ARTISTS[0]}
