"""``server.toml`` / ``client.toml``: parsed with :mod:`tomllib`, validated strictly.

Every error names the file and the offending field (``ConfigError``, see
:mod:`fedstyle_secure.validation`).  Times in seconds, sizes in bytes.  The two
configs validate themselves on construction, so a config built in code is held to the same rules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, overload

import tomllib

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.coordinator import TRANSPORT_SECURE_MODES, Schedule
from fedstyle_secure.files import read_regular_file
from fedstyle_secure.privacy.plan import DEFAULT_MIN_TRAINING_ARTWORKS, DpConfig, public_warm_start_steps
from fedstyle_secure.secure.api import DEFAULT_MIN_QUORUM
from fedstyle_secure.secure.masking.summation import DEFAULT_THRESHOLD
from fedstyle_secure.training.local import DEFAULT_LOCAL_EPOCHS
from fedstyle_secure.training.pretrain import MAX_PUBLIC_PRETRAIN_STEPS
from fedstyle_secure.transport.dp_config import FEDERATION_DP_FIELDS, dp_schedule, pop_federation_dp
from fedstyle_secure.validation import (
    Address,
    ConfigPath,
    ListenAddress,
    MessageBytes,
    Positive,
    PositiveFinite,
    Probability,
    Seconds,
    from_table,
    ge,
    gt,
    le,
    one_of,
    validate_on_init,
)

MiB = 1024 * 1024
MaskingThreshold = Annotated[float, gt(0.5), le(1.0)]


@dataclass(frozen=True)
class ServerConfig:
    """The server process.  ``schedule`` is the ``[federation]`` table."""

    keys: ConfigPath
    state_db: ConfigPath
    listen: ListenAddress = "127.0.0.1:50051"
    schedule: Schedule = field(default_factory=Schedule)
    embedding_dim: Positive = 64
    # public warm-start steps every party runs before round 0 (announced); None: 300 under DP, 0 without
    public_pretrain_steps: Annotated[int, ge(0), le(MAX_PUBLIC_PRETRAIN_STEPS)] | None = None
    max_message_bytes: MessageBytes = 4 * MiB  # any single gRPC message, e.g. a buyer's query image
    max_payload_bytes: Positive = 256 * MiB  # ceiling of a streamed upload; the round's layout sets the actual limit
    max_calls_per_identity: Positive = 4  # in-flight calls of one artist or buyer certificate (long polls count)
    max_buyer_calls: Positive = 8  # in-flight calls of all buyers together
    stream_idle_seconds: Seconds = 10.0
    session_timeout_seconds: Seconds = 30.0
    index: ConfigPath | None = None
    reports_dir: ConfigPath | None = None
    cache_dir: ConfigPath | None = None
    keep_serving: bool = False  # after the last round, answer buyer queries until SIGTERM/SIGINT
    crl: ConfigPath | None = None  # CA-signed revocation list (`fedstyle keys revoke`), re-read when it changes
    # from [federation] epsilon, delta, clip_norm, accountant, noise_multiplier (see dp_config)
    dp: DpConfig | None = None

    def __post_init__(self) -> None:
        validate_on_init(self)

    @property
    def pretrain_steps(self) -> int:
        """The public warm-start steps of this federation (announced in every plan)."""
        if self.public_pretrain_steps is None:
            return public_warm_start_steps(self.dp)
        return self.public_pretrain_steps


@dataclass(frozen=True)
class ClientConfig:
    """One artist process."""

    keys: ConfigPath
    data: ConfigPath
    server: Address = "127.0.0.1:50051"
    artist: str | None = None
    server_name: str = "localhost"
    cache_dir: ConfigPath | None = None
    epochs: Positive = DEFAULT_LOCAL_EPOCHS  # as `fedstyle simulate --local-epochs` (it was 1 here)
    batch_size: Positive = 16
    reconnect_initial_seconds: Seconds = 0.5
    reconnect_max_seconds: Seconds = 30.0
    give_up_seconds: Seconds = 900.0  # exit with an error once the server was unreachable this long
    max_message_bytes: MessageBytes = 4 * MiB
    # this artist's own total epsilon (one artwork); None = the federation's
    budget_epsilon: PositiveFinite | None = None
    budget_delta: Probability | None = None  # None = the DP plan's delta
    state_dir: ConfigPath | None = None  # durable state (model, ledger, last submission); required under DP
    reports_dir: ConfigPath | None = None  # signed epsilon reports; default <state_dir>/reports
    # the most epsilon any of this artist's artworks may ever reach, over every run (None = budget_epsilon,
    # else each run's target); kept in lifetime_ledger (None = transport.artist.lifetime_ledger's default)
    lifetime_epsilon: PositiveFinite | None = None
    lifetime_delta: Probability | None = None  # the summed delta's cap (None = LIFETIME_DELTA_RUNS x the run's bound)
    lifetime_ledger: ConfigPath | None = None
    # the artist's portfolio-size rule (privacy.plan.DEFAULT_MIN_TRAINING_ARTWORKS): below it, no DP-SGD
    min_training_artworks: Positive = DEFAULT_MIN_TRAINING_ARTWORKS
    # never help reveal a sum of fewer inputs, whatever the server announces (CKKS: decrypt; masking: join a session)
    min_quorum: Positive = DEFAULT_MIN_QUORUM
    # masking: refuse a plan announcing a lower threshold fraction
    min_masking_threshold: MaskingThreshold = DEFAULT_THRESHOLD
    # secagg+: refuse a smaller degree than this (0: the default for the participant count)
    min_masking_degree: Annotated[int, ge(0)] = 0
    # the only secure mode this artist takes part in (None: the run's first plan's, pinned for the run)
    secure_mode: Annotated[str, one_of(TRANSPORT_SECURE_MODES)] | None = None
    # for many artists on one machine: build the inputs (backbone, warm start) in a child process, hand
    # freed memory back eagerly, oneDNN off (fedstyle_secure.memory); ~42 MB less resident after a round,
    # ~2.5 s more at start-up, local rounds ~1.7x the CPU (scripts/bench_scale.py --artist-process: 45
    # against 26 ms)
    compact_memory: bool = False

    def __post_init__(self) -> None:
        validate_on_init(self)
        if self.budget_delta is not None and self.budget_epsilon is None:
            raise ValueError("budget_delta needs budget_epsilon")


MAX_CONFIG_BYTES = 1 << 20
"""Largest ``server.toml`` / ``client.toml`` read (bytes): a config is a few hundred bytes."""


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(read_regular_file(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except ValueError as exc:  # a FIFO, a device, too large
        raise ConfigError(f"cannot read the config file: {exc}") from exc
    except OSError as exc:  # a directory, no permission
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from exc


def _table(raw: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    """The TOML table ``[name]`` of ``raw`` (empty if absent); :class:`ConfigError` if ``name`` is
    another kind of value (``server = 5`` is a key, not a table)."""
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {name} must be a table ([{name}]), got a {type(table).__name__}")
    return dict(table)


@overload
def _relative(base: Path, path: Path) -> Path: ...
@overload
def _relative(base: Path, path: Path | None) -> Path | None: ...
def _relative(base: Path, path: Path | None) -> Path | None:
    """``path`` with ``~`` expanded, relative to ``base`` (the config file's folder) unless absolute."""
    if path is None:
        return None
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def load_server_config(path: Path) -> ServerConfig:
    """``[server]`` (keys, state_db, listen, limits) and ``[federation]`` (the schedule)."""
    raw = _read(path)
    unknown = sorted(set(raw) - {"server", "federation"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)} (expected [server], [federation])")
    federation = _table(raw, "federation", path)
    where = f"{path}: federation"
    dp = pop_federation_dp(federation, where)
    refreshes = federation.get("refreshes")
    if isinstance(refreshes, list):  # a TOML array of round indices
        if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in refreshes):
            raise ConfigError(f"{where}.refreshes: must be an array of round numbers (integers >= 0)")
        federation["refreshes"] = frozenset(refreshes)
    schedule = dp_schedule(from_table(Schedule, federation, where, FEDERATION_DP_FIELDS), dp, federation, where)
    server = {**_table(raw, "server", path), "schedule": schedule, "dp": dp}
    config = from_table(ServerConfig, server, f"{path}: server")
    base = path.parent
    return dataclasses.replace(
        config,
        keys=_relative(base, config.keys),
        state_db=_relative(base, config.state_db),
        index=_relative(base, config.index),
        reports_dir=_relative(base, config.reports_dir),
        cache_dir=_relative(base, config.cache_dir),
        crl=_relative(base, config.crl),
    )


def check_schedule_for_roster(path: Path, config: ServerConfig, n_artists: int) -> None:
    """The ``[federation]`` checks that need the roster's size (from the key set: quorum, committee
    size, masking thresholds), their errors naming the file; the server repeats them at start."""
    try:
        config.schedule.validate(n_artists)
    except ConfigError as exc:
        raise ConfigError(f"{path}: [federation] {exc} (roster of {n_artists} artists in {config.keys})") from None


def load_client_config(path: Path) -> ClientConfig:
    """``[client]``: keys bundle, data folder (one artist), server address."""
    raw = _read(path)
    unknown = sorted(set(raw) - {"client"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)} (expected [client])")
    config = from_table(ClientConfig, _table(raw, "client", path), f"{path}: client")
    base = path.parent
    return dataclasses.replace(
        config,
        keys=_relative(base, config.keys),
        data=_relative(base, config.data),
        cache_dir=_relative(base, config.cache_dir),
        state_dir=_relative(base, config.state_dir),
        reports_dir=_relative(base, config.reports_dir),
        lifetime_ledger=_relative(base, config.lifetime_ledger),
    )
