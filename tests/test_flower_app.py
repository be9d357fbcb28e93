"""The federation as a Flower app (optional extra ``flower``): Flower's simulation runtime with 3
synthetic DP artists, real Opacus, real key files, the project's signed identities and reports.
Skipped with a reason when flwr is not installed (`pip install -e ".[flower]"`)."""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")
pytest.importorskip("ray", reason="Flower's simulation runtime needs ray (flwr[simulation])")

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.simulation import run_simulation

from fedstyle_secure.cli.main import main
from fedstyle_secure.federation.client import Publication
from fedstyle_secure.federation.rejections import Duplicate, Forbidden
from fedstyle_secure.flower.apps import client_app, server_app
from fedstyle_secure.flower.artist import SentCkksJournal, artist_from_config
from fedstyle_secure.flower.records import (
    PHASE_ACTIONS,
    ArtistReply,
    ServerMessage,
    registration_nonce,
    registration_reply,
)
from fedstyle_secure.flower.server import FlowerFederation, apply_reply, bind_nodes, verified_artist
from fedstyle_secure.retrieval.index import StyleIndex
from fedstyle_secure.secure.keys.keystore import load_artist_keys, load_server_keys
from fedstyle_secure.secure.masking.messages import SurvivorSet, UnmaskRequest, UnmaskResponse, parse_message
from fedstyle_secure.transport.artist.channel import publication_message
from fedstyle_secure.transport.artist.state import MASKING_SESSION_FILE, MaskingJournal, MaskingSessionStore
from fedstyle_secure.transport.auth import sign_registration
from fedstyle_secure.transport.config import load_server_config
from fedstyle_secure.transport.loopback import artist_folders, write_fresh_keys
from fedstyle_secure.transport.processes import MachineConfigs, TomlValue, federation_tables, write_machine_configs
from fedstyle_secure.transport.server.servicer import new_servicer

if TYPE_CHECKING:
    from flwr.supercore.run import Run

ARTISTS = ("artist_00", "artist_01", "artist_02")


@pytest.fixture
def ray_runtime():
    """Ray started while this process is quiet, before each simulation (tests that run one ask for it;
    the others need no Ray) (Flower shuts it down at the
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


def machines(
    work: Path, data: Path, secure: str = "none", epsilon: float = EPSILON, **federation: TomlValue
) -> MachineConfigs:
    """A server folder and one folder per artist, each with its own key bundle and TOML config
    (``epsilon`` inf: a federation without DP)."""
    keys = write_fresh_keys(work / "keys", ARTISTS)
    tables, server, client = federation_tables(ROUNDS, secure, epsilon, len(ARTISTS), quorum=len(ARTISTS))
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


# 74 s on an idle machine (33 s of it starting Ray in the fixture, which the timeout counts): the
# default 120 s hang guard fired once with other test processes sharing the two cores
@pytest.mark.timeout(300)
@pytest.mark.parametrize("secure", ["none", pytest.param("ckks", marks=pytest.mark.slow)])
@pytest.mark.usefixtures("ray_runtime")
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


@pytest.fixture
def outside_runtime(monkeypatch):
    """Flower Messages built outside a Flower runtime (the in-process FAKE grid) need a task identity."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)


@pytest.mark.usefixtures("outside_runtime")
def test_a_node_claiming_another_artists_identity_is_refused(tmp_path, data):
    """Node 2 holds artist_02's keys and claims artist_00: it is bound to no artist, the real
    artist_00 keeps its node, and the federation finishes with the two honest artists (quorum 2).
    The attack is on the registration, not on the runtime, so it runs over the in-process FAKE grid
    (the real ServerApp federation and ClientApps, no Ray) and without DP."""
    work = tmp_path / "run"
    configs = machines(work, data, epsilon=math.inf, quorum=2)
    client_configs = [configs.artists[a] for a in ARTISTS]
    config = load_server_config(configs.server)
    keys = load_server_keys(config.keys)
    grid = InProcessGrid(impostor_client_app(client_configs, impostor=2, victim=ARTISTS[0]), len(ARTISTS))
    federation = FlowerFederation(grid, new_servicer(config, keys), bind_nodes(grid, keys, 10.0))
    federation.run()
    binding = federation.binding
    assert sorted(binding.artists.values()) == list(ARTISTS[:2])
    (refused,) = binding.refusals.values()
    assert "does not verify under artist_00's identity key" in refused
    assert set(binding.refusals).isdisjoint(binding.artists)
    coordinator = federation.coordinator
    assert coordinator.failed is None and coordinator.state.round == ROUNDS + 1
    # the index holds the two honest artists; nothing was published under the impostor's claim
    assert sorted(StyleIndex.load(configs.server.parent / "index").artists) == list(ARTISTS[:2])


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


# ---------------------------------------------------------------- secagg / secagg+ and non-DP over Flower

DROPPED = ARTISTS[2]


def dropout_client_app(client_configs: list[Path], vectors: Path) -> ClientApp:
    """Honest ClientApps that copy each artist's packed round vector (from its masking store, right
    after it advertised keys) to ``vectors/<artist>.npy`` for the test, except that artist_02's
    ClientApp fails on its ``masked_input`` message (a node lost mid-protocol: keys and shares sent,
    no masked input)."""
    honest = client_app(client_configs)
    app = ClientApp()

    def handler(message: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        if partition == 2 and message.metadata.message_type == PHASE_ACTIONS["masked_input"]:
            raise RuntimeError("artist_02's node went away")
        reply = honest(message, context)
        if message.metadata.message_type == PHASE_ACTIONS["advertise"]:
            state = client_configs[partition].parent / "state"
            vectors.mkdir(exist_ok=True)
            (vectors / f"{ARTISTS[partition]}.npy").write_bytes(MaskingSessionStore(state).load()["vector"])
        return reply

    for message_type in [*PHASE_ACTIONS.values()]:
        category, action = message_type.split(".")
        (app.train(action) if category == "train" else app.query(action))(handler)
    app.query("register")(handler)
    return app


@pytest.mark.parametrize(
    ("secure", "epsilon"), [("secagg", math.inf), pytest.param("secagg+", EPSILON, marks=pytest.mark.slow)]
)
@pytest.mark.usefixtures("ray_runtime")
def test_flower_simulation_masks_the_round_and_survives_a_dropout(tmp_path, data, secure, epsilon):
    """Five Flower messages per masked round, the artists' masking sessions kept on disk between
    ClientApp processes; artist_02's node fails at ``masked_input``: the sum is the two survivors'
    vectors (artist_02's pairwise masks removed through its reconstructed key), the index and reports
    are published, and afterwards no artist's state folder holds a masking secret."""
    work = tmp_path / "run"
    configs = machines(work, data, secure, epsilon, quorum=2)
    client_configs = [configs.artists[a] for a in ARTISTS]
    finished: list[FlowerFederation] = []
    run_simulation(
        server_app=server_app(configs.server, done=finished.append),
        client_app=dropout_client_app(client_configs, tmp_path / "vectors"),
        num_supernodes=3,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 1}},
    )
    (federation,) = finished
    coordinator = federation.coordinator
    assert coordinator.failed is None and coordinator.state.round == ROUNDS + 1
    masked_rounds = [0, ROUNDS] if epsilon == math.inf else [ROUNDS]  # without DP the set-up round is masked too
    assert [r.split(": the ClientApp failed")[0] for r in federation.refusals] == [
        f"round {r} masked_input: {DROPPED}" for r in masked_rounds
    ]
    summed = coordinator.last_sum
    assert summed is not None and summed.round_id == ROUNDS
    assert (sorted(summed.contributors), list(summed.dropped)) == (list(ARTISTS[:2]), [DROPPED])
    vectors = {a: np.load(tmp_path / "vectors" / f"{a}.npy") for a in ARTISTS}
    expected = vectors[ARTISTS[0]] + vectors[ARTISTS[1]]  # what the two survivors masked, nothing of artist_02
    assert np.allclose(summed.total, expected, atol=1e-3) and not np.allclose(summed.total, expected + vectors[DROPPED])
    server_dir = configs.server.parent
    assert sorted(StyleIndex.load(server_dir / "index").artists) == list(ARTISTS)
    if epsilon < math.inf:
        assert coordinator.reports == {a: ROUNDS for a in ARTISTS}
        assert main(["audit", str(server_dir / "reports"), "--keys", str(work / "keys")]) == 0
    else:
        assert coordinator.reports == {} and not list((server_dir / "reports").rglob("round-*.json"))
    for artist in ARTISTS:  # the round is over: the masking secrets are gone, the journal remembers
        state = configs.artists[artist].parent / "state"
        stored = MaskingSessionStore(state).load()
        assert json.loads(stored["meta"])["session"] is None and set(stored) == {"meta"}
        assert stat.S_IMODE((state / MASKING_SESSION_FILE).stat().st_mode) == 0o600
        assert MaskingJournal(state).answered(ROUNDS) is (artist != DROPPED)


class InProcessGrid(Grid):
    """FAKE of Flower's ``Grid`` for the attack test: delivers each message to the real ClientApp in
    this process (node ``i + 1`` is partition ``i``), and remembers every message and reply.  Only
    ``get_node_ids`` and ``send_and_receive`` are used by the federation; the rest of Grid is refused."""

    def __init__(self, app: ClientApp, nodes: int) -> None:
        self.app, self.nodes = app, nodes
        self.exchanged: list[tuple[Message, Message]] = []

    def set_run(self, run: Run) -> None:
        raise NotImplementedError("the in-process grid has no run")

    @property
    def run(self) -> Run:
        raise NotImplementedError("the in-process grid has no run")

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        raise NotImplementedError("the federation builds its messages itself")

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("the in-process grid only sends and receives")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("the in-process grid only sends and receives")

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.nodes + 1))

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        replies = [self._deliver(message) for message in messages]
        self.exchanged.extend(zip(messages, replies))
        return replies

    def _deliver(self, message: Message) -> Message:
        node = message.metadata.dst_node_id
        context = Context(
            run_id=1, node_id=node, node_config={"partition-id": node - 1}, state=RecordDict(), run_config={}
        )
        return self.app(message, context)

    def sent(self, action: str, node: int) -> tuple[ServerMessage, ArtistReply]:
        """The federation's last message of type ``action`` to ``node`` and the artist's reply."""
        message, reply = next(
            (m, r)
            for m, r in reversed(self.exchanged)
            if m.metadata.message_type == action and m.metadata.dst_node_id == node
        )
        return ServerMessage.from_record(message.content), ArtistReply.from_record(reply.content)

    def replay(self, node: int, action: str, inbox: ServerMessage) -> ArtistReply:
        """Deliver ``inbox`` to ``node`` as a message of type ``action`` (not remembered)."""
        reply = self._deliver(Message(inbox.to_record(), dst_node_id=node, message_type=action))
        return ArtistReply.from_record(reply.content)


def revealed(reply: ArtistReply) -> tuple[set[str], set[str]]:
    """(owners of revealed self-mask seed shares, owners of revealed mask-key shares) of an unmask answer."""
    if reply.masking is None:
        return set(), set()
    response = parse_message(reply.masking.message)
    assert isinstance(response, UnmaskResponse)
    return {a for a, _ in response.seed_shares}, {a for a, _ in response.key_shares}


@pytest.mark.usefixtures("outside_runtime")
def test_replayed_masking_messages_cannot_make_an_artist_reveal_both_shares_of_a_peer(tmp_path, data):
    """A server replaying earlier phases' messages to the Flower artist, whose every message is a new
    start from its state folder, during and after a real secagg round over Flower messages (real
    servicer, real ClientApp, no DP).  Once artist_00 and artist_01 signed the survivor set, the
    server resends them the consistency message with a set without artist_02 (to get a second set
    signed); after the real unmask phase (where they revealed shares of artist_02's self-mask seed) it
    sends an unmask request listing artist_02 as dropped (for shares of its mask key: with both,
    artist_02's input would be exposed), the genuine unmask request again, and the earlier share and
    masked-input messages.  Every replay is refused (no masking message in the reply), the stored
    masking state does not change, and no artist ever revealed both shares of one peer."""
    configs = machines(tmp_path / "run", data, "secagg", math.inf)
    config = load_server_config(configs.server)
    keys = load_server_keys(config.keys)
    grid = InProcessGrid(client_app([configs.artists[a] for a in ARTISTS]), len(ARTISTS))
    federation = FlowerFederation(grid, new_servicer(config, keys), bind_nodes(grid, keys, 10.0))
    coordinator, nodes = federation.coordinator, {a: n for n, a in federation.binding.artists.items()}
    for _ in range(10):  # the real round 1 up to its unmask phase (all three survive)
        if coordinator.plan().phase.value == "unmask":
            break
        federation.run_phase()
    assert coordinator.plan().phase.value == "unmask" and federation.refusals == []
    stores = {a: MaskingSessionStore(configs.artists[a].parent / "state") for a in ARTISTS}

    def replay(artist: str, phase: str, change: Callable[[Any], Any] | None = None) -> ArtistReply:
        """Resend ``artist`` the server's last message of ``phase``, its masking message changed by ``change``."""
        inbox, _ = grid.sent(PHASE_ACTIONS[phase], nodes[artist])
        assert inbox.masking is not None
        if change is not None:
            inbox.masking.message = change(parse_message(inbox.masking.message)).to_bytes()
        return grid.replay(nodes[artist], PHASE_ACTIONS[phase], inbox)

    def without_dropped(shown: SurvivorSet) -> SurvivorSet:
        bitmap = bytes([shown.bitmap[0] & ~(1 << ARTISTS.index(DROPPED))])  # bit i: the i-th of the sorted roster
        return SurvivorSet(shown.round_id, shown.receiver, shown.roster_size, bitmap)

    before = {a: s.load() for a, s in stores.items()}
    for artist in ARTISTS[:2]:  # mid-session: a second survivor set to sign
        assert replay(artist, "consistency", without_dropped).masking is None, f"{artist} signed a second set"
    assert {a: s.load() for a, s in stores.items()} == before
    federation.run_phase()  # the real unmask phase
    assert coordinator.last_sum is not None and sorted(coordinator.last_sum.contributors) == list(ARTISTS)
    revealed_by = {a: revealed(grid.sent(PHASE_ACTIONS["unmask"], nodes[a])[1]) for a in ARTISTS}
    assert all(seeds == set(ARTISTS) and not keys_ for seeds, keys_ in revealed_by.values())

    before = {a: s.load() for a, s in stores.items()}
    for artist in ARTISTS[:2]:  # after the session: unmask requests again, then the earlier phases

        def dropped(asked: UnmaskRequest) -> UnmaskRequest:
            return UnmaskRequest(asked.round_id, asked.receiver, tuple(ARTISTS[:2]), (DROPPED,), asked.signatures)

        for change in (dropped, None):
            reply = replay(artist, "unmask", change)
            seeds, keys_ = revealed(reply)
            revealed_by[artist] = (revealed_by[artist][0] | seeds, revealed_by[artist][1] | keys_)
            assert reply.masking is None, f"{artist} answered a second unmask request"
        for phase in ("consistency", "masked_input", "share"):
            assert replay(artist, phase).masking is None, f"{artist} answered a replayed {phase} message"
    assert all(not (seeds & keys_) for seeds, keys_ in revealed_by.values())
    assert {a: s.load() for a, s in stores.items()} == before  # the replays changed nothing
    federation.run()  # and the honest run still finishes
    assert coordinator.failed is None and coordinator.finished
    assert sorted(StyleIndex.load(configs.server.parent / "index").artists) == list(ARTISTS)


def test_an_artists_messages_are_handled_one_at_a_time(tmp_path):
    """Two ClientApp processes of one artist never act on its state at once (each would act on the
    same stored masking phase): while one holds the state folder's lock, another cannot take it."""
    import fcntl

    from fedstyle_secure.transport.artist.state import LOCK_FILE, one_artist_process

    def free() -> bool:
        fd = os.open(tmp_path / "state" / LOCK_FILE, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    with one_artist_process(tmp_path / "state", wait=True):
        assert not free()
        assert stat.S_IMODE((tmp_path / "state" / LOCK_FILE).stat().st_mode) == 0o600
    assert free()
