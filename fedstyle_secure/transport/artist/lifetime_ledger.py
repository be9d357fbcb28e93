"""An artist's lifetime ledger: every run's epsilon on each artwork, in one SQLite file that outlives
any run's ``client.state_dir`` (default ``$XDG_DATA_HOME/fedstyle-secure/lifetime-ledger.sqlite``).

A run's own ledger lives in its ``state_dir``; a new federation needs a fresh one, which starts at
zero.  This file is what makes epsilon add up across runs on the same artworks: each run (one key
per run ledger, kept in its state) records here, before anything it computes leaves the machine,
the epsilon its ledger will have spent after the charge, and :meth:`LifetimeLedger.charge` refuses
a charge that would take any artwork's sum over all runs above the artist's lifetime epsilon
(:func:`~fedstyle_secure.privacy.lifetime.check_lifetime`).  Check and record are one ``BEGIN
IMMEDIATE`` transaction, so two runs of one artist started side by side cannot both spend the rest.

Artworks are told apart by the SHA-256 of their files' bytes: the same file in another folder is the
same artwork; a re-encoded or edited copy is a new one.  Threat model: the file is the artist's own
(0600 in a 0700 folder); deleting it forgets every earlier run, as deleting a ``state_dir`` forgets
a run's spend -- nothing on one machine can prevent that.  Runs on another machine are not seen.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fedstyle_secure.privacy.budget import utc_now_iso
from fedstyle_secure.privacy.lifetime import (
    LifetimeDecision,
    PortfolioSpend,
    RunSpend,
    check_lifetime,
    portfolio_spend,
)
from fedstyle_secure.transport.sqlite_io import connect, private_database, transaction

LIFETIME_LEDGER_VARIABLE = "FEDSTYLE_LIFETIME_LEDGER"
LIFETIME_LEDGER_FILE = "lifetime-ledger.sqlite"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runs (run_key TEXT PRIMARY KEY, artist_id TEXT NOT NULL, run_id TEXT NOT NULL, "
    "state_dir TEXT NOT NULL, epsilon REAL NOT NULL, delta REAL NOT NULL, updated TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS artworks (run_key TEXT NOT NULL, artwork TEXT NOT NULL, "
    "PRIMARY KEY (run_key, artwork))",
)


def default_lifetime_ledger() -> Path:
    """``$FEDSTYLE_LIFETIME_LEDGER``, else ``$XDG_DATA_HOME/fedstyle-secure/lifetime-ledger.sqlite``
    (``~/.local/share`` without it): one per user of a machine, like the feature cache."""
    explicit = os.environ.get(LIFETIME_LEDGER_VARIABLE)
    if explicit:
        return Path(explicit)
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "fedstyle-secure" / LIFETIME_LEDGER_FILE


@dataclass(frozen=True)
class RecordedRun:
    """One run's row: its spend and where it came from (artist, the server's run id, its state_dir)."""

    spend: RunSpend
    artist_id: str
    run_id: str
    state_dir: str
    updated: str


class LifetimeLedger:
    """The lifetime ledger file at ``path`` (created 0600 on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        private_database(self.path)
        with transaction(self.path) as db:
            for statement in SCHEMA:
                db.execute(statement)

    def runs(self) -> list[RecordedRun]:
        """Every recorded run, oldest update first."""
        db = connect(self.path)
        try:
            return _read_runs(db.execute("SELECT run_key, artwork FROM artworks").fetchall(), db)
        finally:
            db.close()

    def spent(self, portfolio: frozenset[str], *, excluding: str | None = None) -> PortfolioSpend:
        """What the recorded runs (but run ``excluding``) spent on ``portfolio``."""
        return portfolio_spend((r.spend for r in self.runs()), portfolio, excluding=excluding)

    def charge(self, run: LifetimeRun, epsilon: float, delta: float) -> LifetimeDecision:
        """Record that ``run`` reaches ``epsilon`` (its own ledger's epsilon after the charge about to be
        made, at its ``delta``) on its portfolio, if every artwork's lifetime epsilon stays within
        ``run.limit``; otherwise record nothing.  A run's epsilon here only grows (a rolled-back state
        holding less is counted at the most it ever recorded)."""
        with transaction(self.path) as db:
            rows = db.execute("SELECT run_key, artwork FROM artworks").fetchall()
            recorded = {r.spend.run_key: r for r in _read_runs(rows, db)}
            before = recorded.get(run.run_key)
            held = run.portfolio | (before.spend.artworks if before is not None else frozenset())
            epsilon = max(epsilon, before.spend.epsilon if before is not None else 0.0)
            delta = max(delta, before.spend.delta if before is not None else 0.0)
            decision = check_lifetime((r.spend for r in recorded.values()), held, run.run_key, epsilon, run.limit)
            if decision.allowed:
                db.execute(
                    "INSERT OR REPLACE INTO runs (run_key, artist_id, run_id, state_dir, epsilon, delta, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run.run_key, run.artist_id, run.run_id, run.state_dir, epsilon, delta, utc_now_iso()),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO artworks (run_key, artwork) VALUES (?, ?)",
                    [(run.run_key, artwork) for artwork in sorted(run.portfolio)],
                )
            return decision


@dataclass(frozen=True)
class LifetimeRun:
    """One run ledger's place in the lifetime ``ledger``: its key (random, kept in the run's state), who
    and what it is, the artworks it holds (:func:`~fedstyle_secure.data.images.artwork_digests`) and the
    artist's lifetime epsilon ``limit``."""

    ledger: LifetimeLedger
    run_key: str
    artist_id: str
    run_id: str
    state_dir: str
    portfolio: frozenset[str]
    limit: float

    def spent_by_others(self) -> PortfolioSpend:
        return self.ledger.spent(self.portfolio, excluding=self.run_key)

    def charge(self, epsilon: float, delta: float) -> LifetimeDecision:
        return self.ledger.charge(self, epsilon, delta)


def _read_runs(artwork_rows: Iterable[tuple[str, str]], db: sqlite3.Connection) -> list[RecordedRun]:
    artworks: dict[str, set[str]] = {}
    for run_key, artwork in artwork_rows:
        artworks.setdefault(str(run_key), set()).add(str(artwork))
    rows = db.execute(
        "SELECT run_key, artist_id, run_id, state_dir, epsilon, delta, updated FROM runs ORDER BY updated, run_key"
    ).fetchall()
    return [
        RecordedRun(
            RunSpend(str(key), float(eps), float(delta), frozenset(artworks.get(str(key), ()))),
            str(artist),
            str(run_id),
            str(state_dir),
            str(updated),
        )
        for key, artist, run_id, state_dir, eps, delta, updated in rows
    ]
