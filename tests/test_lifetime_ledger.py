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

import ast
import multiprocessing
import shutil
import stat
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from fedstyle_secure.data import images as images_module
from fedstyle_secure.errors import ConfigError
from fedstyle_secure.privacy.lifetime import RunSpend, check_lifetime, portfolio_spend
from fedstyle_secure.privacy.plan import DpConfig
from fedstyle_secure.secure.keys.keystore import ArtistKeys
from fedstyle_secure.transport.artist import privacy as privacy_module
from fedstyle_secure.transport.artist.channel import ArtistSession
from fedstyle_secure.transport.artist.lifetime_ledger import LifetimeLedger, LifetimeRun
from fedstyle_secure.transport.artist.privacy import ArtistPrivacy
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.wire import pb
from tests.fakes import fake_portfolio
from tests.test_dp_artist_attacks import ARTIST, FEATURES, FakeSession, _broadcast, _client, _keys, _plan

LIFETIME = "lifetime privacy budget"
REPO = Path(__file__).resolve().parent.parent

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


LIMIT = (8.0, 1e-3)


def test_the_lifetime_check_counts_this_run_once_and_the_others_in_full():
    runs = [_run("old", 5.0, "x"), _run("this", 1.0, "x")]
    assert check_lifetime(runs, frozenset({"x"}), "this", (3.0, 1e-5), LIMIT).allowed  # 5 + 3, not 5 + 1 + 3
    refused = check_lifetime(runs, frozenset({"x"}), "this", (3.5, 1e-5), LIMIT)
    assert not refused.allowed and refused.epsilon_after == pytest.approx(8.5)
    assert "1 earlier run(s) spent epsilon 5" in refused.reason
    with pytest.raises(ValueError, match="lifetime epsilon"):
        check_lifetime(runs, frozenset({"x"}), "this", (1.0, 1e-5), (float("nan"), 1e-3))
    with pytest.raises(ValueError, match="lifetime delta"):
        check_lifetime(runs, frozenset({"x"}), "this", (1.0, 1e-5), (8.0, 1.0))
    with pytest.raises(ValueError, match="finite >= 0"):
        check_lifetime(runs, frozenset({"x"}), "this", (float("inf"), 1e-5), LIMIT)


def test_the_summed_delta_is_bounded_too():
    """Many cheap runs (200 at epsilon 0.01, delta 1e-2 each, e.g. with client.budget_delta set for a
    small portfolio) summed to delta 2 and were allowed: only epsilon was checked (red-team review,
    2026-12-02).  Delta sums are kept within the lifetime delta too."""
    runs = [RunSpend(f"r{i}", 0.01, 1e-2, frozenset({"x"})) for i in range(200)]
    decision = check_lifetime(runs, frozenset({"x"}), "this", (0.01, 1e-2), (8.0, 0.5))
    assert decision.others.delta == pytest.approx(2.0) and not decision.allowed
    assert check_lifetime(runs[:40], frozenset({"x"}), "this", (0.01, 1e-2), (8.0, 0.5)).allowed


# ---------------------------------------------------------------- the SQLite store


def _lifetime_run(ledger: LifetimeLedger, key: str, *artworks: str, limit: float = 8.0) -> LifetimeRun:
    return LifetimeRun(ledger, key, "artist_00", "run-" + key, "/state/" + key, frozenset(artworks), limit, 1e-3)


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
    kept = tmp_path / "state-2" / "reports"
    assert not list(kept.rglob("round-*.json"))  # no ledger of run 2 was kept: nothing charged, nothing reported
    assert [p.name for p in kept.rglob("*.json")] == ["withdrawal.json"]  # its signed withdrawal, kept


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

    with pytest.raises(ConfigError, match="client.data: .*usable artist folder"):
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


# ---------------------------------------------------------------- red-team review (2026-12-02), its tests
# A helper attacked the first version of the lifetime ledger; each test below failed on it (commit 362ca74).


def _announced_at(epsilon: float) -> pb.DpParameters:
    return pb.DpParameters(epsilon_budget=epsilon, clip_norm=1.0, accountant="prv")


def _open(
    tmp_path: Path, state: str, data: Path, epsilon: float, keys: ArtistKeys | None = None, **fields
) -> ArtistPrivacy | None:
    """An artist process on ``<tmp_path>/state-<state>``, under a federation announcing ``epsilon``."""
    config = ClientConfig(keys=tmp_path, data=data, state_dir=tmp_path / f"state-{state}", **fields)
    views = np.random.default_rng(5).normal(size=(3, N, FEATURES)).astype(np.float32)
    first = _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 1, _announced_at(epsilon))
    return ArtistPrivacy.open(config, keys or _keys(), _client(DpConfig(epsilon=epsilon), views), first)


def _take_part_at(privacy: ArtistPrivacy, server: FakeSession, epsilon: float) -> list[str]:
    """The whole one-round run (DP-SGD, then the final release); the phases the artist acted in."""
    session, acted = cast(ArtistSession, server), []
    first = _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 1, _announced_at(epsilon))
    if privacy.admit(session, first):
        privacy.contribution(session, first, lambda: _broadcast(1))
        acted.append("contribute")
    final = _plan(2, pb.ROUND_KIND_FINAL, "publish", 1, _announced_at(epsilon))
    if privacy.admit(session, final):
        privacy.publication(session, final, lambda: _broadcast(2))
        acted.append("publish")
    return acted


# ---------------------------------------------------------------- 1. a federation without DP


def test_an_artist_with_a_lifetime_budget_refuses_a_federation_without_dp(tmp_path):
    """client.lifetime_epsilon = 4 (and no per-run budget_epsilon): the server simply announces no DP.
    ArtistPrivacy.open returns None, so the artist trains and sends exact prototypes and contributions
    of its artworks (epsilon = infinity), and nothing is recorded in the lifetime ledger either.
    _without_dp only refuses when client.budget_epsilon is set."""
    data = fake_portfolio(tmp_path)
    config = ClientConfig(keys=tmp_path, data=data, state_dir=tmp_path / "state", lifetime_epsilon=4.0)
    views = np.random.default_rng(5).normal(size=(3, N, FEATURES)).astype(np.float32)
    no_dp = pb.RoundPlan(
        round_id=1, kind=pb.ROUND_KIND_TRAIN, phase="contribute", total_rounds=1, participants=[ARTIST]
    )
    privacy = ArtistPrivacy.open(config, _keys(), _client(DpConfig(epsilon=4.0), views), no_dp)
    assert privacy is not None and privacy.refusal is not None, "takes part without DP despite lifetime_epsilon"


# ---------------------------------------------------------------- 2. the server sets the lifetime limit


def test_a_server_announcing_a_larger_epsilon_next_time_cannot_raise_the_lifetime_limit(tmp_path):
    """Neither client.lifetime_epsilon nor client.budget_epsilon set (the documented defaults): the limit
    is each run's ANNOUNCED epsilon.  Run 1 announces 4 and spends it; run 2 (the "new federation",
    fresh state_dir) announces 8: the limit is now 8, so run 2 may spend up to 8 - 3.97 more on the same
    artworks (here its DP-SGD round, 0.35, before its final release is refused: 4.32 > 4 in all; a
    multi-round plan spends more).  Doubling every run, the server makes the lifetime epsilon unbounded."""
    data = fake_portfolio(tmp_path)
    first = _open(tmp_path, "1", data, 4.0)
    assert first is not None and _take_part_at(first, FakeSession(), 4.0) == ["contribute", "publish"]
    spent_first = first.ledger.epsilon_spent
    second = _open(tmp_path, "2", data, 8.0)
    assert second is not None
    acted = _take_part_at(second, FakeSession(), 8.0)
    total = spent_first + (second.ledger.epsilon_spent if second.refusal is None else 0.0)
    assert total <= 4.0 * (1 + 1e-9), f"run 2 acted in {acted}: the artworks reached epsilon {total:.3f}, limit 4"


# ---------------------------------------------------------------- 3. one run key, two histories


def test_a_rolled_back_state_dir_cannot_release_again_under_the_same_run_key(tmp_path):
    """The state_dir is restored from a backup taken after the run began (its reports_dir inside it,
    the default, so check_not_rolled_back sees nothing).  The restored state keeps its lifetime key, and
    the lifetime ledger counts a run "at the most it ever recorded": the run redoes its DP-SGD and
    final release with FRESH noise and the lifetime ledger still reads what one pass spent.  The
    lifetime ledger, which lives outside the state_dir, is exactly the witness that could tell (it holds
    more for this key than the restored ledger)."""
    data, keys = fake_portfolio(tmp_path), _keys()
    privacy = _open(tmp_path, "1", data, 4.0, keys, budget_epsilon=4.0)
    assert privacy is not None and privacy.refusal is None
    backup = tmp_path / "backup"
    shutil.copytree(tmp_path / "state-1", backup)  # the run's planning count is charged; nothing released yet
    assert _take_part_at(privacy, FakeSession(), 4.0) == ["contribute", "publish"]
    assert _released_after_restoring(tmp_path, backup, data, keys) == []


def _released_after_restoring(tmp_path: Path, backup: Path, data: Path, keys: ArtistKeys) -> list[str]:
    """Restore ``backup`` over the run's state-1 and restart the artist: what the restored run released
    again with fresh noise ([] when it is refused at start, or sits everything out)."""
    shutil.rmtree(tmp_path / "state-1")
    shutil.copytree(backup, tmp_path / "state-1")  # the rollback
    try:
        resumed = _open(tmp_path, "1", data, 4.0, keys, budget_epsilon=4.0)
    except ConfigError:
        return []  # refused as rolled back: the fix
    assert resumed is not None
    return _take_part_at(resumed, FakeSession(), 4.0) if resumed.refusal is None else []


def test_a_copied_state_dir_run_beside_the_original_counts_as_a_second_run(tmp_path):
    """A state_dir copied after its first start (same lifetime key, its reports inside) and run as a second
    artist process on the same artworks: each releases with its own noise, the lifetime ledger keeps ONE
    row (the max of the two, its state_dir column overwritten by whichever charged last)."""
    data, keys = fake_portfolio(tmp_path), _keys()
    original = _open(tmp_path, "1", data, 4.0, keys, budget_epsilon=4.0)
    assert original is not None and original.refusal is None
    shutil.copytree(tmp_path / "state-1", tmp_path / "state-2")
    with pytest.raises(ConfigError, match="a copied state_dir must not run beside its original"):
        _open(tmp_path, "2", data, 4.0, keys, budget_epsilon=4.0)
    assert _take_part_at(original, FakeSession(), 4.0) == ["contribute", "publish"]


# ---------------------------------------------------------------- 4. artwork identity


def _png_portfolio(folder: Path, compress_level: int, comment: str | None = None) -> Path:
    """``<folder>/portfolio/artist_00/`` with two PNGs of the SAME pixels, written at ``compress_level``
    (and with a text chunk ``comment``): what an export, an optimiser or a metadata tool produces."""
    from PIL import Image, PngImagePlugin

    artist = folder / "portfolio" / "artist_00"
    artist.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        info = PngImagePlugin.PngInfo()
        if comment is not None:
            info.add_text("Comment", comment)
        Image.fromarray(pixels).save(artist / f"{i}.png", compress_level=compress_level, pnginfo=info)
    return artist.parent


def test_the_same_pixels_in_a_re_saved_file_are_the_same_artworks(tmp_path):
    """Run 1 on the artist's portfolio; run 2 on the same images re-saved losslessly (another zlib level,
    a metadata comment): every pixel the model reads is identical, but SHA-256 of the file bytes differs,
    so the lifetime ledger sees new artworks and run 2 gets the whole budget again."""
    from fedstyle_secure.data.images import decode_image

    original = _png_portfolio(tmp_path / "a", compress_level=9)
    resaved = _png_portfolio(tmp_path / "b", compress_level=1, comment="exported by the artist's photo app")
    for name in ("0.png", "1.png"):  # the training input is identical
        assert np.array_equal(
            decode_image(original / "artist_00" / name, 64), decode_image(resaved / "artist_00" / name, 64)
        )
    first = _open(tmp_path, "1", original, 4.0, budget_epsilon=4.0)
    assert first is not None and _take_part_at(first, FakeSession(), 4.0) == ["contribute", "publish"]
    second = _open(tmp_path, "2", resaved, 4.0, budget_epsilon=4.0)
    assert second is not None
    assert second.refusal is not None and LIFETIME in second.refusal, "the re-saved portfolio's budget is whole again"


# ---------------------------------------------------------------- 5. harnesses and the user's ledger


def test_no_script_runs_dp_artists_on_the_users_lifetime_ledger():
    """scripts/bench_bytes.py (README: `python scripts/bench_bytes.py --artists 4 --modes none,ckks`, DP
    epsilon 8 by default) builds ClientConfig(state_dir=...) for synthetic artists without a
    lifetime_ledger: they record in the user's real ledger, and since write_synthetic_folder(seed=0) writes
    byte-identical PNGs every time, the SECOND mode's federation is refused outright (measured: "1 earlier
    run(s) spent epsilon 7.96 on these artworks ... would exceed the lifetime budget epsilon=8")."""
    offenders = []
    for script in sorted((REPO / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ClientConfig":
                names = {k.arg for k in node.keywords}
                if "state_dir" in names and "lifetime_ledger" not in names:
                    offenders.append(f"{script.name}:{node.lineno}")
    assert offenders == [], f"DP-capable trial artists on the user's lifetime ledger: {offenders}"


def test_a_lifetime_ledger_path_in_a_shared_folder_does_not_chmod_that_folder(tmp_path):
    """FEDSTYLE_LIFETIME_LEDGER=/tmp/ledger.sqlite (or client.lifetime_ledger = "~/ledger.sqlite", or
    `fedstyle lifetime --ledger /tmp/copy.sqlite`, the read-only view) runs private_database, which
    chmods the ledger's PARENT folder to 0700: as root that turned /tmp from 1777 into 0700 during this
    review (restored by hand); as another user it is a ConfigError "cannot restrict its permissions"."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    LifetimeLedger(shared / "lifetime-ledger.sqlite")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777, oct(stat.S_IMODE(shared.stat().st_mode))


def test_the_read_only_lifetime_view_writes_nothing(tmp_path):
    """`fedstyle lifetime --ledger FILE` is documented read-only; on an SQLite file that is not a lifetime
    ledger (a wrong path, another tool's database) it creates the runs/artworks tables in it."""
    import sqlite3

    from fedstyle_secure.cli.main import main

    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE notes (x TEXT)").connection.commit()
    main(["lifetime", "--ledger", str(other)])
    tables = {r[0] for r in sqlite3.connect(other).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"notes"}, tables


# ---------------------------------------------------------------- 7. a reservation no release used


def test_a_server_cannot_burn_the_lifetime_budget_with_a_phase_it_never_lets_run(tmp_path):
    """admit() records the run's epsilon AFTER the planned charge in the lifetime ledger before the
    mechanism runs.  A server that sends the final publish plan and then fails the broadcast download
    (or ends the run) leaves that reservation in the lifetime ledger for good, although nothing was
    released and the run's own ledger and reports never held it: the artworks' lifetime budget is spent
    for nothing, and the artist's next federation on them is refused."""
    data = fake_portfolio(tmp_path)
    privacy = _open(tmp_path, "1", data, 4.0, budget_epsilon=4.0)
    assert privacy is not None and privacy.refusal is None and privacy.lifetime is not None
    final = _plan(2, pb.ROUND_KIND_FINAL, "publish", 1, _announced_at(4.0))
    assert privacy.admit(cast(ArtistSession, FakeSession()), final)  # then the broadcast never comes
    recorded = {r.spend.run_key: r.spend.epsilon for r in privacy.lifetime.ledger.runs()}
    spent = privacy.ledger.epsilon_spent
    assert recorded[privacy.lifetime.run_key] == pytest.approx(spent), (
        f"lifetime ledger holds {recorded[privacy.lifetime.run_key]:.3f} for a run that spent {spent:.3f}"
    )


# ---------------------------------------------------------------- 8. a refusal that depends on the size


def _open_with(tmp_path: Path, state: str, data: Path, n: int, ledger: Path) -> ArtistPrivacy | None:
    config = ClientConfig(
        keys=tmp_path, data=data, state_dir=tmp_path / f"state-{state}", budget_epsilon=4.0, lifetime_ledger=ledger
    )
    views = np.random.default_rng(5).normal(size=(3, n, FEATURES)).astype(np.float32)
    first = _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 1, _announced_at(4.0))
    return ArtistPrivacy.open(config, _keys(), _client(DpConfig(epsilon=4.0), views), first)


@pytest.mark.parametrize("left", [0.38, 0.7])
def test_whether_a_new_run_is_refused_does_not_depend_on_the_portfolio_size(tmp_path, left):
    """The new run's count was checked against the lifetime after its planning size m was drawn, at the
    artist's delta, default_delta(m): 1e-5 up to m = 10^4, 1e-6 above, so the count costs 0.351 or 0.407.
    With 0.38 of the lifetime left (the server chose the earlier runs' epsilons), a portfolio of 40 took
    part and one of 20,000 was refused -- a refusal that charges and records nothing (an uncharged bit
    on n; one per new state_dir).  Both sizes now get the same answer, whatever is left."""
    outcomes = {}
    for n in (40, 20_000):
        ledger = tmp_path / f"lifetime-{n}.sqlite"
        data = fake_portfolio(tmp_path / str(n))
        from fedstyle_secure.data.images import artwork_keys

        earlier = LifetimeRun(LifetimeLedger(ledger), "earlier", ARTIST, "run-0", "/old", artwork_keys(data), 4.0, 1e-3)
        assert earlier.charge(4.0 - left, 1e-5).allowed
        privacy = _open_with(tmp_path / str(n), "new", data, n, ledger)
        assert privacy is not None
        outcomes[n] = privacy.refusal
    assert outcomes[40] == outcomes[20_000], outcomes


# ---------------------------------------------------------------- second red-team review (2026-12-02), its tests
# A helper attacked the mended lifetime ledger (commit a381b0e); each test below failed on it.


def _announced_with_delta(epsilon: float, delta: float) -> pb.DpParameters:
    return pb.DpParameters(epsilon_budget=epsilon, clip_norm=1.0, accountant="prv", delta=delta)


def _open_announcing(
    tmp_path: Path, state: str, data: Path, announced: pb.DpParameters, **fields
) -> ArtistPrivacy | None:
    """An artist process on ``<tmp_path>/state-<state>`` under a federation announcing ``announced``."""
    config = ClientConfig(keys=tmp_path, data=data, state_dir=tmp_path / f"state-{state}", **fields)
    views = np.random.default_rng(5).normal(size=(3, N, FEATURES)).astype(np.float32)
    first = _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 1, announced)
    return ArtistPrivacy.open(config, _keys(), _client(DpConfig(epsilon=announced.epsilon_budget), views), first)


# ---------------------------------------------------------------- 1. client.budget_delta above 1e-5


def test_an_artist_with_its_own_budget_delta_above_the_cap_is_not_refused_on_its_first_run(tmp_path):
    """``client.budget_delta = 1e-3`` is a valid setting for a 40-artwork portfolio (below 1/n = 0.025;
    ``artist_delta`` uses it as is).  ``_largest_run_delta`` takes min(dp.delta, budget_delta, 1e-5) =
    1e-5, so the default lifetime delta is 10 x 1e-5 = 1e-4, and the run's very first charge (its count,
    at delta 1e-3) is above it: the artist is refused "lifetime privacy budget" on a ledger that holds
    nothing, in every federation, until it also sets client.lifetime_delta."""
    data = fake_portfolio(tmp_path)
    first = _open(tmp_path, "1", data, 4.0, budget_epsilon=4.0, budget_delta=1e-3)
    assert first is not None
    assert first.refusal is None, f"first run on an empty lifetime ledger refused: {first.refusal}"
    assert _take_part_at(first, FakeSession(), 4.0) == ["contribute", "publish"]


# ---------------------------------------------------------------- 2. a stricter delta in a later run


def test_a_later_run_with_a_stricter_delta_is_not_refused_by_the_lifetime_delta(tmp_path):
    """The default lifetime delta is 10 x the CURRENT run's largest delta, min(announced, budget_delta,
    1e-5).  Run 1 (no delta announced) records delta 1e-5; run 2's federation announces delta 1e-6 (a
    stricter, honest choice), so the lifetime delta becomes 1e-5 and 1e-5 + 1e-6 exceeds it: run 2 is
    refused at start although the artist gave a generous client.lifetime_epsilon (24, 3 x what run 1
    spent) and only 1 of 10 runs' worth of delta is used.  The log blames "the lifetime budget
    epsilon=24, delta=1e-05", which the user never chose."""
    data = fake_portfolio(tmp_path)
    first = _open(tmp_path, "1", data, 4.0, budget_epsilon=4.0, lifetime_epsilon=24.0)
    assert first is not None and _take_part_at(first, FakeSession(), 4.0) == ["contribute", "publish"]
    second = _open_announcing(
        tmp_path, "2", data, _announced_with_delta(4.0, 1e-6), budget_epsilon=4.0, lifetime_epsilon=24.0
    )
    assert second is not None
    assert second.refusal is None, f"run 2 (stricter delta) refused at start: {second.refusal}"


# ---------------------------------------------------------------- 3. the fresh path is never bound


def _crash_after_the_count_is_recorded(monkeypatch) -> None:
    """The artist process dies after open() recorded the new run's count in the lifetime ledger and
    before _restore() kept the ledger (a kill, an OOM, a power cut): the state_dir holds the planning
    size and the lifetime key, the lifetime ledger the key with 0 committed charges."""

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(ArtistPrivacy, "_restore", crash)


def test_a_state_rolled_back_to_its_planning_size_cannot_release_again_under_the_same_key(tmp_path, monkeypatch):
    """A state_dir whose ledger is not kept yet (planning size and lifetime key only: a crash between the
    count's lifetime record and the state's save) is backed up; the run then completes (3 charges
    committed under its key).  The backup is restored: open() takes the "fresh ledger" path, where
    ``lifetime.bind`` is never called, re-charges under the SAME key (``_decide`` keeps the max, 3.97,
    allowed) and redoes DP-SGD and the final release with fresh noise.  The artworks spent ~7.9 of a
    lifetime 4; the lifetime ledger records 3.97 and 3 charges."""
    data, keys = fake_portfolio(tmp_path), _keys()
    with monkeypatch.context() as m:
        _crash_after_the_count_is_recorded(m)
        with pytest.raises(KeyboardInterrupt):
            _open(tmp_path, "1", data, 4.0, keys, budget_epsilon=4.0)
    backup = tmp_path / "backup"
    shutil.copytree(tmp_path / "state-1", backup)
    privacy = _open(tmp_path, "1", data, 4.0, keys, budget_epsilon=4.0)  # the restart
    assert privacy is not None and privacy.refusal is None and privacy.lifetime is not None
    assert _take_part_at(privacy, FakeSession(), 4.0) == ["contribute", "publish"]
    assert _released_after_restoring(tmp_path, backup, data, keys) == []


def test_a_copy_of_a_state_with_no_ledger_yet_is_refused_like_any_copy(tmp_path, monkeypatch):
    """The same crash window, then the state_dir is copied and both folders run (the copy-beside-the-
    original attack of the first review, which ``bind`` refuses once a ledger is kept): both take the
    fresh path under one key, and the lifetime ledger counts one run for two full releases."""
    data, keys = fake_portfolio(tmp_path), _keys()
    with monkeypatch.context() as m:
        _crash_after_the_count_is_recorded(m)
        with pytest.raises(KeyboardInterrupt):
            _open(tmp_path, "1", data, 4.0, keys, budget_epsilon=4.0)
    shutil.copytree(tmp_path / "state-1", tmp_path / "state-2")
    original = _open(tmp_path, "1", data, 4.0, keys, budget_epsilon=4.0)
    assert original is not None and _take_part_at(original, FakeSession(), 4.0) == ["contribute", "publish"]
    try:
        copy = _open(tmp_path, "2", data, 4.0, keys, budget_epsilon=4.0)
    except ConfigError:
        return  # the fix
    assert copy is not None
    acted = _take_part_at(copy, FakeSession(), 4.0) if copy.refusal is None else []
    assert acted == [], f"the copy released {acted} too, under the original's run key (one row in the ledger)"


# ---------------------------------------------------------------- 4. a corrupt or foreign ledger file


@pytest.mark.parametrize("content", ["garbage", "first-version"])
def test_an_unreadable_lifetime_ledger_is_a_config_error_naming_it(tmp_path, content):
    """A DP artist whose lifetime ledger is not a readable one (random bytes: a truncated copy, a disk
    error; or a ledger of the first version, commit 362ca74, without the lifetime_epsilon and charges
    columns) raises a raw ``sqlite3.DatabaseError`` / ``OperationalError`` out of ArtistPrivacy.open:
    ``fedstyle client`` (whose main() catches FedStyleError and OSError only) and every Flower message
    end in a traceback that names neither the file nor the setting (client.lifetime_ledger /
    $FEDSTYLE_LIFETIME_LEDGER).  ``fedstyle lifetime`` reports the same file cleanly."""
    import sqlite3

    ledger = tmp_path / "ledger.sqlite"
    if content == "garbage":
        ledger.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    else:
        db = sqlite3.connect(ledger)
        db.execute(
            "CREATE TABLE runs (run_key TEXT PRIMARY KEY, artist_id TEXT NOT NULL, run_id TEXT NOT NULL, "
            "state_dir TEXT NOT NULL, epsilon REAL NOT NULL, delta REAL NOT NULL, updated TEXT NOT NULL)"
        )
        db.execute(
            "CREATE TABLE artworks (run_key TEXT NOT NULL, artwork TEXT NOT NULL, PRIMARY KEY (run_key, artwork))"
        )
        db.commit()
        db.close()
    data = fake_portfolio(tmp_path)
    with pytest.raises(ConfigError, match="ledger"):
        _open(tmp_path, "1", data, 4.0, budget_epsilon=4.0, lifetime_ledger=ledger)


# ---------------------------------------------------------------- 5. the non-DP check's cost


def test_a_federation_without_dp_decodes_the_portfolio_once_not_once_per_recorded_run(tmp_path, monkeypatch):
    """``_lifetime_ledger_holds`` evaluates ``_portfolio(config)`` inside its ``any(...)`` generator: the
    whole portfolio is decoded again for every run the ledger records that does not hold these artworks.
    A Flower artist of a non-DP federation pays it at every message; an artist whose ledger records 30 runs
    of its other portfolios (or of other artists on the machine) and who has 1,000 paintings (~2.5 s at
    the review's 0.06 s per 24) waits ~75 s per message."""
    ledger_path = tmp_path / "ledger.sqlite"
    ledger = LifetimeLedger(ledger_path)
    for i in range(5):  # runs on other artworks
        LifetimeRun(ledger, f"other{i}", ARTIST, "run", f"/s{i}", frozenset({f"x{i}"}), 8.0, 1e-3).charge(1.0, 1e-5)
    data = fake_portfolio(tmp_path)
    calls = []
    real = images_module.load_image_folder

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(images_module, "load_image_folder", counting)
    config = ClientConfig(keys=tmp_path, data=data, state_dir=tmp_path / "state", lifetime_ledger=ledger_path)
    assert not privacy_module._lifetime_ledger_holds(config)
    assert len(calls) <= 1, f"the portfolio was decoded {len(calls)} times for one message"


# ---------------------------------------------------------------- 6. a small announced epsilon caps every later run


def test_one_federation_announcing_a_small_epsilon_does_not_silently_cap_every_later_one(tmp_path):
    """Neither lifetime_epsilon nor budget_epsilon set (the documented defaults).  Federation 1's server
    announces epsilon 1: the lifetime ledger records limit 1 for these artworks.  Federation 2, another
    (honest) server announcing 8, now gets min(8, 1) = 1: the artist is refused at start, and so is every
    later federation on these artworks, with a refusal that names no setting ("... above the artist's
    lifetime budget"; the log: "lifetime budget epsilon=1").  The fix of hole 2 turned "the server raises
    the limit" into "the first server lowers it for good": either the artist chooses a lifetime budget,
    or the refusal must say which setting lifts it."""
    data = fake_portfolio(tmp_path)
    first = _open(tmp_path, "1", data, 1.0)
    assert first is not None and first.refusal is None
    _take_part_at(first, FakeSession(), 1.0)
    second = _open(tmp_path, "2", data, 8.0)
    assert second is not None
    if second.refusal is not None:
        assert LIFETIME in second.refusal
        assert "lifetime_epsilon" in second.refusal, (
            f"refused by a limit an earlier server's announcement set, with nothing saying how to lift it: "
            f"{second.refusal!r}"
        )


def test_a_locked_lifetime_ledger_says_it_is_locked(tmp_path):
    """Another process holds the ledger's write lock longer than SQLite's 5 s wait (the user inspecting it
    in the sqlite3 shell inside a transaction, a backup tool, a stuck artist process).  ``transaction()``
    runs ROLLBACK after the failed BEGIN IMMEDIATE, which raises "cannot rollback - no transaction is
    active" and hides the real cause ("database is locked"): the artist (every Flower message) dies with
    a message pointing nowhere near the lifetime ledger."""
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    LifetimeLedger(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Exception) as raised:
            LifetimeLedger(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "locked" in str(raised.value) and isinstance(raised.value, ConfigError), repr(raised.value)


# ---------------------------------------------------------------- 7. "~" in client.lifetime_ledger


def test_a_lifetime_ledger_in_the_home_folder_is_one_ledger_for_every_client_toml(tmp_path, monkeypatch):
    """``lifetime_ledger = "~/fedstyle/lifetime.sqlite"`` in client.toml (the way a user names one ledger
    for all runs) is not expanded: ``_relative`` makes it ``<client.toml's folder>/~/fedstyle/...``, and
    ``LifetimeLedger`` creates the folders silently.  Each run's client.toml lives in its own folder (a new
    federation needs a fresh state_dir, so users copy the run folder), so each run gets a fresh ledger at
    zero: the very attack the lifetime ledger closes, for the user who configured a shared ledger."""
    from fedstyle_secure.transport.config import load_client_config

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    paths = []
    for run in ("run1", "run2"):
        folder = tmp_path / run
        folder.mkdir()
        (folder / "client.toml").write_text(
            '[client]\nkeys = "keys"\ndata = "portfolio"\nstate_dir = "state"\n'
            'budget_epsilon = 4.0\nlifetime_ledger = "~/fedstyle/lifetime.sqlite"\n'
        )
        paths.append(load_client_config(folder / "client.toml").lifetime_ledger)
    assert paths[0] == paths[1] == home / "fedstyle" / "lifetime.sqlite", paths


# ---------------------------------------------------------------- 8. the size-independent check is not atomic


@pytest.mark.parametrize("left", [0.72])
def test_a_run_charging_between_the_room_check_and_the_count_cannot_make_the_refusal_tell_the_size(
    tmp_path, monkeypatch, left
):
    """The room check before the size is drawn (room for the count at delta 1e-12, ~0.66) and the count's actual
    charge (at default_delta(m): 0.351 up to m = 10^4, 0.407 above) are two transactions.  Another run on
    these artworks (a second federation the same adversary starts at the same moment) charging its count
    (0.35) in between leaves 0.37: the portfolio of 40 is admitted, the one of 20,000 refused -- an
    uncharged refusal that tells n > 10^4, the bit the size-independence rule exists to hide."""
    from fedstyle_secure.data.images import artwork_keys
    from tests.test_lifetime_ledger import _open_with

    real_room = privacy_module._lifetime_has_room
    outcomes = {}
    for n in (40, 20_000):
        ledger = tmp_path / f"lifetime-{n}.sqlite"
        data = fake_portfolio(tmp_path / str(n))
        keys = artwork_keys(data)
        earlier = LifetimeRun(LifetimeLedger(ledger), "earlier", ARTIST, "run-0", "/old", keys, 4.0, 1e-3)
        assert earlier.charge(4.0 - left, 1e-5).allowed
        rival = LifetimeRun(LifetimeLedger(ledger), "rival", ARTIST, "run-r", "/rival", keys, 4.0, 1e-3)

        def room_then_rival(lifetime, needs, rival=rival):
            room = real_room(lifetime, needs)
            assert rival.charge(0.35, 1e-5).allowed  # the other new run's count lands now
            return room

        monkeypatch.setattr(privacy_module, "_lifetime_has_room", room_then_rival)
        privacy = _open_with(tmp_path / str(n), "new", data, n, ledger)
        assert privacy is not None
        outcomes[n] = privacy.refusal
    assert outcomes[40] == outcomes[20_000], outcomes


def test_a_resumed_run_over_a_lowered_lifetime_budget_still_resends_but_charges_nothing_new(tmp_path):
    """A resumed run whose lifetime budget is spent by now (here: the artist lowered
    client.lifetime_epsilon below what the run spent) retired at start, even from a resend, which costs
    nothing (a helper's note, 2026-12-02).  What its kept ledger holds is recorded as a fact; it resends
    its stored contribution and retires at its next charge."""
    data, keys = fake_portfolio(tmp_path), _keys()
    privacy = _artist(tmp_path, "1", data, keys)
    assert privacy is not None
    first = _plan(1, pb.ROUND_KIND_TRAIN, "contribute", 1, _announced())
    assert privacy.admit(cast(ArtistSession, FakeSession()), first)
    sent = privacy.contribution(cast(ArtistSession, FakeSession()), first, lambda: _broadcast(1))
    resumed = _artist(tmp_path, "1", data, keys, lifetime_epsilon=0.01)  # a restart, with a lower limit
    assert resumed is not None and resumed.refusal is None and resumed.lifetime is not None
    server = FakeSession()
    assert resumed.admit(cast(ArtistSession, server), first)  # the resend: nothing new is charged
    again = resumed.contribution(cast(ArtistSession, server), first, lambda: _broadcast(1))
    assert all(np.array_equal(sent[k], again[k]) for k in sent)
    final = _plan(2, pb.ROUND_KIND_FINAL, "publish", 1, _announced())
    assert not resumed.admit(cast(ArtistSession, server), final)
    assert [LIFETIME in w.reason for w in server.withdrawals] == [True]
    recorded = {r.spend.run_key: r.spend.epsilon for r in resumed.lifetime.ledger.runs()}
    assert recorded[resumed.lifetime.run_key] == pytest.approx(resumed.ledger.epsilon_spent)


# ---------------------------------------------------------------- a user's walkthrough (2026-12-02), its tests


def test_another_database_given_as_the_lifetime_ledger_is_refused_untouched(tmp_path):
    """``lifetime_ledger`` pointed at another SQLite file (a server's state, here a stand-in) was taken
    over: tables added, its mode changed to 0600 (a helper's walkthrough)."""
    import sqlite3

    other = tmp_path / "state.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE rounds (x TEXT)").connection.commit()
    other.chmod(0o644)
    with pytest.raises(ConfigError, match="is not a lifetime ledger"):
        LifetimeLedger(other)
    tables = {r[0] for r in sqlite3.connect(other).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"rounds"} and stat.S_IMODE(other.stat().st_mode) == 0o644


def test_a_lifetime_ledger_inside_the_runs_state_dir_is_refused_before_the_client_connects(tmp_path, capsys):
    """A ledger inside ``client.state_dir`` starts again at zero with every new run's fresh state_dir: the
    original attack.  And a ledger problem was found only after the artist joined, which crashed it
    mid-round and failed the whole federation (a walkthrough: a relative $FEDSTYLE_LIFETIME_LEDGER).
    ``fedstyle client`` now checks the ledger before it connects, exit 2 naming the field."""
    from fedstyle_secure.cli.main import main

    data = fake_portfolio(tmp_path)
    config = tmp_path / "client.toml"
    config.write_text(
        f'[client]\nkeys = "no-keys"\ndata = "{data}"\nserver = "127.0.0.1:9"\nstate_dir = "state"\n'
        'lifetime_ledger = "state/lifetime.sqlite"\n'
    )
    assert main(["client", "--config", str(config)]) == 2
    assert "client.lifetime_ledger" in capsys.readouterr().err and not (tmp_path / "state").exists()


def test_a_refusal_for_a_federation_without_dp_does_not_send_the_ledgers_path(tmp_path, lifetime_ledger):
    """The reason a DP artist gives a server without DP named its lifetime ledger's path (a home folder,
    a user name): it stays in the artist's own log."""
    data = fake_portfolio(tmp_path)
    first = _artist(tmp_path, "1", data)
    assert first is not None and _take_part(first, FakeSession()) == ["contribute", "publish"]
    config = ClientConfig(keys=tmp_path, data=data, state_dir=tmp_path / "state-nodp")
    no_dp = pb.RoundPlan(round_id=1, kind=pb.ROUND_KIND_TRAIN, phase="contribute", total_rounds=1)
    views = np.random.default_rng(5).normal(size=(3, N, FEATURES)).astype(np.float32)
    refused = ArtistPrivacy.open(config, _keys(), _client(DpConfig(epsilon=EPSILON), views), no_dp)
    assert refused is not None and refused.refusal is not None and "lifetime ledger" in refused.refusal
    assert str(lifetime_ledger.parent) not in refused.refusal


def test_a_lifetime_ledger_another_artist_is_creating_right_now_is_opened(tmp_path):
    """Loopback artists (threads) share one trial ledger: one had created the file (SQLite's header
    written, no table yet) when another, seeing a non-empty file, refused it as "not a lifetime ledger
    (tables [])" (measured in a full run).  That state, made here directly: a database without tables
    is one being created, not another program's."""
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")  # what the creating process has written so far
    db.close()
    assert path.stat().st_size > 0
    assert LifetimeLedger(path).runs() == []


def test_a_run_from_before_the_lifetime_ledger_can_be_recorded_and_then_counts(tmp_path, capsys, lifetime_ledger):
    """Runs that finished before there was a lifetime ledger are not in it (a red-team note): their spend
    would be whole again.  ``fedstyle lifetime --record-run STATE_DIR --data DIR`` records one from its
    state_dir (once); the next run on those artworks then counts it."""
    from fedstyle_secure.cli.main import main

    data = fake_portfolio(tmp_path)
    old = _artist(tmp_path, "1", data, lifetime_ledger=tmp_path / "elsewhere.sqlite")  # stands for "before"
    assert old is not None and _take_part(old, FakeSession()) == ["contribute", "publish"]
    record = ["lifetime", "--data", str(data), "--record-run", str(tmp_path / "state-1"), "--json"]
    assert main(record) == 0
    assert "recorded (epsilon" in capsys.readouterr().err
    assert main(record) == 0 and "already recorded" in capsys.readouterr().err
    assert [r.spend.epsilon for r in LifetimeLedger(lifetime_ledger).runs()] == [
        pytest.approx(old.ledger.epsilon_spent)
    ]
    second = _artist(tmp_path, "2", data)
    assert second is not None and second.refusal is not None and LIFETIME in second.refusal
    assert main(["lifetime", "--record-run", str(tmp_path / "state-1")]) == 2  # which artworks: --data
