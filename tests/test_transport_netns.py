"""Separate hosts for real: the server in one network namespace and each of three artist
processes in its own, each joined to the server's namespace by a veth pair;
`fedstyle server` / `fedstyle client` over gRPC + mutual TLS.

Two DP federations (artists run DP-SGD under their own budgets) run back to back on the same
namespaces: ``secagg`` (2 training rounds; one artist process is killed in the masked-input
phase of round 2 and the round completes with the survivors' exact sum) and ``ckks`` (1
training round, everyone).  The processes run the
real command line through a small instrumentation script (:data:`HOOKS`) that records each
artist's packed vectors and each sum the server unmasks, and parks the victim once it has
received its shares, so the kill lands in the masked-input phase deterministically.

Needs root and `ip netns` (skipped otherwise, saying why); namespaces are removed in a finally.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from fedstyle_secure.secure.masking.fixedpoint import FixedPointCodec
from fedstyle_secure.transport.artist.lifetime_ledger import LIFETIME_LEDGER_VARIABLE
from fedstyle_secure.transport.loopback import artist_folders, write_fresh_keys
from fedstyle_secure.transport.server.store import StateStore

PORT, N_ARTISTS, ROUNDS, CKKS_ROUNDS = 50077, 3, 2, 1
# Phase deadline (s): the final publication waits this long for the killed artist.  The session's
# feature and warm-start caches are filled before the processes start (the ``data`` fixture, the first
# DP server), and the first phase waits ``startup_seconds`` (default 300) more for the artists' start-up,
# so a later phase is one round on 6 artworks (below the DP-SGD threshold: prototypes and masking, well
# under a second idle; 12 s leaves a wide margin on a loaded machine).  Was 30 s before startup_seconds.
PHASE_SECONDS = 12
# After the last round the server lingers this long for a registered artist that never fetches the
# final plan (the killed one); default 30 s.
SESSION_TIMEOUT_SECONDS = 5
WARM_START_STEPS = 30  # the announced public warm start (default 300): every party computes it before round 0
VICTIM, HANG_AT = "artist_02", "2:masked_input"  # killed in round 2's masked-input phase
# Artists run DP-SGD (record-level epsilon over the whole run, see transport/dp_config.py); under
# DP the unnoised set-up round is off, so the masked sums are those of rounds 1..ROUNDS.
DP_EPSILON = 8.0

HOOKS = '''"""Test instrumentation around the real `fedstyle` command line (netns test only)."""
import json, os, sys, time
from pathlib import Path

import numpy as np

from fedstyle_secure.transport.artist.masking import MaskingClient
from fedstyle_secure.federation.masking_rounds import MaskingRound

OUT = Path(os.environ["FEDSTYLE_TEST_RECORD"])
HANG_AT = os.environ.get("FEDSTYLE_TEST_HANG_AT", "")
advertise, respond, finish = MaskingClient.advertise, MaskingClient.respond, MaskingRound.finish


def recording_advertise(self, plan, vector):
    np.save(OUT / f"vector-{plan.round_id}-{self.artist_id}.npy", np.asarray(vector))
    return advertise(self, plan, vector)


def parking_respond(self, plan, message):
    if f"{plan.round_id}:{plan.phase}" == HANG_AT:  # shares received, masked input never sent
        (OUT / f"parked-{self.artist_id}").write_text(HANG_AT)
        while True:
            time.sleep(1)
    return respond(self, plan, message)


def recording_finish(self):
    outcome = finish(self)
    round_id, codec = self.params.session_id >> 32, self._server.config.codec
    np.save(OUT / f"sum-{round_id}.npy", outcome.total)
    summary = {"contributors": list(outcome.contributors), "clip_range": list(codec.clip_range),
               "max_clients": codec.max_clients}
    (OUT / f"sum-{round_id}.json").write_text(json.dumps(summary))
    return outcome


MaskingClient.advertise, MaskingClient.respond = recording_advertise, parking_respond
MaskingRound.finish = recording_finish
from fedstyle_secure.cli.main import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
'''


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


def _server_ip(i: int) -> str:
    """The server's address on artist ``i``'s link (10.231.(10+i).0/24)."""
    return f"10.231.{10 + i}.1"


@pytest.fixture(scope="module")
def hosts():
    """A server namespace and N_ARTISTS artist namespaces, each linked to the server by a veth pair."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:6]
    server_ns, artist_ns = f"fs_srv_{tag}", [f"fs_a{i}_{tag}" for i in range(N_ARTISTS)]
    created: list[str] = []
    try:
        for ns in (server_ns, *artist_ns):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for i, ns in enumerate(artist_ns):
            veth_s, veth_a = f"fs{tag}s{i}", f"fs{tag}a{i}"
            _ip("link", "add", veth_s, "type", "veth", "peer", "name", veth_a)
            for veth, where, address in ((veth_s, server_ns, _server_ip(i)), (veth_a, ns, f"10.231.{10 + i}.2")):
                _ip("link", "set", veth, "netns", where)
                _ip("-n", where, "addr", "add", f"{address}/24", "dev", veth)
                _ip("-n", where, "link", "set", veth, "up")
        yield server_ns, artist_ns
    finally:
        for ns in created:  # deleting a namespace deletes its veth ends too
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def _fedstyle(ns: str, hooks: Path, *args: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    command = ["ip", "netns", "exec", ns, sys.executable, str(hooks), *args, "--log-format", "json"]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _run(
    hosts,
    tmp_path: Path,
    keys: Path,
    folders: dict[str, Path],
    env: dict[str, str],
    secure_mode: str,
    victim: str | None,
    rounds: int = ROUNDS,
) -> tuple[dict[str, int | None], Path, Path]:
    """One federation; kills ``victim`` once it is parked in the masked-input phase.  Returns
    the exit codes, the record directory and the run directory."""
    server_ns, artist_ns = hosts
    run = tmp_path / secure_mode
    record = run / "record"
    record.mkdir(parents=True)
    hooks = tmp_path / "netns_hooks.py"
    (run / "server.toml").write_text(
        f'[server]\nkeys = "{keys}"\nstate_db = "state.sqlite"\nlisten = "0.0.0.0:{PORT}"\n'
        f"session_timeout_seconds = {SESSION_TIMEOUT_SECONDS}\npublic_pretrain_steps = {WARM_START_STEPS}\n\n"
        f'[federation]\nrounds = {rounds}\nsecure_mode = "{secure_mode}"\nquorum = 2\n'
        f"phase_seconds = {PHASE_SECONDS}\nmasking_seconds = 5\nrefreshes = {list(range(rounds))}\n"
        f"epsilon = {DP_EPSILON}\n"
    )
    # each test's run is a new federation on the same artworks: its own lifetime ledger, or its epsilon adds up
    run_env = {**env, "FEDSTYLE_TEST_RECORD": str(record), LIFETIME_LEDGER_VARIABLE: str(run / "lifetime.sqlite")}
    processes = {
        "server": _fedstyle(
            server_ns, hooks, "server", "--config", str(run / "server.toml"), log=run / "server.log", env=run_env
        )
    }
    try:
        for i, (artist, folder) in enumerate(sorted(folders.items())):
            config = run / f"{artist}.toml"
            config.write_text(
                f'[client]\nkeys = "{keys}"\ndata = "{folder}"\nartist = "{artist}"\nserver = '
                f'"{_server_ip(i)}:{PORT}"\n'
                f'state_dir = "state/{artist}"\nreconnect_max_seconds = 1.0\n'  # the server may start later
            )
            artist_env = {**run_env, "FEDSTYLE_TEST_HANG_AT": HANG_AT} if artist == victim else run_env
            processes[artist] = _fedstyle(
                artist_ns[i], hooks, "client", "--config", str(config), log=run / f"{artist}.log", env=artist_env
            )
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and any(p.poll() is None for name, p in processes.items() if name != victim):
            if victim and processes[victim].poll() is None and (record / f"parked-{victim}").exists():
                processes[victim].kill()  # SIGKILL mid-phase: shares received, masked input never sent
                processes[victim].wait(timeout=10)
            time.sleep(0.2)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    return {name: p.returncode for name, p in processes.items()}, record, run


def _logs(run: Path) -> dict[str, str]:
    return {p.name: p.read_text()[-3000:] for p in run.glob("*.log")}


def _check_exact_sums(record: Path) -> dict[int, list[str]]:
    """Every unmasked sum is exactly the fixed-point sum of its contributors' packed vectors."""
    contributors = {}
    for meta in sorted(record.glob("sum-*.json")):
        round_id, info = int(meta.stem.split("-")[1]), json.loads(meta.read_text())
        codec = FixedPointCodec(tuple(info["clip_range"]), info["max_clients"])
        vectors = [np.load(record / f"vector-{round_id}-{artist}.npy") for artist in info["contributors"]]
        words = sum(codec.quantize(v) for v in vectors)
        assert isinstance(words, np.ndarray)  # every recorded sum has contributors
        np.testing.assert_array_equal(np.load(record / f"sum-{round_id}.npy"), codec.dequantize(words))
        contributors[round_id] = info["contributors"]
    return contributors


@pytest.fixture(scope="module")
def hosts_and_parties(hosts, tmp_path_factory, data, feature_cache):
    """The namespaces, one key set, the artists' data folders and the processes' environment, shared
    by both federations (each a test of its own, each within the per-test timeout)."""
    work = tmp_path_factory.mktemp("netns")
    folders = artist_folders(data, work)  # N_ARTISTS artists, their features in the session's cache
    assert len(folders) == N_ARTISTS
    keys = write_fresh_keys(work / "keys", sorted(folders))
    (work / "netns_hooks.py").write_text(HOOKS)
    env = {
        **os.environ,
        "FEDSTYLE_CACHE": str(feature_cache),  # the session's: public features and warm start computed once
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    return hosts, work, keys, folders, env


# Not marked slow: CI runs as root with `ip netns`, and these are the multi-host acceptance tests.
def test_secagg_federation_across_network_namespaces_survives_a_killed_artist(hosts_and_parties):
    hosts, work, keys, folders, env = hosts_and_parties
    artists = sorted(folders)
    survivors = [a for a in artists if a != VICTIM]
    codes, record, run = _run(hosts, work, keys, folders, env, "secagg", victim=VICTIM)
    assert codes == {"server": 0, **{a: 0 for a in survivors}, VICTIM: -9}, _logs(run)
    assert _check_exact_sums(record) == {1: artists, 2: survivors}, _logs(run)
    unmasked = [
        json.loads(line) for line in (run / "server.log").read_text().splitlines() if '"masked sum unmasked"' in line
    ]
    assert [(e["round"], e["contributors"], e["dropped"]) for e in unmasked][-1] == (2, survivors, [VICTIM])
    saved = StateStore(run / "state.sqlite").load()
    assert saved is not None
    state = saved.state
    assert state.round == ROUNDS + 1 and state.known.all() and not state.retired
    for artist in survivors:  # each survivor signed one epsilon report per training round + the final publication
        assert len(list((run / "state" / artist / "reports").rglob("round-*.json"))) == ROUNDS + 1, _logs(run)


def test_ckks_federation_across_network_namespaces(hosts_and_parties):
    hosts, work, keys, folders, env = hosts_and_parties
    codes, _, run = _run(hosts, work, keys, folders, env, "ckks", victim=None, rounds=CKKS_ROUNDS)
    assert codes == {"server": 0, **{a: 0 for a in sorted(folders)}}, _logs(run)
    saved = StateStore(run / "state.sqlite").load()
    assert saved is not None
    state = saved.state
    assert state.round == CKKS_ROUNDS + 1 and state.known.all()
