"""A federation of real operating-system processes: one ``fedstyle server`` and one
``fedstyle client`` per artist, each started from its own config file and holding only its own
key bundle, talking gRPC over mutual TLS.

Used by ``fedstyle demo``, ``scripts/bench_round.py`` and the multi-host test (which prefixes
each command with ``ip netns exec NS``).  Nothing here is needed in a real deployment, where an
administrator copies each bundle to its machine and starts the processes by hand.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedstyle_secure.errors import TransportError
from fedstyle_secure.federation.rounds import default_refresh_rounds
from fedstyle_secure.privacy.plan import DpConfig, encoder_config_for
from fedstyle_secure.secure.keys.keystore import bundle_files, write_key_files
from fedstyle_secure.training.local import DEFAULT_LOCAL_EPOCHS

TomlValue = str | int | float | bool | Sequence[int] | Path
Prefix = Callable[[str], Sequence[str]]  # process name ("server" or an artist id) -> command prefix


def toml_text(tables: Mapping[str, Mapping[str, TomlValue]]) -> str:
    """Render ``{table: {key: value}}`` as TOML (strings, paths, numbers, booleans, int lists)."""
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def federation_tables(
    rounds: int,
    secure_mode: str,
    epsilon: float,
    n_artists: int,
    *,
    seed: int = 0,
    quorum: int | None = None,
    phase_seconds: float = 120.0,
) -> tuple[dict[str, TomlValue], dict[str, TomlValue], dict[str, TomlValue]]:
    """``[federation]``, ``[server]`` and ``[client]`` tables of a FedStyle run with the library's
    defaults: every artist's budget ``epsilon`` (inf = no DP), prototypes refreshed as the
    simulator does, quorum ``n - 1`` (one straggler tolerated) unless given."""
    dp = None if math.isinf(epsilon) else DpConfig(epsilon=epsilon)
    federation: dict[str, TomlValue] = {
        "algorithm": "fedstyle",
        "rounds": rounds,
        "secure_mode": secure_mode,
        "quorum": quorum or max(2, n_artists - 1),
        "phase_seconds": phase_seconds,
        "refreshes": sorted(default_refresh_rounds(rounds, dp)),
        "seed": seed,
    }
    server: dict[str, TomlValue] = {"embedding_dim": encoder_config_for(dp).embedding_dim}
    # a trial's artists are machines in one folder each: each keeps its lifetime ledger there, not in the user's
    client: dict[str, TomlValue] = {
        "epochs": DEFAULT_LOCAL_EPOCHS,
        "state_dir": "state",
        "reports_dir": "reports",
        "lifetime_ledger": "lifetime-ledger.sqlite",
    }
    if dp is not None:
        federation |= {"epsilon": dp.epsilon, "clip_norm": dp.clip_norm, "accountant": dp.accountant}
        client |= {"budget_epsilon": dp.epsilon}
    return federation, server, client


# Many processes share this machine's cores: one compute thread each instead of every process
# spawning one per core (oversubscription made the artists' first phase several times slower).
ONE_THREAD_EACH = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (the server binds it right after)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def fedstyle_command(*args: str, prefix: Sequence[str] = ()) -> list[str]:
    """``fedstyle ARGS`` run with this interpreter (works without the console script on PATH)."""
    return [*prefix, sys.executable, "-m", "fedstyle_secure.cli.main", *args]


@dataclass
class ProcessFederation:
    """Running server and artist processes; logs are JSON lines in ``work/<name>/log.jsonl``."""

    work: Path
    address: str
    server: subprocess.Popen
    artists: dict[str, subprocess.Popen] = field(default_factory=dict)

    def log_path(self, name: str) -> Path:
        return self.work / name / "log.jsonl"

    def events(self, name: str, message: str) -> list[dict]:
        """The JSON log entries of process ``name`` (``"server"`` or an artist) whose message is ``message``."""
        return [e for e in _read_json_lines(self.log_path(name)) if e.get("message") == message]

    def server_events(self, message: str) -> list[dict]:
        """The server's JSON log entries whose message is ``message`` (so far)."""
        return self.events("server", message)

    def completed_rounds(self) -> int:
        """Rounds the server has saved (0 before the first one)."""
        return max((int(e.get("round", 0)) for e in self.server_events("round state saved")), default=0)

    def kill(self, artist: str) -> None:
        """Kill one artist process at once (SIGKILL: a crash, not a goodbye)."""
        self.artists[artist].kill()
        self.artists[artist].wait(timeout=10)

    def wait(
        self, timeout_seconds: float, on_poll: Callable[[], None] | None = None, *, server: bool = True
    ) -> dict[str, int | None]:
        """Wait for every artist (and the server, unless ``server=False``: one that keeps serving
        queries) to exit; return their exit codes (None: still running)."""
        deadline = time.monotonic() + timeout_seconds
        processes = {**({"server": self.server} if server else {}), **self.artists}
        while time.monotonic() < deadline and any(p.poll() is None for p in processes.values()):
            if on_poll is not None:
                on_poll()
            time.sleep(0.5)
        if on_poll is not None:
            on_poll()
        return {name: p.poll() for name, p in processes.items()}

    def close(self) -> None:
        """Stop whatever still runs (TERM, then KILL after 10 s)."""
        processes = [self.server, *self.artists.values()]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def log_tail(self, name: str, characters: int = 3000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-characters:] if path.exists() else "(no log)"


def _read_json_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a partial last line, or a library printing to stderr
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


@dataclass(frozen=True)
class MachineConfigs:
    """One folder per machine under ``work``: the server's ``server.toml`` and each artist's ``client.toml``."""

    address: str
    server: Path
    artists: dict[str, Path]


def write_machine_configs(
    work: Path,
    keys_dir: Path,
    artist_data: Mapping[str, Path],
    *,
    federation: Mapping[str, TomlValue],
    server: Mapping[str, TomlValue] | None = None,
    client: Mapping[str, TomlValue] | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> MachineConfigs:
    """Each machine's folder under ``work`` holding its config and only its own key bundle (cut
    from the full key set ``keys_dir``); ``artist_data[artist]`` is a folder holding that artist's
    ``<artist>/`` image folder.  ``server``/``client``/``federation`` add fields to the
    ``[server]``, ``[client]`` and ``[federation]`` tables."""
    address = f"{host}:{port or free_port(host)}"
    server_dir = _machine(work / "server", keys_dir, server=True)
    server_table = {
        "keys": "keys",
        "state_db": "state.sqlite",
        "listen": address,
        "index": "index",
        "reports_dir": "reports",
        **(server or {}),
    }
    (server_dir / "server.toml").write_text(toml_text({"server": server_table, "federation": federation}))
    artists = {}
    for artist, data in artist_data.items():
        artist_dir = _machine(work / artist, keys_dir, artist=artist)
        table = {
            "keys": "keys",
            "data": str(Path(data).resolve()),
            "server": address,
            "artist": artist,
            "server_name": _server_name(host),
            **(client or {}),
        }
        artists[artist] = artist_dir / "client.toml"
        artists[artist].write_text(toml_text({"client": table}))
    return MachineConfigs(address, server_dir / "server.toml", artists)


def start_process_federation(
    work: Path,
    keys_dir: Path,
    artist_data: Mapping[str, Path],
    *,
    federation: Mapping[str, TomlValue],
    server: Mapping[str, TomlValue] | None = None,
    client: Mapping[str, TomlValue] | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    prefix: Prefix | None = None,
) -> ProcessFederation:
    """Start ``fedstyle server`` and one ``fedstyle client`` per artist, each in its machine's
    folder (:func:`write_machine_configs`)."""
    configs = write_machine_configs(
        work, keys_dir, artist_data, federation=federation, server=server, client=client, host=host, port=port
    )
    environment = {**os.environ, **ONE_THREAD_EACH, **(env or {})}
    prefix = prefix or (lambda name: ())
    running = ProcessFederation(
        work, configs.address, _spawn("server", configs.server, configs.server.parent, environment, prefix)
    )
    for artist, config in configs.artists.items():
        running.artists[artist] = _spawn("client", config, config.parent, environment, prefix, name=artist)
    return running


def _server_name(host: str) -> str:
    """The name the server certificate is checked against: ``localhost`` on loopback, else the address."""
    return "localhost" if host in ("127.0.0.1", "::1", "localhost") else host


def _machine(folder: Path, keys_dir: Path, *, artist: str | None = None, server: bool = False) -> Path:
    """A machine's folder holding only its bundle under ``keys/``."""
    if folder.exists() and any(folder.iterdir()):
        raise TransportError(f"{folder} already exists and is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    write_key_files(folder / "keys", bundle_files(keys_dir, artist=artist, server=server))
    return folder


def _spawn(
    role: str, config: Path, folder: Path, env: Mapping[str, str], prefix: Prefix, name: str = "server"
) -> subprocess.Popen:
    command = fedstyle_command(role, "--config", str(config), "--log-format", "json", prefix=prefix(name))
    with (folder / "log.jsonl").open("w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(env), cwd=folder)
