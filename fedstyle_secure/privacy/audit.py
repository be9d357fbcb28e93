"""Analytical audit of signed epsilon reports (pure: loaded JSON in, findings out).

Checks per report: JSON Schema; signature present, made with the artist's TRUSTED key and
matching every field; noise from a CSPRNG (:data:`~fedstyle_secure.randomness.SECURE_NOISE_SOURCES`;
a report that does not say is flagged too); known accountant; Poisson sampling (the only
sampler any accountant here covers); delta below 1/n when the report carries the artist's
opening of its dataset-size commitment (checked against the signed commitment; a server's
redacted copy has none, so this one check needs the artist's own report); claimed epsilon
within the budget; and the claimed epsilon against an INDEPENDENT recomputation with ``dp_accounting``
(:mod:`fedstyle_secure.privacy.recompute`). Checks across one artist's reports: one report
per round, epsilon never decreasing, the mechanism history only ever extended, the budget
never changed, one ledger throughout (its creation time: reports of two runs spliced together
are caught), one run id throughout, and every charge first reported in its own round's report (a
charge of an earlier round, made after that round was reported, was in no report in time); per
report, no round past the signed ``final_round``, and, when the auditor names the run
(``run_id``), the report's signed run id is that run's: a server cannot hand over the reports of
another run of the same key set.  The run id is the server's, pinned by every artist at its first
plan: take it from an artist (its log, its own reports), not from the server, to catch a replay.

Checks of the run (completeness), per artist of the roster: it has reports; every round its
latest report charges a mechanism to has a report; its reports reach the run's final
publication (``final_round``, which every report signs; for older reports the latest round
any artist reported).  An artist that retired, left or never joined is flagged as well: from
the reports alone that cannot be told apart from deleted reports -- unless it signed a withdrawal
(:mod:`~fedstyle_secure.privacy.withdrawals`, kept beside its reports): a valid one for its trusted
key (and the audited run) explains reports ending at its round and is listed, not flagged; an
invalid one is a finding.

Threat model: the reports folder is written by the server, which may delete reports or swap
the keys in its ``manifest.json`` and forge reports under keys of its own.  Signatures are
therefore checked against keys the auditor trusts (the key set made by ``fedstyle keys``,
passed as ``trusted``), and a folder manifest disagreeing with them is itself a finding.  When
the keys come from the audited folder, the result says the identities were NOT verified.

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

Cost (threat model: a roster artist signs a hostile history with its own key; whoever writes the
folder adds files): the history bounds of :mod:`~fedstyle_secure.privacy.mechanisms` are schema
findings; only reports whose signature verifies are recomputed, PLD only up to
:data:`MAX_PLD_EPSILON`; what dp_accounting still cannot do (an exhausted memory included) is a
``recomputation_failed`` finding, so the other artists still get their verdict.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.privacy.accounting import ACCOUNTANTS
from fedstyle_secure.privacy.mechanisms import History, history_from_list, non_poisson_groups
from fedstyle_secure.privacy.recompute import recompute_epsilon_pld, recompute_epsilon_rdp
from fedstyle_secure.privacy.report_schema import report_schema_errors
from fedstyle_secure.privacy.reports import (
    SIGNATURE_FIELD,
    key_fingerprint,
    opened_dataset_size,
    public_key_from_text,
    verify_report_signature,
)
from fedstyle_secure.privacy.withdrawals import Withdrawal, checked_withdrawal
from fedstyle_secure.randomness import SECURE_NOISE_SOURCES

DEFAULT_TOLERANCE = 0.01
#: Relative slack for "epsilon decreased between rounds" (numerical noise only).
DECREASE_SLACK = 1e-9
#: Largest epsilon (by the cheap RDP recomputation, an upper bound of PLD's) up to which the PLD
#: recomputation runs: its memory and time grow with epsilon (a signed report of epsilon 1.2e3 took
#: 5.6 s and 0.64 GB, of 1e14 asked for 2 EiB); an honest report stays below its budget (<= 33 by
#: the noise floor, mechanisms.MIN_NOISE_MULTIPLIER) plus RDP's 10-15 %.
MAX_PLD_EPSILON = 100.0
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
LEDGER_CHANGED = "ledger_changed"
RUN_CHANGED = "run_changed"
OTHER_RUN = "other_run"
NOISE_NOT_SECURE = "noise_not_secure"
# run-level findings (completeness and identities)
IDENTITIES_UNVERIFIED = "identities_unverified"
MANIFEST_KEY_MISMATCH = "manifest_key_mismatch"
ARTIST_WITHOUT_REPORTS = "artist_without_reports"
MISSING_ROUNDS = "missing_rounds"
REPORTS_END_EARLY = "reports_end_early"
INVALID_WITHDRAWAL = "invalid_withdrawal"
CHARGED_OUT_OF_ORDER = "charged_out_of_order"
TIME_OUT_OF_ORDER = "time_out_of_order"
#: How far back an honest artist's clock may step between two timestamps it signs (an NTP correction)
#: before the audit calls them out of order.
CLOCK_SLACK = dt.timedelta(minutes=10)
UNVERIFIED_MESSAGE = (
    "identities NOT verified: the report keys come from the manifest in the audited folder, which whoever wrote "
    "the folder (e.g. the server) can replace together with the reports; pass --keys DIR (a key set or bundle "
    "from `fedstyle keys`) to verify them"
)


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    artist: str | None = None  # set on run-level findings about one artist


@dataclass(frozen=True)
class LoadedReport:
    """A parsed report file; ``source`` names it in findings (e.g. its path); ``error``: why the
    file could not be read or parsed (a schema finding; ``data`` is then not looked at)."""

    source: str
    data: Any
    error: str | None = None


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
    """Per-report audits plus run-level ``findings`` (completeness, identities) over ``roster``."""

    reports: tuple[ReportAudit, ...]
    tolerance: float
    findings: tuple[Finding, ...] = ()
    roster: tuple[str, ...] = ()
    identities_verified: bool = True
    run_ids: tuple[str, ...] = ()  # the run ids the reports are signed for ("" = none), sorted
    withdrawn: tuple[Withdrawal, ...] = ()  # checked signed withdrawals: retirements, not findings

    @property
    def clean(self) -> bool:
        return not self.findings and all(report.ok for report in self.reports)

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "tolerance": self.tolerance,
            "identities_verified": self.identities_verified,
            "roster": list(self.roster),
            "run_ids": list(self.run_ids),
            "withdrawn": [{"artist": w.artist_id, "round": w.round_id, "reason": w.reason} for w in self.withdrawn],
            "findings": [{"artist": f.artist, "code": f.code, "message": f.message} for f in self.findings],
            # every finding, the run's above and each report's in "reports": the count the table prints
            "finding_count": len(self.findings) + sum(len(report.findings) for report in self.reports),
            "reports": [report.to_dict() for report in self.reports],
        }


_Entry = tuple[ReportAudit, Mapping[str, Any]]


def audit_reports(
    reports: Sequence[LoadedReport],
    trusted: Mapping[str, Any] | None,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    roster: Sequence[str] | None = None,
    identities_verified: bool = True,
    accept_unverified: bool = False,
    folder_manifest: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    withdrawals: Sequence[LoadedReport] = (),
) -> AuditResult:
    """Audit ``reports`` against the artists' keys in ``trusted`` (manifest format
    ``{"artists": {id: {"public_key": ...}}}``; ``None``: no keys known).

    ``roster``: the artists expected to report (default: those of ``trusted``);
    ``identities_verified=False`` (the keys came from the audited folder itself) is a finding
    unless ``accept_unverified``; ``folder_manifest``: the manifest found in the audited folder,
    flagged where it disagrees with ``trusted``; ``run_id``: the audited run's id, flagged on every
    report signed for another run or for none; ``withdrawals``: the artists' signed withdrawals
    (:mod:`~fedstyle_secure.privacy.withdrawals`), each checked against ``trusted`` (and ``run_id``):
    a valid one explains its artist's reports ending at its round, any other is a finding."""
    if not (0.0 <= tolerance < 1.0):
        raise PrivacyError(f"audit tolerance must be in [0, 1), got {tolerance!r}")
    keys = (trusted or {}).get("artists", {})
    audits = [_audit_one(report, keys, tolerance) for report in reports]
    if run_id is not None:
        for audit, loaded in zip(audits, reports):
            _check_run(audit, loaded.data, run_id)
    by_artist: dict[str, list[_Entry]] = defaultdict(list)
    for audit, loaded in zip(audits, reports):
        if audit.round_id is not None:  # schema-valid, so its fields can be compared
            by_artist[str(audit.artist_id)].append((audit, loaded.data))
    for entries in by_artist.values():
        entries.sort(key=lambda entry: entry[0].round_id or 0)
        for earlier, later in itertools.pairwise(entries):
            _compare_rounds(earlier, later)
    expected = tuple(keys) if roster is None else tuple(roster)
    findings = [] if identities_verified or accept_unverified else [Finding(IDENTITIES_UNVERIFIED, UNVERIFIED_MESSAGE)]
    folder_runs = {data.get("run_id") for entries in by_artist.values() for _, data in entries}
    # a withdrawal may be signed for the audited run if named; else for the folder's, which must be one run:
    # otherwise a server could explain one run's deleted reports with another run's withdrawal (red team, 16th)
    signed, invalid = _checked_withdrawals(withdrawals, keys, {run_id} if run_id is not None else folder_runs)
    withdrawn, unmatched = _matching_withdrawals(signed, by_artist)
    invalid += unmatched
    findings += _manifest_mismatches(folder_manifest, keys) + invalid + _completeness(by_artist, expected, withdrawn)
    runs = sorted({"" if run is None else str(run) for run in folder_runs})
    return AuditResult(
        tuple(audits),
        tolerance,
        tuple(findings),
        expected,
        identities_verified,
        tuple(runs),
        tuple(withdrawn[artist] for artist in sorted(withdrawn)),
    )


def _matching_withdrawals(
    signed: Mapping[str, Withdrawal], by_artist: Mapping[str, list[_Entry]]
) -> tuple[dict[str, Withdrawal], list[Finding]]:
    """The withdrawals whose signed end of reports -- the round of the last report and the mechanisms it
    lists, or no report at all -- is the folder's latest report of that artist; a finding for any other:
    the server deleted reports the artist made (or the withdrawal belongs elsewhere)."""
    matching: dict[str, Withdrawal] = {}
    findings = []
    for artist, withdrawal in signed.items():
        entries = by_artist.get(artist, [])
        latest = max(entries, key=lambda entry: entry[0].round_id or 0, default=None)
        found = None if latest is None else (latest[0].round_id, len(latest[1]["mechanisms"]))
        said = (
            None
            if withdrawal.last_report_round is None
            else (withdrawal.last_report_round, withdrawal.reported_charges)
        )
        if found == said:
            matching[artist] = withdrawal
            continue
        message = (
            f"{artist!r} signed a withdrawal whose last report is "
            f"{'none' if said is None else f'round {said[0]} ({said[1]} mechanisms)'}, but the folder's latest is "
            f"{'none' if found is None else f'round {found[0]} ({found[1]} mechanisms)'}: reports deleted or moved"
        )
        findings.append(Finding(INVALID_WITHDRAWAL, message, artist))
    return matching, findings


def _checked_withdrawals(
    loaded: Sequence[LoadedReport], keys: Mapping[str, Any], allowed: set[str | None]
) -> tuple[dict[str, Withdrawal], list[Finding]]:
    """The valid withdrawals by artist, and a finding for each one that is not (unreadable, unsigned,
    signed by another key, for another run than ``allowed``, or in a folder of several runs): the
    server writes the folder."""
    withdrawn: dict[str, Withdrawal] = {}
    findings = []
    for entry in loaded:
        data = entry.data if isinstance(entry.data, Mapping) else {}
        artist = str(data.get("artist_id") or PurePath(entry.source).parent.name)  # unreadable: its folder's
        try:
            if entry.error is not None:
                raise PrivacyError(entry.error)
            key = keys.get(artist)
            if not isinstance(key, Mapping):
                raise PrivacyError(f"no trusted key for {artist!r}")
            withdrawal = checked_withdrawal(data, public_key_from_text(str(key.get("public_key"))))
            if withdrawal.run_id is None:
                raise PrivacyError("the withdrawal carries no run id: it cannot be tied to the audited run")
            if len(allowed) > 1:
                raise PrivacyError(
                    f"the folder holds reports of {len(allowed)} runs: name the audited one (--run-id) to use "
                    "withdrawals"
                )
            if allowed and withdrawal.run_id not in allowed:
                raise PrivacyError(
                    f"the withdrawal is signed for run {withdrawal.run_id!r}, the audited reports for "
                    f"{sorted(str(r) for r in allowed)}: another run's"
                )
            withdrawn[artist] = withdrawal
        except PrivacyError as exc:
            findings.append(Finding(INVALID_WITHDRAWAL, f"{entry.source}: {exc}", artist))
    return withdrawn, findings


def _manifest_mismatches(folder_manifest: Mapping[str, Any] | None, trusted: Mapping[str, Any]) -> list[Finding]:
    """Artists whose key in the audited folder's manifest differs from the trusted one."""
    findings = []
    for artist, entry in sorted(((folder_manifest or {}).get("artists") or {}).items()):
        expected = trusted.get(artist)
        claimed = entry.get("public_key") if isinstance(entry, Mapping) else None
        if expected is None:
            message = f"the folder's manifest lists {artist!r}, who has no trusted key"
        elif not _same_key(claimed, expected.get("public_key")):
            message = f"the folder's manifest gives {artist!r} a key that is not its key in the trusted key set"
        else:
            continue
        findings.append(Finding(MANIFEST_KEY_MISMATCH, message, artist))
    return findings


def _same_key(claimed: Any, trusted: Any) -> bool:
    try:
        claimed_key, trusted_key = public_key_from_text(str(claimed)), public_key_from_text(str(trusted))
    except PrivacyError:
        return False
    return key_fingerprint(claimed_key) == key_fingerprint(trusted_key)


def _completeness(
    by_artist: Mapping[str, list[_Entry]], roster: Sequence[str], withdrawn: Mapping[str, Withdrawal]
) -> list[Finding]:
    """Run-level gaps: roster artists without reports, charged rounds without a report, reports
    stopping before the run's final publication (see the module docstring) -- unless the artist's
    signed withdrawal says it stopped there (its charged rounds still need their reports)."""
    run_end = max((audit.round_id or 0 for entries in by_artist.values() for audit, _ in entries), default=0)
    findings = []
    for artist in sorted(set(roster) | set(by_artist)):
        entries = by_artist.get(artist, [])
        if not entries and artist in withdrawn:
            continue  # withdrew having reported nothing (its signed withdrawal says so)
        if not entries:
            message = (
                f"{artist!r} is in the roster but has no report: deleted, or the artist retired before "
                "spending anything or never joined"
            )
            findings.append(Finding(ARTIST_WITHOUT_REPORTS, message, artist))
            continue
        rounds = {audit.round_id for audit, _ in entries}
        last, latest = max(((audit.round_id or 0, data) for audit, data in entries), key=lambda entry: entry[0])
        charged = {m.get("round_id") for m in latest["mechanisms"] if isinstance(m, Mapping)}
        missing = sorted(r for r in charged - rounds if isinstance(r, int))
        if missing:
            message = f"{artist!r}: rounds {missing} were charged (per its round-{last} report) but have no report"
            findings.append(Finding(MISSING_ROUNDS, message, artist))
        end = max((data["final_round"] for _, data in entries if "final_round" in data), default=run_end)
        if last < end and artist not in withdrawn:  # a withdrawal here signs this very last report
            message = (
                f"{artist!r}: its last report is round {last}, the run's final publication is round {end}: "
                "later reports deleted, or the artist retired or left"
            )
            findings.append(Finding(REPORTS_END_EARLY, message, artist))
    return findings


def _audit_one(loaded: LoadedReport, keys: Mapping[str, Any], tolerance: float) -> ReportAudit:
    audit = ReportAudit(source=loaded.source)
    if loaded.error is not None:
        audit.flag(SCHEMA_ERROR, loaded.error)
        return audit
    report = loaded.data
    for error in report_schema_errors(report):
        audit.flag(SCHEMA_ERROR, error)
    if not audit.ok:
        return audit  # fields cannot be trusted to exist or have their types
    audit.artist_id, audit.round_id = report["artist_id"], report["round"]
    audit.accountant = report["accountant"]
    audit.claimed_epsilon = report["epsilon"].get(audit.accountant)
    signed = _check_signature(audit, report, keys.get(audit.artist_id))
    _check_noise_source(audit, report)
    try:
        history = history_from_list(report["mechanisms"])
    except PrivacyError as exc:
        audit.flag(MALFORMED_HISTORY, str(exc))
        return audit
    _check_claims(audit, report)
    _check_schedule(audit, report)
    _check_issued_after_ledger(audit, report)
    if signed:  # an unsigned or forged report is flagged already: not worth dp_accounting's time
        _check_recomputation(audit, report, history, tolerance)
    return audit


def _check_run(audit: ReportAudit, report: Mapping[str, Any], run_id: str) -> None:
    """A report signed for another run than the audited one (or for none): another run's reports
    handed over for this one, by whoever wrote the folder."""
    if audit.round_id is not None and report.get("run_id") != run_id:
        audit.flag(OTHER_RUN, f"signed for run {report.get('run_id')!r}, not the audited run {run_id!r}")


def _utc(timestamp: str) -> dt.datetime | None:
    """A schema-checked ``utc_timestamp`` (``YYYY-MM-DDTHH:MM:SS[.f]Z``) as an aware datetime, compared
    as times, not as text (``...:05.5Z`` sorts before ``...:05Z``); ``None`` for a date the pattern
    lets through but the calendar has not (``2026-02-30``, a 60th second)."""
    try:
        return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def _earlier_by_more_than_slack(audit: ReportAudit, later: str, earlier: str) -> bool:
    """Whether ``later`` precedes ``earlier`` by more than :data:`CLOCK_SLACK`; a timestamp that is no
    date is flagged (``schema_error``) instead of stopping the audit of every other report."""
    parsed = {text: _utc(text) for text in (later, earlier)}
    invalid = sorted(text for text, value in parsed.items() if value is None)
    if invalid:
        audit.flag(SCHEMA_ERROR, f"timestamp(s) {invalid} are not dates")
        return False
    late, early = parsed[later], parsed[earlier]
    assert late is not None and early is not None
    return early - late > CLOCK_SLACK  # a difference never overflows, unlike year 1 minus the slack


def _check_issued_after_ledger(audit: ReportAudit, report: Mapping[str, Any]) -> None:
    """A report issued before the ledger it reports on was created (by more than :data:`CLOCK_SLACK`):
    a report not made by this package's reporting, which issues one only from an open ledger."""
    if _earlier_by_more_than_slack(audit, report["issued_at"], report["ledger_created_at"]):
        audit.flag(
            TIME_OUT_OF_ORDER,
            f"issued at {report['issued_at']}, before its ledger was created ({report['ledger_created_at']})",
        )


def _check_schedule(audit: ReportAudit, report: Mapping[str, Any]) -> None:
    """A report or charge past the signed final round: the run's plan ends with the final publication
    (a further release would be a fresh draw of the final prototype)."""
    final = report.get("final_round")
    if not isinstance(final, int):
        return
    charged = {
        m["round_id"] for m in report["mechanisms"] if isinstance(m, Mapping) and isinstance(m.get("round_id"), int)
    }
    past = sorted(r for r in charged | {audit.round_id or 0} if r > final)
    if past:
        audit.flag(CHARGED_OUT_OF_ORDER, f"rounds {past} are past the run's final round {final} (signed)")


def _check_signature(audit: ReportAudit, report: Mapping[str, Any], key_entry: Any) -> bool:
    """Whether the artist's trusted key signed ``report`` (else flagged)."""
    if SIGNATURE_FIELD not in report:
        audit.flag(MISSING_SIGNATURE, "report is unsigned; its origin and integrity cannot be checked")
        return False
    if not isinstance(key_entry, Mapping) or "public_key" not in key_entry:
        audit.flag(KEY_NOT_IN_MANIFEST, f"no trusted public key for artist {audit.artist_id!r}")
        return False
    try:
        verify_report_signature(report, public_key_from_text(str(key_entry["public_key"])))
    except PrivacyError as exc:
        audit.flag(INVALID_SIGNATURE, str(exc))
        return False
    return True


def _check_noise_source(audit: ReportAudit, report: Mapping[str, Any]) -> None:
    source = report.get("noise_source")
    if source is None:
        audit.flag(
            NOISE_NOT_SECURE,
            "the report does not say where its DP noise came from (an older version drew it "
            "from a generator seeded by the server's plan seed): it may be predictable",
        )
    elif source not in SECURE_NOISE_SOURCES:
        audit.flag(
            NOISE_NOT_SECURE,
            f"DP noise from {source!r}, not from a CSPRNG: whoever knows its seed can "
            "subtract the noise, so the claimed epsilon does not hold against them",
        )


def _check_claims(audit: ReportAudit, report: Mapping[str, Any]) -> None:
    for name in dict.fromkeys([audit.accountant, *report["epsilon"]]):
        if name not in ACCOUNTANTS:
            audit.flag(
                UNKNOWN_ACCOUNTANT, f"accountant {name!r} is not one of {list(ACCOUNTANTS)}; claim not verifiable"
            )
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
            OVER_BUDGET,
            f"claimed epsilon {audit.claimed_epsilon:.4g} exceeds the budget epsilon {budget['epsilon']:.4g}",
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
        if not audit.recomputed_rdp <= MAX_PLD_EPSILON:
            audit.flag(
                RECOMPUTATION_FAILED,
                f"dp_accounting RDP gives epsilon={audit.recomputed_rdp:.4g}, above {MAX_PLD_EPSILON:g}: the audit "
                "does not recompute PLD that far (its cost grows with epsilon), so the claims are not certified",
            )
            return
        audit.recomputed_pld = recompute_epsilon_pld(history, delta)
    except (ValueError, ArithmeticError, MemoryError, RecursionError) as exc:  # degenerate or extreme parameters
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


def _round_order(round_id: object) -> tuple[int, int, str]:
    """Sort key for round ids read from a report: integers in numeric order, then anything else a
    crafted report holds (``None``, strings), by its text."""
    if isinstance(round_id, int) and not isinstance(round_id, bool):
        return (0, round_id, "")
    return (1, 0, str(round_id))


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
                f"{name} epsilon fell from {before:.4g} (round {first.round_id}) to {after:.4g} (round "
                f"{audit.round_id})",
            )
    if new["mechanisms"][: len(old["mechanisms"])] != old["mechanisms"]:
        audit.flag(HISTORY_REWRITTEN, f"mechanism history of round {first.round_id} is not a prefix of this round's")
    charged = {m.get("round_id") for m in new["mechanisms"][len(old["mechanisms"]) :] if isinstance(m, Mapping)}
    after, upto = first.round_id or 0, audit.round_id or 0  # compared, not a range's set: ids may be huge
    late = sorted((r for r in charged if not (isinstance(r, int | float) and after < r <= upto)), key=_round_order)
    if late:
        audit.flag(
            CHARGED_OUT_OF_ORDER,
            f"charges of rounds {late} first appear in round {audit.round_id}'s report, not in rounds after "
            f"{first.round_id} (reported before): charged out of round order, so no report covered them in time",
        )
    if new["budget"] != old["budget"] or new["delta"] != old["delta"]:
        audit.flag(BUDGET_CHANGED, f"budget or delta differs from round {first.round_id}")
    if new.get("run_id") != old.get("run_id"):
        audit.flag(
            RUN_CHANGED,
            f"signed for run {new.get('run_id')!r}, round {first.round_id}'s for run {old.get('run_id')!r}: "
            "reports of two runs spliced together",
        )
    if _earlier_by_more_than_slack(audit, new["issued_at"], old["issued_at"]):
        audit.flag(
            TIME_OUT_OF_ORDER,
            f"issued at {new['issued_at']}, before round {first.round_id}'s report ({old['issued_at']}): a later "
            "round cannot be reported before an earlier one",
        )
    if new["ledger_created_at"] != old["ledger_created_at"]:
        audit.flag(
            LEDGER_CHANGED,
            f"another ledger than round {first.round_id}'s (created {old['ledger_created_at']}, here "
            f"{new['ledger_created_at']}): reports of two runs, or of a ledger started afresh, spliced together",
        )
