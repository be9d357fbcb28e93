"""A dishonest server and a malicious artist against the Flower app, beyond the masking session
(:mod:`tests.test_flower_masking_attacks`): a CKKS decryption asked for again, a plan switching the
secure mode mid-run, a decrypt message with incomplete commitments, and an artist's reply holding
values of the wrong type.  Real servicer, real ClientApp (a new one per message, from the artist's
state folder), real crypto, over the in-process FAKE grid of :mod:`tests.test_flower_app`."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.client import Publication
from fedstyle_secure.federation.masking_session import TAG_BITS
from fedstyle_secure.federation.rejections import Malformed
from fedstyle_secure.flower.apps import ArtistRefused, client_app
from fedstyle_secure.flower.records import CLAIM, PHASE_ACTIONS, RECORD, REPORTS, ArtistReply, ServerMessage
from fedstyle_secure.flower.server import FlowerFederation, apply_reply, bind_nodes, run_federation
from fedstyle_secure.retrieval.index import StyleIndex
from fedstyle_secure.secure.ckks import decryption as ckks_decryption
from fedstyle_secure.secure.ckks.decryption import COMMITTEE_SIZE, Attempt, decryption_committee
from fedstyle_secure.secure.keys import pki
from fedstyle_secure.secure.keys.keystore import load_server_keys, revoke
from fedstyle_secure.transport.artist.channel import publication_message
from fedstyle_secure.transport.config import load_server_config
from fedstyle_secure.transport.server import servicer as servicer_module
from fedstyle_secure.transport.server.servicer import new_servicer
from fedstyle_secure.transport.wire import pb
from tests.fakes import LockProbingVector
from tests.test_flower_app import ARTISTS, InProcessGrid, machines, outside_runtime  # noqa: F401 (fixture)
from tests.test_flower_masking_attacks import Run, copied, refused_saying


@pytest.mark.usefixtures("outside_runtime")
def test_a_decryption_asked_for_again_is_the_same_bytes_and_incomplete_commitments_get_none(tmp_path, data):
    """The flooding noise of a committee member's decryption is all that keeps the server from
    solving for the shared CKKS key; N independent draws of one sum would let it average that noise
    down by sqrt(N).  Both members' releases are the same bytes, and so is every answer when the
    server replays a member's second decrypt message (its commitments complete) to new ClientApp
    processes (fails with fresh noise per release).  A copy with another member's commitment
    withheld gets no decryption, at once, instead of a wait spinning until a deadline the server
    chose."""
    run = Run(tmp_path / "run", data, "ckks")
    run.until("decrypt")
    member, other = run.federation.coordinator.plan().decryptors
    # the contribute message replayed to a new process: the same ciphertext, never a second one
    # trained and encrypted again for the round (a third helper's attack; it was, each time)
    contribute, sent = run.grid.sent(PHASE_ACTIONS["contribute"], run.nodes[member])
    assert sent.upload is not None
    again = run.deliver(member, "contribute", copied(contribute)).upload
    assert again is not None and again[1] == sent.upload[1] and again[0].sha256 == sent.upload[0].sha256
    run.federation.run_phase()  # the real decrypt phase: the commit message, then the decrypt message
    assert run.federation.refusals == []
    inbox, genuine = run.grid.sent(PHASE_ACTIONS["decrypt"], run.nodes[member])
    assert genuine.upload is not None and genuine.upload[0].kind == pb.PAYLOAD_KIND_DECRYPTED_AGGREGATE
    other_upload = run.grid.sent(PHASE_ACTIONS["decrypt"], run.nodes[other])[1].upload
    assert other_upload is not None and other_upload[1] == genuine.upload[1]

    for _ in range(2):
        replayed = run.deliver(member, "decrypt", copied(inbox))
        assert replayed.upload is not None and replayed.upload[1] == genuine.upload[1]

    incomplete = copied(inbox)
    assert incomplete.commits is not None
    own = [c for c in incomplete.commits.commits if c.artist_id == member]
    del incomplete.commits.commits[:]
    incomplete.commits.commits.extend(own)
    incomplete.plan.phase_deadline_unix = time.time() + 60
    started = time.monotonic()
    assert run.deliver(member, "decrypt", incomplete).upload is None
    assert time.monotonic() - started < 30


@pytest.mark.usefixtures("outside_runtime")
def test_a_plan_switching_the_secure_mode_mid_run_is_refused(tmp_path, data, caplog):
    """After the target masked its round-1 input, the server sends it a round-1 contribute message
    whose plan says ``secure_mode = "none"``: uploading would hand the server the very vector the
    artist masked (or, without DP, its raw update).  The run's first plan pinned ``secagg``; the plan
    is refused and nothing is uploaded (fails without the pin).  Nor does keeping the mode's name
    help: a ``contribute`` plan under ``secagg`` is a phase that mode does not have (a second
    helper's attack; it uploaded in the clear before the check)."""
    run = Run(tmp_path / "run", data)
    run.until("consistency", round_id=1)  # the target's masked input of round 1 went out
    advertise, _ = run.grid.sent(PHASE_ACTIONS["advertise"], run.nodes[ARTISTS[0]])
    crafted = copied(advertise)
    crafted.plan.phase, crafted.plan.secure_mode = "contribute", "none"
    crafted.plan.ClearField("masking")

    with refused_saying(caplog, "secure_mode 'secagg' -> 'none'"):
        run.deliver(ARTISTS[0], "contribute", crafted)
    crafted.plan.secure_mode = "secagg"  # the pinned mode, with a phase it does not have
    with refused_saying(caplog, "phase 'contribute' under secure_mode 'secagg'"):
        run.deliver(ARTISTS[0], "contribute", crafted)


@pytest.mark.usefixtures("outside_runtime")
def test_a_dp_plan_changed_between_messages_retires_the_artist(tmp_path, data):
    """The server changes the announced DP parameters (a smaller noise multiplier) from one message to
    the next.  A gRPC artist compares plans within its process and retires; a Flower artist is a new
    process per message, so it compares the plan with the one stored with its ledger: it retires,
    saying why, and uploads nothing (fails when the stored plan's difference only logged a warning)."""
    run = Run(tmp_path / "run", data, "none", 8.0)
    run.until("contribute", round_id=1)
    run.federation.run_phase()
    contribute, genuine = run.grid.sent(PHASE_ACTIONS["contribute"], run.nodes[ARTISTS[0]])
    assert genuine.upload is not None and genuine.withdrawal is None
    changed = copied(contribute)
    assert changed.broadcast is not None  # a contribute message carries the round's broadcast
    changed.plan.round_id = changed.broadcast.round_id = 2
    changed.plan.dp.noise_multiplier = 0.3

    reply = run.deliver(ARTISTS[0], "contribute", changed)

    assert reply.upload is None and reply.withdrawal is not None
    assert "changed the federation's DP plan" in reply.withdrawal.reason


def _replying_badly(honest: ClientApp, bad: list) -> ClientApp:
    """Artist 1's ClientApp answers its contribute message with ``reports`` holding ``bad`` items
    (a ConfigRecord may hold lists of str, int, float or bytes)."""
    app = ClientApp()

    def handler(message: Message, context: Context) -> Message:
        contribute = message.metadata.message_type == PHASE_ACTIONS["contribute"]
        if contribute and int(context.node_config["partition-id"]) == 1:
            return Message(RecordDict({RECORD: ConfigRecord({CLAIM: ARTISTS[1], REPORTS: bad})}), reply_to=message)
        return honest(message, context)

    for message_type in [*PHASE_ACTIONS.values(), "query.register"]:
        category, action = message_type.split(".")
        (app.train(action) if category == "train" else app.query(action))(handler)
    return app


@pytest.mark.usefixtures("outside_runtime")
@pytest.mark.parametrize("bad", [["a string"], [2**40]])
def test_an_artist_reply_of_the_wrong_item_type_is_refused_and_the_run_finishes(tmp_path, data, bad):
    """A report list of strings made the server raise a TypeError out of its phase loop (the run
    died); an int ``2**40`` made it try to allocate a TiB (``bytes(n)``).  Both are refused as one
    artist's unreadable reply and the two honest artists finish the run (quorum 2)."""
    configs = machines(tmp_path / "run", data, "none", math.inf, quorum=2)
    config = load_server_config(configs.server)
    keys = load_server_keys(config.keys)
    grid = InProcessGrid(_replying_badly(client_app([configs.artists[a] for a in ARTISTS]), bad), len(ARTISTS))
    federation = FlowerFederation(grid, new_servicer(config, keys), bind_nodes(grid, keys, 10.0))

    federation.run()

    assert federation.coordinator.finished and not federation.coordinator.failed
    assert any(f"{ARTISTS[1]}: unreadable reply" in r and "not bytes" in r for r in federation.refusals)


@pytest.mark.usefixtures("outside_runtime")
def test_a_two_participant_masking_session_gets_no_keys_from_an_artist_with_a_floor(tmp_path, data, caplog):
    """The server starts a second masking session of round 1 with two participants (it may claim the
    third retired), so the sum it decodes, and broadcasts, is the target's input plus one other's.  A
    target whose ``client.min_quorum`` is 3 advertises no keys and trains nothing for it (fails
    without the floor); the other artist, at the default floor 2, takes the same crafted plan, so
    nothing else about it is refused."""
    run = Run(tmp_path / "run", data)
    run.until("advertise", round_id=1)
    run.federation.run_phase()  # the genuine session of three: everyone advertised
    target, other = ARTISTS[0], ARTISTS[1]
    config = run.configs.artists[target]
    config.write_text(config.read_text().replace("[client]\n", "[client]\nmin_quorum = 3\n", 1))
    replies = {}
    for artist in (target, other):
        crafted = copied(run.grid.sent(PHASE_ACTIONS["advertise"], run.nodes[artist])[0])
        crafted.plan.masking.session_id = (1 << TAG_BITS) | 0xBEEF  # a second session of round 1
        del crafted.plan.participants[:]
        crafted.plan.participants.extend([target, other])
        with caplog.at_level("WARNING"):
            replies[artist] = run.deliver(artist, "advertise", crafted)
    assert replies[target].masking is None
    assert replies[other].masking is not None
    assert "can reveal a sum of only 2 inputs, below my floor 3 (client.min_quorum)" in caplog.text


@pytest.mark.usefixtures("outside_runtime")
def test_a_ckks_contributor_whose_floor_exceeds_the_committee_size_withdraws(tmp_path, data):
    """The third artist's ``client.min_quorum = 3`` is above the announced committee size 2, and under
    ``ckks`` the committee size is what bounds every combination of a round's decrypted sums (two
    nested sets decrypted by disjoint committees differ by as few as ``K`` artists): it signs no
    contribution and withdraws from the run (signed; the committee size is a run parameter), while
    the two others contribute (fails without the check: it contributed)."""
    run = Run(tmp_path / "run", data, "ckks")
    run.until("contribute")
    coordinator = run.federation.coordinator
    assert coordinator.ckks is not None
    at = Attempt(coordinator.plan().round_id, coordinator.attempt, coordinator.ckks.fingerprint, COMMITTEE_SIZE)
    strict = next(a for a in ARTISTS if a not in decryption_committee(at, ARTISTS))
    config = run.configs.artists[strict]
    config.write_text(config.read_text().replace("[client]\n", "[client]\nmin_quorum = 3\n", 1))
    run.federation.run_phase()  # contribute: the two others sign; the strict one withdraws
    for artist in ARTISTS:
        upload = run.grid.sent(PHASE_ACTIONS["contribute"], run.nodes[artist])[1].upload
        assert (upload is None) is (artist == strict), artist
    assert "committee size 2 is below my floor 3" in coordinator.state.retired[strict]


@pytest.mark.usefixtures("outside_runtime")
def test_a_dp_flower_artist_declining_the_committee_size_opens_no_privacy_state(tmp_path, data):
    """A Flower artist opened its privacy state on every message before it looked at the committee
    size, so a DP artist declining the run was charged its planning count (a gRPC artist was not; a
    red team, seventeenth review).  It now declines first: no planning size, no charge, no report;
    its signed withdrawal says it reported nothing (fails without the order: a count is charged)."""
    from fedstyle_secure.transport.artist.state import STATE_FILE
    from fedstyle_secure.transport.artist.withdrawal import own_reports_dir
    from fedstyle_secure.transport.config import load_client_config

    run = Run(tmp_path / "run", data, "ckks", 8.0)
    strict = ARTISTS[2]
    config = run.configs.artists[strict]
    config.write_text(config.read_text().replace("[client]\n", "[client]\nmin_quorum = 3\n", 1))
    for _ in range(6):
        if strict in run.federation.coordinator.state.retired:
            break
        run.federation.run_phase()
    assert "committee size 2 is below my floor 3" in run.federation.coordinator.state.retired[strict]
    assert not (run.state[strict] / STATE_FILE).exists()  # no privacy state: no planning size drawn
    client = load_client_config(config)
    own = own_reports_dir(client.reports_dir, client.state_dir)
    assert own is not None
    assert not list((own / strict).glob("round-*.json"))
    assert (own / strict / "withdrawal.json").exists()  # kept: it acts in the run no more


def flower_runtime_reply(run: Run, artist: str, action: str, inbox: ServerMessage) -> Message:
    """Deliver ``inbox`` to the artist's real ClientApp as Flower's runtime does: an exception the
    ClientApp raises becomes the reply's ``Error``, whose reason is ``str(type(ex)) + ":<'" + str(ex) +
    "'>"`` (flwr 1.42, ``supernode/runtime/run_clientapp.py``), and that reply goes to the ServerApp."""
    from flwr.app import Error
    from flwr.common.constant import ErrorCode

    node = run.nodes[artist]
    message = Message(inbox.to_record(), dst_node_id=node, message_type=PHASE_ACTIONS[action])
    context = Context(run_id=1, node_id=node, node_config={"partition-id": node - 1}, state=RecordDict(), run_config={})
    try:
        return run.grid.app(message, context)
    except Exception as ex:  # what Flower's runtime does with it
        reason = str(type(ex)) + ":<'" + str(ex) + "'>"
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)


@pytest.mark.usefixtures("outside_runtime")
@pytest.mark.parametrize("change", ["epsilon", "delta"])
def test_what_a_flower_artist_refuses_with_reaches_the_server_without_its_detail(tmp_path, data, change):
    """A Flower DP artist rebuilds its privacy state from its folder for every message.  A server
    announcing another DP target than the one its ledger enforces made it raise an error naming the
    ledger's number of artworks, and Flower handed that text to the ServerApp: the portfolio size its
    reports hide behind a commitment (red-team review, 2026-11-30).  Whatever an artist's ClientApp
    raises now reaches the server as one fixed refusal; the detail stays in the artist's log."""
    from fedstyle_secure.flower.apps import REFUSAL
    from fedstyle_secure.transport.artist.state import ArtistStateStore

    run = Run(tmp_path / "run", data, "none", 8.0)
    target = ARTISTS[0]
    toml = run.configs.artists[target]  # no own budget_epsilon: the federation's target is the artist's
    toml.write_text("\n".join(line for line in toml.read_text().splitlines() if "budget_epsilon" not in line))
    run.until("contribute", round_id=1)
    run.federation.run_phase()  # round 1 trained and charged: the ledger is on the artist's disk
    contribute, genuine = run.grid.sent(PHASE_ACTIONS["contribute"], run.nodes[target])
    assert genuine.upload is not None
    stored = ArtistStateStore(run.state[target]).load()
    assert stored is not None and stored.ledger is not None
    crafted = copied(contribute)
    assert crafted.broadcast is not None
    crafted.plan.round_id = crafted.broadcast.round_id = 2
    if change == "epsilon":
        crafted.plan.dp.epsilon_budget = 7.5
    else:
        crafted.plan.dp.delta = 1e-9
    reply = flower_runtime_reply(run, target, "contribute", crafted)
    assert reply.has_error()
    assert reply.error.reason == f"{type(ArtistRefused(REFUSAL))}:<'{REFUSAL}'>"
    assert str(stored.ledger["dataset_size"]) not in reply.error.reason


@pytest.mark.usefixtures("outside_runtime")
def test_a_flower_artist_without_dp_publishes_once_per_round_whatever_the_server_resends(tmp_path, data):
    """A Flower artist is a new process per message, and without DP nothing kept the round's
    publication: a server resending the final publish message with other broadcast models (every
    trained entry finite and inside the contribution range) got a fresh exact prototype -- the
    direction of the sum of the artist's embeddings under a model of its choice -- for every message
    (red-team review, 2026-11-30: 5 different ones for one round).  The artist now resends the one
    it made."""
    from fedstyle_secure.federation.strategy import CONTRIBUTION_RANGE
    from fedstyle_secure.transport.wire import from_tensor, to_tensor

    target = ARTISTS[0]
    run = Run(tmp_path / "run", data, "secagg", math.inf)
    run.until("publish", round_id=2)  # the final publication (1 training round): its broadcast has the model
    run.federation.run_phase()
    publish, genuine = run.grid.sent(PHASE_ACTIONS["publish"], run.nodes[target])
    assert genuine.publication is not None and publish.broadcast is not None
    params = from_tensor(publish.broadcast.params, "params")
    rng = np.random.default_rng(0)
    released = [from_tensor(genuine.publication.prototypes, "prototypes")]
    for _ in range(3):
        probe = copied(publish)
        assert probe.broadcast is not None
        crafted = np.clip(params + rng.normal(0, 0.5, params.shape), *CONTRIBUTION_RANGE).astype(np.float32)
        probe.broadcast.params.CopyFrom(to_tensor(crafted))
        reply = run.deliver(target, "publish", probe)
        assert reply.publication is not None
        released.append(from_tensor(reply.publication.prototypes, "prototypes"))
    assert len({r.tobytes() for r in released}) == 1  # one publication of the round, resent


@pytest.mark.usefixtures("outside_runtime")
def test_a_flower_artist_without_dp_takes_the_feature_standardisation_once(tmp_path, data):
    """The gRPC artist applies the set-up round's feature standardisation once; a Flower artist, a new
    process per message, applied whatever standardisation each message's broadcast carried, so a
    server could re-scale the artist's inputs for every message (red-team review, 2026-12-01).  It
    now keeps, with its model, that it took one, and ignores any other: here the server doubles the
    std before the final publication."""
    from fedstyle_secure.transport.artist.state import ArtistStateStore

    target = ARTISTS[0]
    run = Run(tmp_path / "run", data, "secagg", math.inf)

    def stored_std() -> np.ndarray:
        snapshot = ArtistStateStore(run.state[target]).load()
        assert snapshot is not None
        return next(array for name, array in snapshot.model.items() if name.endswith("input_std"))

    run.until("publish", round_id=2)  # the training round is done: the artist took the set-up round's std
    coordinator = run.federation.servicer.coordinator
    assert coordinator.standardisation is not None
    mean, std = coordinator.standardisation
    np.testing.assert_allclose(stored_std(), std, rtol=1e-6)
    coordinator.standardisation = (mean, 2.0 * std)  # valid (above the floor), and another
    run.federation.run_phase()  # the final publication's broadcast carries it
    publish, reply = run.grid.sent(PHASE_ACTIONS["publish"], run.nodes[target])
    assert reply.publication is not None and publish.broadcast is not None
    np.testing.assert_allclose(stored_std(), std, rtol=1e-6)  # the artist's inputs kept their scale


@pytest.mark.usefixtures("outside_runtime")
def test_a_flower_reply_s_reports_are_checked_before_the_server_lock(tmp_path, data, monkeypatch):
    """A crafted report's checks are the expensive part (a 4 MiB one held the gRPC server's lock for
    100 s before the eighth review); the Flower server applied a whole reply under the servicer's
    lock, reports included.  They are now checked before it, like ``UploadEpsilonReport``, and a
    refused report does not stop the rest of the reply.  The check is a FAKE that asks another thread
    to take the lock while it runs, then refuses the report."""
    configs = machines(tmp_path / "run", data, "none", math.inf, quorum=2)
    config = load_server_config(configs.server)
    servicer = new_servicer(config, load_server_keys(config.keys))
    lock_free: list[bool] = []

    def try_the_lock() -> None:
        taken = servicer._cond.acquire(timeout=1.0)
        if taken:
            servicer._cond.release()
        lock_free.append(taken)

    def lock_probing_check(*args, **kwargs):  # FAKE checked_report
        probe = threading.Thread(target=try_the_lock)
        probe.start()
        probe.join()
        raise Malformed("crafted report (fake check)")

    monkeypatch.setattr(servicer_module, "checked_report", lock_probing_check)
    reply = ArtistReply(ARTISTS[0], reports=[pb.EpsilonReport(round_id=0, artist_id=ARTISTS[0], signed_json=b"{}")])
    refusals = apply_reply(servicer, ARTISTS[0], reply)
    assert lock_free == [True], "the report was checked while the server's lock was held"
    assert refusals == [f"{ARTISTS[0]}: crafted report (fake check)"]


@pytest.mark.usefixtures("outside_runtime")
def test_a_flower_reply_s_ckks_ciphertext_is_checked_before_the_server_lock(tmp_path, data, monkeypatch):
    """A CKKS ciphertext's checks take 0.1-0.2 s of TenSEAL; the Flower server ran them under the
    servicer's lock, so a node resending crafted ones held it.  They now run before it, as on the
    gRPC server (``checked_payload``).  The real TenSEAL load runs inside a spy that asks another
    thread to take the lock first."""
    configs = machines(tmp_path / "run", data, "ckks", math.inf, quorum=2)
    config = load_server_config(configs.server)
    servicer = new_servicer(config, load_server_keys(config.keys))
    LockProbingVector.lock, LockProbingVector.free = servicer._cond, []
    monkeypatch.setattr(ckks_decryption, "EncryptedVector", LockProbingVector)
    header = pb.PayloadHeader(round_id=servicer.coordinator.plan().round_id, kind=pb.PAYLOAD_KIND_CKKS_CIPHERTEXT)
    refusals = apply_reply(servicer, ARTISTS[0], ArtistReply(ARTISTS[0], upload=(header, b"crafted")))
    assert LockProbingVector.free == [True], "the ciphertext was checked while the server's lock was held"
    assert len(refusals) == 1 and "contribution of" in refusals[0] and "refused" in refusals[0], refusals


class UnreachableGrid(InProcessGrid):
    """FAKE grid that fails the test if the federation reaches it at all."""

    def __init__(self) -> None:  # no ClientApp: no message may be sent
        self.exchanged = []

    def get_node_ids(self):
        raise AssertionError("the Flower federation reached the grid")


def test_a_revocation_list_under_flower_is_refused_not_ignored(tmp_path, data):
    """`fedstyle keys revoke --artist` plus ``crl`` in ``[server]`` revokes a TLS certificate, which only
    `fedstyle server`'s calls check; a Flower node proves the artist's identity key instead, so the
    revoked artist took part unhindered. A configured CRL is now refused before any node is reached."""
    configs = machines(tmp_path / "run", data, "none", math.inf, quorum=2)
    config = load_server_config(configs.server)
    crl = tmp_path / "crl.pem"
    revoke(tmp_path / "run" / "keys", pki.Role.ARTIST, ARTISTS[2], crl)  # the administrator's full key set
    config = replace(config, crl=crl)
    with pytest.raises(ConfigError, match=r"server\.crl .*Flower node proves an artist's Ed25519 identity key"):
        run_federation(UnreachableGrid(), config, load_server_keys(config.keys))


def _claiming(claim: str) -> ClientApp:
    """A node's ClientApp answering the registration with ``claim`` (and a signature of nothing)."""
    from fedstyle_secure.flower.records import SIGNATURE

    app = ClientApp()

    @app.query("register")
    def handler(message: Message, context: Context) -> Message:
        return Message(RecordDict({RECORD: ConfigRecord({CLAIM: claim, SIGNATURE: b"0" * 64})}), reply_to=message)

    return app


@pytest.mark.usefixtures("outside_runtime")
def test_a_node_s_huge_registration_claim_is_logged_and_kept_cut(tmp_path, caplog):
    """A node claiming a 100,000-character artist id was refused with the claim quoted whole, into
    the server's log and its refusals (red-team review, 2026-12-01); both now hold a bounded part."""
    from fedstyle_secure.transport.loopback import write_fresh_keys

    keys = load_server_keys(write_fresh_keys(tmp_path / "keys", ARTISTS))
    caplog.set_level("INFO", logger="fedstyle_secure.flower.server")
    binding = bind_nodes(InProcessGrid(_claiming("m" * 100_000), 1), keys, 10.0)
    assert binding.artists == {}
    (refusal,) = binding.refusals.values()
    assert refusal.startswith("not in this federation's roster: 'mmm") and "cut at 2000 of 100" in refusal
    assert len(refusal) < 2_200
    assert caplog.records and max(len(r.getMessage()) for r in caplog.records) < 2_400


@pytest.mark.usefixtures("outside_runtime")
def test_an_error_quoting_a_huge_message_is_logged_cut_on_both_sides(tmp_path, data, caplog, monkeypatch):
    """An error raised while handling a peer's message was logged with ``log.exception``, its text
    (which may quote the message) whole: on the server for a reply it could not handle, on the
    artist for a server message it refused.  Both logs now hold the traceback with the text cut.
    The errors are FAKE (monkeypatched handlers raising a 100,000-character text): what is tested is
    what the real ServerApp and ClientApp log about them."""
    from fedstyle_secure.flower import apps, server

    run = Run(tmp_path / "run", data, "none", math.inf)
    huge = "q" * 100_000

    def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError(huge)

    caplog.set_level("INFO")
    monkeypatch.setattr(server, "apply_reply", failing)
    phase = run.federation.coordinator.plan().phase.value
    run.federation.run_phase()
    assert any("reply could not be handled" in r and "cut at 2000 of" in r for r in run.federation.refusals)
    monkeypatch.setattr(apps, "act_on_phase", failing)
    inbox, _ = run.grid.sent(PHASE_ACTIONS[phase], run.nodes[ARTISTS[0]])
    assert flower_runtime_reply(run, ARTISTS[0], phase, inbox).has_error()
    logged = [r.getMessage() for r in caplog.records]
    assert any("reply could not be handled\nTraceback" in m and "cut at 2000" in m for m in logged)
    assert any(m.startswith(f"refused a {PHASE_ACTIONS[phase]} message\nTraceback") for m in logged)
    assert max(map(len, logged)) < 6_000


@pytest.mark.parametrize("scale", [0.0, 1e-30, 1e30])  # 1e-30 and 1e30: float32 squares under- or overflow
@pytest.mark.usefixtures("outside_runtime")
def test_one_artists_zero_publication_cannot_make_the_published_index_unloadable(tmp_path, data, monkeypatch, scale):
    """Seventeenth review, second red team: the index loader refuses an all-zero prototype row, and the
    server accepted an all-zero publication (finite, right shape), so one malicious artist made the
    federation's published index unloadable for every buyer; a third found that rows of 1e-30 or 1e30
    (finite, non-zero) normalise to zero in float32.  The server now refuses any publication that does
    not normalise to unit length."""
    malicious = ARTISTS[2]
    run = Run(tmp_path / "run", data, "none")
    grid, node = run.grid, run.nodes[malicious]
    genuine_deliver = grid._deliver

    def deliver(message):
        reply = genuine_deliver(message)
        if message.metadata.dst_node_id == node:
            answer = ArtistReply.from_record(reply.content)
            if answer.publication is not None:  # the malicious artist publishes an all-zero prototype
                rows = np.asarray(answer.publication.artist_rows, dtype=np.int64)
                width = len(answer.publication.prototypes.shape) and answer.publication.prototypes.shape[-1]
                zeros = Publication(artist_rows=rows, prototypes=np.full((len(rows), width), scale, np.float32))
                answer.publication = publication_message(answer.publication.round_id, zeros)
                reply.content = answer.to_record()
        return reply

    monkeypatch.setattr(grid, "_deliver", deliver)
    for _ in range(30):
        if run.federation.coordinator.finished:
            break
        run.federation.run_phase()
    index_dir = run.configs.server.parent / "index"
    if not (index_dir / "index.json").exists():  # the zero publication was refused (quorum 3 of 3: the run stops)
        assert run.federation.coordinator.failed is not None
        return
    try:
        index = StyleIndex.load(index_dir)
    except Exception as exc:
        raise AssertionError(
            f"one artist's all-zero publication was accepted and the federation's published index is now "
            f"unloadable for every buyer: {exc}"
        ) from exc
    assert malicious not in index.artists or np.linalg.norm(index.prototypes, axis=1).min() > 0
