"""``fedstyle audit PATH... --keys DIR``: verify signed epsilon reports and recompute their epsilon.

Identities: report signatures are checked against the artists' identity keys of a key set or
bundle made by ``fedstyle keys`` (``--keys``), never against the ``manifest.json`` of the audited
folder alone -- whoever writes that folder (the server) could swap a key and forge reports under
it.  The roster (who must have reported) is the key set's artists, which is also the server's
roster; ``--artists`` narrows it (e.g. to audit one artist's own ``state/reports``).  Without
``--keys`` the folder's manifest is used, the output says loudly that identities were NOT
verified, and that is a finding (exit 1) unless ``--trust-manifest`` accepts it explicitly (for a
simulation, whose keys exist only in its manifest): an audit that a forged folder passes by
default would certify nothing.

Exit status: 0 when every report is clean, 1 when anything is flagged, 2 on usage errors
(missing paths, no reports found, unreadable manifest or key set).

``fedstyle audit --empirical``: a canary membership-inference audit of the DP-SGD training
itself (one training run per configuration, Steinke-Nasr-Jagielski lower bound on epsilon).
Exit status: 1 iff some audited configuration's lower bound exceeds its claimed epsilon (so
``--config honest`` exits 0 for a correct implementation, ``--config no-noise`` and
``--config all`` are expected to exit 1), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedstyle_secure.errors import ConfigError, PrivacyError, SecureAggregationError
from fedstyle_secure.experiments.arguments import seed_value
from fedstyle_secure.experiments.canary_audit import (
    CONFIGURATIONS,
    CanaryAuditConfig,
    EmpiricalAuditResult,
    run_canary_audit,
)
from fedstyle_secure.experiments.output import render_table
from fedstyle_secure.privacy.audit import (
    DEFAULT_TOLERANCE,
    UNVERIFIED_MESSAGE,
    AuditResult,
    LoadedReport,
    audit_reports,
)
from fedstyle_secure.privacy.jsonio import read_json
from fedstyle_secure.privacy.report_store import (
    MANIFEST_NAME,
    load_report_manifest,
    manifest_candidates,
    report_files,
    withdrawal_files,
)
from fedstyle_secure.privacy.reports import is_run_id, public_key_to_text
from fedstyle_secure.secure.keys.keystore import load_identity_keys

TABLE_COLUMNS = ("artist", "round", "accountant", "claimed eps", "RDP (dp_acc)", "PLD (dp_acc)", "status")
EMPIRICAL_COLUMNS = (
    "configuration",
    "claimed eps",
    "lower bound",
    "confidence",
    "canaries",
    "guesses",
    "correct",
    "max bound",
    "verdict",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="verify signed epsilon reports and recompute their epsilon independently",
        description=(
            "Check epsilon reports (files, or directories searched for round-*.json): JSON Schema, Ed25519 "
            "signature against the artists' identity keys of the key set given by --keys, noise from a CSPRNG, "
            "budget, Poisson sampling, epsilon never decreasing, each claimed epsilon against an independent "
            "recomputation with Google's dp_accounting (RDP and PLD), and completeness: every artist of the roster "
            "has reported every charged round up to the run's final publication. The privacy unit of every report "
            "is ONE ARTWORK, not an artist. Exit status: 0 clean, 1 findings, 2 usage error. "
            "With --empirical (no PATH): train the private head once per configuration with canaries and "
            "report a statistically valid LOWER bound on epsilon (Steinke, Nasr & Jagielski 2023); exit 1 iff "
            "some configuration's lower bound exceeds its claimed epsilon (the broken configurations no-noise "
            "and no-clip are meant to)."
        ),
    )
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="report file or reports directory")
    identities = parser.add_mutually_exclusive_group()
    identities.add_argument(
        "--keys",
        type=Path,
        metavar="DIR",
        help="key set or artist/server bundle made by `fedstyle keys` (obtained from the administrator, not from the "
        "party audited): its identity keys verify the signatures and its artists are the roster",
    )
    identities.add_argument(
        "--trust-manifest",
        action="store_true",
        help="without --keys, accept the keys of the audited folder's manifest (e.g. a simulation's); identities "
        "are then NOT verified, which is otherwise a finding",
    )
    parser.add_argument(
        "--artists",
        metavar="NAMES",
        help="comma-separated artists expected to report (default: every artist of the key set)",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        metavar="FILE",
        help=f"the reports' key manifest (default: {MANIFEST_NAME} in the given directories or above the given files); "
        "compared with --keys, or trusted with --trust-manifest",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        metavar="T",
        default=DEFAULT_TOLERANCE,
        help="flag a claim below recomputed * (1 - TOLERANCE) (default: %(default)s)",
    )
    parser.add_argument(
        "--run-id",
        metavar="HEX",
        help="the audited run's id (32 hex digits, as an artist logged or reported it): flags reports signed for "
        "another run, e.g. an earlier run of the same key set handed over for this one",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    _add_empirical_arguments(parser.add_argument_group("empirical audit (--empirical)"))
    parser.set_defaults(func=run)


EMPIRICAL_DEFAULTS: dict[str, object] = {
    "epsilon": 8.0,
    "canaries": 1000,
    "confidence": 0.95,
    "config": "honest",
    "train_points": CanaryAuditConfig.train_points,
    "epochs": CanaryAuditConfig.epochs,
    "seed": 0,
}
"""The defaults of the options only ``--empirical`` takes (a reports audit refuses any other value)."""


def _add_empirical_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--empirical", action="store_true", help="run the canary membership-inference audit instead of checking reports"
    )
    group.add_argument(
        "--epsilon",
        type=float,
        default=EMPIRICAL_DEFAULTS["epsilon"],
        metavar="EPS",
        help="claimed epsilon (default: %(default)s)",
    )
    group.add_argument(
        "--canaries",
        type=int,
        default=EMPIRICAL_DEFAULTS["canaries"],
        metavar="M",
        help="number of canaries (default: %(default)s)",
    )
    group.add_argument(
        "--confidence",
        type=float,
        default=EMPIRICAL_DEFAULTS["confidence"],
        metavar="C",
        help="confidence (default: %(default)s)",
    )
    group.add_argument(
        "--config",
        choices=(*CONFIGURATIONS, "all"),
        default=EMPIRICAL_DEFAULTS["config"],
        help="training to audit: the honest plan, or a deliberately broken one (default: %(default)s)",
    )
    group.add_argument(
        "--train-points",
        type=int,
        default=EMPIRICAL_DEFAULTS["train_points"],
        metavar="N",
        help="non-canary training records (default: %(default)s)",
    )
    group.add_argument(
        "--epochs",
        type=int,
        default=EMPIRICAL_DEFAULTS["epochs"],
        metavar="E",
        help="epochs of the run (default: %(default)s)",
    )
    group.add_argument(
        "--seed",
        type=seed_value,
        default=EMPIRICAL_DEFAULTS["seed"],
        metavar="S",
        help="seed of data, canary coins and the DP noise (seeded: a reproducible experiment, not a deployment; "
        "default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    if args.empirical:
        return run_empirical(args)
    given = [
        f"--{name.replace('_', '-')}" for name, default in EMPIRICAL_DEFAULTS.items() if getattr(args, name) != default
    ]
    if given:  # silently ignored, `audit PATH --epsilon 1` looked like a check of the reports against epsilon 1
        raise ConfigError(f"{', '.join(given)}: only with --empirical (a reports audit takes none of them)")
    if not args.paths:
        raise ConfigError("give at least one report file or directory (or --empirical)")
    if not (0.0 <= args.tolerance < 1.0):
        raise ConfigError(f"--tolerance must be in [0, 1), got {args.tolerance}")
    try:
        files = report_files(args.paths)
        manifest = _load_manifest(args.manifest, args.paths)
        reports = [_read_report(path) for path in files]
        withdrawals = [_read_report(path) for path in withdrawal_files(args.paths)]
    except PrivacyError as exc:
        raise ConfigError(str(exc)) from exc
    if not reports:
        raise ConfigError(f"no report files (round-*.json) found in {', '.join(map(str, args.paths))}")
    trusted = _key_set_manifest(args.keys) if args.keys is not None else manifest
    result = audit_reports(
        reports,
        trusted,
        args.tolerance,
        roster=_roster(args.artists, trusted),
        identities_verified=args.keys is not None,
        accept_unverified=args.trust_manifest,
        folder_manifest=manifest if args.keys is not None else None,
        run_id=_run_id(args.run_id),
        withdrawals=withdrawals,
    )
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_table(result))
    return 0 if result.clean else 1


def _run_id(text: str | None) -> str | None:
    if text is not None and not is_run_id(text):
        raise ConfigError(f"--run-id: {text[:80]!r} is not a run id (32 lowercase hex digits)")
    return text


def _key_set_manifest(keys_dir: Path) -> dict[str, Any]:
    """The identity keys of a key set or bundle, in the reports-manifest format (loading errors: exit 2)."""
    try:
        identities = load_identity_keys(keys_dir)
    except SecureAggregationError as exc:  # tampered / inconsistent key set: a usage error naming the file
        raise ConfigError(f"--keys: {exc}") from exc
    return {"artists": {artist: {"public_key": public_key_to_text(key)} for artist, key in identities.items()}}


def _roster(names: str | None, trusted: dict[str, Any] | None) -> tuple[str, ...]:
    known = tuple((trusted or {}).get("artists", {}))
    if names is None:
        return known
    roster = tuple(dict.fromkeys(n.strip() for n in names.split(",") if n.strip()))
    unknown = sorted(set(roster) - set(known))
    if not roster or unknown:
        raise ConfigError(
            f"--artists: {unknown or names!r} not among the artists with trusted keys ({', '.join(known)})"
        )
    return roster


def _read_report(path: Path) -> LoadedReport:
    try:
        return LoadedReport(str(path), read_json(path))
    except PrivacyError as exc:  # unreadable, not JSON, or a crafted file (too large, too deep): a finding
        return LoadedReport(str(path), None, error=str(exc))


def _load_manifest(explicit: Path | None, paths: Sequence[Path]) -> dict[str, Any] | None:
    """The explicit manifest, else the merge of those found next to ``paths`` (conflicts: error)."""
    candidates = [explicit] if explicit is not None else manifest_candidates(paths)
    if not candidates:
        return None
    merged: dict[str, Any] = {"artists": {}}
    for path in candidates:
        for artist, entry in load_report_manifest(path)["artists"].items():
            if merged["artists"].setdefault(artist, entry) != entry:
                raise ConfigError(f"manifests disagree on the key of artist {artist!r} ({path})")
    return merged


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.4f}"


def format_table(result: AuditResult) -> str:
    """One row per report, followed by every finding and a verdict."""
    rows = [
        (
            report.artist_id or "?",
            "-" if report.round_id is None else report.round_id,
            report.accountant or "-",
            _number(report.claimed_epsilon),
            _number(report.recomputed_rdp),
            _number(report.recomputed_pld),
            report.status,
        )
        for report in result.reports
    ]
    findings = [f"{report.source}: [{f.code}] {f.message}" for report in result.reports for f in report.findings]
    findings += [f"run: [{f.code}] {f.message}" for f in result.findings]
    verdict = "clean" if result.clean else f"{len(findings)} finding(s)"
    identities = (
        f"identities verified against the trusted key set; roster: {', '.join(result.roster)}"
        if result.identities_verified
        else f"WARNING: {UNVERIFIED_MESSAGE.upper()}"
    )
    runs = ", ".join(run or "(none)" for run in result.run_ids) or "-"
    withdrawn = "".join(
        f"\nwithdrew (signed): {w.artist_id} at round {w.round_id}: {w.reason}" for w in result.withdrawn
    )
    footer = (
        f"privacy unit: one artwork (record-level); epsilons at each report's delta; {verdict}\n{identities}\n"
        f"signed for run(s): {runs}{withdrawn}"
    )
    return "\n\n".join(part for part in (render_table(TABLE_COLUMNS, rows), "\n".join(findings), footer) if part)


def run_empirical(args: argparse.Namespace) -> int:
    """One canary-audited training run per selected configuration; exit 1 iff any violation."""
    if args.paths:
        raise ConfigError("--empirical takes no PATH arguments")
    cfg = CanaryAuditConfig(
        epsilon=args.epsilon,
        canaries=args.canaries,
        train_points=args.train_points,
        confidence=args.confidence,
        epochs=args.epochs,
        seed=args.seed,
    )
    configurations = CONFIGURATIONS if args.config == "all" else (args.config,)
    results = [run_canary_audit(name, cfg) for name in configurations]
    print(json.dumps([r.to_dict() for r in results], indent=2) if args.json else format_empirical_table(results))
    return 1 if any(r.violation for r in results) else 0


def format_empirical_table(results: Sequence[EmpiricalAuditResult]) -> str:
    """One row per configuration, then what the bound means."""
    rows = [
        (
            r.configuration,
            _number(r.claimed_epsilon),
            _number(r.lower_bound),
            f"{r.confidence:.0%}",
            r.canaries,
            r.guesses,
            r.correct,
            _number(r.max_lower_bound),
            r.verdict,
        )
        for r in results
    ]
    footer = (
        "lower bound: with the stated confidence the training is NOT epsilon-DP for any epsilon below it "
        "at the claim's delta (one run, Steinke-Nasr-Jagielski 2023, Cor. 5.4); 'max bound' is the most these "
        "guesses can "
        "ever certify, so claims above it cannot be refuted by this audit"
    )
    return "\n\n".join((render_table(EMPIRICAL_COLUMNS, rows), footer))
