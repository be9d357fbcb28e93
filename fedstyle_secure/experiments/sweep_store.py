"""Resumable on-disk store of finished sweep cells, ``<out>/cells/<hash>.json`` written atomically,
and the sweep driver that fills it from any cell backend (serial, process pool, Ray).

A cell's file name is a SHA-256 of its full configuration, so a changed configuration never
reuses a stale result; an interrupted cell leaves no file (temp file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedstyle_secure.errors import DataError
from fedstyle_secure.experiments.cell_backends import CellBackend, WorkerDied
from fedstyle_secure.experiments.output import write_json
from fedstyle_secure.experiments.sweep import METRICS, CellResult, CellSpec
from fedstyle_secure.files import read_json_bounded

log = logging.getLogger(__name__)


MAX_CELL_BYTES = 16 << 20
"""Largest sweep cell file read (bytes): a cell's metrics and extras are a few kilobytes."""


def cell_key(spec: CellSpec) -> str:
    """Stable 16-hex-digit key of the cell's whole configuration."""
    canonical = json.dumps(spec.as_dict(), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class CellStore:
    """Finished cells of one sweep under ``root/cells``."""

    def __init__(self, root: Path) -> None:
        self.directory = Path(root) / "cells"

    def path(self, spec: CellSpec) -> Path:
        return self.directory / f"{cell_key(spec)}.json"

    def load(self, spec: CellSpec) -> CellResult | None:
        """The stored result of ``spec``; None if there is none.  A file that is not a finished cell
        (truncated, not JSON, too large, missing a metric) is moved aside to ``<name>.corrupt[-N]``,
        with a warning naming both files, and the cell is recomputed: nothing is deleted and one damaged
        file does not stop the sweep.  A file that cannot be read at all (permissions) is an error."""
        path = self.path(spec)
        if not path.exists():
            return None
        try:
            doc = read_json_bounded(path, MAX_CELL_BYTES)
        except ValueError as exc:  # too large or deep, not JSON, not UTF-8
            return self._set_aside(path, str(exc))
        except OSError as exc:  # unreadable, a FIFO, a device, a folder
            raise DataError(f"sweep cell file {path} cannot be read: {exc}; move it away to recompute") from exc
        metrics = doc.get("metrics") if isinstance(doc, dict) else None
        extra = doc.get("extra", {}) if isinstance(doc, dict) else None
        if not (
            isinstance(metrics, dict) and isinstance(extra, dict) and all(_finite(metrics.get(m)) for m in METRICS)
        ):
            return self._set_aside(path, f"needs an object whose 'metrics' hold {', '.join(METRICS)} as finite numbers")
        return CellResult(metrics=metrics, extra=extra)

    @staticmethod
    def _set_aside(path: Path, reason: str) -> None:
        """Move a damaged cell file to the first free ``<name>.corrupt[-N]`` beside it (never over one)."""
        target, n = path.with_name(f"{path.name}.corrupt"), 1
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.corrupt-{n}")
        path.rename(target)
        log.warning("sweep cell file %s is damaged (%s); moved it to %s and recomputing the cell", path, reason, target)
        return None

    def save(self, spec: CellSpec, result: CellResult) -> None:
        write_json(self.path(spec), {"cell": spec.as_dict(), "metrics": result.metrics, "extra": result.extra})


@dataclass(frozen=True)
class FailedCell:
    """A cell that raised, or whose worker died on every allowed attempt; nothing of it is stored."""

    spec: CellSpec
    reason: str
    attempts: int


@dataclass
class SweepRun:
    """Outcome of :func:`run_cells`: finished cells in grid order (loaded or computed), and failures."""

    done: list[tuple[CellSpec, CellResult]] = field(default_factory=list)
    failed: list[FailedCell] = field(default_factory=list)
    computed: int = 0  # cells computed by this run (the rest came from the store)


DEFAULT_MAX_ATTEMPTS = 3  # per cell, counting worker deaths only (a cell that raises is not retried)


def run_cells(
    cells: list[CellSpec],
    store: CellStore,
    backend: CellBackend,
    on_done: Callable[[CellSpec], None] | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> SweepRun:
    """Run every cell not already in ``store`` on ``backend``, saving each as soon as it finishes.

    This process is the only writer of ``store``: a killed sweep keeps every cell saved so far and
    a rerun computes only the others.  A cell whose worker died is resubmitted, at most
    ``max_attempts`` attempts in all; a cell that raised, or exhausted its attempts, is reported in
    ``failed`` with the reason while the others go on.  ``backend`` is closed on return or interrupt.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    specs = {cell_key(spec): spec for spec in cells}
    finished: dict[str, CellResult] = {}
    for key, spec in specs.items():
        loaded = store.load(spec)
        if loaded is not None:
            finished[key] = loaded
            if on_done is not None:
                on_done(spec)
    queue = deque(key for key in specs if key not in finished)
    attempts: Counter[str] = Counter()
    failed: list[FailedCell] = []
    in_flight = computed = 0
    try:
        while queue or in_flight:
            while queue and in_flight < backend.capacity:
                key = queue.popleft()
                attempts[key] += 1
                backend.submit(key, specs[key])
                in_flight += 1
            key, attempt = backend.wait_one()
            in_flight -= 1
            spec = specs[key]
            if isinstance(attempt, WorkerDied):
                if attempts[key] < max_attempts:
                    log.warning(
                        "worker died on a cell (%s); retrying it (attempt %d of %d)",
                        attempt.reason,
                        attempts[key] + 1,
                        max_attempts,
                    )
                    queue.append(key)
                    continue
                failed.append(FailedCell(spec, f"worker died on every attempt; last: {attempt.reason}", attempts[key]))
            elif attempt.result is None:
                failed.append(FailedCell(spec, attempt.error or "no result", attempts[key]))
            else:
                store.save(spec, attempt.result)
                finished[key] = attempt.result
                computed += 1
            if on_done is not None:
                on_done(spec)
    finally:
        backend.close()
    done = [(spec, finished[key]) for key, spec in specs.items() if key in finished]
    return SweepRun(done=done, failed=failed, computed=computed)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
