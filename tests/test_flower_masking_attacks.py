"""A dishonest server attacking the Flower artist's masking session between messages (every message is a
new ClientApp start from the artist's state folder): forged, reordered and misaddressed phase messages,
a later round's message followed by an earlier round's plan, a corrupt stored session.  Real servicer,
real ClientApp, real masking crypto over the in-process FAKE grid of :mod:`tests.test_flower_app`
(no Ray, no DP).  Each attack must be refused with no change to what the artist stored."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the Flower app needs the optional extra: pip install -e '.[flower]'")

from fedstyle_secure.federation.masking_session import session_id
from fedstyle_secure.flower.apps import REFUSAL, ArtistRefused, client_app
from fedstyle_secure.flower.records import PHASE_ACTIONS, ArtistReply, ServerMessage
from fedstyle_secure.flower.server import FlowerFederation, bind_nodes
from fedstyle_secure.secure.keys.keystore import load_server_keys
from fedstyle_secure.secure.masking.messages import ShareDelivery, SurvivorSet, parse_message
from fedstyle_secure.transport.artist.state import MASKING_SESSION_FILE, MaskingSessionStore
from fedstyle_secure.transport.config import load_server_config
from fedstyle_secure.transport.server.servicer import new_servicer
from fedstyle_secure.transport.wire import pb
from tests.test_flower_app import ARTISTS, InProcessGrid, machines, outside_runtime  # noqa: F401 (fixture)

TARGET = ARTISTS[0]


class Run:
    """A run of the 3 artists over the FAKE grid (secagg without DP unless ``secure`` and ``epsilon``
    say otherwise), driven phase by phase."""

    def __init__(self, work: Path, data: Path, secure: str = "secagg", epsilon: float = math.inf) -> None:
        self.configs = machines(work, data, secure, epsilon)
        config = load_server_config(self.configs.server)
        keys = load_server_keys(config.keys)
        self.grid = InProcessGrid(client_app([self.configs.artists[a] for a in ARTISTS]), len(ARTISTS))
        self.federation = FlowerFederation(self.grid, new_servicer(config, keys), bind_nodes(self.grid, keys, 10.0))
        self.nodes = {a: n for n, a in self.federation.binding.artists.items()}
        self.state = {a: self.configs.artists[a].parent / "state" for a in ARTISTS}

    def until(self, phase: str, round_id: int | None = None) -> None:
        """Run the real phases until the coordinator's plan is ``phase`` (of ``round_id`` if given; not yet sent)."""
        for _ in range(12):
            plan = self.federation.coordinator.plan()
            if plan.phase.value == phase and round_id in (None, plan.round_id):
                assert self.federation.refusals == []
                return
            self.federation.run_phase()
        raise AssertionError(f"the run never reached phase {phase!r}")

    def pending(self) -> dict[str, ServerMessage]:
        """The server's genuine messages of the current masking phase, built but not delivered."""
        federation, servicer = self.federation, self.federation.servicer
        with servicer._cond:
            plan, wire = federation.coordinator.plan(), servicer._plan_message()
            messages = federation._masking_messages(plan, wire, federation._nodes_of(plan.participants))
        return {federation.binding.artists[n]: m for n, m in messages.items()}

    def deliver(self, artist: str, phase: str, inbox: ServerMessage) -> ArtistReply:
        return self.grid.replay(self.nodes[artist], PHASE_ACTIONS[phase], inbox)

    def stored(self, artist: str) -> dict[str, bytes]:
        return MaskingSessionStore(self.state[artist]).load()


@contextlib.contextmanager
def refused_saying(caplog: pytest.LogCaptureFixture, words: str) -> Iterator[None]:
    """The artist's ClientApp refuses the message: the ServerApp gets only :data:`REFUSAL` (Flower
    hands it an exception's text), and ``words`` (a regex) are in the artist's own log."""
    with caplog.at_level(logging.ERROR, logger="fedstyle_secure.flower.apps"), pytest.raises(ArtistRefused) as refused:
        yield
    assert str(refused.value) == REFUSAL
    assert re.search(words, caplog.text), caplog.text


def copied(inbox: ServerMessage) -> ServerMessage:
    return ServerMessage.from_record(inbox.to_record())


def masking(inbox: ServerMessage) -> pb.MaskingDownload:
    """The server's masking message in ``inbox`` (a masking phase's message always carries one)."""
    assert inbox.masking is not None
    return inbox.masking


@pytest.mark.usefixtures("outside_runtime")
def test_forged_reordered_and_misaddressed_masking_messages_are_refused_and_change_nothing(tmp_path, data):
    """Mid-round (the artists hold their session on disk), the server sends the target: another artist's
    share delivery, its own delivery under another session id, a survivor set that drops the target
    itself, a survivor set addressed to another artist, and the survivor set as an unmask message.
    Every one is refused (no masking message in the reply) and the stored session is unchanged; the
    genuine messages are then answered (the refusals left the session usable), and once the round is
    unmasked the store holds no secret of it."""
    run = Run(tmp_path / "run", data)
    run.until("masked_input")
    genuine = run.pending()
    before = run.stored(TARGET)
    assert set(before) >= {"meta", "session_vector", "session_plan"}

    other = genuine[ARTISTS[1]]  # the delivery of another artist's shares
    assert isinstance(parse_message(masking(other).message), ShareDelivery)
    assert run.deliver(TARGET, "masked_input", copied(other)).masking is None
    other_session = copied(genuine[TARGET])
    other_session.plan.masking.session_id += 1
    assert run.deliver(TARGET, "masked_input", other_session).masking is None
    assert run.stored(TARGET) == before

    run.federation.run_phase()  # the genuine deliveries: answered (the refusals left the session usable)
    assert run.federation.refusals == [] and run.federation.coordinator.plan().phase.value == "consistency"
    shown = run.pending()
    before = run.stored(TARGET)
    survivors = parse_message(masking(shown[TARGET]).message)
    assert isinstance(survivors, SurvivorSet)

    def with_set(change: int | None = None, receiver: str | None = None, phase: str | None = None) -> ServerMessage:
        inbox = copied(shown[TARGET])
        bitmap = survivors.bitmap if change is None else bytes([survivors.bitmap[0] & ~(1 << change)])
        masking(inbox).message = SurvivorSet(
            survivors.round_id, receiver or TARGET, survivors.roster_size, bitmap
        ).to_bytes()
        if phase is not None:
            inbox.plan.phase = masking(inbox).phase = phase
        return inbox

    assert run.deliver(TARGET, "consistency", with_set(change=ARTISTS.index(TARGET))).masking is None
    assert run.deliver(TARGET, "consistency", with_set(receiver=ARTISTS[1])).masking is None
    assert run.deliver(TARGET, "unmask", with_set(phase="unmask")).masking is None
    assert run.stored(TARGET) == before
    run.federation.run_phase()  # the genuine set: signed by all three
    assert run.federation.refusals == [] and run.federation.coordinator.plan().phase.value == "unmask"
    run.federation.run_phase()  # the real unmask phase: afterwards no secret of the session is kept
    assert run.federation.refusals == [] and run.federation.coordinator.last_sum is not None
    done = run.stored(TARGET)
    assert set(done) == {"meta"} and json.loads(done["meta"])["session"] is None


@pytest.mark.usefixtures("outside_runtime")
def test_a_later_rounds_message_does_not_make_an_artist_mask_an_earlier_round_again(tmp_path, data):
    """After the target sent its masked input of round r, the server sends it a message of round r + 1
    (which ends the round-r session on the artist: a later round has begun), then round r's advertise
    plan under a fresh session id.  Refused: the artist never advertises fresh keys for (nor trains
    again on) a round it left, so a server cannot make it mask round r under a second key set, nor
    burn its CPU by alternating rounds.  (A retry within round r, before any later round, stays
    possible: that is the protocol's abort-and-retry, with the round's stored vector.)"""
    run = Run(tmp_path / "run", data)
    run.until("consistency")  # every artist sent its masked input of round r
    advertise, _ = run.grid.sent(PHASE_ACTIONS["advertise"], run.nodes[TARGET])
    r = advertise.plan.round_id
    later = copied(run.pending()[TARGET])
    later.plan.round_id = masking(later).round_id = r + 1
    later.plan.masking.session_id = session_id(r + 1, 7)
    assert run.deliver(TARGET, "consistency", later).masking is None  # no session of round r + 1
    left = run.stored(TARGET)

    again = copied(advertise)
    again.plan.masking.session_id = session_id(r, 12345)
    reply = run.deliver(TARGET, "advertise", again)
    assert reply.masking is None, "the artist advertised fresh keys for a round it had left"
    assert reply.upload is None and reply.publication is None
    assert run.stored(TARGET) == left


@pytest.mark.usefixtures("outside_runtime")
@pytest.mark.parametrize("damage", ["truncated meta", "missing session plan", "bad secret"])
def test_a_corrupt_stored_session_fails_closed(tmp_path, data, damage, caplog):
    """The stored session damaged between two messages: the next message is refused with an error
    naming the file (the ClientApp fails; nothing is answered), and the damaged store is left as it was
    (no retry or fresh keys).  The file is 0600 in a 0700 folder."""
    run = Run(tmp_path / "run", data)
    run.until("masked_input")
    state = run.state[TARGET]
    path = state / MASKING_SESSION_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(state.stat().st_mode) == 0o700
    genuine = run.pending()[TARGET]
    with sqlite3.connect(path) as db:
        if damage == "truncated meta":
            db.execute("UPDATE masking SET value = substr(value, 1, 40) WHERE key = 'meta'")
        elif damage == "missing session plan":
            db.execute("DELETE FROM masking WHERE key = 'session_plan'")
        else:
            meta = bytes(db.execute("SELECT value FROM masking WHERE key = 'meta'").fetchone()[0])
            db.execute(
                "UPDATE masking SET value = ? WHERE key = 'meta'", (meta.replace(b'"mask_key": "', b'"mask_key": "zz'),)
            )
    db.close()
    damaged = run.stored(TARGET)
    with refused_saying(caplog, "unreadable masking state"):
        run.deliver(TARGET, "masked_input", genuine)
    assert run.stored(TARGET) == damaged


@pytest.mark.usefixtures("outside_runtime")
def test_a_server_cannot_make_an_artist_warm_start_again_by_changing_the_plan(tmp_path, data, monkeypatch, caplog):
    """After round 0's advertise phase, the server resends the target its advertise message with a small
    announced warm start and a new seed each time.  The artist must not run a second warm start in the
    run (a spy counts the real :func:`pretrain_on_public` calls): the first plan's starting model is
    pinned in its state folder, and a plan announcing another is refused, naming what changed."""
    from fedstyle_secure.training import pretrain

    run = Run(tmp_path / "run", data)
    run.until("share")
    calls: list[int] = []
    real = pretrain.pretrain_on_public

    def spy(*args, **kwargs):  # SPY: counts, then runs the real warm start
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "pretrain_on_public", spy)
    advertise, _ = run.grid.sent(PHASE_ACTIONS["advertise"], run.nodes[TARGET])
    for seed in (101, 102):
        crafted = copied(advertise)
        crafted.plan.seed, crafted.plan.public_pretrain_steps = seed, 2
        with refused_saying(caplog, "other run parameters than this run's first plan.*seed 0 -> "):
            run.deliver(TARGET, "advertise", crafted)
    assert len(calls) <= 1, f"{len(calls)} warm starts for one artist in one run"
    run.until("share")  # the genuine plan still goes on: the run finishes with everyone
    while not run.federation.coordinator.finished:
        run.federation.run_phase()
    assert run.federation.coordinator.failed is None and run.federation.refusals == []
