"""Signed epsilon reports: what one artist's artworks have been exposed to, per round.

A report states the privacy unit (ONE ARTWORK, record-level DP -- never the artist), the
budget, the epsilon spent so far at the report's delta per accountant, the full mechanism
history it was computed from, where its noise came from, the round of the run's final
publication, a commitment to the dataset size and the library versions. It is signed with
the artist's Ed25519 key over its canonical JSON (sorted keys, no whitespace, UTF-8) so that
any later edit of any field is detectable; anyone holding the artist's public key (from the
key set, ``fedstyle audit --keys``) can verify it and recompute its epsilon.

**The dataset size n stays with the artist.**  The signed fields carry only
``dataset_size_commitment = sha256(DOMAIN || n || salt)`` with a fresh 32-byte salt from the
OS CSPRNG; the artist's own copy adds the opening ``dataset_size_opening = {dataset_size,
salt}`` OUTSIDE the signature (the commitment binds it).  What the server receives and stores
is :func:`redacted_report` (no opening): its signature still verifies, and the commitment
hides n (the salt is unguessable).  An auditor given the artist's full report checks the
opening against the signed commitment (:func:`opened_dataset_size`), so n is as authenticated
as every signed field, and then checks ``delta < 1/n``.  Not hidden by this: the mechanism
history (DP-SGD sample rate and steps follow from ``ceil(n / batch size)``) and a default delta
of ``1/(10 n)`` when ``n > 10^4``.

Threat model: the signature authenticates WHO issued a report and that it is unmodified;
it does not make the numbers correct -- that is what :mod:`~fedstyle_secure.privacy.audit`
checks by independent recomputation.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedstyle_secure.errors import FedStyleError, PrivacyError
from fedstyle_secure.privacy.accounting import compute_epsilon
from fedstyle_secure.privacy.budget import BudgetLedger, utc_now_iso
from fedstyle_secure.privacy.mechanisms import history_to_list
from fedstyle_secure.secure.keys import pki

REPORT_FORMAT = "fedstyle-epsilon-report/2"
PRIVACY_UNIT = "one artwork (record-level)"
PRIVACY_UNIT_NOTE = (
    "Epsilon bounds what the released models and statistics reveal about the inclusion of any "
    "single artwork of this artist. It does NOT bound what they reveal about the artist as a whole "
    "(artist-level privacy), e.g. the artist's participation or overall style."
)
NEIGHBOURING_RELATION = "add or remove one artwork"
SIGNATURE_ALGORITHM = "Ed25519"
SIGNATURE_FIELD = "signature"
DATASET_SIZE_COMMITMENT = "dataset_size_commitment"
DATASET_SIZE_OPENING = "dataset_size_opening"  # the artist's copy only; outside the signature
UNSIGNED_FIELDS: tuple[str, ...] = (SIGNATURE_FIELD, DATASET_SIZE_OPENING)
COMMITMENT_DOMAIN = b"fedstyle-epsilon-report/dataset-size/1\0"
SALT_BYTES = 32
RUN_ID_BYTES = 16
"""A run id is this many bytes from the OS CSPRNG, written as lowercase hex (32 digits)."""
REPORTED_PACKAGES: tuple[str, ...] = ("torch", "opacus", "dp-accounting", "fedstyle-secure")


def software_versions(packages: Iterable[str] = REPORTED_PACKAGES) -> dict[str, str]:
    """Installed distribution versions (``"not installed"`` if absent), without importing them."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


#: Accountants a report states beside the ledger's own (which enforces the budget), by default.
DEFAULT_REPORTED_ACCOUNTANTS: tuple[str, ...] = ("rdp",)


def new_run_id() -> str:
    """A fresh run id: :data:`RUN_ID_BYTES` bytes from the OS CSPRNG, as hex."""
    return os.urandom(RUN_ID_BYTES).hex()


def is_run_id(text: str) -> bool:
    """Whether ``text`` has the form of a run id (:func:`new_run_id`)."""
    return len(text) == 2 * RUN_ID_BYTES and all(c in "0123456789abcdef" for c in text)


def reported_accountants(ledger_accountant: str, accountants: Iterable[str] | None = None) -> list[str]:
    """The accountants whose epsilon a report states: the ledger's own first, then ``accountants``
    (default :data:`DEFAULT_REPORTED_ACCOUNTANTS`)."""
    extra = DEFAULT_REPORTED_ACCOUNTANTS if accountants is None else tuple(accountants)
    return list(dict.fromkeys([ledger_accountant, *extra]))


def build_report(
    ledger: BudgetLedger,
    *,
    artist_id: str,
    round_id: int,
    noise_source: str,
    final_round: int | None = None,
    run_id: str | None = None,
    accountants: Iterable[str] | None = None,
    issued_at: str | None = None,
) -> dict[str, Any]:
    """Unsigned report of ``ledger``'s state after round ``round_id``.

    ``noise_source`` names where the DP noise and Poisson sampling came from (see
    :mod:`fedstyle_secure.randomness`; the audit flags any source but a CSPRNG);
    ``final_round`` is the round of the run's final publication, the last report the audit expects;
    ``run_id`` the run's id (:func:`new_run_id`; the networked artist's is the one it pinned at its
    first plan), which lets an audit tell one run's reports from another's.
    ``accountants`` lists every accountant whose epsilon is reported; the ledger's own
    accountant (the one enforcing the budget) always comes first. Default: it plus ``"rdp"``.
    """
    delta = ledger.budget.delta
    names = reported_accountants(ledger.accountant, accountants)
    optional: dict[str, Any] = {} if final_round is None else {"final_round": final_round}
    if run_id is not None:
        optional["run_id"] = run_id
    salt = os.urandom(SALT_BYTES)
    return {
        "format": REPORT_FORMAT,
        "artist_id": artist_id,
        "round": round_id,
        "privacy_unit": PRIVACY_UNIT,
        "privacy_unit_note": PRIVACY_UNIT_NOTE,
        "neighbouring_relation": NEIGHBOURING_RELATION,
        DATASET_SIZE_COMMITMENT: dataset_size_commitment(ledger.dataset_size, salt),
        DATASET_SIZE_OPENING: {"dataset_size": ledger.dataset_size, "salt": base64.b64encode(salt).decode()},
        "delta": delta,
        "accountant": ledger.accountant,
        "epsilon": {name: compute_epsilon(ledger.history, delta, name) for name in names},
        "budget": ledger.budget.to_dict(),
        "mechanisms": history_to_list(ledger.history),
        "noise_source": noise_source,
        **optional,
        "software": software_versions(),
        "ledger_created_at": ledger.created_at,
        "issued_at": issued_at or utc_now_iso(),
    }


def canonical_json(data: Any) -> bytes:
    """Deterministic UTF-8 JSON: sorted keys, no insignificant whitespace, no NaN/Infinity."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def signed_payload(report: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the canonical JSON of every field except ``signature`` and
    ``dataset_size_opening`` (bound by the signed commitment instead)."""
    return canonical_json({key: value for key, value in report.items() if key not in UNSIGNED_FIELDS})


def dataset_size_commitment(dataset_size: int, salt: bytes) -> str:
    """``sha256:<hex>`` of the domain, the decimal dataset size and the salt (hiding while the
    32-byte salt is secret, binding by collision resistance)."""
    if len(salt) != SALT_BYTES:
        raise PrivacyError(f"a dataset-size commitment needs a {SALT_BYTES}-byte salt, got {len(salt)}")
    digest = hashlib.sha256(COMMITMENT_DOMAIN + str(int(dataset_size)).encode() + b"\0" + salt)
    return "sha256:" + digest.hexdigest()


def opened_dataset_size(report: Mapping[str, Any]) -> int | None:
    """The dataset size of a report carrying its opening, after checking the opening against
    the (signed) commitment; ``None`` for a redacted report.  Raises :class:`PrivacyError` on a
    mismatch."""
    opening = report.get(DATASET_SIZE_OPENING)
    if opening is None:
        return None
    try:
        size, salt = int(opening["dataset_size"]), base64.b64decode(str(opening["salt"]), validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise PrivacyError(f"malformed {DATASET_SIZE_OPENING}: {exc!r}") from exc
    if dataset_size_commitment(size, salt) != report.get(DATASET_SIZE_COMMITMENT):
        raise PrivacyError(
            f"{DATASET_SIZE_OPENING} does not open the signed {DATASET_SIZE_COMMITMENT} (altered dataset size or salt)"
        )
    return size


def redacted_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report without the dataset-size opening: what leaves the artist's machine."""
    return {key: value for key, value in report.items() if key != DATASET_SIZE_OPENING}


def public_key_to_text(public_key: Ed25519PublicKey) -> str:
    """Raw 32-byte public key, base64-encoded (the reports manifest format)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Parse a PEM (as in the key set's ``identity/<artist>.pub``) or raw-base64 Ed25519 public
    key; raises :class:`PrivacyError` on anything else (fail closed)."""
    try:
        if text.lstrip().startswith("-----BEGIN"):
            return pki.load_identity_public_key_pem(text.encode("ascii"), "report signing key")
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (FedStyleError, ValueError, UnicodeEncodeError) as exc:  # binascii.Error is a ValueError
        raise PrivacyError(f"not an Ed25519 public key (PEM or base64 of 32 raw bytes): {exc}") from exc


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """``sha256:<hex>`` of the raw public key bytes (same digest as the key set's manifest)."""
    return "sha256:" + pki.identity_fingerprint(public_key)


def sign_report(report: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Copy of ``report`` with an Ed25519 ``signature`` over :func:`signed_payload`."""
    signed = copy.deepcopy(dict(report))
    signed[SIGNATURE_FIELD] = {
        "algorithm": SIGNATURE_ALGORITHM,
        "key_fingerprint": key_fingerprint(private_key.public_key()),
        "value": base64.b64encode(private_key.sign(signed_payload(signed))).decode("ascii"),
    }
    return signed


def verify_report_signature(report: Mapping[str, Any], public_key: Ed25519PublicKey) -> None:
    """Raise :class:`PrivacyError` unless ``report`` carries a valid signature by ``public_key``."""
    signature = report.get(SIGNATURE_FIELD)
    if not isinstance(signature, Mapping):
        raise PrivacyError("report is not signed (no 'signature' object)")
    if signature.get("algorithm") != SIGNATURE_ALGORITHM:
        raise PrivacyError(f"unsupported signature algorithm {signature.get('algorithm')!r}")
    expected = key_fingerprint(public_key)
    if signature.get("key_fingerprint") != expected:
        raise PrivacyError(f"report was signed by key {signature.get('key_fingerprint')!r}, expected {expected}")
    try:
        value = base64.b64decode(str(signature.get("value", "")), validate=True)
        public_key.verify(value, signed_payload(report))
    except (ValueError, InvalidSignature) as exc:  # binascii.Error is a ValueError
        raise PrivacyError("report signature does not match its content (report altered or forged)") from exc
