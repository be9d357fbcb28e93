"""Server side of privacy reporting: signed epsilon reports and withdrawals from artists.

Every accepted report is stored byte-for-byte-equivalent (same JSON object) in the server's
``reports_dir`` with the same layout as the simulator's (``<dir>/<artist>/round-0003.json``)
next to a ``manifest.json`` of every roster artist's Ed25519 identity key, so ``fedstyle audit
<reports_dir>`` verifies the whole federation's reports.

The server never learns an artist's number of artworks: an uploaded report carries only the
signed commitment to it; one that carries the opening (``dataset_size_opening``) is refused
and nothing of it is stored (see :mod:`fedstyle_secure.privacy.reports`).

Threat model: an artist (or anyone on its behalf) may send a forged, altered, unsigned or
malformed report; each is refused with a specific status (see :func:`checked_report` and
:func:`store_checked_report`) and nothing is stored.  A valid signature proves the artist issued
the report unmodified, not that its numbers are right: that is what the audit recomputes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.federation.rejections import Duplicate, Forbidden, Malformed
from fedstyle_secure.files import loads_bounded
from fedstyle_secure.privacy.report_schema import collection_size_errors, report_schema_errors
from fedstyle_secure.privacy.report_store import register_public_key, write_report
from fedstyle_secure.privacy.reports import DATASET_SIZE_OPENING, verify_report_signature
from fedstyle_secure.privacy.withdrawals import MAX_REASON_CHARS, MAX_WITHDRAWAL_BYTES, checked_withdrawal
from fedstyle_secure.transport.wire import pb


def register_roster_keys(reports_dir: Path, identity_keys: Mapping[str, Ed25519PublicKey]) -> Path:
    """Write every roster artist's identity key into ``<reports_dir>/manifest.json`` (idempotent;
    refuses to replace a different key already registered there)."""
    path = Path(reports_dir) / "manifest.json"
    for artist, key in sorted(identity_keys.items()):
        path = register_public_key(reports_dir, artist, key)
    return path


MAX_REPORT_BYTES = 1024 * 1024
"""The most bytes of one uploaded report: an honest one is 1.5-2.5 KB for the demo's runs and 0.37 MB
at the longest history a plan allows (:data:`~fedstyle_secure.privacy.mechanisms.MAX_MECHANISMS`
records).  A 4 MiB report of 279,347 crafted mechanisms cost 100 s of schema validation, all of it
under the server's lock before the checks moved out of it (red-team review, 2026-12-01); now the
record count is checked before the schema, which then validates at most that many."""


def checked_report(request: pb.EpsilonReport, artist: str, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The report ``artist`` (the caller's certificate identity) uploaded, if it may be stored: at
    most :data:`MAX_REPORT_BYTES`, JSON, for that artist and round, without the dataset-size opening,
    signed by ``public_key`` and schema-valid (which includes the bounds of an auditable history,
    :func:`~fedstyle_secure.privacy.report_schema.report_schema_errors`: a roster artist's signed
    history that would stall the audit).  Pure and lock-free: a caller runs it before taking
    any lock.  Raises ``Malformed`` (INVALID_ARGUMENT) or ``Forbidden`` (PERMISSION_DENIED)."""
    if request.artist_id != artist:
        raise Forbidden(f"{artist} cannot upload a report for {request.artist_id!r}")
    if len(request.signed_json) > MAX_REPORT_BYTES:
        raise Malformed(f"epsilon report of {artist} is {len(request.signed_json)} bytes, over {MAX_REPORT_BYTES}")
    try:
        report = loads_bounded(request.signed_json)
    except ValueError as exc:
        raise Malformed(f"epsilon report is not JSON: {exc!s:.200}") from exc
    if not isinstance(report, dict) or report.get("artist_id") != artist or report.get("round") != request.round_id:
        raise Malformed(f"epsilon report must be a JSON object for artist {artist!r} and round {request.round_id}")
    oversized = collection_size_errors(report)  # before the signature check and the schema walk them
    if oversized:
        raise Malformed(f"epsilon report of {artist} is not a valid report: {'; '.join(oversized)}")
    if DATASET_SIZE_OPENING in report:
        raise Malformed(
            f"epsilon report of {artist} carries {DATASET_SIZE_OPENING}: the server must never learn the "
            "dataset size; upload the redacted report (privacy.reports.redacted_report)"
        )
    try:
        verify_report_signature(report, public_key)
    except PrivacyError as exc:
        raise Forbidden(f"epsilon report of {artist} refused: {exc}") from exc
    errors = report_schema_errors(report)
    if errors:
        raise Malformed(f"epsilon report of {artist} is not a valid report: {'; '.join(errors[:3])}")
    return report


def store_checked_report(report: Mapping[str, object], reports_dir: Path | None) -> None:
    """Store a :func:`checked_report` in ``reports_dir`` (if any); a different report already stored for
    that artist and round (reports are append-only) -> ``Duplicate`` (ALREADY_EXISTS); the same one
    again is accepted (an artist resends after a reconnect)."""
    if reports_dir is None:
        return
    try:
        write_report(reports_dir, dict(report))
    except PrivacyError as exc:
        raise Duplicate(str(exc)) from exc


def checked_withdrawal_statement(
    request: pb.Withdrawal, artist: str, public_key: Ed25519PublicKey, run_id: str
) -> dict[str, Any] | None:
    """The signed withdrawal ``artist`` sent with ``request`` (None if it sent none: an earlier
    version), if it is ``artist``'s, for this run and round, signs the reason ``request`` states and
    is signed by its identity key; else
    ``Malformed`` naming what is wrong.  Pure; one signature check (the server makes it once per
    artist: a repeated withdrawal is answered before it)."""
    if not request.signed_json:
        return None
    if len(request.signed_json) > MAX_WITHDRAWAL_BYTES:
        raise Malformed(f"the withdrawal of {artist} is {len(request.signed_json)} bytes, over {MAX_WITHDRAWAL_BYTES}")
    try:
        data = loads_bounded(request.signed_json)
        checked_withdrawal(data, public_key, artist_id=artist, run_id=run_id)
    except (ValueError, PrivacyError) as exc:
        raise Malformed(f"the withdrawal of {artist} is refused: {exc!s:.300}") from exc
    if data["round"] != request.round_id:
        raise Malformed(f"the withdrawal of {artist} is signed for round {data['round']}, not {request.round_id}")
    if data["reason"].strip() != request.reason.strip():  # the server keeps and logs the stated one
        raise Malformed(f"the withdrawal of {artist} states another reason than it signs")
    return cast(dict[str, Any], data)


def withdrawal_reason(request: pb.Withdrawal) -> str:
    """The stated reason of a withdrawal, refused if empty or longer than :data:`MAX_REASON_CHARS`."""
    reason = request.reason.strip()
    if not reason or len(reason) > MAX_REASON_CHARS or not reason.isprintable():
        raise Malformed(f"a withdrawal needs a printable reason of 1..{MAX_REASON_CHARS} characters")
    if len(request.nonce) < 16:
        raise Malformed("a withdrawal needs a nonce of at least 16 random bytes")
    return reason
