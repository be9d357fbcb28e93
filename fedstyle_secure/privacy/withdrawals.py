"""Signed withdrawals: an artist's own statement that it stopped taking part in a run (pure: no I/O).

Why: an epsilon report says what an artist spent, not that it stopped.  From the reports alone an
audit cannot tell an artist that retired (its budget spent, a lifetime budget, a plan it refused)
from one whose later reports the server deleted, so it flagged both (``reports_end_early``,
``artist_without_reports``), and a healthy run in which one artist's budget ran out failed its
audit.  Now the artist signs a withdrawal -- artist, run, round, reason -- with the identity key that
signs its reports, and sends it with its ``Withdraw`` call; the server keeps it beside the reports.

Threat model: the server writes the reports folder and may delete files.  A withdrawal is signed by
the artist, so the server cannot make one up for an artist whose reports it deleted, and one of
another run is refused (the audited run, or the one run of the folder's reports).  It also signs
where the artist's reports end -- the round of its last report (``None``: it reported nothing) and the
number of mechanisms that report lists -- and explains only a folder whose latest report of that artist
is exactly that one: deleting the artist's last reports, or all of them, is still found (a red team
showed that a withdrawal without them hid every deleted report).  Deleting a withdrawal only brings
back the finding it explained; every charge the latest report lists must still have its report
(``missing_rounds``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.privacy.budget import utc_now_iso
from fedstyle_secure.privacy.reports import SIGNATURE_FIELD, is_run_id, verify_report_signature

WITHDRAWAL_FORMAT = "fedstyle-withdrawal/1"
WITHDRAWAL_NAME = "withdrawal.json"  # in the artist's folder of the reports folder, beside its round-*.json
MAX_WITHDRAWAL_BYTES = 8192
MAX_REASON_CHARS = 1000
_FIELDS = {
    "format",
    "artist_id",
    "round",
    "reason",
    "run_id",
    "last_report_round",
    "reported_charges",
    "issued_at",
    SIGNATURE_FIELD,
}


@dataclass(frozen=True)
class Withdrawal:
    """A checked withdrawal: ``artist_id`` stopped taking part at ``round_id`` of ``run_id``."""

    artist_id: str
    round_id: int
    reason: str
    run_id: str | None
    last_report_round: int | None  # the round of the artist's last report (None: it reported nothing)
    reported_charges: int  # the mechanisms that report lists (0 without one)


def build_withdrawal(
    artist_id: str,
    round_id: int,
    reason: str,
    run_id: str | None,
    last_report: tuple[int, int] | None,
    issued_at: str | None = None,
) -> dict[str, Any]:
    """The unsigned withdrawal of ``artist_id`` at ``round_id``; ``last_report`` is (round, mechanisms
    listed) of its last epsilon report, ``None`` if it reported nothing.  Sign it with
    :func:`~fedstyle_secure.privacy.reports.sign_report` and the artist's identity key."""
    data: dict[str, Any] = {
        "format": WITHDRAWAL_FORMAT,
        "artist_id": artist_id,
        "round": int(round_id),
        "reason": reason[:MAX_REASON_CHARS],
        "last_report_round": None if last_report is None else int(last_report[0]),
        "reported_charges": 0 if last_report is None else int(last_report[1]),
        "issued_at": issued_at or utc_now_iso(),
    }
    if run_id:
        data["run_id"] = run_id
    return data


def withdrawal_errors(data: Any) -> list[str]:
    """What is wrong with the shape of ``data`` as a withdrawal (empty: nothing)."""
    if not isinstance(data, Mapping):
        return ["a withdrawal is a JSON object"]
    errors = [f"unknown field {key!r}" for key in sorted(set(data) - _FIELDS)]
    if data.get("format") != WITHDRAWAL_FORMAT:
        errors.append(f"format must be {WITHDRAWAL_FORMAT!r}")
    if not isinstance(data.get("artist_id"), str) or not data["artist_id"]:
        errors.append("artist_id must be a non-empty string")
    round_id = data.get("round")
    if not isinstance(round_id, int) or isinstance(round_id, bool) or round_id < 0:
        errors.append("round must be an integer >= 0")
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason or len(reason) > MAX_REASON_CHARS:
        errors.append(f"reason must be a string of 1..{MAX_REASON_CHARS} characters")
    if "run_id" in data and not (isinstance(data["run_id"], str) and is_run_id(data["run_id"])):
        errors.append("run_id must be 32 lowercase hex digits")
    last = data.get("last_report_round", "missing")
    if last is not None and (not isinstance(last, int) or isinstance(last, bool) or last < 0):
        errors.append("last_report_round must be null or an integer >= 0")
    charges = data.get("reported_charges")
    if not isinstance(charges, int) or isinstance(charges, bool) or charges < 0 or (last is None and charges):
        errors.append("reported_charges must be an integer >= 0 (0 when last_report_round is null)")
    try:
        dt.datetime.fromisoformat(str(data.get("issued_at")))
    except ValueError:
        errors.append("issued_at must be an ISO 8601 timestamp")
    return errors


def checked_withdrawal(
    data: Any, public_key: Ed25519PublicKey, *, artist_id: str | None = None, run_id: str | None = None
) -> Withdrawal:
    """``data`` as a :class:`Withdrawal` if it is well formed, signed by ``public_key`` and (when given)
    for ``artist_id`` and ``run_id``; else :class:`PrivacyError` naming what is wrong."""
    errors = withdrawal_errors(data)
    if errors:
        raise PrivacyError(f"not a valid withdrawal: {'; '.join(errors[:3])}")
    if artist_id is not None and data["artist_id"] != artist_id:
        raise PrivacyError(f"the withdrawal is {data['artist_id']!r}'s, not {artist_id!r}'s")
    try:
        verify_report_signature(data, public_key)
    except PrivacyError as exc:
        raise PrivacyError(f"the withdrawal is not signed by {data['artist_id']!r}'s identity key ({exc})") from exc
    if run_id is not None and data.get("run_id") != run_id:
        raise PrivacyError(f"the withdrawal is signed for run {data.get('run_id')!r}, not {run_id!r}")
    return Withdrawal(
        data["artist_id"],
        data["round"],
        data["reason"],
        data.get("run_id"),
        data["last_report_round"],
        data["reported_charges"],
    )
