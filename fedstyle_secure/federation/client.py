"""One artist-side federated client: private data, a model, a privacy ledger, and the two
things it does each round -- publish its artists' prototypes and fit locally -- with no
transport inside.  The in-process simulator and the gRPC artist process both drive this class.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedstyle_secure.errors import ModelError, PrivacyError
from fedstyle_secure.federation.round_layout import FederationShape, ModelShape
from fedstyle_secure.federation.strategy import (
    CLIENT_WEIGHT,
    CONTRIBUTION_RANGE,
    AlgorithmSpec,
    client_contribution,
    feature_moments,
)
from fedstyle_secure.models.embed import embed, embed_views, prototype_sums
from fedstyle_secure.models.heads import StyleModel
from fedstyle_secure.models.inputs import TEST_TIME_VIEWS
from fedstyle_secure.models.params import flat_ranges, get_flat_params, set_flat_params, trainable_parameters
from fedstyle_secure.privacy.budget import BudgetLedger, SpendDecision
from fedstyle_secure.privacy.plan import DpPlan, release_prototype_sums
from fedstyle_secure.randomness import CsprngNoise, NoiseSource
from fedstyle_secure.training.dp_sgd import privately_trained_parameters
from fedstyle_secure.training.local import LocalConfig, LocalData, LocalResult, RoundContext, train_local

log = logging.getLogger(__name__)


def model_shape(model: nn.Module, private_layers: str | None) -> ModelShape:
    """The model's flat parameter vector and what a round contributes of it: everything without
    DP (``private_layers=None``), else only what DP-SGD trains under ``private_layers`` (the rest
    stays at the start every party computes).  Artists, simulator and server all call this."""
    count = sum(p.numel() for p in trainable_parameters(model))
    if private_layers is None:
        return ModelShape.everything(count)
    return ModelShape(count, flat_ranges(model, privately_trained_parameters(model, private_layers)))


def federation_shape(
    spec: AlgorithmSpec,
    model: nn.Module,
    feature_dim: int,
    public_count: int,
    embedding_dim: int,
    private_layers: str | None,
) -> FederationShape:
    """The round layouts' inputs (see :func:`~.round_layout.round_layout`) for ``model``."""
    shape = model_shape(model, private_layers) if spec.averages_parameters else None
    return FederationShape(feature_dim=feature_dim, embedding_dim=embedding_dim, public_count=public_count, model=shape)


@dataclass(frozen=True)
class Broadcast:
    """What the server sends every client at the start of a round (all of it public)."""

    round: int
    params: np.ndarray | None
    consensus: np.ndarray | None
    prototypes: np.ndarray
    known: np.ndarray


UNIT_SLACK = 1e-3
"""How far above 1 a coordinate of a broadcast unit row (prototype, consensus) may be: float32 rounding."""


def checked_trained_params(broadcast: Broadcast, model: ModelShape) -> np.ndarray:
    """The entries of ``broadcast.params`` this run trains (``model.trained``), after checking the
    broadcast's length and that every one of them is finite and inside the contribution range:
    the values an artist could send back (its own codec refuses any other).  Raises
    :class:`ModelError` naming the first offending entry.

    Threat model: a deviating server chooses the broadcast.  Per-artwork clipping bounds an
    artwork's influence on DP-SGD only while every loss and gradient is finite; finite weights
    that overflow float32 on one candidate artwork make the noised update NaN exactly when that
    artwork is sampled (red-team review, 2026-11-30).  This check reads only the broadcast, so it
    reveals nothing about the artworks; the layers outside ``model.trained`` are never taken from a
    broadcast (:meth:`StyleClient._load_global` keeps its own: the public warm start under DP)."""
    if broadcast.params is None or broadcast.params.shape != (model.param_count,):
        got = None if broadcast.params is None else broadcast.params.shape
        raise ModelError(
            f"broadcast of round {broadcast.round}: params have shape {got}, the model ({model.param_count},)"
        )
    trained = model.select(broadcast.params)
    _require_within(trained, CONTRIBUTION_RANGE, f"broadcast of round {broadcast.round}: trained params")
    return trained


def check_broadcast_tables(broadcast: Broadcast, n_artists: int, embedding_dim: int, public_count: int) -> None:
    """Raise :class:`ModelError` unless the broadcast's prototype table ``(A, D)``, its ``known``
    flags ``(A,)`` and the consensus ``(M, D)`` (if any; one row per public image) have the run's
    shapes and unit-bounded, finite entries, as the server's :func:`~.strategy.normalise_rows`
    leaves them.  Every plan checks them before it acts: a table only training reads (a short
    consensus) would otherwise fail in DP-SGD alone and tell a DP-SGD plan apart (review, 2026-12-01)."""
    where = f"broadcast of round {broadcast.round}"
    if broadcast.prototypes.shape != (n_artists, embedding_dim) or broadcast.known.shape != (n_artists,):
        raise ModelError(
            f"{where}: prototypes {broadcast.prototypes.shape} and known {broadcast.known.shape}, "
            f"expected ({n_artists}, {embedding_dim}) and ({n_artists},)"
        )
    unit = (-1.0 - UNIT_SLACK, 1.0 + UNIT_SLACK)
    _require_within(broadcast.prototypes, unit, f"{where}: prototypes")
    if broadcast.consensus is not None:
        if broadcast.consensus.shape != (public_count, embedding_dim):
            raise ModelError(
                f"{where}: consensus has shape {broadcast.consensus.shape}, expected ({public_count}, {embedding_dim})"
            )
        _require_within(broadcast.consensus, unit, f"{where}: consensus")


def _require_within(values: np.ndarray, bounds: tuple[float, float], what: str) -> None:
    low, high = bounds
    bad = ~((values >= low) & (values <= high))  # NaN fails both comparisons
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(-1))[0])
        raise ModelError(
            f"{what}: {int(bad.sum())} value(s) non-finite or outside [{low:g}, {high:g}] "
            f"(first at flat index {first}: {values.reshape(-1)[first]!r}); refused"
        )


@dataclass(frozen=True)
class Publication:
    """Prototypes an artist publishes: rows of the artist table and unit vectors ``(k, D)``."""

    artist_rows: np.ndarray
    prototypes: np.ndarray


class StyleClient:
    """A federated client holding one or more artists' private training artworks.

    With a ``dp`` plan and a ``ledger``, every prototype release is a Gaussian mechanism and
    every local round is DP-SGD, each checked against the ledger's budget *before* it runs and
    recorded after; a client whose next round would exceed its budget retires.

    Randomness: ``noise`` draws everything DP rests on (release noise, DP-SGD noise, Poisson
    batches); default a fresh :class:`~fedstyle_secure.randomness.CsprngNoise` keyed by the OS,
    known to nobody else.  ``rng`` (may be seeded from public values) only picks augmented views and
    public images, which DP does not rest on.

    ``share_model``: use ``model`` itself instead of a private copy, for clients of one process that
    train in turn (the in-process simulator); whoever shares it loads a client's parameters before
    using the client (parameter-averaging algorithms need nothing: every round starts from the broadcast).
    """

    def __init__(
        self,
        client_id: str,
        data: LocalData,
        spec: AlgorithmSpec,
        model: StyleModel,
        config: LocalConfig,
        public_inputs: torch.Tensor,
        n_artists: int,
        rng: np.random.Generator,
        dp: DpPlan | None = None,
        ledger: BudgetLedger | None = None,
        noise: NoiseSource | None = None,
        share_model: bool = False,
    ) -> None:
        if (dp is None) != (ledger is None):
            raise PrivacyError(f"{client_id}: a DP plan needs a budget ledger and vice versa")
        self.client_id = client_id
        self.data = data
        self.spec = spec
        self.model = model if share_model else copy.deepcopy(model)
        self.config = config
        self.public_inputs = public_inputs
        self.n_artists = n_artists
        self.rng = rng
        self.noise = CsprngNoise() if noise is None else noise
        self.dp = dp
        self.ledger = ledger
        self.last_result: LocalResult | None = None
        self.own: Publication | None = None
        self.retired_reason: str | None = None

    @property
    def n_train(self) -> int:
        return len(self.data)

    @property
    def artists(self) -> np.ndarray:
        return self.data.artists

    def shape(self) -> FederationShape:
        """What this client's round contributions look like under the federation's plan (its DP
        plan's ``private_layers`` say which parameters are trained)."""
        return federation_shape(
            self.spec,
            self.model,
            int(np.prod(self.data.bank.input_shape)),
            len(self.public_inputs),
            self.model.out_dim,
            self.dp.private_layers if self.dp is not None else None,
        )

    def feature_moments(self) -> dict[str, np.ndarray]:
        """This client's contribution to the federated input standardisation (see strategy)."""
        return feature_moments(self.data.bank.views[0].reshape(self.n_train, -1))

    def set_standardisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.model.projection_head().set_standardisation(torch.from_numpy(mean), torch.from_numpy(std))

    def check_round(self, round_id: int) -> bool:
        """Whether this round's release and training fit the budget; otherwise retire, saying why."""
        if self.retired_reason is not None:
            return False
        if self.ledger is None or self.dp is None:
            return True
        release = self.spec.uses_prototypes and round_id in self.dp.release_rounds
        decision = self.ledger.check_can_spend(self.dp.round_mechanisms(round_id, release=release))
        if not decision.allowed:
            self.retired_reason = f"privacy budget: {decision.reason}"
        return decision.allowed

    def release_decision(self, round_id: int) -> SpendDecision | None:
        """Whether a prototype release alone at ``round_id`` (e.g. the final publication) fits the
        budget; ``None`` without DP.  Does not retire: the caller decides what a refusal means."""
        if self.ledger is None or self.dp is None:
            return None
        return self.ledger.check_can_spend(self.dp.round_mechanisms(round_id, train=False))

    def _load_global(self, broadcast: Broadcast) -> None:
        """Check the broadcast (:func:`checked_trained_params`, :func:`check_broadcast_tables`) and
        load the entries of its model this run trains; every other entry stays this client's own
        (under DP: the public warm start, which no round changes)."""
        check_broadcast_tables(broadcast, self.n_artists, self.model.out_dim, len(self.public_inputs))
        if not (self.spec.averages_parameters and broadcast.params is not None):
            return
        model = self.shape().model
        if model is None:
            raise ModelError(f"{self.spec.name} averages parameters but this client's plan has no model shape")
        trained = checked_trained_params(broadcast, model)
        set_flat_params(self.model, model.merge(get_flat_params(self.model), trained))

    def publishes_at(self, round_id: int) -> bool:
        """Whether this client publishes prototypes at ``round_id`` (always without DP)."""
        return self.dp is None or self.dp.releases_at(round_id)

    def publish(self, broadcast: Broadcast, round_id: int | None = None, final: bool = False) -> Publication:
        """Unit prototypes of this client's artists, from the model it starts the round with.

        Released as the direction of each artist's *sum* of unit embeddings (L2 sensitivity 1 per
        artwork).  The ``final`` publication, what buyers are matched against, embeds each artwork
        averaged over its test-time views (:func:`embed_views`: still one unit vector per artwork);
        training-time refreshes, to which FedStyle's loss aligns single views, embed the original
        only (view-averaged refreshes cost painters-dev seed 0 0.03 accuracy).  Plus Gaussian noise
        of std ``dp.release_sigma`` under DP; under DP a round without a planned release raises
        :class:`PrivacyError` (nothing is published un-noised).
        """
        round_id = broadcast.round if round_id is None else round_id
        if self.dp is not None and not self.dp.releases_at(round_id):  # fail closed: never an un-noised release
            raise PrivacyError(f"{self.client_id}: the DP plan has no prototype release at round {round_id}")
        self._load_global(broadcast)
        views = TEST_TIME_VIEWS if final else 0
        sums, counts = prototype_sums(
            embed_views(self.model, self.data.bank, views=views), self.data.labels, self.n_artists
        )
        rows = np.flatnonzero(counts > 0)
        sigma = None
        if self.dp is not None and self.ledger is not None:
            sigma = self.dp.release_sigma_at(round_id)
            if sigma is not None:
                self.ledger.record(self.dp.round_mechanisms(round_id, train=False))  # fails closed if over budget
        released = release_prototype_sums(sums[rows], sigma, self.noise)
        self.own = Publication(artist_rows=rows, prototypes=released.astype(np.float32))
        return self.own

    def _contributed_params(self, shape: ModelShape, start: np.ndarray, round_id: int) -> np.ndarray:
        """The trained entries this client adds to the round's sum, set back into its model: clipped
        into :data:`~.strategy.CONTRIBUTION_RANGE`, or the round's ``start`` entries if training left
        any non-finite (a diverged fit contributes no change; logged).

        Threat model: the server chooses the broadcast a fit starts from.  An artist whose trained
        values left the range used to sit a masked round out (its codec refuses them) and had a plain
        contribution refused, so by steering a broadcast entry to the edge of the range a server
        learned one bit of the artist's data per round (red-team review, 2026-11-30).  Whatever its
        data, the client now sends a finite vector inside the range.  Under DP both are
        post-processing of the DP-SGD output."""
        full = get_flat_params(self.model)
        trained = shape.select(full)
        if not np.all(np.isfinite(trained)):
            log.warning(
                "%s: local training of round %d diverged; contributing the round's start", self.client_id, round_id
            )
            trained = start
        else:
            trained = np.clip(trained, *CONTRIBUTION_RANGE, out=trained)
        set_flat_params(self.model, shape.merge(full, trained))
        return trained

    def _context(self, broadcast: Broadcast) -> RoundContext:
        shares = self.spec.shares_prototypes and bool(broadcast.known.any())
        protos = broadcast.prototypes.copy() if shares else np.zeros_like(broadcast.prototypes)
        known = broadcast.known.copy() if shares else np.zeros(self.n_artists, dtype=bool)
        if self.own is not None:
            protos[self.own.artist_rows] = self.own.prototypes
            known[self.own.artist_rows] = True
        return RoundContext(
            n_artists=self.n_artists,
            prototypes=protos if known.any() else None,
            known=known if known.any() else None,
            consensus=broadcast.consensus if self.spec.aligns_public else None,
            public=self.public_inputs,
            anchor=[p.detach().clone() for p in trainable_parameters(self.model)] if self.spec.proximal else None,
        )

    def _train(self, ctx: RoundContext, round_id: int) -> LocalResult:
        """:func:`train_local`.  Under DP, a fit that raises leaves the model as the round started
        (logged), as a diverged one contributes the round's start, and the round is still charged: an
        error that only DP-SGD can meet (the server chooses the broadcast and the plan's parameters)
        would otherwise tell a DP-SGD plan from one without before the planning size's count is
        reported (review, 2026-12-01: an infinite noise std, a short consensus)."""
        before = get_flat_params(self.model) if self.dp is not None else None
        try:
            return train_local(
                self.model, self.data, ctx, self.spec.objective, self.config, self.rng, self.dp, self.noise
            )
        except Exception:
            if before is None:
                raise
            log.exception("%s: DP-SGD of round %d failed; contributing the round's start", self.client_id, round_id)
            set_flat_params(self.model, before)
            return LocalResult()

    def fit(self, broadcast: Broadcast, round_id: int | None = None, *, charged: bool = False) -> dict[str, np.ndarray]:
        """Train locally from the broadcast; return the named arrays this client adds to the secure sum.
        ``charged``: the round's DP-SGD is in the ledger already (a networked artist charges it with
        the round's release, so that one signed report covers both before the release leaves)."""
        round_id = broadcast.round if round_id is None else round_id
        self._load_global(broadcast)
        ctx = self._context(broadcast)
        del broadcast  # its parameters are in the model now: a caller's temporary is freed before training
        if self.ledger is not None and self.dp is not None and not charged:
            planned = self.dp.round_mechanisms(round_id, release=False)
            decision = self.ledger.check_can_spend(planned)
            if not decision.allowed:
                self.retired_reason = f"privacy budget: {decision.reason}"
                raise PrivacyError(f"{self.client_id} cannot train round {round_id}: {decision.reason}")
        shape = self.shape().model
        start = shape.select(get_flat_params(self.model)) if shape is not None else None
        if self.dp is None or self.dp.trains:
            self.last_result = self._train(ctx, round_id)
        else:  # the plan's portfolio-size rule: no DP-SGD, the model stays the broadcast one
            self.last_result = LocalResult()
        if self.ledger is not None and self.dp is not None and not charged:
            self.ledger.record(self.dp.round_mechanisms(round_id, release=False))
        return client_contribution(
            self.spec,
            self._contributed_params(shape, start, round_id) if shape is not None and start is not None else None,
            CLIENT_WEIGHT,
            embed(self.model, self.public_inputs) if self.spec.aligns_public else None,
        )
