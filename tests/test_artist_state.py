"""The artist's durable state holds its unmasked contribution: owner-only permissions, also for
SQLite's side files, and an existing looser state is tightened on resume."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import numpy as np
import pytest

from fedstyle_secure.transport.artist.state import STATE_FILE, ArtistSnapshot, ArtistStateStore, CachedResult


@pytest.fixture
def umask_022():
    """The common default umask, under which files are created 0644 unless asked otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot() -> ArtistSnapshot:
    contribution = CachedResult(3, "contribute", np.arange(5.0), {"layout": [["weighted_params", [5]]]})
    return ArtistSnapshot("artist_a", {"w": np.ones(3, np.float32)}, None, {}, {}, results=[contribution])


def test_new_state_is_owner_only_including_wal_and_shm(tmp_path, umask_022):
    store = ArtistStateStore(tmp_path / "state")
    store.save(_snapshot())
    reader = sqlite3.connect(store.path)  # an open connection keeps the -wal / -shm files in place
    try:
        reader.execute("SELECT count(*) FROM results").fetchone()
        side_files = [store.path.with_name(STATE_FILE + suffix) for suffix in ("-wal", "-shm")]
        assert all(p.exists() for p in side_files)
        files = (store.path, *side_files)
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
        assert _mode(tmp_path / "state") == 0o700
    finally:
        reader.close()
    loaded = store.load()
    assert loaded is not None and loaded.results[0].array.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_resuming_a_world_readable_state_tightens_it_and_keeps_the_data(tmp_path, umask_022, caplog):
    """A state written with looser permissions (an older version, a restored backup): tightened
    with a warning on resume, not refused (the file is the artist's own; refusing would only stop
    its restart while the exposure remained)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    db = sqlite3.connect(state / STATE_FILE)  # created 0644 under umask 022
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    (state / (STATE_FILE + "-wal")).touch(mode=0o644)
    assert _mode(state / STATE_FILE) == 0o644
    with caplog.at_level(logging.WARNING, logger="fedstyle_secure.transport.sqlite_io"):
        store = ArtistStateStore(state)
    db.close()
    assert _mode(state) == 0o700 and _mode(store.path) == 0o600 and _mode(state / (STATE_FILE + "-wal")) == 0o600
    assert "readable by others" in caplog.text and "644" in caplog.text
    store.save(_snapshot())
    loaded = store.load()
    assert loaded is not None and loaded.artist_id == "artist_a"


def test_the_masking_session_store_leaves_no_dropped_secret_on_disk(tmp_path, umask_022):
    """The Flower artist's masking session (its round's key material) is owner-only, and once replaced
    (the session ended) its bytes are gone from the database file and its WAL, not only unlinked from
    the table (SQLite would otherwise keep them in free pages until reused)."""
    from fedstyle_secure.transport.artist.state import MASKING_SESSION_FILE, MaskingSessionStore

    store = MaskingSessionStore(tmp_path / "state")
    secret = os.urandom(32).hex().encode() * 8  # stands in for a stored private key
    store.save({"meta": b"{}", "session": secret})
    assert store.load()["session"] == secret and _mode(tmp_path / "state" / MASKING_SESSION_FILE) == 0o600
    store.save({"meta": b"{}"})
    assert store.load() == {"meta": b"{}"}
    files = [p for p in (tmp_path / "state").iterdir() if p.name.startswith(MASKING_SESSION_FILE)]
    assert all(secret[:64] not in p.read_bytes() for p in files)


def test_a_pin_written_before_it_held_the_secure_mode_refuses_every_plan(tmp_path):
    """An artist upgraded mid-run finds its pin in the same file (``starting-model.sqlite``) without a
    secure mode: every plan is refused until a fresh state_dir, never re-pinned by whatever mode the
    server announces next (a second helper's attack: a renamed file let a server pin ``none``)."""
    from fedstyle_secure.errors import ConfigError
    from fedstyle_secure.transport.artist.state import FirstPlanPin

    old = {"algorithm": "fedstyle", "seed": 0, "embedding_dim": 128}
    FirstPlanPin(tmp_path).check(old)  # the previous version's pin: no secure_mode
    assert (tmp_path / "starting-model.sqlite").is_file()

    for mode in ("secagg", "none"):
        with pytest.raises(ConfigError, match=f"secure_mode None -> '{mode}'"):
            FirstPlanPin(tmp_path).check({**old, "secure_mode": mode})
