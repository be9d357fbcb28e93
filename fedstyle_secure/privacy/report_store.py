"""Reports directory on disk: ``<dir>/<artist>/round-0003.json`` plus ``<dir>/manifest.json``.

The manifest maps each artist id to its Ed25519 public key (raw, base64) and the key's
fingerprint. Reports are append-only: rewriting an existing round with different content is
refused, and so is re-registering an artist with a different key (fail closed -- a key
change must be a deliberate, visible act, not a side effect). Every write is atomic.
Single writer per reports directory is assumed (the manifest update is read-modify-write).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.privacy.jsonio import read_json, write_json_atomic
from fedstyle_secure.privacy.reports import key_fingerprint, public_key_to_text
from fedstyle_secure.privacy.withdrawals import WITHDRAWAL_NAME
from fedstyle_secure.secure.keys import pki

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "fedstyle-report-keys/1"
REPORT_GLOB = "round-*.json"


def report_path(reports_dir: Path, artist_id: str, round_id: int) -> Path:
    return Path(reports_dir) / pki.validate_subject_id(artist_id) / f"round-{round_id:04d}.json"


def write_report(reports_dir: Path, report: Mapping[str, Any]) -> Path:
    """Store a (signed) report at its canonical path; refuses to overwrite a different one."""
    path = report_path(reports_dir, report["artist_id"], report["round"])
    if path.exists() and read_json(path) != report:
        raise PrivacyError(
            f"{path} already holds a different report for this artist and round; reports are append-only"
        )
    write_json_atomic(path, dict(report))
    return path


def last_signed_report(reports_dir: Path, artist_id: str, run_id: str | None) -> tuple[int, int] | None:
    """``(round, mechanisms listed)`` of the latest report of run ``run_id`` that ``artist_id`` keeps in
    ``reports_dir``; None if it keeps none: where a withdrawal says its reports end.  Read from the
    signed files themselves, never from a ledger in memory (a refusal made before an artist's privacy
    state opened has no ledger, and signed "no report" for an artist holding a report of every round)."""
    folder = Path(reports_dir) / pki.validate_subject_id(artist_id)
    latest: tuple[int, int] | None = None
    for path in sorted(folder.glob(REPORT_GLOB)) if folder.is_dir() else []:
        report = read_json(path)
        if report.get("run_id") == run_id and (latest is None or report["round"] > latest[0]):
            latest = (int(report["round"]), len(report["mechanisms"]))
    return latest


def signed_run_ids(reports_dir: Path, artist_id: str) -> set[str | None]:
    """The runs that ``artist_id``'s reports and withdrawal in ``reports_dir`` are signed for (None: of no
    run); empty if it keeps none there."""
    folder = Path(reports_dir) / pki.validate_subject_id(artist_id)
    if not folder.is_dir():
        return set()
    files = [*folder.glob(REPORT_GLOB), *([folder / WITHDRAWAL_NAME] if (folder / WITHDRAWAL_NAME).is_file() else [])]
    return {read_json(path).get("run_id") for path in files}


def withdrawal_end(reports_dir: Path, artist_id: str, run_id: str | None) -> tuple[int, int] | None:
    """Where a withdrawal of ``artist_id`` from run ``run_id`` says its reports end: its last signed
    report of the run (:func:`last_signed_report`), unless its charge record (:func:`record_charges`,
    written before any charged result leaves) holds more charges than that report lists -- a charge
    not yet signed into a report, e.g. a withdrawal made before the artist's state opened.  The end
    then carries the recorded count, which no report matches, so an audit flags the missing charge
    instead of a withdrawal explaining it away."""
    last = last_signed_report(reports_dir, artist_id, run_id)
    charged = recorded_charges(reports_dir, artist_id)
    if charged > (0 if last is None else last[1]):
        return (0 if last is None else last[0]), charged
    return last


def keep_withdrawal(reports_dir: Path, withdrawal: Mapping[str, Any]) -> Path:
    """Store a signed withdrawal (:mod:`~fedstyle_secure.privacy.withdrawals`) in its artist's folder,
    unless one of the same run is there already: an artist withdraws once a run, and the run's first
    statement stays (one of an earlier run in a reused folder is replaced)."""
    path = reports_dir / str(withdrawal["artist_id"]) / WITHDRAWAL_NAME
    if not path.exists() or read_json(path).get("run_id") != withdrawal.get("run_id"):
        write_json_atomic(path, dict(withdrawal))
    return path


def withdrew_from(reports_dir: Path, artist_id: str, run_id: str | None) -> bool:
    """Whether ``artist_id`` keeps, in ``reports_dir``, a withdrawal it signed from run ``run_id``."""
    path = Path(reports_dir) / pki.validate_subject_id(artist_id) / WITHDRAWAL_NAME
    return path.is_file() and read_json(path).get("run_id") == run_id


def withdrawal_files(paths: Iterable[Path]) -> list[Path]:
    """Withdrawal files in the given directories, searched recursively (files given are reports)."""
    found = [file for path in map(Path, paths) if path.is_dir() for file in sorted(path.rglob(WITHDRAWAL_NAME))]
    return list(dict.fromkeys(found))


CHARGES_NAME = "charges.json"


def record_charges(reports_dir: Path, artist_id: str, count: int) -> None:
    """Keep, beside an artist's reports, how many charges its ledger holds (written before a charged
    result leaves the artist).  A round's release is signed into a report only at the round's next
    charge, so the reports alone cannot show that a ledger restored from a backup forgot it."""
    write_json_atomic(Path(reports_dir) / pki.validate_subject_id(artist_id) / CHARGES_NAME, {"charges": count})


def recorded_charges(reports_dir: Path, artist_id: str) -> int:
    """What :func:`record_charges` kept for ``artist_id`` (0 if nothing; a damaged record is refused)."""
    path = Path(reports_dir) / pki.validate_subject_id(artist_id) / CHARGES_NAME
    if not path.exists():
        return 0
    count = read_json(path).get("charges")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise PrivacyError(f"{path}: unreadable charge record {count!r}")
    return count


def empty_manifest() -> dict[str, Any]:
    return {"format": MANIFEST_FORMAT, "artists": {}}


def load_report_manifest(path: Path) -> dict[str, Any]:
    manifest = read_json(Path(path))
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise PrivacyError(f"{path} is not a reports key manifest (format {MANIFEST_FORMAT!r})")
    if not isinstance(manifest.get("artists"), dict):
        raise PrivacyError(f"{path}: 'artists' must map artist ids to keys")
    return manifest


def register_public_key(reports_dir: Path, artist_id: str, public_key: Ed25519PublicKey) -> Path:
    """Add ``artist_id``'s key to ``<reports_dir>/manifest.json`` (idempotent, atomic)."""
    path = Path(reports_dir) / MANIFEST_NAME
    manifest = load_report_manifest(path) if path.exists() else empty_manifest()
    entry = {"public_key": public_key_to_text(public_key), "fingerprint": key_fingerprint(public_key)}
    existing = manifest["artists"].get(pki.validate_subject_id(artist_id))
    if existing is not None and existing.get("fingerprint") != entry["fingerprint"]:
        raise PrivacyError(
            f"artist {artist_id!r} is already registered in {path} with key {existing.get('fingerprint')}; "
            "refusing to replace it silently"
        )
    manifest["artists"][artist_id] = entry
    write_json_atomic(path, manifest)
    return path


def report_files(paths: Iterable[Path]) -> list[Path]:
    """Report files named by ``paths``: files as given, directories searched recursively."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(path.rglob(REPORT_GLOB)))
        elif path.is_file():
            found.append(path)
        else:
            raise PrivacyError(f"{path} does not exist")
    return list(dict.fromkeys(found))


def manifest_candidates(paths: Iterable[Path]) -> list[Path]:
    """Existing ``manifest.json`` files in the given directories, or up to two levels above
    the given report files (``<dir>/<artist>/round-0003.json`` -> ``<dir>/manifest.json``)."""
    candidates: list[Path] = []
    for path in map(Path, paths):
        search = [path] if path.is_dir() else [path.parent, path.parent.parent]
        candidates.extend(d / MANIFEST_NAME for d in search if (d / MANIFEST_NAME).is_file())
    return list(dict.fromkeys(candidate.resolve() for candidate in candidates))


def latest_reports(reports_dir: Path) -> dict[str, dict[str, Any]]:
    """Each artist's report of its latest round in ``reports_dir`` (unverified: audit first)."""
    latest: dict[str, dict[str, Any]] = {}
    for path in report_files([reports_dir]):
        report = read_json(path)
        artist = str(report.get("artist_id"))
        if artist not in latest or int(report.get("round", -1)) > int(latest[artist].get("round", -1)):
            latest[artist] = report
    return latest
