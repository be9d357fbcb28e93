"""An artist's lifetime ledger: every run's epsilon on each artwork, in one SQLite file that outlives
any run's ``client.state_dir`` (default ``$XDG_DATA_HOME/fedstyle-secure/lifetime-ledger.sqlite``).

A run's own ledger lives in its ``state_dir``; a new federation needs a fresh one, which starts at
zero.  This file is what makes epsilon add up across runs on the same artworks.  Each run (one key
per run ledger, random, kept in its state) records here:

* before a charged result is kept (and so before it leaves), the epsilon and delta its ledger
  reaches with the charge -- :meth:`LifetimeLedger.charge` refuses, recording nothing, a charge that
  would take any artwork's sums over all runs above the lifetime budget
  (:func:`~fedstyle_secure.privacy.lifetime.check_lifetime`), in one ``BEGIN IMMEDIATE`` transaction
  with the check, so two runs of one artist started side by side cannot both spend the rest;
* after the result is kept, the number of charges its ledger holds (:meth:`LifetimeLedger.commit`):
  a ``state_dir`` rolled back to fewer charges, or copied and run from another folder under the same
  key, would release again under a key already counted, and is refused (:meth:`LifetimeLedger.bind`);
* the lifetime epsilon in effect, so that a later run whose limit comes from the server's announced
  target cannot raise it (:meth:`LifetimeLedger.recorded_limit`).

Artworks are told apart by their decoded pixels
(:func:`~fedstyle_secure.data.images.artwork_keys`): a losslessly re-saved copy is the same artwork,
a lossy re-encoding or an edit is a new one.  Threat model: the file is the artist's own (0600);
deleting it forgets every earlier run, as deleting a ``state_dir`` forgets a run's spend -- nothing
on one machine can prevent that.  Runs on another machine, or recorded in another ledger file, are
not seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.privacy.budget import utc_now_iso
from fedstyle_secure.privacy.lifetime import (
    LifetimeDecision,
    PortfolioSpend,
    RunSpend,
    check_lifetime,
    portfolio_spend,
)
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.sqlite_io import connect, restrict_mode, transaction

LIFETIME_LEDGER_VARIABLE = "FEDSTYLE_LIFETIME_LEDGER"
LIFETIME_LEDGER_FILE = "lifetime-ledger.sqlite"
TABLES = ("runs", "artworks")
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS runs (run_key TEXT PRIMARY KEY, artist_id TEXT NOT NULL, run_id TEXT NOT NULL, "
    "state_dir TEXT NOT NULL, epsilon REAL NOT NULL, delta REAL NOT NULL, lifetime_epsilon REAL NOT NULL, "
    "charges INTEGER NOT NULL, updated TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS artworks (run_key TEXT NOT NULL, artwork TEXT NOT NULL, "
    "PRIMARY KEY (run_key, artwork))",
)


COLUMNS = (
    "run_key",
    "artist_id",
    "run_id",
    "state_dir",
    "epsilon",
    "delta",
    "lifetime_epsilon",
    "charges",
    "updated",
)


def artist_lifetime_ledger(config: ClientConfig) -> Path:
    """The artist's lifetime ledger: ``client.lifetime_ledger``, else :func:`default_lifetime_ledger`."""
    return config.lifetime_ledger or default_lifetime_ledger()


def check_lifetime_ledger(config: ClientConfig) -> None:
    """:class:`ConfigError` for an artist's lifetime ledger that cannot outlive a run (inside its
    ``state_dir`` or ``reports_dir``), or that is unusable (not a lifetime ledger, not readable,
    locked): checked before an artist joins a federation."""
    path = artist_lifetime_ledger(config)
    resolved = path.expanduser().resolve()
    for folder in (config.state_dir, config.reports_dir):
        if folder is not None and resolved.is_relative_to(Path(folder).resolve()):
            raise ConfigError(
                f"client.lifetime_ledger: {path} is inside {folder}, which belongs to one run; the lifetime "
                "ledger must outlive every run (keep it outside client.state_dir and client.reports_dir)"
            )
    if path.exists():
        LifetimeLedger.read_runs(path)


def default_lifetime_ledger() -> Path:
    """``$FEDSTYLE_LIFETIME_LEDGER``, else ``$XDG_DATA_HOME/fedstyle-secure/lifetime-ledger.sqlite``
    (``~/.local/share`` without it): one per user of a machine, like the feature cache.  A relative
    path is refused: it would name another file from every working directory."""
    explicit = os.environ.get(LIFETIME_LEDGER_VARIABLE)
    path = (
        Path(explicit).expanduser()
        if explicit
        else Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        / "fedstyle-secure"
        / LIFETIME_LEDGER_FILE
    )
    if not path.is_absolute():
        raise ConfigError(
            f"the lifetime ledger must be an absolute path, got {str(path)!r} (${LIFETIME_LEDGER_VARIABLE})"
        )
    return path


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[None]:
    """SQLite errors on the ledger at ``path`` (not a database, locked, another schema) as one
    :class:`ConfigError` naming the file."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: the lifetime ledger cannot be used: {exc}") from exc


def _read_only(path: Path) -> sqlite3.Connection:
    """A connection that can change nothing in the database at ``path``."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _tables(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _refuse_another_database(path: Path) -> None:
    """:class:`ConfigError` if ``path`` is a database holding tables, none of them a lifetime ledger's
    (read-only).  A database without tables yet is another process creating the ledger right now; a
    file that cannot be read here is left to the creating transaction, which names what is wrong."""
    try:
        with contextlib.closing(_read_only(path)) as db:
            tables = _tables(db)
    except sqlite3.DatabaseError:
        return
    if tables and not set(TABLES) <= tables:
        raise ConfigError(f"{path} is not a lifetime ledger (tables {sorted(tables)}); refusing to write into it")


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    tables = _tables(db)
    if not set(TABLES) <= tables:
        raise ConfigError(f"{path} is not a lifetime ledger (tables {sorted(tables)})")
    columns = tuple(row[1] for row in db.execute("PRAGMA table_info(runs)"))
    if columns != COLUMNS:
        raise ConfigError(
            f"{path}: a lifetime ledger of another version (runs columns {list(columns)}, expected {list(COLUMNS)})"
        )


@dataclass(frozen=True)
class RecordedRun:
    """One run's row: its spend, the lifetime epsilon it ran under, the charges it committed, and where
    it came from (artist, the server's run id, its state_dir)."""

    spend: RunSpend
    artist_id: str
    run_id: str
    state_dir: str
    lifetime_epsilon: float
    charges: int
    updated: str


@dataclass(frozen=True)
class LifetimeRun:
    """One run ledger's place in the lifetime ``ledger``: its key (random, kept in the run's state), who
    and what it is, the artworks it holds and the lifetime budget ``(limit, delta_limit)``."""

    ledger: LifetimeLedger
    run_key: str
    artist_id: str
    run_id: str
    state_dir: str
    portfolio: frozenset[str]
    limit: float
    delta_limit: float

    def spent_by_others(self) -> PortfolioSpend:
        return self.ledger.spent(self.portfolio, excluding=self.run_key)

    def check(self, epsilon: float, delta: float) -> LifetimeDecision:
        return self.ledger.check(self, epsilon, delta)

    def charge(
        self, epsilon: float, delta: float, *, needs: tuple[float, float] | None = None, spent: bool = False
    ) -> LifetimeDecision:
        return self.ledger.charge(self, epsilon, delta, needs=needs, spent=spent)

    def commit(self, charges: int) -> None:
        self.ledger.commit(self, charges)

    def bind(self, held_charges: int) -> None:
        self.ledger.bind(self, held_charges)


class LifetimeLedger:
    """The lifetime ledger file at ``path``: created 0600 on first use (its folder 0700 when this creates
    it; an existing folder is left as it is: the file may sit in a shared one)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.is_file() and self.path.stat().st_size > 0:
            _refuse_another_database(self.path)  # a server's state, an artist's: refused untouched
        try:
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700, parents=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot open the lifetime ledger: {exc.strerror or exc}") from exc
        restrict_mode(self.path, 0o600)
        with _readable(self.path), transaction(self.path) as db:  # one process creates the tables, others wait
            for statement in SCHEMA:
                db.execute(statement)
            _check_schema(db, self.path)

    @staticmethod
    def read_runs(path: Path) -> list[RecordedRun]:
        """The runs recorded in the ledger at ``path``, opened read-only (nothing created or changed);
        :class:`ConfigError` if there is none or it is not a lifetime ledger."""
        if Path(path).is_dir():
            raise ConfigError(f"{path} is a folder, not a lifetime ledger file")
        if not Path(path).is_file():
            raise ConfigError(f"no lifetime ledger at {path}: no DP run of an artist recorded one there")
        with _readable(Path(path)), contextlib.closing(_read_only(Path(path))) as db:
            _check_schema(db, Path(path))
            return _read_runs(db)

    def runs(self) -> list[RecordedRun]:
        """Every recorded run, oldest update first."""
        with _readable(self.path), contextlib.closing(connect(self.path)) as db:
            return _read_runs(db)

    def spent(self, portfolio: frozenset[str], *, excluding: str | None = None) -> PortfolioSpend:
        """What the recorded runs (but run ``excluding``) spent on ``portfolio``."""
        return portfolio_spend((r.spend for r in self.runs()), portfolio, excluding=excluding)

    def recorded_limit(self, portfolio: frozenset[str]) -> float | None:
        """The smallest lifetime epsilon any run holding one of these artworks ran under (None: no run)."""
        limits = [r.lifetime_epsilon for r in self.runs() if r.spend.artworks & portfolio]
        return min(limits, default=None)

    def check(self, run: LifetimeRun, epsilon: float, delta: float) -> LifetimeDecision:
        """:meth:`charge` without recording anything."""
        recorded = {r.spend.run_key: r for r in self.runs()}
        return _decide(recorded, run, epsilon, delta)

    def charge(
        self,
        run: LifetimeRun,
        epsilon: float,
        delta: float,
        *,
        needs: tuple[float, float] | None = None,
        spent: bool = False,
    ) -> LifetimeDecision:
        """Record that ``run`` reaches ``(epsilon, delta)`` (its own ledger's after the charge about to be
        kept) on its portfolio, if every artwork's lifetime sums stay within the run's limits; otherwise
        record nothing.  A run's epsilon and delta here only grow.  ``needs``: decide as if the run reached
        that much (a bound that does not depend on what is recorded, e.g. on the portfolio's size), in
        the same transaction.  ``spent``: what the run's kept ledger already holds (a resumed run), recorded
        even over the limit -- a fact, not a request; the decision still says whether it is within."""
        with _readable(self.path), transaction(self.path) as db:
            recorded = {r.spend.run_key: r for r in _read_runs(db)}
            decision = _decide(recorded, run, epsilon, delta)
            if needs is not None:  # needs >= (epsilon, delta): allowed under needs implies allowed as it is
                bounded = _decide(recorded, run, max(epsilon, needs[0]), max(delta, needs[1]))
                decision = dataclasses.replace(decision, allowed=bounded.allowed)
            if decision.allowed or spent:
                before = recorded.get(run.run_key)
                db.execute(
                    "INSERT OR REPLACE INTO runs (run_key, artist_id, run_id, state_dir, epsilon, delta, "
                    "lifetime_epsilon, charges, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run.run_key,
                        run.artist_id,
                        run.run_id,
                        run.state_dir if before is None else before.state_dir,
                        decision.run_epsilon,
                        decision.run_delta,
                        run.limit,
                        0 if before is None else before.charges,
                        utc_now_iso(),
                    ),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO artworks (run_key, artwork) VALUES (?, ?)",
                    [(run.run_key, artwork) for artwork in sorted(run.portfolio)],
                )
            return decision

    def commit(self, run: LifetimeRun, charges: int) -> None:
        """Note that ``run``'s ledger durably holds ``charges`` mechanisms (after they were kept, before
        anything computed from them leaves).  Only grows."""
        with _readable(self.path), transaction(self.path) as db:
            db.execute(
                "UPDATE runs SET charges = MAX(charges, ?), updated = ? WHERE run_key = ?",
                (int(charges), utc_now_iso(), run.run_key),
            )

    def bind(self, run: LifetimeRun, held_charges: int) -> None:
        """Raise :class:`ConfigError` unless ``run``'s state may resume under its key: the key was never
        recorded, or it was recorded for this very ``state_dir`` and with at most ``held_charges``
        committed charges.  A state rolled back to fewer charges, or copied to another folder, would
        release again what the key already counts once."""
        recorded = next((r for r in self.runs() if r.spend.run_key == run.run_key), None)
        if recorded is None:
            return
        if recorded.state_dir != run.state_dir:
            raise ConfigError(
                f"client.state_dir: this run's state was recorded in {recorded.state_dir}, not in {run.state_dir} "
                f"({self.path}): a copied state_dir must not run beside its original (a moved one: move it back)"
            )
        if recorded.charges > held_charges:
            raise ConfigError(
                f"client.state_dir: its ledger holds {held_charges} charge(s), but the lifetime ledger {self.path} "
                f"shows {recorded.charges} kept for this run: the state was rolled back (a restored backup?); "
                "refusing to run, which would release again what was already released"
            )


def _decide(recorded: dict[str, RecordedRun], run: LifetimeRun, epsilon: float, delta: float) -> LifetimeDecision:
    """:func:`check_lifetime` for ``run`` at (at least) what it recorded before, on its portfolio and the
    artworks it recorded before."""
    before = recorded.get(run.run_key)
    held = run.portfolio | (before.spend.artworks if before is not None else frozenset())
    if before is not None:
        epsilon, delta = max(epsilon, before.spend.epsilon), max(delta, before.spend.delta)
    spends = (r.spend for r in recorded.values())
    return check_lifetime(spends, held, run.run_key, (epsilon, delta), (run.limit, run.delta_limit))


def _read_runs(db: sqlite3.Connection) -> list[RecordedRun]:
    artworks: dict[str, set[str]] = {}
    for run_key, artwork in db.execute("SELECT run_key, artwork FROM artworks").fetchall():
        artworks.setdefault(str(run_key), set()).add(str(artwork))
    rows = db.execute(
        "SELECT run_key, artist_id, run_id, state_dir, epsilon, delta, lifetime_epsilon, charges, updated FROM runs "
        "ORDER BY updated, run_key"
    ).fetchall()
    return [
        RecordedRun(
            RunSpend(str(key), float(eps), float(delta), frozenset(artworks.get(str(key), ()))),
            str(artist),
            str(run_id),
            str(state_dir),
            float(limit),
            int(charges),
            str(updated),
        )
        for key, artist, run_id, state_dir, eps, delta, limit, charges, updated in rows
    ]


def record_finished_run(ledger: LifetimeLedger, state_dir: Path, portfolio: frozenset[str]) -> LifetimeDecision | None:
    """Record in ``ledger`` the run whose state (and DP ledger) is in ``state_dir``, on ``portfolio``: a
    run that finished before there was a lifetime ledger (or recorded in another one).  What its ledger
    spent is a fact: recorded even over a limit (the decision says whether it is within its own
    budget).  ``None`` when the ledger holds that run already; :class:`ConfigError` when ``state_dir``
    holds no DP ledger.  The state itself is not changed."""
    from fedstyle_secure.privacy.budget import BudgetLedger
    from fedstyle_secure.transport.artist.state import STATE_FILE, ArtistStateStore

    if not (Path(state_dir) / STATE_FILE).is_file():
        raise ConfigError(f"{state_dir} holds no artist state ({STATE_FILE})")
    snapshot = ArtistStateStore(Path(state_dir)).load()
    if snapshot is None or snapshot.ledger is None:
        raise ConfigError(f"{state_dir} holds no DP ledger (a run without DP spends no epsilon to record)")
    if snapshot.lifetime_key is not None and any(r.spend.run_key == snapshot.lifetime_key for r in ledger.runs()):
        return None
    spent = BudgetLedger.from_dict(snapshot.ledger)
    run = LifetimeRun(
        ledger=ledger,
        run_key=snapshot.lifetime_key or secrets.token_hex(16),
        artist_id=snapshot.artist_id,
        run_id="",
        state_dir=str(Path(state_dir).resolve()),
        portfolio=portfolio,
        limit=spent.budget.epsilon,
        delta_limit=0.5,
    )
    decision = run.charge(spent.epsilon_spent, spent.budget.delta, spent=True)
    run.commit(len(spent.history))
    return decision
