"""Where sweep cells run: in this process, in a local process pool, or on a Ray cluster.

One function, :func:`execute_cell`, runs a cell on every backend.  A backend only carries cells to
it and outcomes back; the driver (:func:`sweep_store.run_cells`, one process) is the only writer of
the cell store and decides about retries.  A backend tells a cell that *raised* (an outcome with an
error: deterministic, not retried) from a worker that *died* under it (:class:`WorkerDied`: the
process was killed, ran out of memory or its node vanished; retried by the driver).

Each worker process builds the cell runner once (from a picklable factory) and keeps it for every
cell of the sweep it runs; pool and Ray workers use ``threads`` compute threads each (default one),
so N workers never oversubscribe N cores.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.experiments.sweep import CellResult, CellRunner, CellSpec

log = logging.getLogger(__name__)

RAY_EXTRA_HINT = 'pip install -e ".[ray]"'
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class CellJob:
    """What a worker needs to run the cells of one sweep.

    ``make_runner`` is called once per worker process (it must be picklable for the pool and Ray,
    e.g. ``functools.partial(make_cell_runner, args)``); ``token`` names the sweep, so a reused
    worker rebuilds its runner for a new one; ``threads`` is the number of torch/BLAS compute
    threads per worker (``None``: leave the process's setting, as the serial path does).
    """

    make_runner: Callable[[], CellRunner]
    threads: int | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class CellOutcome:
    """A finished attempt: the cell's result, or the error it raised (``"Type: message"``)."""

    result: CellResult | None = None
    error: str | None = None


@dataclass(frozen=True)
class WorkerDied:
    """The process running a cell died before answering (``reason`` says how)."""

    reason: str


Attempt = CellOutcome | WorkerDied

_runner_slot: dict[str, CellRunner] = {}  # this process's runner, keyed by the job's token


def limit_threads(threads: int) -> None:
    """Use ``threads`` compute threads in this process (torch intra- and inter-op)."""
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # fixed once parallel work has started; intra-op is what matters
        torch.set_num_interop_threads(threads)


def _runner_for(job: CellJob) -> CellRunner:
    runner = _runner_slot.get(job.token)
    if runner is None:
        _runner_slot.clear()  # one sweep's runner at a time
        if job.threads is not None:
            limit_threads(job.threads)
        runner = _runner_slot[job.token] = job.make_runner()
    return runner


def release_runner(job: CellJob) -> None:
    """Drop this process's runner of ``job`` (the serial path, once its sweep is over)."""
    _runner_slot.pop(job.token, None)


def execute_cell(job: CellJob, spec: CellSpec) -> CellOutcome:
    """Run one cell in this process: the one cell-running function of every backend.

    An exception of the cell becomes an outcome with the error (the sweep goes on with the other
    cells); ``KeyboardInterrupt`` and other ``BaseException`` propagate.
    """
    try:
        return CellOutcome(result=_runner_for(job)(spec))
    except Exception as exc:  # reported per cell, with the last frame, instead of ending the sweep
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        log.debug("cell %s failed", spec.as_dict(), exc_info=True)
        return CellOutcome(error=f"{type(exc).__name__}: {exc} (at {frame.filename}:{frame.lineno})")


class CellBackend(Protocol):
    """Carries cells to :func:`execute_cell` and outcomes back.  ``capacity`` cells may be in flight."""

    capacity: int

    def submit(self, key: str, spec: CellSpec) -> None: ...

    def wait_one(self) -> tuple[str, Attempt]:
        """Block until a submitted cell has an outcome; return its key and the attempt."""
        ...

    def close(self) -> None: ...


class SerialBackend:
    """Cells run one at a time in this process (a crash here ends the driver too: nothing to retry)."""

    capacity = 1

    def __init__(self, job: CellJob, *, prepare: bool = False) -> None:
        """``prepare``: build the runner now, so that what fails for every cell (a missing data
        folder, say) is raised here, as the sweep's error, instead of once per cell."""
        self.job = job
        self._queued: list[tuple[str, CellSpec]] = []
        if prepare:
            _runner_for(job)

    def submit(self, key: str, spec: CellSpec) -> None:
        self._queued.append((key, spec))

    def wait_one(self) -> tuple[str, Attempt]:
        key, spec = self._queued.pop(0)
        return key, execute_cell(self.job, spec)

    def close(self) -> None:
        release_runner(self.job)


def _worker_main(conn: Connection, job: CellJob) -> None:
    """Loop of a pool worker: receive a cell, send back its outcome; ``None`` or a closed pipe ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; it stops us
    try:
        while True:
            spec = conn.recv()
            if spec is None:
                return
            conn.send(execute_cell(job, spec))
    except (EOFError, BrokenPipeError):  # the driver is gone
        return


@contextmanager
def _thread_environment(threads: int) -> Iterator[None]:
    """Thread-count variables that spawned workers inherit (read by BLAS/OpenMP at their load)."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"worker process killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"worker process killed by signal {-exitcode}"
    return f"worker process exited with code {exitcode} before answering"


@dataclass
class _Worker:
    process: Any  # multiprocessing.process.BaseProcess (spawn context)
    conn: Connection
    key: str | None = None  # the cell it is running


class ProcessPoolBackend:
    """``workers`` spawned processes; a worker that dies is replaced and its cell reported as died.

    Every cell in flight is on exactly one worker, so a death is charged to that cell only.  Workers
    are started with the ``spawn`` method (no fork of a process whose torch threads already run).
    """

    def __init__(self, job: CellJob, workers: int) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        self.job, self.capacity = job, workers
        self._context = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []
        self._busy: list[_Worker] = []
        self._specs: dict[str, CellSpec] = {}

    def _start_worker(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child, self.job), daemon=True)
        with _thread_environment(self.job.threads or 1):
            process.start()
        child.close()
        return _Worker(process, parent)

    def submit(self, key: str, spec: CellSpec) -> None:
        if len(self._busy) >= self.capacity:
            raise RuntimeError("submit() beyond capacity")  # a driver bug, not a user error
        worker = self._idle.pop() if self._idle else self._start_worker()
        worker.conn.send(spec)
        worker.key = key
        self._busy.append(worker)

    def wait_one(self) -> tuple[str, Attempt]:
        by_handle: dict[Any, _Worker] = {}
        for worker in self._busy:
            by_handle[worker.conn] = worker
            by_handle[worker.process.sentinel] = worker
        ready = wait(list(by_handle))
        worker = by_handle[ready[0]]
        self._busy.remove(worker)
        key, worker.key = worker.key, None
        assert key is not None
        try:
            if worker.conn.poll():  # an answer sent just before an exit still counts
                outcome = worker.conn.recv()
                self._idle.append(worker)
                return key, outcome
        except (EOFError, OSError):
            pass
        worker.process.join(timeout=5)
        reason = _exit_reason(worker.process.exitcode)
        self._discard(worker)
        return key, WorkerDied(reason)

    def _discard(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()

    def close(self) -> None:
        for worker in self._idle:
            with suppress(BrokenPipeError, OSError):
                worker.conn.send(None)
        for worker in self._idle:
            worker.process.join(timeout=10)
        for worker in [*self._idle, *self._busy]:  # busy ones only when the driver is interrupted
            self._discard(worker)
        self._idle, self._busy = [], []


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs the optional Ray extra, which is not installed: {RAY_EXTRA_HINT}") from None
    return ray


#: Seconds to wait for a TCP connection to the Ray head before saying it cannot be reached (Ray's
#: own client retries an unreachable head without end, logging a warning every 30 s).
RAY_HEAD_CONNECT_SECONDS = 10.0


def require_reachable_ray_head(address: str, timeout: float = RAY_HEAD_CONNECT_SECONDS) -> None:
    """:class:`ConfigError` naming ``--ray`` unless ``address`` (``[ray://]host:port``; ``auto`` and
    other forms are left to Ray) accepts a TCP connection within ``timeout`` seconds."""
    target = address.removeprefix("ray://")
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout):
            pass
    except (OSError, OverflowError, ValueError) as exc:
        raise ConfigError(
            f"--ray: cannot reach the Ray head at {address} within {timeout:g} s ({exc}); "
            "start it with `ray start --head` or check the address"
        ) from None


class RayBackend:
    """Cells as Ray tasks (one CPU each) on the cluster at ``address``, or a local one (``None``).

    Ray's own task retries are off: a task whose worker died comes back as :class:`WorkerDied` and
    the driver retries it like a pool cell.  The cells' data paths and the package must exist on
    every node (the feature cache is per node).
    """

    def __init__(self, job: CellJob, address: str | None, num_cpus: int | None = None) -> None:
        self.ray = import_ray()
        self._owns_runtime = not self.ray.is_initialized()
        if self._owns_runtime:
            if address:
                require_reachable_ray_head(address)
            options: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False}
            if address is None and num_cpus is not None:
                options["num_cpus"] = num_cpus
            self.ray.init(**options)
        self.capacity = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        self._remote = self.ray.remote(num_cpus=1, max_retries=0)(execute_cell)
        self._job_ref = self.ray.put(job)
        self._refs: dict[Any, str] = {}

    def submit(self, key: str, spec: CellSpec) -> None:
        self._refs[self._remote.remote(self._job_ref, spec)] = key

    def wait_one(self) -> tuple[str, Attempt]:
        ready, _ = self.ray.wait(list(self._refs), num_returns=1)
        key = self._refs.pop(ready[0])
        try:
            return key, self.ray.get(ready[0])
        except self.ray.exceptions.RayTaskError as exc:  # raised outside execute_cell's handler
            return key, CellOutcome(error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        except self.ray.exceptions.RayError as exc:  # worker crashed, killed (OOM) or node lost
            return key, WorkerDied(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

    def close(self) -> None:
        for ref in self._refs:
            self.ray.cancel(ref, force=True)
        self._refs.clear()
        if self._owns_runtime:
            self.ray.shutdown()
