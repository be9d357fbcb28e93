"""Durable server state in SQLite: one atomic transaction after every round (no pickle).

Arrays are stored as ``.npy`` bytes (``allow_pickle=False``), everything else as JSON.  A restarted
server resumes from the last completed round; a round interrupted mid-way is simply run again.
A snapshot holding NaN or infinite values is refused as a whole (:class:`NonFiniteState`):
nothing non-finite is ever written, so nothing non-finite survives a restart.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.strategy import ServerState
from fedstyle_secure.privacy.reports import is_run_id
from fedstyle_secure.transport.sqlite_io import connect, npy_array, npy_bytes, transaction

SCHEMA = "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL)"
FORMAT = "fedstyle-server-state/1"


@dataclass(frozen=True)
class Snapshot:
    """What survives a restart."""

    state: ServerState
    standardisation: tuple[np.ndarray, np.ndarray] | None
    reports: dict[str, int]
    roster: tuple[str, ...]
    algorithm: str
    run_id: str
    # what the run's artists pin or are signed for (rounds, secure mode, seed, DP plan, ...), as JSON
    # values; None in a state saved before it was kept (not compared on restart)
    run_parameters: dict[str, Any] | None = None


class NonFiniteState(ValueError):
    """The server state to persist (or broadcast) contains NaN or infinite values."""


def require_finite(arrays: Mapping[str, np.ndarray | None]) -> None:
    """Raise :class:`NonFiniteState` naming the first array with a NaN or infinite value."""
    for name, array in arrays.items():
        if array is not None and not np.all(np.isfinite(array)):
            raise NonFiniteState(f"{name} contains {int(np.sum(~np.isfinite(array)))} NaN or infinite value(s)")


def require_finite_state(state: ServerState, standardisation: tuple[np.ndarray, np.ndarray] | None) -> None:
    """:func:`require_finite` over everything the server persists and broadcasts."""
    mean, std = standardisation or (None, None)
    first, second = state.moments or (None, None)
    require_finite(
        {
            "params": state.params,
            "consensus": state.consensus,
            "prototypes": state.prototypes,
            "feature_mean": mean,
            "feature_std": std,
            "optimizer_first_moment": first,
            "optimizer_second_moment": second,
        }
    )


def _npy(array: np.ndarray | None) -> bytes:
    return b"" if array is None else npy_bytes(array)


def _array(data: bytes) -> np.ndarray | None:
    return None if not data else npy_array(data)


class StateStore:
    """``save`` replaces the whole snapshot in one transaction; ``load`` returns it or None."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as db:
                db.execute(SCHEMA)
        except sqlite3.DatabaseError as exc:  # a folder, another kind of file
            raise ConfigError(f"server.state_db: {self.path} is not a usable SQLite database: {exc}") from None

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path)

    def save(self, snapshot: Snapshot) -> None:
        """Replace the stored snapshot; refuses (:class:`NonFiniteState`, nothing written) one with NaN/inf."""
        s = snapshot.state
        require_finite_state(s, snapshot.standardisation)
        mean, std = snapshot.standardisation or (None, None)
        first, second = s.moments or (None, None)
        rows = {
            "meta": json.dumps(
                {
                    "format": FORMAT,
                    "round": s.round,
                    "retired": s.retired,
                    "reports": snapshot.reports,
                    "roster": list(snapshot.roster),
                    "algorithm": snapshot.algorithm,
                    "run_id": snapshot.run_id,
                    "run_parameters": snapshot.run_parameters,
                }
            ).encode(),
            "params": _npy(s.params),
            "consensus": _npy(s.consensus),
            "prototypes": _npy(s.prototypes),
            "known": _npy(s.known),
            "feature_mean": _npy(mean),
            "feature_std": _npy(std),
            "optimizer_first_moment": _npy(first),  # the server optimizer's state: a restart resumes it
            "optimizer_second_moment": _npy(second),
        }
        with transaction(self.path) as db:
            db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", list(rows.items()))

    def load(self) -> Snapshot | None:
        db = self._connect()
        try:
            rows = dict(db.execute("SELECT key, value FROM state").fetchall())
        finally:
            db.close()
        if not rows:
            return None
        meta = json.loads(rows["meta"])
        if meta.get("format") != FORMAT:
            raise ConfigError(f"{self.path}: not a {FORMAT} database")
        mean, std = _array(rows["feature_mean"]), _array(rows["feature_std"])
        prototypes, known = _array(rows["prototypes"]), _array(rows["known"])
        if prototypes is None or known is None:
            raise ConfigError(f"{self.path}: the saved state has no prototype table")
        if (mean is None) != (std is None):
            raise ConfigError(f"{self.path}: the saved state has only one of feature_mean and feature_std")
        standardisation = None if mean is None or std is None else (mean, std)
        first = _array(rows.get("optimizer_first_moment", b""))  # absent: saved by plain averaging
        second = _array(rows.get("optimizer_second_moment", b""))
        if (first is None) != (second is None):
            raise ConfigError(f"{self.path}: the saved state has only one of the server optimizer's moments")
        state = ServerState(
            round=int(meta["round"]),
            params=_array(rows["params"]),
            consensus=_array(rows["consensus"]),
            prototypes=prototypes,
            known=known,
            retired=dict(meta["retired"]),
            moments=None if first is None or second is None else (first, second),
        )
        try:  # e.g. written by a version without this guard: never resumed from, never broadcast
            require_finite_state(state, standardisation)
        except NonFiniteState as exc:
            raise ConfigError(f"{self.path}: the saved state is unusable: {exc}") from exc
        return Snapshot(
            state=state,
            standardisation=standardisation,
            reports={k: int(v) for k, v in meta["reports"].items()},
            roster=tuple(meta["roster"]),
            algorithm=str(meta["algorithm"]),
            run_id=_run_id(meta.get("run_id"), self.path),
            run_parameters=_run_parameters(meta.get("run_parameters"), self.path),
        )


def _run_parameters(stored: object, path: Path) -> dict[str, Any] | None:
    if stored is None or isinstance(stored, dict):
        return stored
    raise ConfigError(f"{path}: the saved run parameters are not a table")


def _run_id(stored: object, path: Path) -> str:
    if not (isinstance(stored, str) and is_run_id(stored)):
        raise ConfigError(f"{path}: the saved state has no valid run id ({stored!r}): saved by an older version?")
    return stored
