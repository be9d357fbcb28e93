"""``server.toml`` / ``client.toml``: parsed with :mod:`tomllib`, validated field by field.

Every error names the file and the offending field (``ConfigError``).  Times in seconds,
sizes in bytes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import tomllib

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.privacy.plan import DEFAULT_MIN_TRAINING_ARTWORKS, DpConfig
from fedstyle_secure.secure.ckks.decryption import DEFAULT_MIN_QUORUM
from fedstyle_secure.secure.masking.summation import DEFAULT_THRESHOLD
from fedstyle_secure.transport.dp_config import dp_schedule, pop_federation_dp, validate_client_budget

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """The server process.  ``schedule`` is the ``[federation]`` table."""

    keys: Path
    state_db: Path
    listen: str = "127.0.0.1:50051"
    schedule: Schedule = field(default_factory=Schedule)
    embedding_dim: int = 64
    max_message_bytes: int = 4 * MiB  # any single gRPC message, e.g. a buyer's query image
    max_payload_bytes: int = 256 * MiB  # ceiling of a streamed upload; the round's layout sets the actual limit
    max_calls_per_identity: int = 4  # in-flight calls of one artist or buyer certificate (long polls count)
    max_buyer_calls: int = 8  # in-flight calls of all buyers together
    stream_idle_seconds: float = 10.0
    session_timeout_seconds: float = 30.0
    index: Path | None = None
    reports_dir: Path | None = None
    cache_dir: Path | None = None
    keep_serving: bool = False  # after the last round, answer buyer queries until SIGTERM/SIGINT
    crl: Path | None = None  # CA-signed revocation list (`fedstyle keys revoke`), re-read when it changes
    dp: DpConfig | None = (
        None  # from [federation] epsilon, delta, clip_norm, accountant, noise_multiplier (see dp_config)
    )


@dataclass(frozen=True)
class ClientConfig:
    """One artist process."""

    keys: Path
    data: Path
    server: str = "127.0.0.1:50051"
    artist: str | None = None
    server_name: str = "localhost"
    cache_dir: Path | None = None
    epochs: int = 1
    batch_size: int = 16
    reconnect_initial_seconds: float = 0.5
    reconnect_max_seconds: float = 30.0
    give_up_seconds: float = 900.0  # exit with an error once the server was unreachable this long
    max_message_bytes: int = 4 * MiB
    budget_epsilon: float | None = None  # this artist's own total epsilon (one artwork); None = the federation's
    budget_delta: float | None = None  # None = the DP plan's delta
    state_dir: Path | None = None  # durable state (model, ledger, last submission); required under DP
    reports_dir: Path | None = None  # signed epsilon reports; default <state_dir>/reports
    # the artist's portfolio-size rule (privacy.plan.DEFAULT_MIN_TRAINING_ARTWORKS): below it, no DP-SGD
    min_training_artworks: int = DEFAULT_MIN_TRAINING_ARTWORKS
    min_quorum: int = DEFAULT_MIN_QUORUM  # CKKS: never decrypt a sum of fewer contributors, whatever the server says
    min_masking_threshold: float = DEFAULT_THRESHOLD  # masking: refuse a plan announcing a lower threshold fraction
    min_masking_degree: int = 0  # secagg+: refuse a smaller degree than this (0: the default for the participant count)


_TYPES: dict[str, type] = {
    "int": int,
    "str": str,
    "bool": bool,
    "float": float,
    "float | None": float,
    "str | None": str,
    "Path": Path,
    "Path | None": Path,
}


def _coerce(value: Any, type_name: str, where: str) -> Any:
    """A TOML value as the dataclass field's type (annotations are strings here)."""
    expected = _TYPES.get(type_name)
    if expected is None:
        raise ConfigError(f"{where}: cannot be set in a config file")
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    wanted = str if expected is Path else expected
    if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {wanted.__name__}, got {value!r}")
    if expected is Path and isinstance(value, str):  # checked above: a path is given as a string
        return Path(value)
    return value


def _build(cls: type[T], table: dict[str, Any], where: str, nested: dict[str, Any] | None = None) -> T:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
    values = dict(nested or {})
    for name, value in table.items():
        if name == "refreshes":
            if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
                raise ConfigError(f"{where}.{name}: expected a list of round indices, got {value!r}")
            values[name] = frozenset(value)
        else:
            values[name] = _coerce(value, str(fields[name].type), f"{where}.{name}")
    missing = [
        n
        for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required field(s) {', '.join(missing)}")
    return cls(**values)


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _positive(obj: object, names: tuple[str, ...], where: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{where}.{name} must be > 0, got {getattr(obj, name)}")


@overload
def _relative(base: Path, path: Path) -> Path: ...
@overload
def _relative(base: Path, path: Path | None) -> Path | None: ...
def _relative(base: Path, path: Path | None) -> Path | None:
    return None if path is None else (path if path.is_absolute() else base / path)


def load_server_config(path: Path) -> ServerConfig:
    """``[server]`` (keys, state_db, listen, limits) and ``[federation]`` (the schedule)."""
    raw = _read(path)
    unknown = sorted(set(raw) - {"server", "federation"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)} (expected [server], [federation])")
    federation = dict(raw.get("federation", {}))
    dp = pop_federation_dp(federation, f"{path}: federation")
    schedule = dp_schedule(_build(Schedule, federation, f"{path}: federation"), dp, federation, f"{path}: federation")
    config = _build(ServerConfig, dict(raw.get("server", {})), f"{path}: server", {"schedule": schedule, "dp": dp})
    positive = (
        "embedding_dim",
        "max_message_bytes",
        "max_payload_bytes",
        "max_calls_per_identity",
        "max_buyer_calls",
        "stream_idle_seconds",
        "session_timeout_seconds",
    )
    _positive(config, positive, f"{path}: server")
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


def load_client_config(path: Path) -> ClientConfig:
    """``[client]``: keys bundle, data folder (one artist), server address."""
    raw = _read(path)
    unknown = sorted(set(raw) - {"client"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)} (expected [client])")
    config = _build(ClientConfig, dict(raw.get("client", {})), f"{path}: client")
    positive = (
        "epochs",
        "batch_size",
        "reconnect_initial_seconds",
        "reconnect_max_seconds",
        "give_up_seconds",
        "max_message_bytes",
        "min_quorum",
    )
    _positive(config, positive, f"{path}: client")
    if not 0.5 < config.min_masking_threshold <= 1.0 or config.min_masking_degree < 0:
        raise ConfigError(f"{path}: client.min_masking_threshold must be in (0.5, 1], client.min_masking_degree >= 0")
    validate_client_budget(config.budget_epsilon, config.budget_delta, f"{path}: client")
    base = path.parent
    return dataclasses.replace(
        config,
        keys=_relative(base, config.keys),
        data=_relative(base, config.data),
        cache_dir=_relative(base, config.cache_dir),
        state_dir=_relative(base, config.state_dir),
        reports_dir=_relative(base, config.reports_dir),
    )
