"""What an artist checks in every plan before acting on it (the round's kind, the run's id, the value
range), and what it sends whatever the broadcast (a vector inside the range).

A dishonest server announcing the set-up round again under a later round id:

The set-up round sums each artist's feature moments (per-feature mean and mean square of its
artworks, and a count of 1): the same values every time they are computed, with no DP noise.
Every artist-side guard -- one CKKS decryption per round, one unmasking per round, never an earlier
round -- holds within a round id.  So before the defence a server could run the set-up round as
round 0 with every artist and again as round 1 without the victim (a "retirement"), and read the
victim's exact moments from the difference of the two sums; the red-team review of 2026-11-30
played it through the real ``CkksClient`` and ``MaskingClient`` and recovered them to 1e-5.

Here the REAL :class:`~fedstyle_secure.transport.artist.runner.ArtistRunner` with real key files,
real TenSEAL encryption and the real masking client acts on the server's plans.  Named fakes: the
artist's end of the wire (:class:`RecordingWire`, which records every call and answers nothing)
and the artist's model (:class:`FakeMoments`, whose only method the set-up round calls is the real
:func:`~fedstyle_secure.federation.strategy.feature_moments` of fixed features).  Fails without
``check_round_kind`` in ``ArtistRunner.act``: the artist contributes to the second set-up round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.client import Broadcast, StyleClient
from fedstyle_secure.federation.masking_session import session_id
from fedstyle_secure.federation.round_layout import FederationShape, round_value_range
from fedstyle_secure.federation.strategy import algorithm_spec, feature_moments
from fedstyle_secure.models.factory import EncoderConfig, make_model
from fedstyle_secure.models.inputs import InputBank
from fedstyle_secure.models.params import get_flat_params
from fedstyle_secure.secure.ckks.decryption import COMMITTEE_SIZE
from fedstyle_secure.secure.keys.keystore import load_artist_keys
from fedstyle_secure.secure.masking.summation import DEFAULT_THRESHOLD
from fedstyle_secure.training.local import LocalConfig, LocalData, LocalResult
from fedstyle_secure.transport.artist.channel import ArtistSession
from fedstyle_secure.transport.artist.plan_checks import check_round_kind, check_run_id
from fedstyle_secure.transport.artist.runner import ArtistRunner
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.wire import pb
from tests.fakes import fake_portfolio
from tests.servers import ARTISTS

FEATURE_DIM = 16
TOTAL_ROUNDS = 3
ARTIST = ARTISTS[0]


class FakeMoments:
    """Fake (named): the artist's model, reduced to what a set-up round asks of it."""

    spec = algorithm_spec("fedstyle")
    retired_reason: str | None = None

    def __init__(self, features: np.ndarray) -> None:
        self.features = features

    def shape(self) -> FederationShape:
        return FederationShape(feature_dim=FEATURE_DIM, embedding_dim=8, public_count=4, model=None)

    def feature_moments(self) -> dict[str, np.ndarray]:
        return feature_moments(self.features)


class RecordingWire:
    """Fake (named): the artist's end of the channel; records the name of every call it gets."""

    def __init__(self) -> None:
        self.artist_id, self.roster, self.calls = ARTIST, ARTISTS, list[str]()

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append(name)

        return record


def _runner(keys: Path, tmp_path: Path) -> ArtistRunner:
    """The real artist runner over :class:`FakeMoments` of nine fixed artworks."""
    features = np.random.default_rng(3).normal(0.5, 0.2, (9, FEATURE_DIM)).astype(np.float32)
    return ArtistRunner(
        ClientConfig(keys=keys, data=fake_portfolio(tmp_path), artist=ARTIST),
        load_artist_keys(keys, ARTIST),
        client=cast(StyleClient, FakeMoments(features)),
    )


def _setup_plan(round_id: int, mode: str) -> pb.RoundPlan:
    low, high = round_value_range("setup")
    plan = pb.RoundPlan(
        round_id=round_id,
        kind=pb.ROUND_KIND_SETUP,
        secure_mode=mode,
        phase="contribute" if mode == "ckks" else "advertise",
        participants=list(ARTISTS),
        total_rounds=TOTAL_ROUNDS,
        value_low=low,
        value_high=high,
        quorum=2,
        committee_size=COMMITTEE_SIZE,
    )
    if mode == "secagg":
        plan.masking.CopyFrom(
            pb.MaskingParameters(session_id=session_id(round_id, 0x5EED), threshold=DEFAULT_THRESHOLD)
        )
    return plan


@pytest.mark.parametrize("mode", ["ckks", "secagg"])
def test_an_artist_sums_its_feature_moments_in_round_zero_only(keys: Path, tmp_path: Path, mode: str) -> None:
    runner = _runner(keys, tmp_path)
    wire = RecordingWire()
    runner.act(cast(ArtistSession, wire), _setup_plan(0, mode))  # the set-up round: the artist takes part
    assert wire.calls == (["upload"] if mode == "ckks" else ["send_masking"])
    wire.calls.clear()
    with pytest.raises(ConfigError, match="round 1: the plan announces a setup round, but round 1 .* is a train round"):
        runner.act(cast(ArtistSession, wire), _setup_plan(1, mode))
    assert wire.calls == []  # nothing computed into, or sent for, the second set-up round


@pytest.mark.parametrize(
    ("round_id", "kind", "refused"),
    [
        (0, pb.ROUND_KIND_SETUP, False),
        (1, pb.ROUND_KIND_TRAIN, False),
        (TOTAL_ROUNDS, pb.ROUND_KIND_TRAIN, False),
        (TOTAL_ROUNDS + 1, pb.ROUND_KIND_FINAL, False),
        (TOTAL_ROUNDS + 1, pb.ROUND_KIND_SETUP, True),
        (2, pb.ROUND_KIND_FINAL, True),
        (0, pb.ROUND_KIND_TRAIN, True),
        (1, pb.ROUND_KIND_UNSPECIFIED, True),
    ],
)
def test_a_plan_round_kind_must_be_the_one_the_round_rules_give(round_id: int, kind: int, refused: bool) -> None:
    plan = pb.RoundPlan(round_id=round_id, kind=cast(pb.RoundKind, kind), total_rounds=TOTAL_ROUNDS)
    if refused:
        with pytest.raises(ConfigError, match=f"round {round_id}: the plan announces a"):
            check_round_kind(plan)
    else:
        assert pb.RoundKind.Name(kind).removeprefix("ROUND_KIND_").lower() == check_round_kind(plan)


def test_an_artist_keeps_the_run_id_of_its_first_plan() -> None:
    """The run id is signed into every epsilon report (an audit tells one run's reports from
    another's): a plan of another run, or with a malformed id, is refused."""
    run, other = "0" * 32, "f" * 32
    assert check_run_id(pb.RoundPlan(round_id=1, run_id=run), None) == run
    assert check_run_id(pb.RoundPlan(round_id=2, run_id=run), run) == run
    with pytest.raises(ConfigError, match=f"round 2: the plan announces run '{other}', but this artist's run is"):
        check_run_id(pb.RoundPlan(round_id=2, run_id=other), run)
    with pytest.raises(ConfigError, match="is not 32 hex digits"):
        check_run_id(pb.RoundPlan(round_id=1, run_id="../../" + "0" * 26), None)


def test_a_masking_session_of_another_value_range_is_refused_before_anything_is_sent(
    keys: Path, tmp_path: Path
) -> None:
    """An artist sits a masking session out when its vector does not fit the session's value range,
    so a server announcing a range of its choice in fresh sessions of one round ran a binary search
    on the artist's exact values (red-team review: a set-up round's extreme feature moments to 1e-9
    in 80 sessions).  The range is now the round kind's or the plan is refused."""
    runner = _runner(keys, tmp_path)
    wire = RecordingWire()
    probe = _setup_plan(0, "secagg")
    probe.value_high = 289.5  # does the largest entry fit below 289.5?
    with pytest.raises(ConfigError, match=r"value range \[-1024, 289.5\] is not a setup round's \[-1024, 1024\]"):
        runner.act(cast(ArtistSession, wire), probe)
    assert wire.calls == []


class BroadcastingWire(RecordingWire):
    """Fake (named): :class:`RecordingWire` that also hands out the server's broadcast."""

    def __init__(self, broadcast: Broadcast) -> None:
        super().__init__()
        self.sent = broadcast

    def broadcast(self, round_id: int, max_bytes: int) -> tuple[Broadcast, None]:
        return self.sent, None


def _style_client(portfolio: int) -> StyleClient:
    """A real non-DP StyleClient (residual head, the whole model trained) of one artist of the roster,
    over random style features standing in for the frozen backbone's (``portfolio`` seeds them)."""
    rng = np.random.default_rng(portfolio)
    bank = InputBank(views=rng.normal(size=(3, 20, FEATURE_DIM)).astype(np.float32), kind="features")
    public = InputBank(views=rng.normal(size=(3, 12, FEATURE_DIM)).astype(np.float32), kind="features")
    torch.manual_seed(portfolio)
    model = make_model(EncoderConfig(embedding_dim=8, hidden_dim=16), bank, public, len(ARTISTS))
    return StyleClient(
        client_id=ARTIST,
        data=LocalData(bank=bank, labels=np.zeros(len(bank), dtype=np.int64)),
        spec=algorithm_spec("fedstyle"),
        model=model,
        config=LocalConfig(epochs=1, batch_size=8),
        public_inputs=public.take(0, np.arange(len(public))),
        n_artists=len(ARTISTS),
        rng=np.random.default_rng([portfolio, 0]),
    )


def _train_plan(round_id: int) -> pb.RoundPlan:
    low, high = round_value_range("train")
    plan = pb.RoundPlan(
        round_id=round_id,
        kind=pb.ROUND_KIND_TRAIN,
        secure_mode="secagg",
        phase="advertise",
        participants=list(ARTISTS),
        total_rounds=TOTAL_ROUNDS,
        value_low=low,
        value_high=high,
        quorum=2,
    )
    plan.masking.CopyFrom(pb.MaskingParameters(session_id=session_id(round_id, 0x5EED), threshold=DEFAULT_THRESHOLD))
    return plan


@pytest.mark.parametrize("portfolio", [0, 1, 2])
def test_a_broadcast_at_the_edge_of_the_range_cannot_make_an_artist_sit_out(
    keys: Path, tmp_path: Path, portfolio: int
) -> None:
    """Without DP an artist whose trained values left the contribution range sat the masked round out
    (its codec refuses them), so a server broadcasting parameters at the range's edge learned from who
    joined one bit of each artist's data per round (red-team review, 2026-11-30; measured before the
    defence on these portfolios: 299, 272 and 112 of 507 trained entries left [-8, 8], and the artist sent
    nothing).  The artist now clips into the range and takes part whatever its data."""
    client = _style_client(portfolio)
    low, high = round_value_range("train")
    edge = np.where(get_flat_params(client.model) >= 0, high, low).astype(np.float32)  # accepted: inside the range
    runner = ArtistRunner(
        ClientConfig(keys=keys, data=fake_portfolio(tmp_path), artist=ARTIST),
        load_artist_keys(keys, ARTIST),
        client=client,
    )
    wire = BroadcastingWire(Broadcast(1, edge, None, np.zeros((len(ARTISTS), 8)), np.zeros(len(ARTISTS), dtype=bool)))
    runner.act(cast(ArtistSession, wire), _train_plan(1))
    assert wire.calls == ["send_masking"]  # it advertised its keys: the round's vector fit the range
    trained = get_flat_params(client.model)
    assert np.all((trained >= low) & (trained <= high))  # and its own model is what it contributed


def test_a_diverged_local_fit_contributes_the_rounds_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fit whose parameters end non-finite (e.g. steered into overflow) contributes the round's
    starting entries instead: a NaN would be refused by the codec or the server, one more bit of the
    artist's data.  Fake (named): ``train_local`` replaced by one that writes NaN into the model."""
    import fedstyle_secure.federation.client as client_module

    def diverging(model: torch.nn.Module, *args: Any) -> LocalResult:
        with torch.no_grad():
            next(iter(model.parameters())).fill_(float("nan"))
        return LocalResult()

    client = _style_client(0)
    start = get_flat_params(client.model)
    monkeypatch.setattr(client_module, "train_local", diverging)
    sent = client.fit(Broadcast(1, start, None, np.zeros((len(ARTISTS), 8)), np.zeros(len(ARTISTS), dtype=bool)))
    np.testing.assert_array_equal(sent["weighted_params"], start)
    np.testing.assert_array_equal(get_flat_params(client.model), start)
