"""A whole federation on loopback: fresh keys, one server, N artist threads or processes.

Used by ``fedstyle launch``, ``scripts/run_federation.sh`` and the transport tests.  Nothing
here is needed in a real deployment, where every machine gets only its own key bundle.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedstyle_secure.data.images import load_image_folder
from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.privacy.plan import DpConfig
from fedstyle_secure.secure.keys.keystore import generate_key_files, load_artist_keys, load_server_keys, write_key_files
from fedstyle_secure.training.local import DEFAULT_LOCAL_EPOCHS
from fedstyle_secure.transport.artist.runner import run_artist
from fedstyle_secure.transport.config import ClientConfig, ServerConfig
from fedstyle_secure.transport.server.servicer import RunningServer, start_server

log = logging.getLogger(__name__)


def write_fresh_keys(keys_dir: Path, artists: Sequence[str], buyers: Sequence[str] = ()) -> Path:
    """A complete key set (CA, server, artists, buyers, CKKS) written 0600 into ``keys_dir``."""
    write_key_files(keys_dir, generate_key_files(list(artists), buyers=list(buyers)))
    return keys_dir


def artist_folders(data_dir: Path, work: Path) -> dict[str, Path]:
    """One data root per artist of ``<data>/<artist>/`` (a symlink under ``work``), as each artist machine holds."""
    artworks, _ = load_image_folder(data_dir)
    roots = {}
    for artist in artworks.artists:
        roots[artist] = work / "artist_data" / artist
        roots[artist].mkdir(parents=True, exist_ok=True)
        link = roots[artist] / artist
        if not link.exists():
            link.symlink_to((data_dir / artist).resolve(), target_is_directory=True)
    return roots


@dataclass
class LoopbackFederation:
    """A running server plus one thread per artist; ``results`` holds each artist's exit status or error."""

    server: RunningServer
    threads: dict[str, threading.Thread]
    results: dict[str, object] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    clients: dict[str, ClientConfig] = field(default_factory=dict)

    def start_artist(self, artist: str) -> threading.Thread:
        """(Re)start ``artist``'s client thread from its config, e.g. after it crashed: it resumes
        from its ``state_dir`` like a restarted artist process."""
        self.results.pop(artist, None)
        thread = threading.Thread(
            target=_artist_thread, args=(self, artist, self.clients[artist]), name=f"artist-{artist}", daemon=True
        )
        self.threads[artist] = thread
        thread.start()
        return thread

    def join(self, timeout: float) -> bool:
        finished = self.server.wait_finished(timeout)
        for thread in self.threads.values():
            thread.join(timeout=10)
        return finished

    def close(self) -> None:
        self.stop.set()
        self.server.stop(0)
        for thread in self.threads.values():
            thread.join(timeout=10)


def artist_dirs(work: Path, artist: str) -> tuple[Path, Path]:
    """``(state_dir, reports_dir)`` of ``artist`` in a loopback run under ``work`` (the server's
    reports are in ``work/reports``)."""
    return work / "artist_state" / artist, work / "artist_reports" / artist


def start_loopback(
    work: Path,
    data_dir: Path,
    schedule: Schedule,
    *,
    keys_dir: Path | None = None,
    cache_dir: Path | None = None,
    epochs: int = DEFAULT_LOCAL_EPOCHS,
    buyers: Sequence[str] = ("buyer",),
    dp: DpConfig | None = None,
    budgets: Mapping[str, float] | None = None,
    session_timeout_seconds: float = 30.0,
    public_pretrain_steps: int | None = None,
) -> LoopbackFederation:
    """Fresh keys (unless given), a server on a free loopback port, one artist thread per folder.

    ``dp`` is the federation's DP plan (``None``: no DP); under DP the set-up round is skipped
    (``schedule.standardise`` is forced off, as in the simulator).  ``budgets`` maps artist ids
    to their own epsilon budget (default: the plan's epsilon).  ``public_pretrain_steps`` is the
    server's announced warm start (``None``: the default).  Every artist keeps its durable state and
    signed reports in :func:`artist_dirs`, and its lifetime ledger in ``work`` (a trial of artists that
    are all on this machine: it does not count against what the user's own ledger records).
    """
    folders = artist_folders(data_dir, work)
    unknown = sorted(set(budgets or {}) - set(folders))
    if unknown:  # a budget for a misspelt artist would silently not apply
        raise ConfigError(f"--budget names {unknown}, which are not artist folders of {data_dir} ({sorted(folders)})")
    keys_dir = keys_dir or write_fresh_keys(work / "keys", sorted(folders), buyers)
    if dp is not None:
        schedule = replace(schedule, standardise=False)
    config = ServerConfig(
        keys=keys_dir,
        state_db=work / "server.sqlite",
        listen="127.0.0.1:0",
        schedule=schedule,
        index=work / "index",
        reports_dir=work / "reports",
        cache_dir=cache_dir,
        dp=dp,
        session_timeout_seconds=session_timeout_seconds,
        public_pretrain_steps=public_pretrain_steps,
    )
    server = start_server(config, load_server_keys(keys_dir))
    federation = LoopbackFederation(server, {})
    for artist, folder in folders.items():
        state_dir, reports_dir = artist_dirs(work, artist)
        federation.clients[artist] = ClientConfig(
            keys=keys_dir,
            data=folder,
            server=f"127.0.0.1:{server.port}",
            artist=artist,
            cache_dir=cache_dir,
            epochs=epochs,
            budget_epsilon=(budgets or {}).get(artist),
            state_dir=state_dir,
            reports_dir=reports_dir,
            lifetime_ledger=work / "lifetime-ledger.sqlite",  # a trial's: not the user's own
            min_training_artworks=(dp or DpConfig(epsilon=1.0)).min_training_artworks,
        )
        federation.start_artist(artist)
    return federation


def _artist_thread(federation: LoopbackFederation, artist: str, config: ClientConfig) -> None:
    try:
        federation.results[artist] = run_artist(config, load_artist_keys(config.keys, config.artist), federation.stop)
    except Exception as exc:  # reported to the caller, who decides; logged, so a hung run shows why
        log.exception("artist %s stopped with an error", artist)
        federation.results[artist] = exc
