"""Persist a :class:`~fedstyle_secure.privacy.budget.BudgetLedger` next to the client's state.

The ledger must survive restarts: a client that forgot its history would re-spend its
budget. Saving is atomic, so a crash mid-write keeps the previous ledger.
"""

from __future__ import annotations

from pathlib import Path

from fedstyle_secure.privacy.budget import BudgetLedger
from fedstyle_secure.privacy.jsonio import read_json, write_json_atomic


def save_ledger(ledger: BudgetLedger, path: Path) -> None:
    write_json_atomic(Path(path), ledger.to_dict())


def load_ledger(path: Path) -> BudgetLedger:
    return BudgetLedger.from_dict(read_json(Path(path)))
