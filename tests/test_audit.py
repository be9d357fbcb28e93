"""`fedstyle audit`: findings of the analytical audit and the command's exit status.

The first part audits a folder whose keys come from its own manifest (``--trust-manifest``); the
last part audits against a key set (``--keys``) and replays the attacks of issue 10 item 7."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import fedstyle_secure.privacy.audit as audit_module
from fedstyle_secure.cli.main import COMMAND_MODULES, main
from fedstyle_secure.federation.rejections import Malformed
from fedstyle_secure.federation.reporting import ReportWriter
from fedstyle_secure.privacy.audit import LoadedReport, audit_reports
from fedstyle_secure.privacy.budget import BudgetLedger, PrivacyBudget
from fedstyle_secure.privacy.jsonio import MAX_JSON_BYTES, read_json
from fedstyle_secure.privacy.mechanisms import (
    MAX_DP_SGD_STEPS,
    MAX_MECHANISMS,
    MAX_RUN_ROUNDS,
    DpSgdSteps,
    GaussianRelease,
)
from fedstyle_secure.privacy.recompute import recompute_epsilon_pld
from fedstyle_secure.privacy.report_schema import MAX_ERRORS, MAX_MAP_ENTRIES, report_schema_errors
from fedstyle_secure.privacy.report_store import (
    keep_withdrawal,
    load_report_manifest,
    register_public_key,
    report_path,
    write_report,
)
from fedstyle_secure.privacy.reports import (
    build_report,
    canonical_json,
    dataset_size_commitment,
    public_key_to_text,
    redacted_report,
    sign_report,
)
from fedstyle_secure.privacy.withdrawals import build_withdrawal
from fedstyle_secure.randomness import SECURE_NOISE_SOURCE, SEEDED_NOISE_SOURCE
from fedstyle_secure.secure.keys.keystore import load_artist_keys
from fedstyle_secure.transport.loopback import write_fresh_keys
from fedstyle_secure.transport.server.report_intake import checked_report, store_checked_report
from fedstyle_secure.transport.wire import pb

KEYS = {artist: Ed25519PrivateKey.generate() for artist in ("alice", "bob")}
ROUNDS = 3
FINAL = ROUNDS - 1  # the fixture's last report stands for the run's final publication


def round_mechanisms(round_id: int) -> list[DpSgdSteps | GaussianRelease]:
    return [
        DpSgdSteps(sample_rate=0.05, noise_multiplier=2.0, steps=60, clip_norm=1.0, round_id=round_id),
        GaussianRelease(sensitivity=0.5, sigma=3.0, round_id=round_id, what="style-prototype"),
    ]


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reports of two artists over three rounds, each signed with its key in manifest.json."""
    root = tmp_path_factory.mktemp("reports")
    for artist, key in KEYS.items():
        register_public_key(root, artist, key.public_key())
        ledger = BudgetLedger(PrivacyBudget(epsilon=6.0, delta=1e-5), dataset_size=500)
        for round_id in range(ROUNDS):
            ledger.record(round_mechanisms(round_id))
            report = build_report(
                ledger, artist_id=artist, round_id=round_id, noise_source=SECURE_NOISE_SOURCE, final_round=FINAL
            )
            write_report(root, sign_report(report, key))
    return root


@pytest.fixture
def reports(clean_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(clean_dir, tmp_path / "reports"))


def edit(
    reports: Path, artist: str, round_id: int, change: Callable[[dict], Any], key: Ed25519PrivateKey | None
) -> None:
    """Apply ``change`` to a stored report, re-signing it with ``key`` (None: leave the old signature)."""
    path = report_path(reports, artist, round_id)
    report = json.loads(path.read_text())
    change(report)
    if key is not None:
        report = sign_report({k: v for k, v in report.items() if k != "signature"}, key)
    path.write_text(json.dumps(report))


def run_audit(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(["audit", *args])
    return status, capsys.readouterr().out


def audit_json(reports: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    status, out = run_audit(str(reports), "--json", *(args or ("--trust-manifest",)), capsys=capsys)
    return status, json.loads(out)


def run_findings(result: dict) -> set[tuple[str | None, str]]:
    return {(finding["artist"], finding["code"]) for finding in result["findings"]}


def codes(result: dict, artist: str, round_id: int) -> set[str]:
    (row,) = [r for r in result["reports"] if r["artist_id"] == artist and r["round"] == round_id]
    return {finding["code"] for finding in row["findings"]}


def test_audit_is_a_registered_command() -> None:
    assert "audit" in COMMAND_MODULES


def test_clean_reports_pass_with_exit_status_0(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run_audit(str(reports), "--trust-manifest", capsys=capsys)
    assert status == 0
    assert out.splitlines()[0].split()[:3] == ["artist", "round", "accountant"]
    assert out.count(" ok") == 2 * ROUNDS and "one artwork (record-level)" in out and "clean" in out
    assert "IDENTITIES NOT VERIFIED" in out  # accepted, but said loudly


def test_without_keys_or_trust_manifest_unverified_identities_are_a_finding(
    reports: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = run_audit(str(reports), capsys=capsys)
    assert status == 1 and "[identities_unverified]" in out and "--keys DIR" in out
    assert out.count(" ok") == 2 * ROUNDS  # every report itself is fine


def test_json_output_parses_and_carries_both_recomputations(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, result = audit_json(reports, capsys)
    assert status == 0 and result["clean"] is True and len(result["reports"]) == 2 * ROUNDS
    for row in result["reports"]:
        assert row["status"] == "ok"
        assert row["recomputed_pld"] <= row["claimed_epsilon"] < row["recomputed_rdp"]


def test_single_report_file_finds_the_manifest_two_levels_up(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, result = audit_json(report_path(reports, "bob", 1), capsys)
    assert [(row["artist_id"], row["status"]) for row in result["reports"]] == [("bob", "ok")]  # signature checked
    # one file is not a complete record: the rest of bob's rounds and alice are missing
    assert status == 1
    assert run_findings(result) == {
        ("bob", "missing_rounds"),
        ("bob", "reports_end_early"),
        ("alice", "artist_without_reports"),
    }


def test_tampered_field_is_flagged(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(reports, "alice", 1, lambda r: r["mechanisms"][0].update(noise_multiplier=2.5), key=None)
    status, out = run_audit(str(reports), "--trust-manifest", capsys=capsys)
    assert status == 1 and "invalid_signature" in out and "altered or forged" in out


def test_claim_below_the_independent_recomputation_is_flagged(
    reports: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(reports, "bob", 2, lambda r: r["epsilon"].update(prv=r["epsilon"]["prv"] * 0.95), key=KEYS["bob"])
    status, result = audit_json(reports, capsys)
    assert status == 1
    assert codes(result, "bob", 2) == {"claim_below_recomputed"}
    assert codes(result, "bob", 1) == set()


def test_decreasing_epsilon_is_flagged(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(reports, "alice", 1, lambda r: r["epsilon"].update(prv=5.5), key=KEYS["alice"])  # over-claiming is sound
    status, result = audit_json(reports, capsys)
    assert status == 1
    assert codes(result, "alice", 1) == set()
    assert codes(result, "alice", 2) == {"epsilon_decreasing"}


def test_missing_signature_wrong_key_and_unknown_key_are_flagged(
    reports: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(reports, "alice", 0, lambda r: r.pop("signature"), key=None)
    edit(reports, "alice", 1, lambda r: None, key=KEYS["bob"])
    manifest = load_report_manifest(reports / "manifest.json")
    del manifest["artists"]["bob"]
    (reports / "manifest.json").write_text(json.dumps(manifest))
    status, result = audit_json(reports, capsys)
    assert status == 1
    assert codes(result, "alice", 0) == {"missing_signature"}
    assert codes(result, "alice", 1) == {"invalid_signature"}
    assert all(codes(result, "bob", r) == {"key_not_in_manifest"} for r in range(ROUNDS))
    # the JSON's total counts each report's findings too, as the table does (a user walkthrough)
    per_report = sum(len(report["findings"]) for report in result["reports"])
    assert result["finding_count"] == len(result["findings"]) + per_report >= 2 + ROUNDS


def test_sampler_mismatch_unknown_accountant_and_over_budget_are_flagged(
    reports: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for round_id in range(ROUNDS):  # a consistent history, so only the sampler is at fault
        edit(reports, "alice", round_id, lambda r: r["mechanisms"][0].update(sampler="shuffle"), key=KEYS["alice"])
    edit(reports, "bob", 0, lambda r: r.update(accountant="moments", epsilon={"moments": 0.1}), key=KEYS["bob"])
    edit(reports, "bob", 2, lambda r: r["budget"].update(epsilon=1.0), key=KEYS["bob"])
    status, result = audit_json(reports, capsys)
    assert status == 1
    assert codes(result, "alice", 0) == {"sampler_mismatch"}
    assert codes(result, "bob", 0) == {"unknown_accountant"}
    assert codes(result, "bob", 2) == {"over_budget", "budget_changed"}


def test_delta_is_checked_against_the_opened_dataset_size(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With the artist's opening, n is authenticated by the signed commitment and delta < 1/n is
    checked; an opening that does not match is flagged; a redacted (server) copy skips only that check."""
    salt = base64.b64encode(bytes(range(32))).decode()

    def commit_to(n: int) -> Callable[[dict], Any]:
        return lambda r: r.update(
            dataset_size_commitment=dataset_size_commitment(n, base64.b64decode(salt)),
            dataset_size_opening={"dataset_size": n, "salt": salt},
        )

    edit(reports, "alice", 0, commit_to(200_000), key=KEYS["alice"])  # signed: delta 1e-5 >= 1/200000
    edit(reports, "alice", 1, lambda r: r["dataset_size_opening"].update(dataset_size=499), key=None)  # opening swapped
    edit(reports, "bob", 0, lambda r: r.pop("dataset_size_opening"), key=None)  # what the server stores
    status, result = audit_json(reports, capsys)
    assert status == 1
    assert codes(result, "alice", 0) == {"delta_too_large"}
    assert codes(result, "alice", 1) == {"dataset_size_mismatch"}
    assert codes(result, "bob", 0) == set()


def test_unreadable_file_is_a_schema_finding(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path(reports, "alice", 7).write_text("{not json")
    status, out = run_audit(str(reports), "--trust-manifest", capsys=capsys)
    assert status == 1 and "schema_error" in out


@pytest.mark.parametrize("args", [["/nonexistent/reports"], ["--tolerance", "1.5", "."]])
def test_usage_errors_exit_with_status_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", *args]) == 2
    assert "fedstyle: error:" in capsys.readouterr().err


def test_directory_without_reports_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(tmp_path)]) == 2
    assert "no report files" in capsys.readouterr().err


# --------------------------------------------------------------------------- pure audit logic


@pytest.fixture(scope="module")
def dp_sgd_report(clean_dir: Path) -> dict:
    """Signed report whose history is 1000 steps at q=0.01, sigma=1 (PLD 1.83, RDP 2.10, GDP 1.62)."""
    ledger = BudgetLedger(PrivacyBudget(epsilon=3.0, delta=1e-5), dataset_size=500, accountant="prv")
    ledger.record([DpSgdSteps(sample_rate=0.01, noise_multiplier=1.0, steps=1000, clip_norm=1.0, round_id=0)])
    return build_report(
        ledger, artist_id="alice", round_id=0, accountants=["rdp", "gdp"], noise_source=SECURE_NOISE_SOURCE
    )


def audit_claims(report: dict, tolerance: float = 0.01, **claims: float) -> set[str]:
    report = copy.deepcopy(report)
    report["epsilon"].update(claims)
    manifest = {"artists": {"alice": {"public_key": public_key_to_text(KEYS["alice"].public_key())}}}
    (audit,) = audit_reports([LoadedReport("mem", sign_report(report, KEYS["alice"]))], manifest, tolerance).reports
    return {f.code for f in audit.findings}


def test_each_accountant_is_held_to_its_reference(dp_sgd_report: dict) -> None:
    pld = recompute_epsilon_pld([DpSgdSteps(0.01, 1.0, 1000, 1.0, 0)], 1e-5)
    # Honest report: prv >= PLD and rdp == RDP pass; gdp's CLT value underestimates and is flagged.
    assert audit_claims(dp_sgd_report) == {"claim_below_recomputed"}
    assert audit_claims(dp_sgd_report, gdp=pld) == set()
    # An rdp claim must reach RDP, not merely the tighter PLD value.
    assert audit_claims(dp_sgd_report, gdp=pld, rdp=pld) == {"claim_below_recomputed"}


def test_tolerance_bounds_how_far_below_the_reference_a_claim_may_be(dp_sgd_report: dict) -> None:
    pld = recompute_epsilon_pld([DpSgdSteps(0.01, 1.0, 1000, 1.0, 0)], 1e-5)
    claims = {"prv": 0.995 * pld, "gdp": pld}
    assert audit_claims(dp_sgd_report, **claims) == set()
    assert audit_claims(dp_sgd_report, tolerance=0.0, **claims) == {"claim_below_recomputed"}


def test_duplicate_round_and_rewritten_history_are_flagged(clean_dir: Path) -> None:
    loaded = [LoadedReport(str(p), json.loads(p.read_text())) for p in sorted((clean_dir / "bob").iterdir())]
    duplicate = LoadedReport("copy", loaded[0].data)
    rewritten = copy.deepcopy(loaded[2].data)
    rewritten["mechanisms"][1]["what"] = "renamed"
    manifest = load_report_manifest(clean_dir / "manifest.json")
    result = audit_reports([*loaded[:2], duplicate, LoadedReport("rewritten", rewritten)], manifest)
    by_source = {audit.source: {f.code for f in audit.findings} for audit in result.reports}
    assert by_source["copy"] == {"duplicate_round"}
    assert by_source["rewritten"] == {"invalid_signature", "history_rewritten"}


def _signed_run(charges: list[tuple[int, list[int]]], final_round: int) -> list[LoadedReport]:
    """Alice's signed reports, one per ``(report round, rounds charged since the last report)``."""
    ledger = BudgetLedger(PrivacyBudget(epsilon=60.0, delta=1e-5), dataset_size=500)
    loaded = []
    for report_round, rounds in charges:
        for r in rounds:
            ledger.record([GaussianRelease(sensitivity=1.0, sigma=3.0, round_id=r, what="style-prototype")])
        report = build_report(
            ledger, artist_id="alice", round_id=report_round, noise_source=SECURE_NOISE_SOURCE, final_round=final_round
        )
        loaded.append(LoadedReport(f"round-{report_round}", sign_report(report, KEYS["alice"])))
    return loaded


@pytest.mark.parametrize(
    ("charges", "flagged"),
    [
        ([(0, [0]), (1, [1]), (2, [2])], set()),  # an honest run: each charge in its own round's report
        # the final publication (round 2) first, then the round-0 refresh: the late charge shows only in
        # the report of a round after 2 (its own round was reported long before)
        ([(0, [0]), (2, [2]), (3, [0])], {"round-3"}),
        ([(0, [0]), (2, [2, 3])], {"round-2"}),  # a release past the signed final round
    ],
)
def test_charges_out_of_round_order_or_past_the_final_round_are_flagged(charges, flagged) -> None:
    """Defence in depth behind the artist's own refusal (``DpPlan.charge_refusal``): reports signed
    by an artist that let a dishonest server reorder its charges show it."""
    manifest = {"artists": {"alice": {"public_key": public_key_to_text(KEYS["alice"].public_key())}}}
    result = audit_reports(_signed_run(charges, final_round=2), manifest, roster=["alice"])
    out_of_order = {
        audit.source for audit in result.reports if any(f.code == "charged_out_of_order" for f in audit.findings)
    }
    assert out_of_order == flagged


def test_late_charges_are_listed_in_round_order() -> None:
    """Round ids read from a report sort as numbers (9 before 10), not as text."""
    manifest = {"artists": {"alice": {"public_key": public_key_to_text(KEYS["alice"].public_key())}}}
    result = audit_reports(_signed_run([(0, [0]), (11, [11]), (12, [10, 9])], 12), manifest, roster=["alice"])
    (late,) = [f.message for audit in result.reports for f in audit.findings if f.code == "charged_out_of_order"]
    assert "charges of rounds [9, 10] first appear in round 12's report" in late


def test_reports_of_two_runs_spliced_together_are_flagged() -> None:
    """Alice's round 0 from one run and round 1 from another (each genuinely signed, kept in separate
    state folders): each report is valid alone, and the splice audited clean before (a sixth review's
    finding 3).  Their ledgers differ, and one artist's reports must come from one ledger."""
    manifest = {"artists": {"alice": {"public_key": public_key_to_text(KEYS["alice"].public_key())}}}
    runs = []
    for created in ("2026-11-01T10:00:00Z", "2026-11-02T10:00:00Z"):
        ledger = BudgetLedger(PrivacyBudget(epsilon=6.0, delta=1e-5), dataset_size=500, created_at=created)
        reports = []
        for round_id in range(2):
            ledger.record(round_mechanisms(round_id))
            report = build_report(
                ledger, artist_id="alice", round_id=round_id, noise_source=SECURE_NOISE_SOURCE, final_round=1
            )
            reports.append(LoadedReport(f"{created} round {round_id}", sign_report(report, KEYS["alice"])))
        runs.append(reports)
    clean = audit_reports(runs[0], manifest, roster=["alice"])
    assert all(audit.ok for audit in clean.reports) and not clean.findings
    spliced = audit_reports([runs[0][0], runs[1][1]], manifest, roster=["alice"])
    assert {f.code for audit in spliced.reports for f in audit.findings} == {"ledger_changed"}


# --------------------------------------------------------------------------- noise source


def test_reports_with_seeded_or_unstated_noise_are_flagged(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(reports, "alice", 1, lambda r: r.update(noise_source=SEEDED_NOISE_SOURCE), key=KEYS["alice"])
    edit(reports, "bob", 0, lambda r: r.pop("noise_source"), key=KEYS["bob"])  # a report of an older version
    status, result = audit_json(reports, capsys)
    assert status == 1
    assert codes(result, "alice", 1) == {"noise_not_secure"} and codes(result, "bob", 0) == {"noise_not_secure"}
    assert codes(result, "alice", 0) == codes(result, "bob", 1) == set()


# --------------------------------------------------------------------------- against a key set (issue 10, item 7)

TEAM = ("alice", "bob", "carol")
TEAM_ROUNDS = 3  # training rounds 0..2, then the final publication (round 3)


@pytest.fixture(scope="module")
def key_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fresh_keys(tmp_path_factory.mktemp("keyset") / "keys", TEAM)


@pytest.fixture(scope="module")
def team_clean(tmp_path_factory: pytest.TempPathFactory, key_set: Path) -> Path:
    """A run's reports folder as the server keeps it: each artist's reports of every round, signed
    by the real ReportWriter with the artist's key-set identity key, plus the folder manifest."""
    root = tmp_path_factory.mktemp("team") / "reports"
    writer = ReportWriter(root, TEAM, {a: load_artist_keys(key_set, a).identity_key for a in TEAM})
    for artist in TEAM:
        ledger = BudgetLedger(PrivacyBudget(epsilon=6.0, delta=1e-5), dataset_size=500)
        for round_id in range(TEAM_ROUNDS + 1):
            final = [GaussianRelease(sensitivity=1.0, sigma=3.0, round_id=round_id, what="style-prototype")]
            ledger.record(round_mechanisms(round_id) if round_id < TEAM_ROUNDS else final)
            writer.write(artist, ledger, round_id, noise_source=SECURE_NOISE_SOURCE, final_round=TEAM_ROUNDS)
    return root


def _team_run(root: Path, key_set: Path, sigma: float, run_id: str) -> Path:
    """One run's reports folder, every artist's rounds signed for ``run_id`` by the real ReportWriter."""
    writer = ReportWriter(root, TEAM, {a: load_artist_keys(key_set, a).identity_key for a in TEAM}, run_id=run_id)
    for artist in TEAM:
        ledger = BudgetLedger(PrivacyBudget(epsilon=8.0, delta=1e-5), dataset_size=500)
        for round_id in range(TEAM_ROUNDS + 1):
            ledger.record([GaussianRelease(1.0, sigma, round_id, "style-prototype")])
            writer.write(artist, ledger, round_id, noise_source=SECURE_NOISE_SOURCE, final_round=TEAM_ROUNDS)
    return root


def test_the_reports_of_another_run_are_flagged_once_the_run_is_named(
    tmp_path: Path, key_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The replay (red-team review of 2026-11-30): the same key set ran twice, run A spending little and
    run B much; the server hands the auditor of run B the reports of run A.  Both folders are clean
    on their own -- signatures, budgets, completeness -- so only the run id every report signs tells
    them apart: with ``--run-id`` of run B every report of A is flagged, and A's rounds spliced into
    B's folder are flagged even without it (fails without the run id in reports)."""
    run_a, run_b = "a" * 32, "b" * 32
    folder_a = _team_run(tmp_path / "a", key_set, sigma=20.0, run_id=run_a)
    folder_b = _team_run(tmp_path / "b", key_set, sigma=2.0, run_id=run_b)
    status, replayed = keyed(folder_a, key_set, capsys)
    assert status == 0 and replayed["run_ids"] == [run_a]  # clean on its own: the replay is well formed
    status, replayed = keyed(folder_a, key_set, capsys, "--run-id", run_b)
    assert status == 1
    assert {code for codes_ in row_codes(replayed).values() for code in codes_} == {"other_run"}
    assert keyed(folder_b, key_set, capsys, "--run-id", run_b)[0] == 0
    shutil.copy(report_path(folder_a, "alice", 0), report_path(folder_b, "alice", 0))  # a spliced folder
    status, spliced = keyed(folder_b, key_set, capsys)
    assert status == 1 and row_codes(spliced)[("alice", 1)] >= {"run_changed"}
    assert main(["audit", str(folder_b), "--keys", str(key_set), "--run-id", "B"]) == 2
    assert "--run-id: 'B' is not a run id" in capsys.readouterr().err


@pytest.fixture
def team(team_clean: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(team_clean, tmp_path / "reports"))


def keyed(team: Path, key_set: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    return audit_json(team, capsys, "--keys", str(key_set), *args)


def row_codes(result: dict) -> dict[tuple[str, int], set[str]]:
    return {(row["artist_id"], row["round"]): {f["code"] for f in row["findings"]} for row in result["reports"]}


def test_a_complete_run_audits_clean_against_its_key_set(
    team: Path, key_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = run_audit(str(team), "--keys", str(key_set), capsys=capsys)
    assert status == 0 and "identities verified against the trusted key set; roster: alice, bob, carol" in out
    assert out.count(" ok") == len(TEAM) * (TEAM_ROUNDS + 1)


def test_swapped_manifest_key_with_forged_reports_is_flagged(
    team: Path, key_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The filer's attack: the server puts its own key for bob into the folder's manifest and replaces
    bob's reports by forgeries with sigma = 50 (a tiny epsilon), consistently re-signed."""
    real = json.loads(report_path(team, "bob", TEAM_ROUNDS).read_text())["epsilon"]["prv"]
    mallory = Ed25519PrivateKey.generate()
    manifest = load_report_manifest(team / "manifest.json")
    manifest["artists"]["bob"] = {
        "public_key": public_key_to_text(mallory.public_key()),
        "fingerprint": "sha256:" + "0" * 64,
    }
    (team / "manifest.json").write_text(json.dumps(manifest))
    forged = BudgetLedger(PrivacyBudget(epsilon=6.0, delta=1e-5), dataset_size=500)
    for round_id in range(TEAM_ROUNDS + 1):
        forged.record(
            [DpSgdSteps(0.05, 50.0, 60, 1.0, round_id), GaussianRelease(1.0, 50.0, round_id, "style-prototype")]
        )
        report = build_report(
            forged, artist_id="bob", round_id=round_id, noise_source=SECURE_NOISE_SOURCE, final_round=TEAM_ROUNDS
        )
        report_path(team, "bob", round_id).write_text(json.dumps(sign_report(report, mallory)))
    claimed = forged.epsilon_spent
    assert claimed < 0.1 * real  # what the forgery would have the auditor believe

    status, result = audit_json(team, capsys, "--trust-manifest")
    assert status == 0  # trusting the audited folder's own manifest, the forgery passes: hence --keys

    status, out = run_audit(str(team), "--json", capsys=capsys)  # no identity option: not certified
    assert status == 1 and run_findings(json.loads(out)) == {(None, "identities_unverified")}

    status, result = keyed(team, key_set, capsys)
    assert status == 1
    codes_by_report = row_codes(result)
    assert all(codes_by_report[("bob", r)] == {"invalid_signature"} for r in range(TEAM_ROUNDS + 1))
    assert all(codes_by_report[(a, r)] == set() for a in ("alice", "carol") for r in range(TEAM_ROUNDS + 1))
    assert run_findings(result) == {("bob", "manifest_key_mismatch")}


def test_deleted_rounds_are_flagged(team: Path, key_set: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path(team, "bob", 1).unlink()  # a round in the middle
    report_path(team, "carol", TEAM_ROUNDS).unlink()  # the last round
    status, result = keyed(team, key_set, capsys)
    assert status == 1 and all(not codes for codes in row_codes(result).values())  # what is left is authentic
    assert run_findings(result) == {("bob", "missing_rounds"), ("carol", "reports_end_early")}
    assert any("rounds [1]" in f["message"] for f in result["findings"])


def test_deleting_the_last_round_of_every_artist_is_flagged(
    team: Path, key_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for artist in TEAM:  # nothing left disagrees with anything else, but every report signs the final round
        report_path(team, artist, TEAM_ROUNDS).unlink()
    status, result = keyed(team, key_set, capsys)
    assert status == 1 and run_findings(result) == {(a, "reports_end_early") for a in TEAM}


def test_a_signed_withdrawal_explains_reports_that_end_early_and_nothing_else(
    team: Path, key_set: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """carol retired at round 2 (her budget spent): her reports end at round 1 and she signed a
    withdrawal naming that last report.  A valid one turns the early end into a listed retirement
    (fails without the withdrawal check: reports_end_early).  Found, with the early end flagged again:
    one the server forges under another key, one of another run (named, or told by the folder's one
    run), an unreadable one, and -- the red team's attack -- a genuine one after the server deleted
    her last report or all of them (the withdrawal signs where her reports end); a folder of two runs
    needs --run-id.  A withdrawal never excuses a charged round whose report is gone."""
    run_id = read_json(report_path(team, "carol", 0))["run_id"]
    for round_id in (2, TEAM_ROUNDS):
        report_path(team, "carol", round_id).unlink()
    carol = load_artist_keys(key_set, "carol").identity_key
    reason = "privacy budget: the next round would exceed the budget"
    last = (1, len(read_json(report_path(team, "carol", 1))["mechanisms"]))

    def signed(run: str = run_id, key: Ed25519PrivateKey = carol, ends=last) -> str:
        return json.dumps(sign_report(build_withdrawal("carol", 2, reason, run, ends), key))

    path = keep_withdrawal(team, json.loads(signed()))
    status, result = keyed(team, key_set, capsys)
    assert status == 0 and result["withdrawn"] == [{"artist": "carol", "round": 2, "reason": reason}]
    status, table = run_audit(str(team), "--keys", str(key_set), capsys=capsys)
    assert status == 0 and f"withdrew (signed): carol at round 2: {reason}" in table
    status, result = keyed(team, key_set, capsys, "--run-id", "f" * 32)
    assert status == 1 and {("carol", "invalid_withdrawal"), ("carol", "reports_end_early")} <= run_findings(result)
    flagged = {("carol", "invalid_withdrawal"), ("carol", "reports_end_early")}
    for forged in (signed(run="e" * 32), signed(key=Ed25519PrivateKey.generate()), "{not json"):
        path.write_text(forged)
        status, result = keyed(team, key_set, capsys)
        assert status == 1 and run_findings(result) == flagged
    path.write_text(signed())
    kept = report_path(team, "carol", 1).read_bytes()
    report_path(team, "carol", 1).unlink()  # the server deletes her last report: the withdrawal names it
    status, result = keyed(team, key_set, capsys)
    assert status == 1 and run_findings(result) == flagged
    for round_id in (0,):
        report_path(team, "carol", round_id).unlink()  # ... or every report
    status, result = keyed(team, key_set, capsys)
    assert status == 1 and run_findings(result) == {
        ("carol", "invalid_withdrawal"),
        ("carol", "artist_without_reports"),
    }
    report_path(team, "carol", 1).write_bytes(kept)
    status, result = keyed(team, key_set, capsys)  # her round-0 report is gone, round 1 charges it
    assert status == 1 and run_findings(result) == {("carol", "missing_rounds")}
    other = _team_run(tmp_path / "other", key_set, sigma=20.0, run_id="d" * 32)
    shutil.copy(report_path(other, "alice", 0), report_path(team, "alice", 0))  # a folder of two runs
    status, result = keyed(team, key_set, capsys)
    assert status == 1 and any("name the audited one" in f["message"] for f in result["findings"])


def test_deleted_artist_is_flagged_and_artists_narrows_the_roster(
    team: Path, key_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(team / "carol")
    status, result = keyed(team, key_set, capsys)
    assert status == 1 and run_findings(result) == {("carol", "artist_without_reports")}
    assert result["roster"] == list(TEAM)
    status, result = keyed(team, key_set, capsys, "--artists", "alice,bob")
    assert status == 0 and result["roster"] == ["alice", "bob"]


def test_bad_key_set_or_roster_is_a_usage_error(
    team: Path, key_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", str(team), "--keys", str(key_set), "--artists", "zoe"]) == 2
    assert "--artists" in capsys.readouterr().err
    tampered = Path(shutil.copytree(key_set, tmp_path / "keys"))
    (tampered / "identity" / "bob.pub").write_bytes((tampered / "identity" / "alice.pub").read_bytes())
    assert main(["audit", str(team), "--keys", str(tampered)]) == 2
    assert "bob.pub" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse: the two identity options exclude each other
        main(["audit", str(team), "--keys", str(key_set), "--trust-manifest"])
    assert exited.value.code == 2


# --------------------------------------------------------------------------- hostile histories and files (attack12)

DP_SGD = {"kind": "dp_sgd", "sample_rate": 0.01, "noise_multiplier": 1.0, "steps": 60, "clip_norm": 1.0}
RELEASE = {"kind": "gaussian_release", "sensitivity": 1.0, "sigma": 3.0, "what": "style-prototype-sums"}


def dp_sgd(**fields: Any) -> dict:
    return {**DP_SGD, "sampler": "poisson", "round_id": TEAM_ROUNDS, **fields}


def release(**fields: Any) -> dict:
    return {**RELEASE, "round_id": TEAM_ROUNDS, **fields}


def charge_more(team: Path, key_set: Path, artist: str, mechanisms: list[dict]) -> Path:
    """``artist`` signs, with its own key-set key, a last report charging ``mechanisms`` on top of its history."""
    edit(
        team,
        artist,
        TEAM_ROUNDS,
        lambda r: r["mechanisms"].extend(mechanisms),
        load_artist_keys(key_set, artist).identity_key,
    )
    return report_path(team, artist, TEAM_ROUNDS)


def by_source(result: dict) -> dict[str, dict]:
    return {row["source"]: row for row in result["reports"]}


def others_clean(result: dict, path: Path) -> bool:
    """Every report of the run but the one at ``path`` has its verdict: ok, with both recomputations."""
    rows = [row for row in result["reports"] if row["source"] != str(path)]
    expected = {(a, r) for a in TEAM for r in range(TEAM_ROUNDS + 1)} - {(path.parent.name, int(path.stem[6:]))}
    return {(row["artist_id"], row["round"]) for row in rows} == expected and all(
        row["status"] == "ok" and row["recomputed_pld"] is not None for row in rows
    )


@pytest.mark.parametrize(
    ("mechanisms", "refusal"),
    [
        # the review's two: 10**18 steps (a 2 EiB allocation: no verdict for anyone), 3,000 distinct releases (> 90 s)
        ([dp_sgd(steps=10**18)], "mechanisms/7/steps: 1000000000000000000 is greater than the maximum of 1000000"),
        ([release(sigma=5.0 + i * 1e-6) for i in range(3000)], "mechanisms: 3007 items, more than the maximum of 2002"),
        (
            [release(sigma=5.0 + i * 1e-6) for i in range(3)],
            "mechanisms: 6 distinct parameter sets, more than the maximum of 5",
        ),
        (
            [dp_sgd(steps=600_000), dp_sgd(steps=600_000)],
            "mechanisms: 1200180 DP-SGD steps in all, more than the maximum",
        ),
        (
            [dp_sgd(sample_rate=1.0, noise_multiplier=0.15, steps=1)],
            "mechanisms/7/noise_multiplier: 0.15 is less than the minimum of 0.2",
        ),
        (
            [release(sensitivity=6.0, sigma=1.0)],
            "mechanisms/7: sigma / sensitivity = 0.1667 is not a finite number of at least 0.2",
        ),
    ],
)
def test_a_signed_history_beyond_the_bounds_is_a_finding_and_the_others_keep_their_verdict(
    team: Path, key_set: Path, capsys: pytest.CaptureFixture[str], mechanisms: list[dict], refusal: str
) -> None:
    """A roster artist signs, with its own key, a schema-valid history that made dp_accounting's PLD
    allocate exabytes or run for minutes (red-team review attack12): now a schema finding naming the
    field and the limit, the same refusal as the server's intake, and nothing is recomputed."""
    path = charge_more(team, key_set, "carol", mechanisms)
    status, result = keyed(team, key_set, capsys)
    assert status == 1
    row = by_source(result)[str(path)]
    assert {f["code"] for f in row["findings"]} == {"schema_error"} and row["recomputed_rdp"] is None
    assert any(refusal in f["message"] for f in row["findings"]), row["findings"]
    assert others_clean(result, path)
    upload = canonical_json(redacted_report(json.loads(path.read_text())))  # what carol sends
    request = pb.EpsilonReport(artist_id="carol", round_id=TEAM_ROUNDS, signed_json=upload)
    with pytest.raises(Malformed, match=re.escape(refusal)):  # the server's intake refuses it alike
        checked_report(request, "carol", load_artist_keys(key_set, "carol").identity_key.public_key())


def test_a_history_within_the_bounds_above_the_pld_range_is_not_recomputed_with_pld(
    team: Path, key_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten full-batch steps at the noise floor (epsilon ~ 10**3): RDP tells so at once, while PLD's cost
    grows with epsilon (measured: 5.6 s and 0.64 GB at 1.2e3, 2 EiB asked at 1e14), so the claim is
    flagged as not certified instead."""
    path = charge_more(team, key_set, "carol", [dp_sgd(sample_rate=1.0, noise_multiplier=0.2, steps=10)])
    status, result = keyed(team, key_set, capsys)
    row = by_source(result)[str(path)]
    assert status == 1 and {f["code"] for f in row["findings"]} == {"recomputation_failed"}
    assert row["recomputed_rdp"] > 100 and row["recomputed_pld"] is None
    assert "above 100: the audit does not recompute PLD" in row["findings"][0]["message"]
    assert others_clean(result, path)


@pytest.mark.parametrize(
    "error", [MemoryError("Unable to allocate 2.11 EiB"), RecursionError("maximum recursion depth")]
)
def test_dp_accounting_running_out_of_memory_or_stack_is_a_finding(
    team: Path, key_set: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Whatever dp_accounting still cannot do within the bounds is carol's finding, not everyone's traceback."""
    real = audit_module.recompute_epsilon_pld

    def pld(history: Any, delta: float) -> float:
        if any(m.round_id == TEAM_ROUNDS and isinstance(m, DpSgdSteps) for m in history):
            raise error
        return real(history, delta)

    monkeypatch.setattr(audit_module, "recompute_epsilon_pld", pld)
    path = charge_more(team, key_set, "carol", [dp_sgd()])
    status, result = keyed(team, key_set, capsys)
    row = by_source(result)[str(path)]
    assert status == 1 and {f["code"] for f in row["findings"]} == {"recomputation_failed"}
    assert type(error).__name__ in row["findings"][0]["message"] and others_clean(result, path)


def test_unsigned_or_forged_reports_are_flagged_without_recomputing_them(
    team: Path, key_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever writes the folder can add any number of files: only reports a trusted key signed are
    worth dp_accounting's time."""
    edit(team, "bob", 1, lambda r: r.pop("signature"), key=None)
    edit(team, "alice", 2, lambda r: None, key=load_artist_keys(key_set, "bob").identity_key)
    status, result = keyed(team, key_set, capsys)
    rows = by_source(result)
    unsigned, forged = rows[str(report_path(team, "bob", 1))], rows[str(report_path(team, "alice", 2))]
    assert status == 1
    assert [f["code"] for f in unsigned["findings"]] == ["missing_signature"]
    assert [f["code"] for f in forged["findings"]] == ["invalid_signature"]
    assert unsigned["recomputed_rdp"] is unsigned["recomputed_pld"] is forged["recomputed_pld"] is None
    assert rows[str(report_path(team, "bob", 2))]["recomputed_pld"] is not None


def _signed_report_nested_deeper_than_any_report(team: Path) -> str:
    """Parsed by Python, but deeper than any report nests; just under the parser's own limit a
    document could overflow the recursion limit later, when its signature is checked."""
    report = report_path(team, "alice", 0).read_text().rstrip()[:-1]
    return report + ', "x": ' + "[" * 40 + "]" * 40 + "}"


def _round_beyond_any_range(team: Path) -> str:
    report = json.loads(report_path(team, "alice", 0).read_text())
    report.pop("signature")
    report.update(round=10**4000, final_round=10**4000)
    return json.dumps(report)


def _sigma_beyond_any_float(team: Path) -> str:
    report = json.loads(report_path(team, "alice", 0).read_text())
    report.pop("signature")
    report["mechanisms"].append(release(sigma=10**400, round_id=0))
    return json.dumps(report)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (lambda team: "[" * 100_000 + "]" * 100_000, "is not valid UTF-8 JSON: maximum recursion depth exceeded"),
        (lambda team: '{"round": ' + "9" * 5000 + "}", "is not valid UTF-8 JSON: Exceeds the limit (4300 digits)"),
        (_signed_report_nested_deeper_than_any_report, "is not valid UTF-8 JSON: nested more than 32 levels"),
        (lambda team: json.dumps("x" * MAX_JSON_BYTES), f"is larger than {MAX_JSON_BYTES} bytes"),
        (_sigma_beyond_any_float, "sigma / sensitivity = inf is not a finite number of at least 0.2"),
        (_round_beyond_any_range, "report is unsigned"),  # compared with alice's rounds 0..3: no set of the range
    ],
)
def test_crafted_files_in_the_folder_are_findings_not_tracebacks(
    team: Path, key_set: Path, capsys: pytest.CaptureFixture[str], content: Callable[[Path], str], words: str
) -> None:
    """Files dropped into the folder by whoever writes it (red-team review attack12: a RecursionError or
    ValueError traceback, exit status 1 like a finding): each is a finding of its own file, naming it."""
    path = report_path(team, "alice", 7)
    path.write_text(content(team))
    status, result = keyed(team, key_set, capsys)
    row = by_source(result)[str(path)]
    assert status == 1 and any(words in f["message"] for f in row["findings"]), row["findings"]
    assert others_clean(result, path)


def _report_with_oversized(team: Path, field: str, value: object) -> str:
    report = json.loads(report_path(team, "alice", 0).read_text())
    report.pop("signature")
    report[field] = value
    return json.dumps(report)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mechanisms", [{}] * 20_000),  # 1.4 million of these fit in a file: 20 GB and 5 minutes
        ("epsilon", {f"accountant-{i}": "crafted" for i in range(20_000)}),
        ("software", {f"package-{i}": 0 for i in range(20_000)}),
    ],
)
def test_an_unsigned_report_with_huge_collections_is_refused_before_the_schema_walks_them(
    team: Path, key_set: Path, capsys: pytest.CaptureFixture[str], field: str, value: object
) -> None:
    """Red-team review 12: the schema validated, and the audit sorted, one violation per crafted entry
    (20 GB and 5 minutes for a 4 MB file, before any signature was looked at). A collection over its
    bound is now one finding, found in constant time, and the intake refuses it the same way."""
    path = report_path(team, "alice", 7)
    path.write_text(_report_with_oversized(team, field, value))
    status, result = keyed(team, key_set, capsys)
    row = by_source(result)[str(path)]
    assert status == 1 and [f["message"] for f in row["findings"]] == [
        f"{field}: 20000 items, more than the maximum of {MAX_MECHANISMS if field == 'mechanisms' else MAX_MAP_ENTRIES}"
    ]
    assert others_clean(result, path)
    request = pb.EpsilonReport(artist_id="alice", round_id=0, signed_json=path.read_bytes())
    with pytest.raises(Malformed, match=f"not a valid report: {field}: 20000 items"):
        checked_report(request, "alice", load_artist_keys(key_set, "alice").identity_key.public_key())


def test_schema_violations_are_collected_up_to_a_bound(team: Path) -> None:
    """A report within every size bound can still break the schema once per record: at most
    MAX_ERRORS violations are looked for and reported, not one per record."""
    report = json.loads(_report_with_oversized(team, "mechanisms", [{}] * MAX_MECHANISMS))
    errors = report_schema_errors(report)
    assert len(errors) == MAX_ERRORS
    assert all(re.match(r"mechanisms/\d+: '\w+' is a required property", e) for e in errors)


def test_the_longest_run_a_plan_allows_passes_the_intake_and_the_audit(tmp_path: Path, key_set: Path) -> None:
    """The bounds sit far above an honest run: the planning count, the most rounds a plan allows (a
    refresh each), the most DP-SGD steps, at the noise plan_dp calibrates for epsilon 8 over 1,000
    rounds (releases 95.6, 0.88)."""
    rounds, steps = MAX_RUN_ROUNDS, MAX_DP_SGD_STEPS // MAX_RUN_ROUNDS
    history = (
        [GaussianRelease(1.0, 10.0, 0, "portfolio-size")]
        + [
            m
            for r in range(rounds)
            for m in (GaussianRelease(1.0, 95.6, r, "style-prototype-sums"), DpSgdSteps(1e-3, 8.0, steps, 1.0, r))
        ]
        + [GaussianRelease(1.0, 0.88, rounds, "style-prototype-sums")]
    )
    assert len(history) == MAX_MECHANISMS
    ledger = BudgetLedger(PrivacyBudget(8.0, 1e-5), dataset_size=16_000, accountant="rdp", history=history)
    key = load_artist_keys(key_set, "alice").identity_key
    report = build_report(
        ledger, artist_id="alice", round_id=rounds, noise_source=SECURE_NOISE_SOURCE, final_round=rounds
    )
    request = pb.EpsilonReport(
        artist_id="alice", round_id=rounds, signed_json=canonical_json(redacted_report(sign_report(report, key)))
    )
    stored = checked_report(request, "alice", key.public_key())
    store_checked_report(stored, tmp_path)
    manifest = {"artists": {"alice": {"public_key": public_key_to_text(key.public_key())}}}
    (audit,) = audit_reports([LoadedReport("longest", stored)], manifest, roster=["alice"]).reports
    assert audit.ok and audit.recomputed_pld is not None and audit.recomputed_pld <= ledger.epsilon_spent <= 8.0


def test_reports_issued_before_their_ledger_or_an_earlier_round_are_flagged(
    reports: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Signed timestamps out of order: a report issued a day before its ledger was created, and a
    later round issued a day before an earlier one, both re-signed with the artist's own key (the
    audit did not compare them)."""

    def a_day_before_the_ledger(report: dict) -> None:
        created = dt.datetime.fromisoformat(report["ledger_created_at"].replace("Z", "+00:00"))
        report["issued_at"] = (created - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    edit(reports, "alice", 0, a_day_before_the_ledger, KEYS["alice"])
    edit(reports, "bob", 2, a_day_before_the_ledger, KEYS["bob"])
    status, result = audit_json(reports, capsys)
    assert status == 1
    assert "time_out_of_order" in codes(result, "alice", 0)  # before its own ledger
    assert "time_out_of_order" in codes(result, "bob", 2)  # and before bob's round 1 report
    assert "time_out_of_order" not in codes(result, "alice", 1) | codes(result, "bob", 1)


def test_a_clock_stepping_back_a_few_seconds_is_not_a_finding(
    reports: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An honest machine's NTP correction between two rounds is tolerated (CLOCK_SLACK)."""

    def thirty_seconds_earlier(report: dict) -> None:
        issued = dt.datetime.fromisoformat(report["issued_at"].replace("Z", "+00:00"))
        report["issued_at"] = (issued - dt.timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")

    edit(reports, "alice", 2, thirty_seconds_earlier, KEYS["alice"])
    status, result = audit_json(reports, capsys)
    assert status == 0, result


@pytest.mark.parametrize("stamp", ["2026-02-30T00:00:00Z", "2026-12-31T23:59:60Z", "0001-01-01T00:00:00Z"])
def test_a_timestamp_that_is_no_date_is_flagged_without_stopping_the_audit(
    reports: Path, capsys: pytest.CaptureFixture[str], stamp: str
) -> None:
    """Dates the schema's pattern lets through but the calendar has not (or year 1, minus the slack)
    raised out of the audit: one artist's signed report stopped the audit of the whole run (a
    helper's red-team review, 2026-12-02)."""
    edit(reports, "alice", 1, lambda r: r.update(ledger_created_at=stamp), KEYS["alice"])
    status, result = audit_json(reports, capsys)
    assert status == 1
    if stamp.startswith("0001"):
        assert "time_out_of_order" not in codes(result, "alice", 1)  # issued long after year 1: in order
    else:
        assert "schema_error" in codes(result, "alice", 1)
    assert codes(result, "bob", 1) == set()  # the others are still audited


def test_a_withdrawal_signs_a_charge_not_yet_in_a_report_so_the_audit_cannot_be_explained_away(tmp_path):
    """Where a withdrawal says the reports end: the last signed report of the run, unless the charge
    record (written before any charged result leaves) holds more -- a charge not yet signed into a
    report (a third red team, seventeenth review: a withdrawal made before the state opened).  The
    end then matches no report, so the audit flags it.  Unit test on hand-written files (FAKE reports:
    only the fields the function reads)."""
    from fedstyle_secure.privacy.report_store import record_charges, withdrawal_end

    run = "0" * 32
    folder = tmp_path / "alice"
    folder.mkdir()
    assert withdrawal_end(tmp_path, "alice", run) is None  # nothing charged, nothing reported
    record_charges(tmp_path, "alice", 1)
    assert withdrawal_end(tmp_path, "alice", run) == (0, 1)  # charged, never reported: matches no folder
    (folder / "round-0000.json").write_text(json.dumps({"run_id": run, "round": 0, "mechanisms": [{}]}))
    (folder / "round-0001.json").write_text(json.dumps({"run_id": "f" * 32, "round": 1, "mechanisms": [{}] * 5}))
    assert withdrawal_end(tmp_path, "alice", run) == (0, 1)  # its report of this run; another run's is not
    record_charges(tmp_path, "alice", 3)
    assert withdrawal_end(tmp_path, "alice", run) == (0, 3)  # two charges after the last report
