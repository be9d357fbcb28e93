"""Analytical audit of signed epsilon reports (pure: loaded JSON in, findings out).

Checks per report: JSON Schema; signature present, made with the artist's key from the
manifest and matching every field; known accountant; Poisson sampling (the only sampler
any accountant here covers); delta below 1/n when the report carries the artist's opening of
its dataset-size commitment (checked against the signed commitment; a server's redacted copy
has none, so this one check needs the artist's own report); claimed epsilon within the
budget; and the
claimed epsilon against an INDEPENDENT recomputation with ``dp_accounting``
(:mod:`fedstyle_secure.privacy.recompute`). Checks across one artist's reports: one report
per round, epsilon never decreasing, the mechanism history only ever extended, the budget
never changed.

Which recomputation a claim must reach. Every number here is an upper bound on the true
epsilon, so a claim is certified when it is at least a sound independent upper bound. We
compare each claim with the tightest independent bound CONSISTENT WITH ITS ACCOUNTANT:

- ``rdp`` claims vs dp_accounting RDP: same analysis (same orders, same improved
  conversion), so an honest claim matches to float precision; comparing with PLD instead
  would let an RDP claim be under-reported by the 10-15 % RDP-vs-PLD gap unnoticed.
- ``prv`` claims vs dp_accounting PLD: both are numerically tight bounds of the same
  privacy loss distribution (PRV is pessimistic by at most its 0.01 epsilon error).
- ``gdp`` claims vs dp_accounting PLD: GDP is a CLT approximation with no tighter sound
  counterpart, and it can UNDERESTIMATE epsilon; such claims are flagged, as they should be.

A claim is flagged when ``claimed < recomputed * (1 - tolerance)``; the default tolerance
of 1 % absorbs discretisation differences between the libraries (measured: < 0.6 %).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.privacy.accounting import ACCOUNTANTS
from fedstyle_secure.privacy.mechanisms import History, history_from_list, non_poisson_groups
from fedstyle_secure.privacy.recompute import recompute_epsilon_pld, recompute_epsilon_rdp
from fedstyle_secure.privacy.report_schema import report_schema_errors
from fedstyle_secure.privacy.reports import (
    SIGNATURE_FIELD, opened_dataset_size, public_key_from_text, verify_report_signature,
)

DEFAULT_TOLERANCE = 0.01
#: Relative slack for "epsilon decreased between rounds" (numerical noise only).
DECREASE_SLACK = 1e-9
#: Independent recomputation each accountant's claims are compared with (see module docstring).
REFERENCE_RECOMPUTATION: dict[str, str] = {"rdp": "rdp", "prv": "pld", "gdp": "pld"}

SCHEMA_ERROR = "schema_error"
MALFORMED_HISTORY = "malformed_history"
MISSING_SIGNATURE = "missing_signature"
INVALID_SIGNATURE = "invalid_signature"
KEY_NOT_IN_MANIFEST = "key_not_in_manifest"
UNKNOWN_ACCOUNTANT = "unknown_accountant"
MISSING_CLAIM = "missing_claim"
SAMPLER_MISMATCH = "sampler_mismatch"
DELTA_TOO_LARGE = "delta_too_large"
DATASET_SIZE_MISMATCH = "dataset_size_mismatch"
OVER_BUDGET = "over_budget"
CLAIM_BELOW_RECOMPUTED = "claim_below_recomputed"
RECOMPUTATION_FAILED = "recomputation_failed"
DUPLICATE_ROUND = "duplicate_round"
EPSILON_DECREASING = "epsilon_decreasing"
HISTORY_REWRITTEN = "history_rewritten"
BUDGET_CHANGED = "budget_changed"


@dataclass(frozen=True)
class Finding:
    code: str
    message: str


@dataclass(frozen=True)
class LoadedReport:
    """A parsed report file; ``source`` names it in findings (e.g. its path)."""

    source: str
    data: Any


@dataclass
class ReportAudit:
    """Audit outcome of one report; epsilons are at the report's delta."""

    source: str
    artist_id: str | None = None
    round_id: int | None = None
    accountant: str | None = None
    claimed_epsilon: float | None = None
    recomputed_rdp: float | None = None
    recomputed_pld: float | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def status(self) -> str:
        return "ok" if self.ok else ",".join(dict.fromkeys(f.code for f in self.findings))

    def flag(self, code: str, message: str) -> None:
        self.findings.append(Finding(code, message))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "artist_id": self.artist_id,
            "round": self.round_id,
            "accountant": self.accountant,
            "claimed_epsilon": self.claimed_epsilon,
            "recomputed_rdp": self.recomputed_rdp,
            "recomputed_pld": self.recomputed_pld,
            "status": self.status,
            "findings": [{"code": f.code, "message": f.message} for f in self.findings],
        }


@dataclass(frozen=True)
class AuditResult:
    reports: tuple[ReportAudit, ...]
    tolerance: float

    @property
    def clean(self) -> bool:
        return all(report.ok for report in self.reports)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "tolerance": self.tolerance,
            "reports": [report.to_dict() for report in self.reports],
        }


_Entry = tuple[ReportAudit, Mapping[str, Any]]


def audit_reports(
    reports: Sequence[LoadedReport],
    manifest: Mapping[str, Any] | None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> AuditResult:
    """Audit ``reports`` against the artists' keys in ``manifest`` (``None``: no keys known)."""
    if not (0.0 <= tolerance < 1.0):
        raise PrivacyError(f"audit tolerance must be in [0, 1), got {tolerance!r}")
    keys = (manifest or {}).get("artists", {})
    audits = [_audit_one(report, keys, tolerance) for report in reports]
    by_artist: dict[str, list[_Entry]] = defaultdict(list)
    for audit, loaded in zip(audits, reports):
        if audit.round_id is not None:  # schema-valid, so its fields can be compared
            by_artist[audit.artist_id].append((audit, loaded.data))
    for entries in by_artist.values():
        ordered = sorted(entries, key=lambda entry: entry[0].round_id)
        for earlier, later in zip(ordered, ordered[1:]):
            _compare_rounds(earlier, later)
    return AuditResult(tuple(audits), tolerance)


def _audit_one(loaded: LoadedReport, keys: Mapping[str, Any], tolerance: float) -> ReportAudit:
    audit = ReportAudit(source=loaded.source)
    report = loaded.data
    for error in report_schema_errors(report):
        audit.flag(SCHEMA_ERROR, error)
    if not audit.ok:
        return audit  # fields cannot be trusted to exist or have their types
    audit.artist_id, audit.round_id = report["artist_id"], report["round"]
    audit.accountant = report["accountant"]
    audit.claimed_epsilon = report["epsilon"].get(audit.accountant)
    _check_signature(audit, report, keys.get(audit.artist_id))
    try:
        history = history_from_list(report["mechanisms"])
    except PrivacyError as exc:
        audit.flag(MALFORMED_HISTORY, str(exc))
        return audit
    _check_claims(audit, report)
    _check_recomputation(audit, report, history, tolerance)
    return audit


def _check_signature(audit: ReportAudit, report: Mapping[str, Any], key_entry: Any) -> None:
    if SIGNATURE_FIELD not in report:
        audit.flag(MISSING_SIGNATURE, "report is unsigned; its origin and integrity cannot be checked")
        return
    if not isinstance(key_entry, Mapping) or "public_key" not in key_entry:
        audit.flag(KEY_NOT_IN_MANIFEST, f"no public key for artist {audit.artist_id!r} in the manifest")
        return
    try:
        verify_report_signature(report, public_key_from_text(str(key_entry["public_key"])))
    except PrivacyError as exc:
        audit.flag(INVALID_SIGNATURE, str(exc))


def _check_claims(audit: ReportAudit, report: Mapping[str, Any]) -> None:
    for name in dict.fromkeys([audit.accountant, *report["epsilon"]]):
        if name not in ACCOUNTANTS:
            audit.flag(UNKNOWN_ACCOUNTANT, f"accountant {name!r} is not one of {list(ACCOUNTANTS)}; claim not verifiable")
    if audit.claimed_epsilon is None:
        audit.flag(MISSING_CLAIM, f"no epsilon claimed for the report's own accountant {audit.accountant!r}")
    delta, budget = report["delta"], report["budget"]
    try:
        size = opened_dataset_size(report)  # None: a redacted copy (n never left the artist)
    except PrivacyError as exc:
        audit.flag(DATASET_SIZE_MISMATCH, str(exc))
        size = None
    if size is not None and delta >= 1.0 / size:
        audit.flag(DELTA_TOO_LARGE, f"delta={delta:.3g} is not below 1/n = {1.0 / size:.3g} (n={size} artworks)")
    if delta > budget["delta"]:
        audit.flag(OVER_BUDGET, f"report delta {delta:.3g} exceeds the budget delta {budget['delta']:.3g}")
    if audit.claimed_epsilon is not None and audit.claimed_epsilon > budget["epsilon"]:
        audit.flag(
            OVER_BUDGET, f"claimed epsilon {audit.claimed_epsilon:.4g} exceeds the budget epsilon {budget['epsilon']:.4g}"
        )


def _check_recomputation(audit: ReportAudit, report: Mapping[str, Any], history: History, tolerance: float) -> None:
    unsupported = non_poisson_groups(history)
    if unsupported:
        audit.flag(
            SAMPLER_MISMATCH,
            f"rounds {sorted({m.round_id for m in unsupported})} used sampler(s) "
            f"{sorted({m.sampler for m in unsupported})} but were accounted as Poisson-sampled; epsilon is unsupported",
        )
        return
    delta = report["delta"]
    try:
        audit.recomputed_rdp = recompute_epsilon_rdp(history, delta)
        audit.recomputed_pld = recompute_epsilon_pld(history, delta)
    except (ValueError, ArithmeticError) as exc:  # dp_accounting on degenerate parameters
        audit.flag(RECOMPUTATION_FAILED, f"dp_accounting could not recompute epsilon: {exc!r}")
        return
    references = {"rdp": audit.recomputed_rdp, "pld": audit.recomputed_pld}
    for name, claimed in report["epsilon"].items():
        if name not in REFERENCE_RECOMPUTATION:
            continue
        reference = REFERENCE_RECOMPUTATION[name]
        recomputed = references[reference]
        if claimed < recomputed * (1.0 - tolerance):
            audit.flag(
                CLAIM_BELOW_RECOMPUTED,
                f"{name} claims epsilon={claimed:.4g} but dp_accounting {reference.upper()} gives {recomputed:.4g} "
                f"(more than {tolerance:.1%} lower)",
            )


def _compare_rounds(earlier: _Entry, later: _Entry) -> None:
    """Checks between consecutive reports of one artist (sorted by round)."""
    (first, old), (audit, new) = earlier, later
    if first.round_id == audit.round_id:
        audit.flag(DUPLICATE_ROUND, f"round {audit.round_id} of {audit.artist_id!r} is also reported by {first.source}")
        return
    for name in old["epsilon"].keys() & new["epsilon"].keys():
        before, after = old["epsilon"][name], new["epsilon"][name]
        if after < before * (1.0 - DECREASE_SLACK):
            audit.flag(
                EPSILON_DECREASING,
                f"{name} epsilon fell from {before:.4g} (round {first.round_id}) to {after:.4g} (round {audit.round_id})",
            )
    if new["mechanisms"][: len(old["mechanisms"])] != old["mechanisms"]:
        audit.flag(HISTORY_REWRITTEN, f"mechanism history of round {first.round_id} is not a prefix of this round's")
    if new["budget"] != old["budget"] or new["delta"] != old["delta"]:
        audit.flag(BUDGET_CHANGED, f"budget or delta differs from round {first.round_id}")
