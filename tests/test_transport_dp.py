"""Differentially private artists over real gRPC + mutual TLS on loopback (real Opacus, real key
files): budgets, retirement, durable ledgers without double counting, signed epsilon reports."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
from typing import cast

import grpc
import numpy as np
import pytest

from fedstyle_secure.cli.main import main
from fedstyle_secure.data.public import default_public_set, public_set_name
from fedstyle_secure.errors import ConfigError, PrivacyError
from fedstyle_secure.federation.client import StyleClient
from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.models.params import get_flat_params
from fedstyle_secure.privacy.accounting import compute_epsilon
from fedstyle_secure.privacy.budget import BudgetLedger, PrivacyBudget
from fedstyle_secure.privacy.calibration import artist_delta, default_delta
from fedstyle_secure.privacy.mechanisms import DpSgdSteps, GaussianRelease
from fedstyle_secure.privacy.plan import DpConfig, plan_participation
from fedstyle_secure.privacy.reports import (
    DATASET_SIZE_OPENING,
    build_report,
    opened_dataset_size,
    redacted_report,
    sign_report,
)
from fedstyle_secure.randomness import SECURE_NOISE_SOURCE, CsprngNoise
from fedstyle_secure.secure.keys.keystore import ArtistKeys, load_artist_keys, load_buyer_tls_pem, load_server_keys
from fedstyle_secure.training.local import LocalConfig
from fedstyle_secure.training.pretrain import MAX_PUBLIC_PRETRAIN_STEPS
from fedstyle_secure.transport.artist.channel import ArtistSession, open_channel
from fedstyle_secure.transport.artist.privacy import ArtistPrivacy
from fedstyle_secure.transport.artist.runner import EXIT_RETIRED, build_style_client
from fedstyle_secure.transport.artist.state import ArtistStateStore
from fedstyle_secure.transport.config import ClientConfig, ServerConfig, load_server_config
from fedstyle_secure.transport.dp_config import dp_parameters
from fedstyle_secure.transport.federation_model import server_model
from fedstyle_secure.transport.loopback import artist_dirs, artist_folders, start_loopback, write_fresh_keys
from fedstyle_secure.transport.server.servicer import start_server
from fedstyle_secure.transport.server.store import StateStore
from fedstyle_secure.transport.wire import pb, pb_grpc
from tests.fakes import charges, fake_portfolio, fake_style_client

ARTISTS = ("artist_00", "artist_01", "artist_02")
EPSILON = 8.0
WARM_START_STEPS = 30  # announced public warm start: lighter than the default 300, and not the default
ROUND_REPORTS = ["round-0000.json", "round-0001.json", "round-0002.json"]  # 2 training rounds + the final publication


LOOPBACK_RUN_SECONDS = 420
"""pytest's budget for a test that runs a whole loopback DP federation (three artist processes with
DP-SGD, a restart): its own waits (150 s for the run, 120 s more for a crash) bound it, not the suite's
120 s default.  25-40 s alone; once over 120 s in a fresh clone's full run beside the Ray simulations."""


def _schedule() -> Schedule:
    return Schedule(rounds=2, quorum=3, phase_seconds=60, refreshes=frozenset({0, 1}))


def _ledger(work, artist) -> BudgetLedger:
    snapshot = ArtistStateStore(artist_dirs(work, artist)[0]).load()
    assert snapshot is not None and snapshot.ledger is not None
    return BudgetLedger.from_dict(snapshot.ledger)


def _reports(directory, artist) -> list[str]:
    return sorted(p.name for p in (directory / artist).glob("round-*.json"))


def _status(federation, work) -> pb.Status:
    with open_channel(f"127.0.0.1:{federation.server.port}", load_buyer_tls_pem(work / "keys", "buyer")) as channel:
        return pb_grpc.FederationStub(channel).GetStatus(pb.StatusRequest(), timeout=5)


@pytest.mark.timeout(LOOPBACK_RUN_SECONDS)
def test_dp_federation_reports_every_round_and_audits_clean(tmp_path, data, capsys):
    work = tmp_path / "run"
    federation = start_loopback(
        work,
        data,
        _schedule(),
        cache_dir=data.parent / "cache",
        dp=DpConfig(epsilon=EPSILON, min_training_artworks=1),
        public_pretrain_steps=WARM_START_STEPS,
        epochs=1,
    )
    try:
        assert federation.join(timeout=150)
        coordinator, config = federation.server.servicer.coordinator, federation.server.servicer.config
    finally:
        federation.close()
    assert federation.results == {a: 0 for a in ARTISTS}
    assert coordinator.failed is None and coordinator.state.round == 3 and not coordinator.state.retired
    assert coordinator.standardisation is None  # no non-private set-up round under DP
    # encrypt only what changes: artists sent fc2 + classifier; the rest is still the public warm start
    assert config.cache_dir is not None and coordinator.state.params is not None
    start, shape = server_model(config, len(ARTISTS), config.cache_dir)
    assert shape.model is not None  # FedStyle keeps a global model
    trained = np.zeros(shape.model.param_count, dtype=bool)
    trained[np.concatenate([np.arange(a, b) for a, b in shape.model.trained])] = True
    assert shape.model.param_count > 10 * shape.model.trained_count
    np.testing.assert_array_equal(coordinator.state.params[~trained], get_flat_params(start)[~trained])
    assert not np.array_equal(coordinator.state.params[trained], get_flat_params(start)[trained])
    assert coordinator.reports == {a: 2 for a in ARTISTS}
    stored_state = StateStore(work / "server.sqlite").load()
    assert stored_state is not None and stored_state.reports == {a: 2 for a in ARTISTS}
    for artist in ARTISTS:
        assert _reports(artist_dirs(work, artist)[1], artist) == ROUND_REPORTS
        assert _reports(work / "reports", artist) == ROUND_REPORTS
        ledger = _ledger(work, artist)
        assert 0.9 * EPSILON < ledger.epsilon_spent <= EPSILON
        final = json.loads((work / "reports" / artist / ROUND_REPORTS[-1]).read_text())
        assert final["epsilon"]["prv"] == pytest.approx(ledger.epsilon_spent)
        assert final["noise_source"] == SECURE_NOISE_SOURCE and final["final_round"] == 2
        assert final["run_id"] == coordinator.run_id == stored_state.run_id  # announced, pinned, signed
        own = json.loads((artist_dirs(work, artist)[1] / artist / ROUND_REPORTS[-1]).read_text())
        assert opened_dataset_size(own) == ledger.dataset_size and redacted_report(own) == final  # n stayed there
    server_files = [p for p in [*work.glob("server.sqlite*"), *(work / "reports").rglob("*")] if p.is_file()]
    stored = b"".join(p.read_bytes() for p in server_files)
    assert b'"dataset_size"' not in stored and DATASET_SIZE_OPENING.encode() not in stored
    assert main(["audit", str(work / "reports"), "--keys", str(work / "keys")]) == 0
    own = str(artist_dirs(work, ARTISTS[0])[1])  # an artist audits its own copies
    assert main(["audit", own, "--keys", str(work / "keys"), "--artists", ARTISTS[0]]) == 0
    assert main(["audit", str(work / "reports"), "--keys", str(work / "keys"), "--run-id", coordinator.run_id]) == 0
    # the server deleting reports of this real run is flagged (issue 10, item 7)
    gaps = shutil.copytree(work / "reports", tmp_path / "gaps")
    (gaps / ARTISTS[1] / ROUND_REPORTS[1]).unlink()
    shutil.rmtree(gaps / ARTISTS[2])
    status, result = _audit(capsys, str(gaps), "--keys", str(work / "keys"))
    assert status == 1 and {(f["artist"], f["code"]) for f in result["findings"]} == {
        (ARTISTS[1], "missing_rounds"),
        (ARTISTS[2], "artist_without_reports"),
    }


def _audit(capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    status = main(["audit", "--json", *args])
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.timeout(LOOPBACK_RUN_SECONDS)
def test_artist_over_budget_retires_with_the_reason_and_others_finish(tmp_path, data, capsys, caplog):
    caplog.set_level(logging.WARNING, logger="fedstyle_secure.transport.artist.runner")
    work = tmp_path / "run"
    federation = start_loopback(
        work,
        data,
        _schedule(),
        cache_dir=data.parent / "cache",
        dp=DpConfig(epsilon=EPSILON, min_training_artworks=1),
        budgets={"artist_01": 0.5},
        public_pretrain_steps=WARM_START_STEPS,
        epochs=1,
    )
    try:
        assert federation.join(timeout=150)
        coordinator = federation.server.servicer.coordinator
        status = _status(federation, work)
    finally:
        federation.close()
    assert coordinator.failed is None and coordinator.state.round == 3
    reason = coordinator.state.retired["artist_01"]
    assert set(coordinator.state.retired) == {"artist_01"}
    assert reason.startswith("privacy budget") and "would exceed the budget epsilon=0.5" in reason
    assert "artist_01 did not take part to the end: it retired (privacy budget" in caplog.text  # its last word
    assert federation.results == {"artist_00": 0, "artist_01": EXIT_RETIRED, "artist_02": 0}  # and its exit status
    assert not status.retired and not status.registered  # a buyer sees no retirement reason (nor who registered)
    stored_state = StateStore(work / "server.sqlite").load()
    assert stored_state is not None and stored_state.state.retired == {"artist_01": reason}
    assert charges(_ledger(work, "artist_01").history) == []  # refused before spending anything but its planning count
    assert _reports(work / "reports", "artist_01") == [
        "round-0000.json"
    ]  # its planning count alone, signed when it retired
    for artist in ("artist_00", "artist_02"):
        assert _reports(work / "reports", artist) == ROUND_REPORTS
        assert _ledger(work, artist).epsilon_spent <= EPSILON
    # artist_01 retired before spending anything but its planning count, whose report it signed, and signed
    # its withdrawal: the audit lists the retirement and is clean.  Without the withdrawal (a server deleting
    # it, or an artist of an earlier version) its reports ending early are a finding again
    audit_status, result = _audit(capsys, str(work / "reports"), "--keys", str(work / "keys"))
    assert audit_status == 0 and not result["findings"], result["findings"]
    assert [(w["artist"], w["reason"][:14]) for w in result["withdrawn"]] == [("artist_01", "privacy budget")]
    (work / "reports" / "artist_01" / "withdrawal.json").unlink()
    audit_status, result = _audit(capsys, str(work / "reports"), "--keys", str(work / "keys"))
    assert audit_status == 1
    assert [(f["artist"], f["code"]) for f in result["findings"]] == [("artist_01", "reports_end_early")]
    others = shutil.copytree(work / "reports", tmp_path / "others", ignore=shutil.ignore_patterns("artist_01"))
    assert main(["audit", str(others), "--keys", str(work / "keys"), "--artists", "artist_00,artist_02"]) == 0


class SimulatedCrash(RuntimeError):
    """Stands for the artist process dying (everything in memory is lost)."""


@pytest.mark.timeout(LOOPBACK_RUN_SECONDS)
def test_artist_crash_after_charging_resends_the_same_contribution(tmp_path, data, monkeypatch):
    """artist_00 dies after it trained (and was charged for) round 2 but before its upload reached
    the server; restarted from its state_dir it resends the same noised contribution and ends
    with exactly the epsilon of an uninterrupted artist."""
    victim, uploads, crashed = "artist_00", [], threading.Event()
    real_upload = ArtistSession.upload

    def upload(self, round_id, kind, payload, layout=None, **kwargs):
        if self.artist_id == victim and round_id == 2 and kind == pb.PAYLOAD_KIND_PLAIN_VECTOR:
            uploads.append(bytes(payload))
            if not crashed.is_set():
                crashed.set()
                raise SimulatedCrash("killed after round 2 was charged and stored, before its upload")
        return real_upload(self, round_id, kind, payload, layout, **kwargs)

    monkeypatch.setattr(ArtistSession, "upload", upload)
    work = tmp_path / "run"
    federation = start_loopback(
        work,
        data,
        _schedule(),
        cache_dir=data.parent / "cache",
        dp=DpConfig(epsilon=EPSILON, min_training_artworks=1),
        session_timeout_seconds=1.0,
        public_pretrain_steps=WARM_START_STEPS,
        epochs=1,
    )
    try:
        assert crashed.wait(timeout=120)
        federation.threads[victim].join(timeout=30)
        assert isinstance(federation.results[victim], SimulatedCrash)
        charged = _ledger(work, victim)  # what the dead process had charged and stored
        assert any(isinstance(m, DpSgdSteps) and m.round_id == 1 for m in charged.history)
        federation.start_artist(victim)
        assert federation.join(timeout=150)
        coordinator = federation.server.servicer.coordinator
    finally:
        federation.close()
    assert federation.results == {a: 0 for a in ARTISTS}
    assert coordinator.failed is None and coordinator.state.round == 3
    assert len(uploads) == 2 and uploads[0] == uploads[1]  # the same noised contribution, resent
    resumed, uninterrupted = _ledger(work, victim), _ledger(work, "artist_01")
    shape = [(type(m).__name__, m.round_id) for m in resumed.history]  # each artist's own planning size:
    assert shape == [(type(m).__name__, m.round_id) for m in uninterrupted.history]  # the same mechanisms, once
    assert 0.9 * EPSILON < resumed.epsilon_spent <= EPSILON
    assert sum(isinstance(m, DpSgdSteps) and m.round_id == 1 for m in resumed.history) == 1
    assert _reports(work / "reports", victim) == ROUND_REPORTS
    assert main(["audit", str(work / "reports"), "--keys", str(work / "keys")]) == 0


def _real_report(artist: str, keys, round_id: int = 0, epsilon_budget: float = 2.0) -> dict:
    ledger = BudgetLedger(PrivacyBudget(epsilon_budget, 1e-5), 20)
    ledger.record([GaussianRelease(1.0, 4.0, round_id, "style-prototype-sums")])
    key = load_artist_keys(keys, artist).identity_key
    signed = sign_report(
        build_report(ledger, artist_id=artist, round_id=round_id, noise_source=SECURE_NOISE_SOURCE), key
    )
    return redacted_report(signed)  # what an artist uploads


def test_tampered_or_unsigned_reports_are_refused_and_the_server_keeps_serving(tmp_path):
    keys = write_fresh_keys(tmp_path / "keys", ("artist_a", "artist_b"))
    config = ServerConfig(
        keys=keys,
        state_db=tmp_path / "server.sqlite",
        listen="127.0.0.1:0",
        reports_dir=tmp_path / "reports",
        schedule=Schedule(rounds=1, quorum=2, standardise=False),
        dp=DpConfig(epsilon=2.0, min_training_artworks=1),
    )
    running = start_server(config, load_server_keys(keys))
    try:
        address = f"127.0.0.1:{running.port}"
        with open_channel(address, load_artist_keys(keys, "artist_a").tls_pem()) as channel:
            session = ArtistSession.register(channel, load_artist_keys(keys, "artist_a"))
            report = _real_report("artist_a", keys)
            tampered = {**report, "epsilon": {name: 0.01 for name in report["epsilon"]}}
            _refused(
                lambda: session.report(0, json.dumps(tampered).encode()),
                grpc.StatusCode.PERMISSION_DENIED,
                "altered or forged",
            )
            unsigned = {k: v for k, v in report.items() if k != "signature"}
            _refused(
                lambda: session.report(0, json.dumps(unsigned).encode()),
                grpc.StatusCode.PERMISSION_DENIED,
                "not signed",
            )
            foreign = _real_report("artist_a", keys) | {"signature": _real_report("artist_b", keys)["signature"]}
            _refused(
                lambda: session.report(0, json.dumps(foreign).encode()),
                grpc.StatusCode.PERMISSION_DENIED,
                "signed by key",
            )
            invalid = sign_report(
                {**{k: v for k, v in report.items() if k != "signature"}, "privacy_unit": "one artist"},
                load_artist_keys(keys, "artist_a").identity_key,
            )
            _refused(
                lambda: session.report(0, json.dumps(invalid).encode()),
                grpc.StatusCode.INVALID_ARGUMENT,
                "not a valid report",
            )
            assert not (tmp_path / "reports" / "artist_a").exists()  # nothing refused was stored
            assert session.report(0, json.dumps(report).encode()).accepted_bytes > 0
            assert session.report(0, json.dumps(report).encode()).accepted_bytes > 0  # the same report again: fine
            other = _real_report("artist_a", keys, epsilon_budget=3.0)
            _refused(
                lambda: session.report(0, json.dumps(other).encode()), grpc.StatusCode.ALREADY_EXISTS, "append-only"
            )
        with open_channel(address, load_artist_keys(keys, "artist_b").tls_pem()) as channel:
            session = ArtistSession.register(channel, load_artist_keys(keys, "artist_b"))
            assert session.report(0, json.dumps(_real_report("artist_b", keys)).encode()).accepted_bytes > 0
            assert dict(session.stub.GetStatus(pb.StatusRequest(), timeout=5).reports) == {
                "artist_b": 0
            }  # its own only
            assert running.servicer.coordinator.reports == {"artist_a": 0, "artist_b": 0}
    finally:
        running.stop(0)
    assert main(["audit", str(tmp_path / "reports"), "--keys", str(keys)]) == 0


def _refused(call, code: grpc.StatusCode, words: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    assert words in info.value.details(), info.value.details()


def test_an_artist_takes_the_smaller_of_the_announced_delta_and_its_own():
    """The server can neither loosen an artist's delta nor learn its portfolio size from a refusal:
    the artist never refuses an announced delta, it takes the smaller of that and its own."""
    n = 6
    with pytest.raises(PrivacyError, match="not below 1/n"):
        artist_delta(None, 0.2, n)  # the artist's own setting is checked: a local configuration error
    assert artist_delta(None, None, n) == default_delta(n) == 1e-5
    assert artist_delta(0.9 / n, None, n) == default_delta(n)  # a delta just below 1/n is not taken
    assert artist_delta(0.2, None, n) == default_delta(n)  # nor one above it (it used to be refused)
    assert artist_delta(1e-7, None, n) == 1e-7  # a stricter one is
    assert artist_delta(1e-5, 1e-6, n) == 1e-6


def test_plan_matches_the_simulators_calibration():
    """The networked artist's plan is the simulator's: same mechanisms, same total epsilon."""
    plan = plan_participation(DpConfig(epsilon=EPSILON), 6, LocalConfig(epochs=1, batch_size=16), 2, frozenset({0, 1}))
    mechanisms = [*plan.round_mechanisms(2, train=False)] + [m for r in range(2) for m in plan.round_mechanisms(r)]
    assert 0.97 * EPSILON <= compute_epsilon(mechanisms, plan.delta, "prv") <= EPSILON


def _plan_message(dp: pb.DpParameters | None) -> pb.RoundPlan:
    return pb.RoundPlan(round_id=1, kind=pb.ROUND_KIND_TRAIN, total_rounds=2, phase="publish", dp=dp)


def _refusal(privacy: ArtistPrivacy | None) -> str:
    """Why an artist's privacy state refuses the federation (the caller expects a refusal)."""
    assert privacy is not None and privacy.refusal is not None
    return privacy.refusal


def test_artist_refuses_an_unusable_plan_without_naming_its_portfolio_size_and_a_federation_without_dp(tmp_path):
    """An announced epsilon no noise fits is refused; the reason the server gets names no number
    of artworks (the reports commit to n so that the server does not learn it)."""
    from types import SimpleNamespace

    client = fake_style_client(6)
    config = ClientConfig(keys=tmp_path, data=fake_portfolio(tmp_path), state_dir=tmp_path / "state")
    keys = cast(ArtistKeys, SimpleNamespace(artist_id="artist_00"))
    announced = pb.DpParameters(epsilon_budget=1e-9, clip_norm=1.0, accountant="prv", release_rounds=[0])
    refusal = _refusal(ArtistPrivacy.open(config, keys, client, _plan_message(announced)))
    assert refusal.startswith("the federation's DP plan (announced by the server) is unusable")
    assert not any(ch.isdigit() for ch in refusal)  # n = 6 artworks, named only in the artist's own log
    # its planning size was kept before the plan read it: that state never takes part without DP
    assert "DP planning size" in _refusal(ArtistPrivacy.open(config, keys, client, _plan_message(None)))
    fresh = ClientConfig(keys=tmp_path, data=fake_portfolio(tmp_path), state_dir=tmp_path / "fresh")
    assert ArtistPrivacy.open(fresh, keys, client, _plan_message(None)) is None  # neither side asks for DP
    demanding = ClientConfig(keys=tmp_path, data=fake_portfolio(tmp_path), budget_epsilon=2.0)
    assert "requires DP" in _refusal(ArtistPrivacy.open(demanding, keys, client, _plan_message(None)))
    with pytest.raises(ConfigError, match="client.state_dir"):
        ArtistPrivacy.open(
            ClientConfig(keys=tmp_path, data=fake_portfolio(tmp_path)), keys, client, _plan_message(announced)
        )


def test_artists_start_from_the_announced_warm_start_and_refuse_an_absurd_one(tmp_path, data):
    """Under DP the server fills what artists no longer send (the public warm start) from its own
    starting model, so each artist must start from that very model: the one the plan's announced
    ``public_pretrain_steps`` give.  A server announcing more steps than an artist runs is refused."""
    keys = write_fresh_keys(tmp_path / "keys", list(ARTISTS))
    cache = data.parent / "cache"
    config = ServerConfig(
        keys=keys,
        state_db=tmp_path / "server.sqlite",
        cache_dir=cache,
        dp=DpConfig(epsilon=EPSILON),
        public_pretrain_steps=7,
    )
    start, _ = server_model(config, len(ARTISTS), cache)
    folder = artist_folders(data, tmp_path)[ARTISTS[1]]
    artist = ClientConfig(keys=keys, data=folder, cache_dir=cache)
    plan = pb.RoundPlan(
        round_id=1,
        algorithm=config.schedule.algorithm,
        seed=config.schedule.seed,
        embedding_dim=config.embedding_dim,
        total_rounds=2,
        public_set=pb.PublicSetReference(name=public_set_name(default_public_set())),
        dp=dp_parameters(config.dp, ()),
        public_pretrain_steps=config.pretrain_steps,
    )
    client = build_style_client(artist, ARTISTS[1], ARTISTS, plan)
    np.testing.assert_array_equal(get_flat_params(client.model), get_flat_params(start))
    plan.public_pretrain_steps = 0  # another announcement: another start
    assert not np.array_equal(
        get_flat_params(build_style_client(artist, ARTISTS[1], ARTISTS, plan).model), get_flat_params(start)
    )
    plan.public_pretrain_steps = MAX_PUBLIC_PRETRAIN_STEPS + 1
    with pytest.raises(ConfigError, match=f"public_pretrain_steps = {MAX_PUBLIC_PRETRAIN_STEPS + 1}"):
        build_style_client(artist, ARTISTS[1], ARTISTS, plan)
    toml = tmp_path / "server.toml"
    toml.write_text(f'[server]\nkeys = "k"\nstate_db = "s"\npublic_pretrain_steps = {MAX_PUBLIC_PRETRAIN_STEPS + 1}\n')
    with pytest.raises(ConfigError, match="server.public_pretrain_steps: must be less than or equal to 10000"):
        load_server_config(toml)


def test_a_state_folder_of_a_run_without_dp_is_refused_by_a_dp_federation_and_vice_versa(tmp_path):
    """A non-DP artist (the Flower artist keeps its model between messages) stores its model without
    a ledger: a DP federation must not continue from that model, trained without DP noise; a DP
    artist's folder is still refused by a federation without DP."""
    from types import SimpleNamespace

    from fedstyle_secure.transport.artist.state import ArtistSnapshot, ArtistStateStore

    # test fakes: only the parts open() reads
    client = cast(
        StyleClient, SimpleNamespace(n_train=6, config=LocalConfig(epochs=1, batch_size=16), noise=CsprngNoise())
    )
    config = ClientConfig(keys=tmp_path, data=fake_portfolio(tmp_path), state_dir=tmp_path / "state")
    keys = cast(ArtistKeys, SimpleNamespace(artist_id="artist_00"))
    without_dp = ArtistSnapshot("artist_00", {"w": np.zeros(2)}, ledger=None, rng={}, plan={})
    ArtistStateStore(tmp_path / "state").save(without_dp)
    assert ArtistPrivacy.open(config, keys, client, _plan_message(None)) is None  # a run without DP continues
    announced = pb.DpParameters(epsilon_budget=8.0, delta=1e-3, clip_norm=1.0, accountant="prv", release_rounds=[0])
    with pytest.raises(ConfigError, match="state of a federation without DP"):
        ArtistPrivacy.open(config, keys, client, _plan_message(announced))
    ArtistStateStore(tmp_path / "state").save(dataclasses.replace(without_dp, ledger={"budget": {}}))
    assert "holds a DP ledger" in _refusal(ArtistPrivacy.open(config, keys, client, _plan_message(None)))
