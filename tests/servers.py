"""Real servers on loopback for the transport tests (real gRPC, mutual TLS, key files): one home for
starting a server, connecting an artist and checking a refusal.  No fixtures here (see conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.secure.keys.keystore import load_artist_keys, load_server_keys
from fedstyle_secure.transport.artist.channel import ArtistSession, open_channel
from fedstyle_secure.transport.config import ServerConfig
from fedstyle_secure.transport.server.servicer import RunningServer, start_server
from fedstyle_secure.transport.wire import pb

ARTISTS = ("artist_a", "artist_b", "artist_c")  # the roster of the shared ``keys`` fixture
BUYER = "buyer_x"


def start(
    keys: Path,
    tmp_path: Path,
    schedule: Schedule | None = None,
    clock: Callable[[], float] = time.time,
    **fields: Any,
) -> RunningServer:
    """A real server on a free loopback port, its database ``tmp_path/server.sqlite`` (a second
    call with the same ``tmp_path`` resumes it); ``schedule`` defaults to one round, quorum 2,
    600 s phases; ``fields`` are further :class:`ServerConfig` fields."""
    config = ServerConfig(
        keys=keys,
        state_db=tmp_path / "server.sqlite",
        listen="127.0.0.1:0",
        schedule=schedule or Schedule(rounds=1, quorum=2, phase_seconds=600),
        **fields,
    )
    return start_server(config, load_server_keys(keys), clock=clock)


def address(server: RunningServer) -> str:
    return f"127.0.0.1:{server.port}"


def connect(server: RunningServer, keys: Path, artist: str) -> tuple[grpc.Channel, ArtistSession]:
    """A mutual-TLS channel as ``artist`` and its registered session."""
    artist_keys = load_artist_keys(keys, artist)
    channel = open_channel(address(server), artist_keys.tls_pem())
    return channel, ArtistSession.register(channel, artist_keys)


def refused(call: Callable[[], object], code: grpc.StatusCode, words: str) -> grpc.RpcError:
    """``call`` fails with gRPC status ``code`` and a message containing ``words``."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    assert words in info.value.details(), info.value.details()
    return info.value


def wait_for_phase(session: ArtistSession, phase: str, timeout: float = 20.0) -> pb.RoundPlan:
    """The artist's next plan in ``phase`` (round 0 polls), or AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        plan = session.plan(0, "", wait_seconds=0.5)
        if plan.phase == phase:
            return plan
    raise AssertionError(f"the server never reached phase {phase!r}")
