"""Shared fixtures: a tiny synthetic federation whose features are computed once per session."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fedstyle_secure.data.public import PUBLIC_SET_VARIABLE, met_available
from fedstyle_secure.transport.artist.lifetime_ledger import LIFETIME_LEDGER_VARIABLE

# One compute thread per process: the suite runs servers, in-process artist threads and artist
# processes side by side on 2 cores, and torch's default (one thread per core in every process)
# oversubscribes them: a 20-round run measured ~30x slower that way on this machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")  # artist and server processes the tests start
torch.set_num_threads(1)
# The public alignment set of every federation the suite runs (simulated, loopback, the netns test's
# processes): the first 48 Met paintings, announced as ``met:48``, not all 174.  Its style features
# (48 images x 5 views through EfficientNet-Lite0) are the session's largest one-off cost; 48 keeps
# the public whitening's rank near the 64-dim embeddings the servers use.
os.environ.setdefault(PUBLIC_SET_VARIABLE, "met:48" if met_available() else "generated:48")

WIKIART_DEV = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "wikiart-dev"

# Test files by cost, the longest first (``--durations=0`` under two xdist workers, 2026-11-30; seconds
# of wall time per file, idle machine).  With ``--dist loadfile`` a worker takes the next file in
# collection order when it runs dry; pytest-xdist's own order is by number of tests, which queued the
# two-test netns file (75 s + 48 s, much of it waiting on phase deadlines) last, so one worker ran it
# alone at the end.  Longest first keeps both workers busy until the end, with one exception: the netns
# file comes third, once the first two files have filled the session's feature cache (the public set,
# the ``data`` fixture's artworks).  Run first, its first test paid that one-off extraction inside its
# own 120 s timeout and hit it at load average 8.  Unlisted files follow, in their usual order.
# Re-measure when a file's cost changes much.
HEAVIEST_FIRST = (
    "test_flower_app.py",  # 120
    "test_dp_training.py",  # 51
    "test_transport_netns.py",  # 66
    "test_transport_dp.py",  # 46
    "test_process_memory.py",  # 49 (fresh interpreters and their children)
    "test_sweep_parallel.py",  # 41
    "test_transport_e2e.py",  # 35
    "test_transport_masking_restarts.py",  # 27
    "test_transport_masking.py",  # 31
    "test_flower_masking_attacks.py",  # 31
    "test_secure_simulation.py",  # 15
    "test_architecture.py",  # 14
    "test_privacy_accounting.py",  # 12
    "test_simulate_e2e.py",  # 12
    "test_sweep.py",  # 10
    "test_data.py",  # 8
    "test_empirical_audit.py",  # 8
    "test_audit.py",  # 7
    "test_secure_masking.py",  # 7
    "test_transport_ckks.py",  # 7
    "test_optimisers.py",  # 7
    "test_simulator_memory.py",  # 6
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the :data:`HEAVIEST_FIRST` files first (a stable sort: a file's tests keep their order)."""
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def session_lifetime_ledger(tmp_path_factory) -> Path:
    """No test writes the user's lifetime ledger (``~/.local/share``): what runs outside a test (a
    module's fixtures) records in one of the session's own."""
    path = tmp_path_factory.mktemp("lifetime") / "lifetime-ledger.sqlite"
    os.environ[LIFETIME_LEDGER_VARIABLE] = str(path)
    return path


@pytest.fixture(autouse=True)
def lifetime_ledger(tmp_path_factory, monkeypatch) -> Path:
    """Each test's artists keep their lifetime ledger apart (artist processes inherit the variable): many
    tests run DP federations on the same generated artworks, which would otherwise add up across tests."""
    path = tmp_path_factory.mktemp("lifetime") / "lifetime-ledger.sqlite"
    monkeypatch.setenv(LIFETIME_LEDGER_VARIABLE, str(path))
    return path


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory) -> Path:
    """One feature and warm-start cache for the whole session (tests never touch the user's cache):
    the public set's features and the public warm start are computed once, not once per server."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest-xdist: one cache for all workers (extraction is locked)
        path = tmp_path_factory.getbasetemp().parent / "feature-cache"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("feature-cache")
    os.environ["FEDSTYLE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_federation(feature_cache):
    """5 synthetic artists x 12 artworks, one client each, 2 augmented views per artwork."""
    from fedstyle_secure.training.dataset import load_artworks, prepare_federation

    artworks, source = load_artworks(None, True, 5, 12, seed=3)
    return prepare_federation(artworks, source, seed=3, n_views=2, cache_dir=feature_cache)


@pytest.fixture(scope="module")
def data(tmp_path_factory, feature_cache: Path) -> Path:
    """3 synthetic artists x 6 images in ``<tmp>/data/<artist>/``, for loopback federations; their
    feature cache ``data.parent / "cache"`` is the session's, holding the style features of these
    artworks and of the public set before any federation starts: a party's one-off feature extraction
    must not race a test's phase deadlines (on a loaded machine it took longer than them)."""
    from fedstyle_secure.data.images import load_image_folder
    from fedstyle_secure.data.synth import write_synthetic_folder
    from fedstyle_secure.models.inputs import DEFAULT_BACKBONE, DEFAULT_VIEWS, build_input_bank
    from fedstyle_secure.transport.federation_model import public_bank

    root = tmp_path_factory.mktemp("federation")
    write_synthetic_folder(root / "data", 3, 6, seed=0)
    (root / "cache").symlink_to(feature_cache, target_is_directory=True)
    artworks, _ = load_image_folder(root / "data")
    build_input_bank(artworks.images, artworks.keys, DEFAULT_BACKBONE, DEFAULT_VIEWS, seed=0, cache_dir=feature_cache)
    public_bank(feature_cache)
    return root / "data"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    """Fresh key files (CA, server, CKKS) for :data:`tests.servers.ARTISTS` and one buyer, per test module."""
    from fedstyle_secure.transport.loopback import write_fresh_keys
    from tests.servers import ARTISTS, BUYER

    return write_fresh_keys(tmp_path_factory.mktemp("keys") / "set", ARTISTS, [BUYER])


@pytest.fixture
def serve(tmp_path) -> Iterator[Callable[..., Any]]:
    """Start real loopback servers (:func:`tests.servers.start`, database in ``tmp_path``): ``serve(keys,
    schedule=None, clock=time.time, **server_config_fields)``; every one is stopped at teardown."""
    from tests.servers import start

    started: list[Any] = []

    def serving(keys: Path, schedule: Any = None, clock: Callable[[], float] = time.time, **fields: Any) -> Any:
        started.append(start(keys, tmp_path, schedule, clock, **fields))
        return started[-1]

    yield serving
    for server in started:
        server.stop(0)
