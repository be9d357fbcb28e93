"""An artist's durable state in ``<state_dir>/artist-state.sqlite`` (SQLite, no pickle).

One :class:`ArtistSnapshot` is replaced as a whole in ONE transaction (``BEGIN IMMEDIATE`` ...
``COMMIT``, ``synchronous=FULL``), so after a crash the file holds either the previous or the
new snapshot, never a mix: the privacy ledger, the model parameters and the cached results of
the round are always consistent with each other.  Arrays are stored as ``.npy`` / ``.npz``
bytes (``allow_pickle=False``), everything else as JSON.

What is kept (see :mod:`.artist_privacy` for why):

* ``model`` -- the model's ``state_dict`` (parameters and buffers) after the last phase acted in;
* ``ledger`` -- the :class:`~fedstyle_secure.privacy.budget.BudgetLedger` (budget, every
  mechanism charged so far);
* ``results`` -- what the artist computed in the phases of the latest round it acted in
  (its noised prototype publication, its packed contribution vector), to resend unchanged;
* ``own`` -- its latest published prototypes (they enter its own training context);
* ``lifetime_key`` -- the run's key in the artist's lifetime ledger
  (:mod:`~fedstyle_secure.transport.artist.lifetime_ledger`);
* ``rng`` -- the state of the seeded NumPy generator that picks augmented views and public images
  (not privacy-relevant), ``retired`` reason, ``uploaded`` report rounds and the ``plan`` it
  calibrated (to detect a changed federation plan after a restart).

The key of the CSPRNG that draws the DP noise is NOT stored: a resumed artist starts a fresh one
(:class:`~fedstyle_secure.randomness.CsprngNoise`), and never needs the old one, because every
charged result is stored and resent, never recomputed.

Threat model: the state directory is as private as the artist's images (it lives on the
artist's machine; it holds the unmasked contribution): it is kept 0700 and the database with
its WAL/shared-memory files 0600, tightened with a warning when an existing one is looser
(refusing would only block the artist's restart; the file is its own); integrity against a
local attacker is out of scope.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import socket
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.secure.ckks.decryption import DecryptionGuard
from fedstyle_secure.transport.sqlite_io import connect, npy_array, npy_bytes, private_database, transaction

log = logging.getLogger(__name__)

STATE_FILE = "artist-state.sqlite"
LOCK_FILE = "artist.lock"


@contextlib.contextmanager
def one_artist_process(state_dir: Path, *, wait: bool, witness_dir: Path | None = None) -> Iterator[None]:
    """Hold ``<state_dir>/artist.lock`` exclusively while the block runs: one process acts on an
    artist's ``state_dir`` at a time.  ``wait``: block until the holder is done (a Flower SuperNode
    may start several ClientApp processes for one artist, one per message); otherwise refuse at once
    with :class:`ConfigError` (``fedstyle client`` started twice on one config: two processes each
    checked the masking journal when they advertised, and each would answer its own session's
    unmasking request of the round, letting a server difference the two sums).  With a ``witness_dir``
    (``<reports_dir>/<artist>``) its ``artist.lock`` is held too: a ``state_dir`` restored (or its lock
    file deleted) while the first process runs holds a new lock file, the witness folder does not.
    Released when the process ends, however it ends."""
    with contextlib.ExitStack() as held:
        held.enter_context(_locked(Path(state_dir), wait))
        if witness_dir is not None and not _same_folder(Path(state_dir), Path(witness_dir)):
            held.enter_context(_locked(Path(witness_dir), wait))  # a second flock of one file would deadlock
        yield


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


@contextlib.contextmanager
def _locked(folder: Path, wait: bool) -> Iterator[None]:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another artist process is using {folder} (it holds {LOCK_FILE}): stop it before starting this one"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def one_process_per_identity(artist_id: str, identity_public_key: bytes) -> Iterator[None]:
    """Hold a Linux abstract Unix socket named after the artist's identity public key (32 bytes)
    while the block runs: a second ``fedstyle client`` of the same artist on this machine is refused
    at once with :class:`ConfigError`, with or without a ``state_dir`` (an artist without one keeps
    no journal, so two processes would each answer their own masking session of a round).  The name
    vanishes with the process, however it ends; it covers one machine (one network namespace) only.
    Elsewhere than Linux it is skipped with a warning."""
    if not sys.platform.startswith("linux"):
        log.warning("%s: one process per artist is enforced on Linux only (abstract sockets)", artist_id)
        yield
        return
    name = b"\0" + identity_lock_name(identity_public_key).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as held:
        try:
            held.bind(name)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ConfigError(
                f"another fedstyle client of {artist_id} is running on this machine: stop it before starting this one"
            ) from None
        yield


def identity_lock_name(identity_public_key: bytes) -> str:
    """The abstract socket name :func:`one_process_per_identity` holds (``@`` + it in ``/proc/net/unix``)."""
    return "fedstyle-artist-" + hashlib.sha256(identity_public_key).hexdigest()[:40]


def witness_folder(reports_dir: Path | None, artist_id: str) -> Path | None:
    """Where an artist keeps the second copies of its journals (and a second lock): ``<reports_dir>/<artist>``."""
    return None if reports_dir is None else Path(reports_dir) / artist_id


STATE_FORMAT = "fedstyle-artist-state/1"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS results (round_id INTEGER NOT NULL, phase TEXT NOT NULL, meta TEXT NOT NULL, "
    "array BLOB NOT NULL, PRIMARY KEY (round_id, phase))",
)


@dataclass(frozen=True)
class CachedResult:
    """What the artist computed (and was charged for) in one phase: ``array`` plus JSON ``meta``
    (e.g. a publication's artist rows, a contribution's layout)."""

    round_id: int
    phase: str
    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ArtistSnapshot:
    """Everything an artist process needs to resume (see the module docstring)."""

    artist_id: str
    model: dict[str, np.ndarray]
    ledger: dict[str, Any] | None
    rng: dict[str, Any]
    plan: dict[str, Any]
    own: tuple[np.ndarray, np.ndarray] | None = None
    own_round: int | None = None  # the round id whose publish phase ``own`` was sent in (artists without DP)
    standardised: bool = False  # a broadcast's standardisation is in ``model`` (never taken twice)
    retired: str | None = None
    uploaded: list[int] = field(default_factory=list)
    results: list[CachedResult] = field(default_factory=list)
    lifetime_key: str | None = None  # this run ledger's key in the artist's lifetime ledger (DP artists)

    def result(self, round_id: int, phase: str) -> CachedResult | None:
        return next((r for r in self.results if (r.round_id, r.phase) == (round_id, phase)), None)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **cast(dict[str, Any], arrays))  # keywords name arrays, not options
    return buffer.getvalue()


def _from_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


class ArtistStateStore:
    """``save`` replaces the snapshot atomically; ``load`` returns it, or ``None`` for a new artist."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / STATE_FILE
        private_database(self.path)
        with self._connect() as db:
            for statement in SCHEMA:
                db.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path)

    def save(self, snapshot: ArtistSnapshot) -> None:
        """Write the whole snapshot in one transaction (results of older rounds are dropped)."""
        meta = {
            "format": STATE_FORMAT,
            "artist_id": snapshot.artist_id,
            "ledger": snapshot.ledger,
            "rng": snapshot.rng,
            "plan": snapshot.plan,
            "retired": snapshot.retired,
            "uploaded": sorted(set(snapshot.uploaded)),
            "own_rows": None if snapshot.own is None else [int(r) for r in snapshot.own[0]],
            "own_round": snapshot.own_round,
            "standardised": snapshot.standardised,
            "lifetime_key": snapshot.lifetime_key,
        }
        rows = {
            "meta": json.dumps(meta).encode(),
            "model": _npz(snapshot.model),
            "own": b"" if snapshot.own is None else npy_bytes(snapshot.own[1]),
        }
        results = [(r.round_id, r.phase, json.dumps(r.meta), npy_bytes(r.array)) for r in snapshot.results]
        with transaction(self.path) as db:
            db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", list(rows.items()))
            db.execute("DELETE FROM results")
            db.executemany("INSERT INTO results (round_id, phase, meta, array) VALUES (?, ?, ?, ?)", results)

    def load(self) -> ArtistSnapshot | None:
        db = self._connect()
        try:
            rows = dict(db.execute("SELECT key, value FROM state").fetchall())
            results = db.execute("SELECT round_id, phase, meta, array FROM results ORDER BY round_id, phase").fetchall()
        finally:
            db.close()
        if not rows:
            return None
        try:
            meta = json.loads(rows["meta"])
            if meta.get("format") != STATE_FORMAT:
                raise ConfigError(f"{self.path}: not a {STATE_FORMAT} database")
            own = (
                None
                if meta["own_rows"] is None
                else (np.asarray(meta["own_rows"], dtype=np.int64), npy_array(rows["own"]))
            )
            return ArtistSnapshot(
                artist_id=str(meta["artist_id"]),
                model=_from_npz(rows["model"]),
                ledger=meta["ledger"],
                rng=meta["rng"],
                plan=meta["plan"],
                own=own,
                own_round=None if meta.get("own_round") is None else int(meta["own_round"]),
                standardised=bool(meta.get("standardised", False)),
                retired=meta["retired"],
                uploaded=[int(r) for r in meta["uploaded"]],
                results=[CachedResult(int(r), str(p), npy_array(a), json.loads(m)) for r, p, m, a in results],
                lifetime_key=None if meta.get("lifetime_key") is None else str(meta["lifetime_key"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"{self.path}: unreadable artist state ({exc!r}); refusing to guess what was spent"
            ) from exc


JOURNAL_FILE = "masking-journal.sqlite"


class _CopiedJournal:
    """A small SQLite journal (0600) kept in ``witness_dir`` (first, if any) and in ``state_dir``; what
    either copy holds counts.  A copy outside ``state_dir`` (``client.reports_dir``, like the charge
    count) outlives a restored backup of it."""

    def __init__(self, state_dir: Path, witness_dir: Path | None, name: str, schema: tuple[str, ...]) -> None:
        folders = ((witness_dir,) if witness_dir is not None else ()) + (state_dir,)
        self.paths = [Path(folder) / name for folder in folders]
        for path in self.paths:
            private_database(path)
            with transaction(path) as db:
                for statement in schema:
                    db.execute(statement)

    def _rows(self, query: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        """The rows ``query`` selects in every copy, the witness's first."""
        rows: list[Any] = []
        for path in self.paths:
            db = connect(path)
            try:
                rows += db.execute(query, parameters).fetchall()
            finally:
                db.close()
        return rows


class MaskingJournal(_CopiedJournal):
    """The federation rounds whose masking unmasking request this artist answered (and in which masking
    session), and the masking sessions it advertised keys in, kept across restarts in
    ``<state_dir>/masking-journal.sqlite`` (0600, beside the artist state) and, with a ``witness_dir``
    (``client.reports_dir``), a second copy there; what either copy holds counts.

    Threat model: once an artist answered round ``r``'s unmasking request, the server can decode a
    sum that contains its vector.  Were the artist to join another masking session of round ``r``
    with the same vector -- after a restart a DP artist resends its stored contribution, and a
    non-DP one retrains from the same broadcast -- a server faking an abort could decode a second
    sum without it and read its vector from the difference.  :meth:`claim` commits before the
    answer leaves the process, so a crash in between errs on the side of refusing, and it refuses
    to answer a second session of a round (two processes of one artist on one ``state_dir`` each
    checked the journal when they advertised, before either answered).  A ``state_dir`` restored
    from a backup forgets answers; the copy in ``witness_dir`` does not, unless it is restored too
    (nothing here can tell then: that needs a monotonic counter outside the machine).  Likewise
    :meth:`record_advertised` commits before an advertisement leaves, so a restarted artist still
    advertises at most once per session id and never in a round before the latest it advertised in
    (a replayed session gets nothing; its fresh keys would protect the vector, but the artist would
    retrain and sign a second key set under one session id)."""

    def __init__(self, state_dir: Path, witness_dir: Path | None = None) -> None:
        super().__init__(
            state_dir,
            witness_dir,
            JOURNAL_FILE,
            (
                "CREATE TABLE IF NOT EXISTS unmasked (round_id INTEGER PRIMARY KEY)",
                # the session that answered the round; session ids are 64-bit unsigned: kept as decimal
                # text (SQLite integers are signed)
                "CREATE TABLE IF NOT EXISTS answered (round_id INTEGER PRIMARY KEY, session_id TEXT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS advertised (session_id TEXT PRIMARY KEY, round_id INTEGER NOT NULL)",
            ),
        )

    def advertised(self) -> tuple[set[int], int]:
        """(The session ids this artist advertised keys in, the latest round among them; 0 if none.)"""
        rows = self._rows("SELECT session_id, round_id FROM advertised")
        return {int(s) for s, _ in rows}, max((int(r) for _, r in rows), default=0)

    def record_advertised(self, session_id: int, round_id: int) -> None:
        """Durably note that keys are being advertised in masking session ``session_id`` of ``round_id``."""
        for path in self.paths:
            with transaction(path) as db:
                db.execute(
                    "INSERT OR IGNORE INTO advertised (session_id, round_id) VALUES (?, ?)",
                    (str(session_id), int(round_id)),
                )

    def answered(self, round_id: int) -> bool:
        """Whether this artist ever answered an unmasking request of federation round ``round_id``."""
        return bool(self._rows("SELECT 1 FROM unmasked WHERE round_id = ?", (int(round_id),)))

    def claim(self, round_id: int, session_id: int) -> None:
        """Durably note that the unmasking request of session ``session_id`` of ``round_id`` is being
        answered; raise :class:`SecureAggregationError` if another session's (or, from an older journal,
        an unnamed one's) of that round was.  Answering the same session again is allowed (the same bytes)."""
        for path in self.paths:
            with transaction(path) as db:
                row = db.execute("SELECT session_id FROM answered WHERE round_id = ?", (int(round_id),)).fetchone()
                legacy = db.execute("SELECT 1 FROM unmasked WHERE round_id = ?", (int(round_id),)).fetchone()
                if (row is not None and int(row[0]) != session_id) or (row is None and legacy is not None):
                    raise SecureAggregationError(
                        f"round {round_id}: I already answered the unmasking request of another masking session of "
                        f"this round ({path}); not answering session {session_id:#x}"
                    )
                db.execute(
                    "INSERT OR IGNORE INTO answered (round_id, session_id) VALUES (?, ?)",
                    (int(round_id), str(session_id)),
                )
                db.execute("INSERT OR IGNORE INTO unmasked (round_id) VALUES (?)", (int(round_id),))


CKKS_GUARD_FILE = "ckks-guard.sqlite"


class CkksGuardJournal(_CopiedJournal):
    """The artist's CKKS :class:`~fedstyle_secure.secure.ckks.decryption.DecryptionGuard`, kept across
    restarts in ``<state_dir>/ckks-guard.sqlite`` (0600) and, with a ``witness_dir``
    (``client.reports_dir``), a second copy there (loaded merged: a restored backup of ``state_dir``
    forgets no commitment).  Threat model: a committee member that forgot (by restarting, or by a
    restored ``state_dir``) that it committed in attempt ``a`` would commit to a second set of the round,
    and a server faking an abort could difference two decrypted sums.  Saved before anything the guard
    allowed is signed."""

    def __init__(self, state_dir: Path, witness_dir: Path | None = None) -> None:
        schema = "CREATE TABLE IF NOT EXISTS guard (id INTEGER PRIMARY KEY CHECK (id = 0), state TEXT NOT NULL)"
        super().__init__(state_dir, witness_dir, CKKS_GUARD_FILE, (schema,))

    def load(self) -> list[dict[str, Any]]:
        """The guard state of each copy that holds one (none: the artist never acted in CKKS)."""
        return [json.loads(state) for (state,) in self._rows("SELECT state FROM guard WHERE id = 0")]

    def save(self, state: dict[str, Any]) -> None:
        """Store ``state`` in each copy, refusing (:class:`SecureAggregationError`, nothing stored in that
        copy) if the copy holds something ``state`` does not know of -- a later round or attempt, another
        commitment: another process of this artist acted since this one read its guard (a second
        ``fedstyle client`` whose lock file was replaced, e.g. by a restore while the first ran)."""
        new = DecryptionGuard.from_dict(state)
        for path in self.paths:
            with transaction(path) as db:
                row = db.execute("SELECT state FROM guard WHERE id = 0").fetchone()
                if row is not None:
                    stored = DecryptionGuard.from_dict(json.loads(row[0]))
                    try:
                        ahead = DecryptionGuard.merged([stored, new]) != new
                    except SecureAggregationError:
                        ahead = True
                    if ahead:
                        raise SecureAggregationError(
                            f"{path} holds {stored.to_dict()}, which this process never saw: another process of "
                            "this artist acted in the round; not signing"
                        )
                db.execute("INSERT OR REPLACE INTO guard (id, state) VALUES (0, ?)", (json.dumps(state),))


MASKING_SESSION_FILE = "masking-session.sqlite"


class MaskingSessionStore:
    """An artist's masking state between processes (a Flower ClientApp runs one process per message),
    in ``<state_dir>/masking-session.sqlite`` (0600): the masking session ids it used, the round's
    packed vector, and the current session's :class:`~fedstyle_secure.secure.masking.MaskingArtistState`
    (its ephemeral private keys, self-mask seed, the shares it holds, its phase).

    Threat model: this is the artist's key material of the round; it never leaves the machine.  The
    caller saves every new state before the reply it produced leaves the process, so a server that
    replays or reorders messages meets the phase of the artist's latest reply.  Secrets are dropped
    when the session ends (``secure_delete`` zeroes the freed pages, a ``TRUNCATE`` checkpoint empties
    the WAL); a forensic local attacker is out of scope, as for the rest of the state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / MASKING_SESSION_FILE
        private_database(self.path)
        with transaction(self.path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS masking (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def load(self) -> dict[str, bytes]:
        """The stored values by key (empty for an artist that never masked)."""
        db = connect(self.path)
        try:
            return {str(k): bytes(v) for k, v in db.execute("SELECT key, value FROM masking").fetchall()}
        finally:
            db.close()

    def save(self, values: dict[str, bytes]) -> None:
        """Replace everything stored by ``values`` in one transaction; old secrets are zeroed on disk."""
        with transaction(self.path) as db:
            db.execute("PRAGMA secure_delete=ON")
            db.execute("DELETE FROM masking")
            db.executemany("INSERT INTO masking (key, value) VALUES (?, ?)", list(values.items()))
        db = connect(self.path)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()


NEW_RUN_BUDGET_NOTE = (
    "whose run ledger starts at zero; what this run spent on the same artworks stays counted in the "
    "artist's lifetime ledger (client.lifetime_ledger, client.lifetime_epsilon)"
)


class FirstPlanPin:
    """The public parameters of the run as its first plan announced them -- the starting model's
    (algorithm, seed, embedding size, public warm-start steps, public set, privately trained layers)
    and the secure mode -- in ``<state_dir>/starting-model.sqlite`` (0600; the file's name from
    before it held the mode too, so an artist upgraded mid-run still reads its pin: one without the
    mode refuses every plan, fail closed, until a fresh state_dir).  A later plan announcing
    others is refused: a server could otherwise make an artist redo the public warm start on every
    message (Flower starts a process per message), start artists from models that differ without
    their noticing, or switch a masked or encrypted federation to ``none`` to read an artist's own
    contribution (see :func:`~fedstyle_secure.transport.artist.plan_checks.check_secure_mode`, the same
    rule in memory)."""

    FILE = "starting-model.sqlite"

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / self.FILE
        private_database(self.path)
        with transaction(self.path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS pin (id INTEGER PRIMARY KEY CHECK (id = 0), params TEXT NOT NULL)")

    def check(self, announced: dict[str, Any]) -> None:
        """Pin ``announced`` at the first call; afterwards raise :class:`ConfigError` naming what changed."""
        text = json.dumps(announced, sort_keys=True)
        with transaction(self.path) as db:
            row = db.execute("SELECT params FROM pin WHERE id = 0").fetchone()
            if row is None:
                db.execute("INSERT INTO pin (id, params) VALUES (0, ?)", (text,))
                return
        pinned = json.loads(row[0])
        changed = sorted(k for k in set(pinned) | set(announced) if pinned.get(k) != announced.get(k))
        if changed:
            details = ", ".join(f"{k} {pinned.get(k)!r} -> {announced.get(k)!r}" for k in changed)
            raise ConfigError(
                f"the plan announces other run parameters than this run's first plan ({details}); refused "
                f"(pinned in {self.path}; a new federation needs a fresh client.state_dir, {NEW_RUN_BUDGET_NOTE})"
            )
