"""FAKE sweep cell runners for the driver and backend tests (picklable: pool and Ray workers import them).

They stand in for the real simulation only where the test is about where and how often cells run;
``tests/test_sweep.py::test_cli_sweep_end_to_end`` runs the real runner on a pool.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from fedstyle_secure.experiments.sweep import METRICS, CellResult, CellRunner, CellSpec


def cell_name(spec: CellSpec) -> str:
    return f"{spec.algorithm}/{spec.epsilon:g}/{spec.seed}"


def fake_result(spec: CellSpec) -> CellResult:
    """Deterministic FAKE metrics of a cell (grow with epsilon, shrink with the seed)."""
    eps = 100.0 if math.isinf(spec.epsilon) else spec.epsilon
    value = eps / (eps + 1) - 0.01 * spec.seed
    return CellResult({m: value for m in METRICS}, {"wall_time_s": 0.5, "pid": os.getpid()})


@dataclass(frozen=True)
class FakeRunnerFactory:
    """Builds a FAKE runner that logs every call (one line per cell, appended) into ``log``.

    ``crash_once``: cells whose first attempt kills the worker process (``os._exit(3)``), detected by a
    marker file under ``log``'s folder; ``crash_always``: cells that kill it on every attempt;
    ``raises``: cells that raise ``ValueError``; ``kill_driver``: cells that SIGKILL the parent (the
    sweep driver) and then answer normally.
    """

    log: str
    crash_once: frozenset[str] = frozenset()
    crash_always: frozenset[str] = frozenset()
    raises: frozenset[str] = frozenset()
    kill_driver: frozenset[str] = frozenset()

    def __call__(self) -> CellRunner:
        return self.run

    def run(self, spec: CellSpec) -> CellResult:
        name = cell_name(spec)
        with open(self.log, "a") as fh:
            fh.write(name + "\n")
        marker = Path(self.log).parent / ("crashed-" + name.replace("/", "_"))
        if name in self.crash_always or (name in self.crash_once and not marker.exists()):
            marker.touch()
            sys.stdout.flush()
            os._exit(3)
        if name in self.raises:
            raise ValueError(f"bad cell {name}")
        if name in self.kill_driver:
            os.kill(os.getppid(), signal.SIGKILL)
        return fake_result(spec)


def logged_calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def drive(out: str, log: str, workers: int, kill_driver: tuple[str, ...]) -> None:
    """A sweep driver for a subprocess (the test kills it mid-way): FAKE cells on a process pool."""
    from fedstyle_secure.experiments.cell_backends import CellJob, ProcessPoolBackend
    from fedstyle_secure.experiments.sweep_store import CellStore, run_cells

    factory = FakeRunnerFactory(log, kill_driver=frozenset(kill_driver))
    run_cells(grid(), CellStore(Path(out)), ProcessPoolBackend(CellJob(factory, threads=1), workers))


def grid() -> list[CellSpec]:
    """8 cells: 2 algorithms x epsilon {1, inf} x seeds {0, 1}."""
    from fedstyle_secure.experiments.sweep import enumerate_cells

    return enumerate_cells("synthetic", ["fedstyle", "fedavg"], [1.0, math.inf], [0, 1], {"rounds": 2})
