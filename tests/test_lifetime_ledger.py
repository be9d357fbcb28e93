"""The lifetime ledger: epsilon adds up over every run an artwork took part in, not per run.

Before it, each run's ledger lived in its ``client.state_dir`` and a new federation needed a fresh one,
which started at zero: two runs on the same artworks spent 0.35 + 7.96 against a budget of 8, each
with clean reports (measured, 2026-12-02).  A server needs no crypto to cause it: it restarts "the
federation" under a new run id, the artist is told that a new federation needs a fresh state_dir, and
the budget is whole again.  The attack tests play it through the artist's real code
(:class:`ArtistPrivacy` with a real StyleClient, Opacus, the accountant, the SQLite ledgers); named
fakes: the server's end of the wire (``FakeSession``), the style features and the artwork files.
"""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from fedstyle_secure.privacy.lifetime import RunSpend, check_lifetime, portfolio_spend
from fedstyle_secure.privacy.plan import DpConfig
from fedstyle_secure.secure.keys.keystore import ArtistKeys
from fedstyle_secure.transport.artist.channel import ArtistSession
from fedstyle_secure.transport.artist.lifetime_ledger import LifetimeLedger, LifetimeRun
from fedstyle_secure.transport.artist.privacy import ArtistPrivacy
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.wire import pb
from tests.fakes import fake_portfolio
from tests.test_dp_artist_attacks import FEATURES, FakeSession, _broadcast, _client, _keys, _plan

LIFETIME = "lifetime privacy budget"

# ---------------------------------------------------------------- pure: what a portfolio spent


def _run(key: str, epsilon: float, *artworks: str) -> RunSpend:
    return RunSpend(key, epsilon, 1e-5, frozenset(artworks))


def test_runs_add_up_per_artwork_and_the_portfolio_counts_its_most_spent_artwork():
    runs = [_run("a", 3.0, "x", "y"), _run("b", 2.0, "y", "z"), _run("c", 5.0, "w")]
    spend = portfolio_spend(runs, frozenset({"x", "y", "z"}))
    assert spend.epsilon == pytest.approx(5.0) and spend.delta == pytest.approx(2e-5)  # y: in a and b
    assert spend.runs == 2  # c holds none of these artworks
    assert portfolio_spend(runs, frozenset({"x", "z"})).epsilon == pytest.approx(3.0)  # no artwork in both
    assert portfolio_spend(runs, frozenset({"y"}), excluding="a").epsilon == pytest.approx(2.0)
    assert portfolio_spend(runs, frozenset({"v"})).epsilon == 0.0


def test_the_lifetime_check_counts_this_run_once_and_the_others_in_full():
    runs = [_run("old", 5.0, "x"), _run("this", 1.0, "x")]
    assert check_lifetime(runs, frozenset({"x"}), "this", 3.0, limit=8.0).allowed  # 5 + 3, not 5 + 1 + 3
    refused = check_lifetime(runs, frozenset({"x"}), "this", 3.5, limit=8.0)
    assert not refused.allowed and refused.epsilon_after == pytest.approx(8.5)
    assert "1 earlier run(s) spent epsilon 5" in refused.reason
    with pytest.raises(ValueError, match="lifetime epsilon"):
        check_lifetime(runs, frozenset({"x"}), "this", 1.0, limit=float("nan"))
    with pytest.raises(ValueError, match="finite number >= 0"):
        check_lifetime(runs, frozenset({"x"}), "this", float("inf"), limit=8.0)


# ---------------------------------------------------------------- the SQLite store


def _lifetime_run(ledger: LifetimeLedger, key: str, *artworks: str, limit: float = 8.0) -> LifetimeRun:
    return LifetimeRun(ledger, key, "artist_00", "run-" + key, "/state/" + key, frozenset(artworks), limit)


def test_a_refused_charge_records_nothing_and_a_run_never_records_less(tmp_path):
    ledger = LifetimeLedger(tmp_path / "lifetime.sqlite")
    assert stat.S_IMODE((tmp_path / "lifetime.sqlite").stat().st_mode) == 0o600
    first, second = _lifetime_run(ledger, "a", "x", "y"), _lifetime_run(ledger, "b", "y")
    assert first.charge(5.0, 1e-5).allowed
    assert not second.charge(3.5, 1e-5).allowed
    assert [r.spend.run_key for r in ledger.runs()] == ["a"]  # the refused run left no row
    assert first.charge(2.0, 1e-5).allowed  # a state rolled back to less: still counted at 5
    assert ledger.runs()[0].spend.epsilon == 5.0
    assert second.charge(3.0, 1e-5).allowed and second.spent_by_others().epsilon == 5.0


def _charge_when_released(path: str, key: str, start, results) -> None:
    ledger = LifetimeLedger(Path(path))
    start.wait()
    results.put((key, _lifetime_run(ledger, key, "x").charge(5.0, 1e-5).allowed))


def test_two_runs_started_together_cannot_both_spend_the_rest(tmp_path):
    """Two artist processes of two runs on the same artworks, each asking for 5 of a lifetime 8 at the
    same moment: check and record are one transaction, so exactly one of them gets it."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    path = str(tmp_path / "lifetime.sqlite")
    LifetimeLedger(Path(path))  # created before the race
    workers = [context.Process(target=_charge_when_released, args=(path, k, start, results)) for k in "ab"]
    for worker in workers:
        worker.start()
    start.set()
    outcomes = dict(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(outcomes.values()) == [False, True], outcomes
    assert len(LifetimeLedger(Path(path)).runs()) == 1


# ---------------------------------------------------------------- the attack through ArtistPrivacy

EPSILON, N = 4.0, 40


def _artist(tmp_path: Path, run: str, data: Path, keys: ArtistKeys | None = None, **fields) -> ArtistPrivacy | None:
    """An artist process of run ``run`` (its own state_dir, fresh for a new run) on the artworks in ``data``."""
    config = ClientConfig(
        keys=tmp_path, data=data, state_dir=tmp_path / f"state-{run}", budget_epsilon=EPSILON, **fields
    )
    views = np.random.default_rng(5).normal(size=(3, N, FEATURES)).astype(np.float32)
    first = _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 1, _announced())
    return ArtistPrivacy.open(config, keys or _keys(), _client(DpConfig(epsilon=EPSILON), views), first)


def _announced() -> pb.DpParameters:
    return pb.DpParameters(epsilon_budget=EPSILON, clip_norm=1.0, accountant="prv")


def _take_part(privacy: ArtistPrivacy, server: FakeSession) -> list[str]:
    """The whole one-round run (DP-SGD, then the final release); the phases the artist acted in."""
    session, acted = cast(ArtistSession, server), []
    first = _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 1, _announced())
    if privacy.admit(session, first):
        privacy.contribution(session, first, lambda: _broadcast(1))
        acted.append("contribute")
    final = _plan(2, pb.ROUND_KIND_FINAL, "publish", 1, _announced())
    if privacy.admit(session, final):
        privacy.publication(session, final, lambda: _broadcast(2))
        acted.append("publish")
    return acted


def test_a_second_run_with_a_fresh_state_dir_cannot_spend_the_budget_again(tmp_path):
    """Run 1 spends most of the artist's budget of 4 on its artworks; the "new federation" of run 2 gets a
    fresh state_dir, as the artist is told to give it.  Before the lifetime ledger run 2 spent another
    4 on the same artworks; now it refuses before anything of it leaves, and tells the server so."""
    data = fake_portfolio(tmp_path)
    first_run = _artist(tmp_path, "1", data)
    assert first_run is not None and first_run.refusal is None
    assert _take_part(first_run, FakeSession()) == ["contribute", "publish"]
    spent = first_run.ledger.epsilon_spent
    assert spent > EPSILON / 2

    second_run = _artist(tmp_path, "2", data)
    server = FakeSession()
    assert second_run is not None and second_run.refusal is not None and LIFETIME in second_run.refusal
    assert _take_part(second_run, server) == []
    assert server.uploaded == [] and [LIFETIME in w.reason for w in server.withdrawals] == [True, True]
    assert not (tmp_path / "state-2" / "reports").exists()  # no ledger of run 2 was kept: nothing charged


def test_a_larger_lifetime_budget_lets_a_second_run_spend_only_what_is_left(tmp_path):
    """With ``client.lifetime_epsilon`` 1.5x the run budget, run 2 starts (its count fits) and retires at
    the first charge that would take the artworks' epsilon over all runs above the lifetime budget."""
    data = fake_portfolio(tmp_path)
    first_run = _artist(tmp_path, "1", data, lifetime_epsilon=1.5 * EPSILON)
    assert first_run is not None and _take_part(first_run, FakeSession()) == ["contribute", "publish"]
    second_run = _artist(tmp_path, "2", data, lifetime_epsilon=1.5 * EPSILON)
    assert second_run is not None and second_run.refusal is None and second_run.lifetime is not None
    server = FakeSession()
    acted = _take_part(second_run, server)
    assert acted != ["contribute", "publish"] and server.withdrawals  # it stopped part-way
    assert all(LIFETIME in w.reason for w in server.withdrawals)
    runs = second_run.lifetime.ledger.runs()
    assert len(runs) == 2 and sum(r.spend.epsilon for r in runs) <= 1.5 * EPSILON
    recorded = {r.spend.run_key: r.spend.epsilon for r in runs}
    assert recorded[second_run.lifetime.run_key] == pytest.approx(second_run.ledger.epsilon_spent)  # what it spent


def test_another_portfolio_of_the_same_artist_is_not_charged(tmp_path):
    """The lifetime ledger counts artworks: run 2 on other artworks (another data folder) of the same
    artist, recorded in the same lifetime ledger, takes part in full."""
    first_run = _artist(tmp_path, "1", fake_portfolio(tmp_path / "old"))
    assert first_run is not None and _take_part(first_run, FakeSession()) == ["contribute", "publish"]
    second_run = _artist(tmp_path, "2", fake_portfolio(tmp_path / "new"))
    assert second_run is not None and second_run.refusal is None
    assert _take_part(second_run, FakeSession()) == ["contribute", "publish"]


def test_a_restarted_run_is_counted_once(tmp_path):
    """A restart of the same run (same state_dir) is the same run in the lifetime ledger: resuming it does
    not count its spend twice."""
    data, keys = fake_portfolio(tmp_path), _keys()
    privacy = _artist(tmp_path, "1", data, keys)
    assert privacy is not None
    server = FakeSession()
    first = _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 1, _announced())
    assert privacy.admit(cast(ArtistSession, server), first)
    privacy.contribution(cast(ArtistSession, server), first, lambda: _broadcast(1))
    resumed = _artist(tmp_path, "1", data, keys)  # the artist process restarts on its state_dir
    assert resumed is not None and resumed.refusal is None
    final = _plan(2, pb.ROUND_KIND_FINAL, "publish", 1, _announced())
    assert resumed.admit(cast(ArtistSession, server), final)
    assert resumed.lifetime is not None and len(resumed.lifetime.ledger.runs()) == 1


def test_a_data_folder_without_artworks_is_named(tmp_path):
    (tmp_path / "empty" / "artist_00").mkdir(parents=True)
    from fedstyle_secure.errors import ConfigError

    with pytest.raises(ConfigError, match="client.data: .* holds no artwork file"):
        _artist(tmp_path, "1", tmp_path / "empty")


def test_the_lifetime_command_shows_each_run_and_the_portfolios_sum(tmp_path, capsys, lifetime_ledger):
    """``fedstyle lifetime``: each recorded run, and a portfolio's lifetime epsilon (JSON and table)."""
    import json

    from fedstyle_secure.cli.main import main

    data = fake_portfolio(tmp_path)
    first_run = _artist(tmp_path, "1", data, lifetime_epsilon=3 * EPSILON)
    assert first_run is not None and _take_part(first_run, FakeSession()) == ["contribute", "publish"]
    second_run = _artist(tmp_path, "2", data, lifetime_epsilon=3 * EPSILON)
    assert second_run is not None and _take_part(second_run, FakeSession()) == ["contribute", "publish"]
    assert main(["lifetime", "--data", str(data), "--json"]) == 0  # the default ledger: this test's
    shown = json.loads(capsys.readouterr().out)
    assert shown["ledger"] == str(lifetime_ledger) and len(shown["runs"]) == 2
    total = first_run.ledger.epsilon_spent + second_run.ledger.epsilon_spent
    assert shown["portfolio"]["epsilon"] == pytest.approx(total) and shown["portfolio"]["runs"] == 2
    assert main(["lifetime", "--ledger", str(lifetime_ledger), "--data", str(data)]) == 0
    assert f"lifetime epsilon {total:.4g}" in capsys.readouterr().out
    assert main(["lifetime", "--ledger", str(tmp_path / "none.sqlite")]) == 2
    assert "no lifetime ledger at" in capsys.readouterr().err
