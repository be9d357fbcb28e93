"""The artist's reconnect policy: exponential backoff that resets on contact, a give-up deadline,
and a stop that ends the wait (``transport/artist/runner.py``, tenacity over real gRPC + TLS)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import cast

import pytest

from fedstyle_secure.errors import TransportError
from fedstyle_secure.secure.keys.keystore import ArtistKeys, load_artist_keys
from fedstyle_secure.transport.artist.channel import ArtistSession
from fedstyle_secure.transport.artist.runner import ArtistRunner, Reachability, run_artist
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.loopback import write_fresh_keys
from fedstyle_secure.transport.wire import pb
from tests.fakes import fake_portfolio


def test_backoff_doubles_to_its_cap_and_resets_when_the_server_is_reached() -> None:
    reach = Reachability(initial_seconds=0.5, max_seconds=3.0, give_up_seconds=10.0)
    assert [reach.failed(now) for now in (100.0, 101.0, 102.0, 103.0, 104.0)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert not reach.given_up(110.0) and reach.given_up(110.5)  # unreachable for more than 10 s since 100
    reach.reached()
    assert reach.failed(500.0) == 0.5 and not reach.given_up(509.0)  # a new outage gets the full deadline


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def alice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reconnect")
    return write_fresh_keys(root / "keys", ["alice", "bob"], []), root


def _config(
    alice: tuple[Path, Path], *, reconnect_initial_seconds: float, reconnect_max_seconds: float, give_up_seconds: float
) -> ClientConfig:
    keys, root = alice
    return ClientConfig(
        keys=keys,
        data=root,
        server=f"127.0.0.1:{_closed_port()}",
        artist="alice",
        reconnect_initial_seconds=reconnect_initial_seconds,
        reconnect_max_seconds=reconnect_max_seconds,
        give_up_seconds=give_up_seconds,
    )


def test_an_unreachable_server_is_given_up_after_give_up_seconds(alice: tuple[Path, Path]) -> None:
    config = _config(alice, reconnect_initial_seconds=0.05, reconnect_max_seconds=0.2, give_up_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"server unreachable for 0.5 s \(client.give_up_seconds\); last error"):
        run_artist(config, load_artist_keys(config.keys, "alice"))
    assert time.monotonic() - started >= 0.5  # it kept retrying until the deadline


def test_stop_ends_the_backoff_wait(alice: tuple[Path, Path]) -> None:
    config = _config(alice, reconnect_initial_seconds=60.0, reconnect_max_seconds=60.0, give_up_seconds=600.0)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    assert run_artist(config, load_artist_keys(config.keys, "alice"), stop) == 1
    assert time.monotonic() - started < 30.0  # not the 60 s backoff


class _EagerSessionFake(ArtistSession):
    """Unit-test fake of the artist's session: a server answering every plan poll at once with the
    plan the artist already acted on (an honest one holds the poll until the plan changes)."""

    def __init__(self) -> None:  # no stub, no registration: only plan() is called
        self.polls = 0

    def plan(self, *_: object, **__: object) -> pb.RoundPlan:
        self.polls += 1
        return pb.RoundPlan(round_id=1, phase="contribute", attempt=0)


def test_a_server_answering_plan_polls_at_once_gets_a_poll_a_second_not_a_busy_loop(tmp_path: Path) -> None:
    """Without the pause the artist polled 1,547 times in 3 s (a helper's measurement), with no
    deadline at all; with it, about once a second until stopped."""
    # test double: run_session never reads the keys
    runner = ArtistRunner(ClientConfig(keys=tmp_path, data=fake_portfolio(tmp_path)), keys=cast(ArtistKeys, None))
    runner.done, runner.done_attempt = (1, "contribute"), 0
    session, stop, ended = _EagerSessionFake(), threading.Event(), []

    def follow() -> None:
        with pytest.raises(TransportError, match="stopped before the run finished"):
            runner.run_session(session, stop)
        ended.append(True)

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(2.5)
    stop.set()
    follower.join(timeout=5)

    assert ended and 1 <= session.polls <= 5


class _AlternatingSessionFake(_EagerSessionFake):
    """Unit-test fake: a server answering every poll at once with a plan that differs from the last
    (attempts 0 and 1 in turn), so every answer looks new."""

    def plan(self, *_: object, **__: object) -> pb.RoundPlan:
        self.polls += 1
        return pb.RoundPlan(round_id=1, phase="decrypt", attempt=self.polls % 2)


class _CountingRunnerFake(ArtistRunner):
    """Unit-test fake of the runner's work: acting on a plan does nothing but count (a plan whose
    decryption it is not asked for)."""

    acted: int = 0

    def act(self, session: object, plan: pb.RoundPlan) -> None:
        self.acted += 1


def test_a_server_alternating_plans_at_once_gets_a_few_polls_a_second_not_a_busy_loop(tmp_path: Path) -> None:
    """Every answer differs from the last, so the artist acts on each and polls again: without a
    minimum interval between polls 2,788 polls in 5 s (a helper's measurement); with it, a few a second."""
    # test double: run_session never reads the keys
    runner = _CountingRunnerFake(
        ClientConfig(keys=tmp_path, data=fake_portfolio(tmp_path)), keys=cast(ArtistKeys, None)
    )
    session, stop = _AlternatingSessionFake(), threading.Event()
    follower = threading.Thread(target=lambda: _stopped(runner, session, stop))
    follower.start()
    time.sleep(2.0)
    stop.set()
    follower.join(timeout=5)

    assert not follower.is_alive() and 2 <= session.polls <= 15 and runner.acted == session.polls


def _stopped(runner: ArtistRunner, session: ArtistSession, stop: threading.Event) -> None:
    with pytest.raises(TransportError, match="stopped before the run finished"):
        runner.run_session(session, stop)
