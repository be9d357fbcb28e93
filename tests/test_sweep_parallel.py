"""Sweep cells on a process pool and on Ray: same results as serial, resumable after the driver is
killed, a dying worker's cell retried (bounded), everything saved by the one driver process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.experiments.cell_backends import CellJob, ProcessPoolBackend, RayBackend, SerialBackend, import_ray
from fedstyle_secure.experiments.sweep_store import CellStore, run_cells
from tests.sweep_fakes import FakeRunnerFactory, cell_name, grid, logged_calls

REPO = Path(__file__).resolve().parents[1]


def _metrics(sweep):
    return [(cell_name(spec), result.metrics) for spec, result in sweep.done]


def _serial(log: Path) -> SerialBackend:
    return SerialBackend(CellJob(FakeRunnerFactory(str(log))))


def _pool(factory: FakeRunnerFactory, workers: int = 2) -> ProcessPoolBackend:
    return ProcessPoolBackend(CellJob(factory, threads=1), workers)


def test_pool_gives_the_serial_results_from_other_processes(tmp_path):
    cells = grid()
    serial = run_cells(cells, CellStore(tmp_path / "serial"), _serial(tmp_path / "s.log"))
    log = tmp_path / "pool.log"
    pooled = run_cells(cells, CellStore(tmp_path / "pool"), _pool(FakeRunnerFactory(str(log))))
    assert _metrics(pooled) == _metrics(serial) and not pooled.failed and pooled.computed == len(cells)
    assert sorted(logged_calls(log)) == sorted(cell_name(c) for c in cells)  # each cell ran exactly once
    pids = {result.extra["pid"] for _, result in pooled.done}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert sorted(p.name for p in (tmp_path / "pool" / "cells").iterdir()) == sorted(
        p.name for p in (tmp_path / "serial" / "cells").iterdir()
    )


def test_pool_sweep_killed_midway_resumes_without_redoing_a_saved_cell(tmp_path):
    """The driver is SIGKILLed by the 5th cell (after >= 3 were saved); the rerun computes only the rest."""
    cells, out, first_log = grid(), tmp_path / "out", tmp_path / "first.log"
    killer = cell_name(cells[4])
    code = f"from tests.sweep_fakes import drive; drive({str(out)!r}, {str(first_log)!r}, 2, ({killer!r},))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=300, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = CellStore(out)
    saved = [cell_name(c) for c in cells if store.load(c) is not None]
    assert 3 <= len(saved) < len(cells) and killer not in saved  # capacity 2: cell 4 went out after 3 were saved

    second_log = tmp_path / "second.log"
    resumed = run_cells(cells, store, _pool(FakeRunnerFactory(str(second_log))))
    redone = logged_calls(second_log)
    assert not set(redone) & set(saved)
    assert sorted(redone) == sorted(set(cell_name(c) for c in cells) - set(saved))
    fresh = run_cells(cells, CellStore(tmp_path / "fresh"), _serial(tmp_path / "f.log"))
    assert _metrics(resumed) == _metrics(fresh) and not resumed.failed


def test_worker_that_dies_is_retried_and_a_cell_that_always_kills_it_is_reported(tmp_path):
    cells = grid()
    once, always, raises = cell_name(cells[1]), cell_name(cells[5]), cell_name(cells[6])
    log = tmp_path / "calls.log"
    factory = FakeRunnerFactory(
        str(log), crash_once=frozenset({once}), crash_always=frozenset({always}), raises=frozenset({raises})
    )
    sweep = run_cells(cells, CellStore(tmp_path / "out"), _pool(factory), max_attempts=3)

    calls = logged_calls(log)
    assert calls.count(once) == 2 and calls.count(always) == 3 and calls.count(raises) == 1
    failed = {cell_name(f.spec): f for f in sweep.failed}
    assert set(failed) == {always, raises}
    assert failed[always].attempts == 3 and "exited with code 3" in failed[always].reason
    assert "ValueError: bad cell" in failed[raises].reason and failed[raises].attempts == 1
    done = {cell_name(spec) for spec, _ in sweep.done}
    assert done == {cell_name(c) for c in cells} - {always, raises} and once in done
    store = CellStore(tmp_path / "out")
    assert {cell_name(c) for c in cells if store.load(c) is not None} == done  # failures are not stored


def test_pool_rejects_zero_workers():
    with pytest.raises(ConfigError, match="--workers"):
        ProcessPoolBackend(CellJob(FakeRunnerFactory("unused")), 0)


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # FAKE absence: `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install -e \"\.\[ray\]\""):
        import_ray()


def test_local_ray_runs_the_grid_and_retries_a_crashed_worker(tmp_path):
    pytest.importorskip("ray", reason="the optional [ray] extra is not installed")
    cells = grid()
    once = cell_name(cells[3])
    log = tmp_path / "ray.log"
    job = CellJob(FakeRunnerFactory(str(log), crash_once=frozenset({once})), threads=1)
    backend = RayBackend(job, None, num_cpus=2)
    sweep = run_cells(cells, CellStore(tmp_path / "out"), backend)
    serial = run_cells(cells, CellStore(tmp_path / "serial"), _serial(tmp_path / "s.log"))
    assert _metrics(sweep) == _metrics(serial) and not sweep.failed
    assert logged_calls(log).count(once) == 2  # died once, retried by the driver
    assert os.getpid() not in {result.extra["pid"] for _, result in sweep.done}
