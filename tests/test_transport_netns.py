"""Two hosts for real: the server in one network namespace, three artist processes in another,
joined by a veth pair; `fedstyle server` / `fedstyle client` over gRPC + mutual TLS.

Needs root and `ip netns` (skipped otherwise, saying why); namespaces are removed in a finally.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fedstyle_secure.data.synth import write_synthetic_folder
from fedstyle_secure.transport.loopback import artist_folders, write_fresh_keys
from fedstyle_secure.transport.store import StateStore

SERVER_IP, ARTIST_IP, PORT = "10.231.7.1", "10.231.7.2", 50077


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 `ip` not installed"
    probe = f"fsprobe{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"`ip netns add` failed: {getattr(exc, 'stderr', exc)!r}"
    _ip("netns", "del", probe)
    return None


@pytest.fixture
def two_hosts():
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    server_ns, artist_ns = f"fs_srv_{tag}", f"fs_art_{tag}"
    veth_s, veth_a = f"fs{tag}s", f"fs{tag}a"
    try:
        _ip("netns", "add", server_ns)
        _ip("netns", "add", artist_ns)
        _ip("link", "add", veth_s, "type", "veth", "peer", "name", veth_a)
        for veth, ns, address in ((veth_s, server_ns, SERVER_IP), (veth_a, artist_ns, ARTIST_IP)):
            _ip("link", "set", veth, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", veth)
            _ip("-n", ns, "link", "set", veth, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield server_ns, artist_ns
    finally:
        for ns in (server_ns, artist_ns):  # deleting a namespace deletes its veth end too
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def _fedstyle(ns: str, *args: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    command = ["ip", "netns", "exec", ns, sys.executable, "-m", "fedstyle_secure.cli.main", *args, "--log-format", "json"]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_federation_across_two_network_namespaces(two_hosts, tmp_path):
    server_ns, artist_ns = two_hosts
    write_synthetic_folder(tmp_path / "data", 3, 6, seed=0)
    folders = artist_folders(tmp_path / "data", tmp_path)
    keys = write_fresh_keys(tmp_path / "keys", sorted(folders))
    env = {**os.environ, "FEDSTYLE_CACHE": str(tmp_path / "cache")}
    (tmp_path / "server.toml").write_text(
        f'[server]\nkeys = "keys"\nstate_db = "state.sqlite"\nlisten = "{SERVER_IP}:{PORT}"\n\n'
        "[federation]\nrounds = 1\nsecure_mode = \"ckks\"\nquorum = 3\nphase_seconds = 120\nrefreshes = [0]\n"
    )
    processes = [_fedstyle(server_ns, "server", "--config", str(tmp_path / "server.toml"), log=tmp_path / "server.log", env=env)]
    try:
        for artist, folder in folders.items():
            config = tmp_path / f"{artist}.toml"
            config.write_text(f'[client]\nkeys = "{keys}"\ndata = "{folder}"\nartist = "{artist}"\nserver = "{SERVER_IP}:{PORT}"\n')
            processes.append(_fedstyle(artist_ns, "client", "--config", str(config), log=tmp_path / f"{artist}.log", env=env))
        deadline = time.monotonic() + 240
        codes = [p.wait(timeout=max(deadline - time.monotonic(), 1)) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
    assert codes == [0, 0, 0, 0], logs
    state = StateStore(tmp_path / "state.sqlite").load().state
    assert state.round == 2 and state.known.all()
