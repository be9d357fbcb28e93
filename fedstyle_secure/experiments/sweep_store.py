"""Resumable on-disk store of finished sweep cells: ``<out>/cells/<hash>.json``, written atomically.

A cell's file name is a SHA-256 of its full configuration, so a changed configuration never
reuses a stale result; an interrupted cell leaves no file (temp file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from fedstyle_secure.errors import DataError
from fedstyle_secure.experiments.output import write_json
from fedstyle_secure.experiments.sweep import CellResult, CellRunner, CellSpec


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
        path = self.path(spec)
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            return CellResult(metrics=doc["metrics"], extra=doc.get("extra", {}))
        except (ValueError, KeyError) as exc:
            raise DataError(f"corrupt sweep cell file {path}: {exc}; delete it to recompute") from exc

    def save(self, spec: CellSpec, result: CellResult) -> None:
        write_json(self.path(spec), {"cell": spec.as_dict(), "metrics": result.metrics, "extra": result.extra})


def run_cells(
    cells: list[CellSpec], runner: CellRunner, store: CellStore, on_done: Callable[[CellSpec], None] | None = None
) -> list[tuple[CellSpec, CellResult]]:
    """Run every cell not already in ``store`` and save it; return all (spec, result) pairs in order."""
    done = []
    for spec in cells:
        result = store.load(spec)
        if result is None:
            result = runner(spec)
            store.save(spec, result)
        done.append((spec, result))
        if on_done is not None:
            on_done(spec)
    return done
