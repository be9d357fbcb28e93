"""Epsilon reports: content, JSON Schema, canonical JSON, Ed25519 signatures, reports directory."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fedstyle_secure.errors import FedStyleError, PrivacyError
from fedstyle_secure.privacy.accounting import compute_epsilon
from fedstyle_secure.privacy.budget import BudgetLedger, PrivacyBudget
from fedstyle_secure.privacy.jsonio import read_json
from fedstyle_secure.privacy.mechanisms import (
    MAX_DISTINCT_MECHANISMS,
    MAX_DP_SGD_STEPS,
    MAX_MECHANISMS,
    MAX_RUN_ROUNDS,
    MIN_NOISE_MULTIPLIER,
    DpSgdSteps,
    GaussianRelease,
    history_from_list,
)
from fedstyle_secure.privacy.report_schema import report_schema, report_schema_errors
from fedstyle_secure.privacy.report_store import (
    load_report_manifest,
    register_public_key,
    report_files,
    report_path,
    write_report,
)
from fedstyle_secure.privacy.reports import (
    DATASET_SIZE_COMMITMENT,
    DATASET_SIZE_OPENING,
    PRIVACY_UNIT,
    build_report,
    canonical_json,
    key_fingerprint,
    opened_dataset_size,
    public_key_from_text,
    public_key_to_text,
    redacted_report,
    sign_report,
    verify_report_signature,
)
from fedstyle_secure.randomness import SECURE_NOISE_SOURCE
from fedstyle_secure.secure.keys import pki

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture(scope="module")
def ledger() -> BudgetLedger:
    ledger = BudgetLedger(PrivacyBudget(epsilon=8.0, delta=1e-5), dataset_size=400)
    ledger.record([DpSgdSteps(sample_rate=0.05, noise_multiplier=1.2, steps=60, clip_norm=1.0, round_id=3)])
    ledger.record([GaussianRelease(sensitivity=0.5, sigma=2.0, round_id=3, what="style-prototype")])
    return ledger


@pytest.fixture(scope="module")
def signed(ledger: BudgetLedger) -> dict:
    report = build_report(
        ledger,
        artist_id="alice",
        round_id=3,
        noise_source=SECURE_NOISE_SOURCE,
        final_round=5,
        issued_at="2026-01-02T03:04:05Z",
    )
    return sign_report(report, KEY)


def test_report_states_unit_budget_history_and_epsilon_per_accountant(ledger: BudgetLedger, signed: dict) -> None:
    assert signed["privacy_unit"] == PRIVACY_UNIT == "one artwork (record-level)"
    assert "NOT" in signed["privacy_unit_note"] and "artist" in signed["privacy_unit_note"]
    assert signed["accountant"] == "prv" and set(signed["epsilon"]) == {"prv", "rdp"}
    assert signed["epsilon"]["prv"] == compute_epsilon(ledger.history, 1e-5, "prv")
    assert signed["epsilon"]["rdp"] > signed["epsilon"]["prv"] > 0
    assert signed["budget"] == {"epsilon": 8.0, "delta": 1e-5} and signed["delta"] == 1e-5
    assert "dataset_size" not in signed and opened_dataset_size(signed) == 400  # n only in the commitment's opening
    assert signed["noise_source"] == SECURE_NOISE_SOURCE == "os-csprng/chacha20" and signed["final_round"] == 5
    assert history_from_list(signed["mechanisms"]) == ledger.history
    assert set(signed["software"]) == {"torch", "opacus", "dp-accounting", "fedstyle-secure"}
    assert signed["software"]["opacus"][0].isdigit()


def test_unsigned_and_signed_reports_match_the_published_schema(ledger: BudgetLedger, signed: dict) -> None:
    assert report_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    unsigned = build_report(ledger, artist_id="alice", round_id=3, noise_source=SECURE_NOISE_SOURCE)
    assert report_schema_errors(unsigned) == []
    assert report_schema_errors(json.loads(json.dumps(signed))) == []


def test_the_published_schema_states_the_bounds_the_code_enforces() -> None:
    mechanisms = report_schema()["properties"]["mechanisms"]
    dp_sgd = report_schema()["$defs"]["dp_sgd"]["properties"]
    assert mechanisms["maxItems"] == MAX_MECHANISMS and dp_sgd["steps"]["maximum"] == MAX_DP_SGD_STEPS
    assert dp_sgd["noise_multiplier"]["minimum"] == MIN_NOISE_MULTIPLIER
    for bound in (MAX_MECHANISMS, MAX_RUN_ROUNDS, MAX_DP_SGD_STEPS, MAX_DISTINCT_MECHANISMS, MIN_NOISE_MULTIPLIER):
        assert re.search(rf"(?<![\d.]){re.escape(str(bound))}(?![\d.])", mechanisms["description"]), bound


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("privacy_unit",), "one artist", "privacy_unit"),
        (("epsilon", "prv"), -0.5, "epsilon/prv"),
        (("round",), "3", "round"),
        (("mechanisms", 0, "kind"), "laplace", "mechanisms/0"),
        (("issued_at",), "yesterday", "issued_at"),
        (("artist_id",), "../etc", "artist_id"),
        (("signature", "value"), "short", "signature/value"),
        (("unexpected",), 1, "<root>"),
    ],
)
def test_schema_rejects_malformed_fields(signed: dict, path: tuple, value: object, expected: str) -> None:
    report = copy.deepcopy(signed)
    target = report
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    errors = report_schema_errors(report)
    assert errors and any(error.startswith(expected) for error in errors), errors


def test_signature_verifies_after_a_json_round_trip(signed: dict) -> None:
    verify_report_signature(json.loads(json.dumps(signed, indent=4)), KEY.public_key())
    assert signed["signature"]["key_fingerprint"] == "sha256:" + pki.identity_fingerprint(KEY.public_key())


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r["epsilon"].__setitem__("prv", 0.1),
        lambda r: r["mechanisms"][0].__setitem__("noise_multiplier", 5.0),
        lambda r: r.__setitem__("privacy_unit_note", "artist-level"),
        lambda r: r["signature"].__setitem__("value", base64.b64encode(bytes(64)).decode()),
    ],
)
def test_tampered_report_fails_verification(signed: dict, tamper) -> None:
    report = copy.deepcopy(signed)
    tamper(report)
    with pytest.raises(PrivacyError, match="altered or forged"):
        verify_report_signature(report, KEY.public_key())


def test_wrong_key_and_missing_signature_fail_closed(signed: dict) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(PrivacyError, match="signed by key"):
        verify_report_signature(signed, other)
    unsigned = {key: value for key, value in signed.items() if key != "signature"}
    with pytest.raises(PrivacyError, match="not signed"):
        verify_report_signature(unsigned, KEY.public_key())


def test_dataset_size_is_committed_and_the_redacted_report_still_verifies(ledger: BudgetLedger, signed: dict) -> None:
    """The redacted copy (what the server gets) verifies and hides n behind a salted commitment;
    the opening binds n: another n or salt, or an opening moved to another report, is refused."""
    redacted = redacted_report(signed)
    assert set(signed) - set(redacted) == {DATASET_SIZE_OPENING} and report_schema_errors(redacted) == []
    verify_report_signature(redacted, KEY.public_key())
    assert opened_dataset_size(redacted) is None
    again = sign_report(
        build_report(
            ledger, artist_id="alice", round_id=3, noise_source=SECURE_NOISE_SOURCE, issued_at="2026-01-02T03:04:05Z"
        ),
        KEY,
    )
    assert again[DATASET_SIZE_COMMITMENT] != signed[DATASET_SIZE_COMMITMENT]  # fresh salt: same n, unlinkable
    base = signed[DATASET_SIZE_OPENING]
    for opening in ({**base, "dataset_size": 401}, {**base, "salt": again[DATASET_SIZE_OPENING]["salt"]}):
        with pytest.raises(PrivacyError, match="does not open the signed dataset_size_commitment"):
            opened_dataset_size({**signed, DATASET_SIZE_OPENING: opening})
    with pytest.raises(PrivacyError, match="does not open"):
        opened_dataset_size({**redacted, DATASET_SIZE_OPENING: again[DATASET_SIZE_OPENING]})


def test_public_keys_parse_from_base64_and_pem_and_garbage_is_rejected() -> None:
    public = KEY.public_key()
    for text in (public_key_to_text(public), pki.public_key_pem(public).decode()):
        assert key_fingerprint(public_key_from_text(text)) == key_fingerprint(public)
    for garbage in ("not base64!", base64.b64encode(b"short").decode(), "-----BEGIN PUBLIC KEY-----\nxx\n"):
        with pytest.raises(PrivacyError, match="not an Ed25519 public key"):
            public_key_from_text(garbage)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=50, deadline=None)
@given(json_values)
def test_canonical_json_is_stable_under_reparsing_and_reformatting(value: object) -> None:
    encoded = canonical_json(value)
    assert canonical_json(json.loads(encoded)) == encoded
    assert canonical_json(json.loads(json.dumps(value, indent=3))) == encoded
    assert b"\n" not in encoded


def test_canonical_json_sorts_keys() -> None:
    assert canonical_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'.encode()


def test_reports_directory_layout_and_append_only_writes(signed: dict, tmp_path: Path) -> None:
    path = write_report(tmp_path, signed)
    assert path == report_path(tmp_path, "alice", 3) == tmp_path / "alice" / "round-0003.json"
    assert read_json(path) == signed
    assert write_report(tmp_path, signed) == path  # rewriting identical content is harmless
    altered = copy.deepcopy(signed)
    altered["epsilon"]["prv"] = 0.1
    with pytest.raises(PrivacyError, match="append-only"):
        write_report(tmp_path, altered)
    assert report_files([tmp_path]) == [path] == report_files([path])
    with pytest.raises(FedStyleError):
        report_path(tmp_path, "../escape", 1)


def test_manifest_registration_is_idempotent_and_refuses_key_replacement(tmp_path: Path) -> None:
    register_public_key(tmp_path, "alice", KEY.public_key())
    register_public_key(tmp_path, "alice", KEY.public_key())
    register_public_key(tmp_path, "bob", Ed25519PrivateKey.generate().public_key())
    manifest = load_report_manifest(tmp_path / "manifest.json")
    assert set(manifest["artists"]) == {"alice", "bob"}
    assert manifest["artists"]["alice"]["fingerprint"] == key_fingerprint(KEY.public_key())
    with pytest.raises(PrivacyError, match="refusing to replace"):
        register_public_key(tmp_path, "alice", Ed25519PrivateKey.generate().public_key())
