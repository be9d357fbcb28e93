"""Per-artist privacy budget and the ledger that enforces it before anything is spent.

The ledger is the single gate in front of every DP mechanism of one artist: call
:meth:`BudgetLedger.check_can_spend` with the planned step group or release, run the
mechanism only if allowed, then :meth:`BudgetLedger.record` it (which re-checks and
raises on a refusal). Its state is a JSON-able dict (:meth:`BudgetLedger.to_dict`) kept
with the client's state so a restarted client still remembers what it has spent; the
file I/O lives in :mod:`fedstyle_secure.privacy.ledger_store`.

Epsilon/delta are per ONE ARTWORK (record-level DP), not per artist.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.privacy.accounting import DEFAULT_ACCOUNTANT, compute_epsilon, require_budget_accountant
from fedstyle_secure.privacy.calibration import validate_delta
from fedstyle_secure.privacy.mechanisms import History, Mechanism, history_from_list, history_to_list

LEDGER_FORMAT = "fedstyle-privacy-ledger/1"


def utc_now_iso() -> str:
    """Current UTC time as ISO 8601 with a ``Z`` suffix, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class PrivacyBudget:
    """Total ``(epsilon, delta)`` an artist allows to be spent on its artworks, ever."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise PrivacyError(f"budget epsilon must be a positive finite number, got {self.epsilon!r}")
        if not (0.0 < self.delta < 1.0):
            raise PrivacyError(f"budget delta must be in (0, 1), got {self.delta!r}")

    def to_dict(self) -> dict[str, float]:
        return {"epsilon": self.epsilon, "delta": self.delta}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyBudget:
        return cls(epsilon=float(data["epsilon"]), delta=float(data["delta"]))


@dataclass(frozen=True)
class SpendDecision:
    """Outcome of a budget check: ``epsilon_after`` is history + planned at the budget's delta."""

    allowed: bool
    epsilon_before: float
    epsilon_after: float
    budget: PrivacyBudget
    accountant: str

    @property
    def reason(self) -> str:
        verdict = "within" if self.allowed else "would exceed"
        return (
            f"planned spend takes epsilon from {self.epsilon_before:.4g} to {self.epsilon_after:.4g} "
            f"({self.accountant}, delta={self.budget.delta:.3g}), which {verdict} the budget "
            f"epsilon={self.budget.epsilon:.4g}"
        )


class BudgetLedger:
    """History of mechanisms run on one artist's dataset, checked against its budget."""

    def __init__(
        self,
        budget: PrivacyBudget,
        dataset_size: int,
        accountant: str = DEFAULT_ACCOUNTANT,
        history: Iterable[Mechanism] = (),
        created_at: str | None = None,
    ) -> None:
        require_budget_accountant(accountant)
        validate_delta(budget.delta, dataset_size)
        self._budget = budget
        self._dataset_size = dataset_size
        self._accountant = accountant
        self._history: History = tuple(history)
        self._created_at = created_at or utc_now_iso()
        self._epsilon_spent = compute_epsilon(self._history, budget.delta, accountant)
        if self._epsilon_spent > budget.epsilon:
            raise PrivacyError(
                f"ledger history already spends epsilon={self._epsilon_spent:.4g} over its budget "
                f"epsilon={budget.epsilon:.4g}"
            )

    @property
    def budget(self) -> PrivacyBudget:
        return self._budget

    @property
    def dataset_size(self) -> int:
        return self._dataset_size

    @property
    def accountant(self) -> str:
        return self._accountant

    @property
    def history(self) -> History:
        return self._history

    @property
    def created_at(self) -> str:
        return self._created_at

    @property
    def epsilon_spent(self) -> float:
        """Epsilon of the recorded history at the budget's delta (the ledger's accountant)."""
        return self._epsilon_spent

    def remaining_epsilon(self) -> float:
        """Budget epsilon minus epsilon spent (not additive under composition: a guide only)."""
        return self._budget.epsilon - self._epsilon_spent

    def check_can_spend(self, planned: Iterable[Mechanism]) -> SpendDecision:
        """Whether running ``planned`` after the history keeps epsilon within the budget.

        Raises :class:`PrivacyError` if ``planned`` cannot be accounted at all (e.g. a
        non-Poisson sampler): such a spend is never allowed.
        """
        after = compute_epsilon((*self._history, *planned), self._budget.delta, self._accountant)
        return SpendDecision(
            allowed=after <= self._budget.epsilon,
            epsilon_before=self._epsilon_spent,
            epsilon_after=after,
            budget=self._budget,
            accountant=self._accountant,
        )

    def record(self, mechanisms: Iterable[Mechanism]) -> SpendDecision:
        """Append ``mechanisms`` to the history; raises :class:`PrivacyError` if over budget."""
        mechanisms = tuple(mechanisms)
        decision = self.check_can_spend(mechanisms)
        if not decision.allowed:
            raise PrivacyError(f"privacy budget refused: {decision.reason}")
        self._history = (*self._history, *mechanisms)
        self._epsilon_spent = decision.epsilon_after
        return decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LEDGER_FORMAT,
            "budget": self._budget.to_dict(),
            "dataset_size": self._dataset_size,
            "accountant": self._accountant,
            "created_at": self._created_at,
            "mechanisms": history_to_list(self._history),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BudgetLedger:
        if not isinstance(data, Mapping) or data.get("format") != LEDGER_FORMAT:
            raise PrivacyError(f"not a privacy ledger (expected a JSON object with format {LEDGER_FORMAT!r})")
        try:
            return cls(
                budget=PrivacyBudget.from_dict(data["budget"]),
                dataset_size=int(data["dataset_size"]),
                accountant=str(data["accountant"]),
                history=history_from_list(data["mechanisms"]),
                created_at=str(data["created_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PrivacyError(f"malformed privacy ledger: {exc!r}") from exc
