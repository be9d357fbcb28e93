"""The privacy plan of one artist's participation: every DP decision of a run, in one place.

Pure privacy math (no Opacus, no I/O), below training and federation, which only read it: the
target (:class:`DpConfig`), the calibrated mechanisms (:class:`DpPlan`, :func:`plan_dp`,
:func:`plan_participation`), the ledger that enforces them (:func:`new_ledger`), the Gaussian
release of prototype sums, and the data-independent rules on the announced epsilon and portfolio
size (which layers DP-SGD trains, the released dimension, whether a portfolio trains at all).
The in-process simulator and the networked artist build a plan only through this module, so a
networked artist calibrates exactly like a simulated one.

Threat model and unit: record-level DP where the record is **one artwork** of the artist's
private portfolio (add/remove neighbours).  Everything an artist discloses that depends on its
private artworks is covered by one accountant: every local DP-SGD step (Poisson sampling,
per-artwork clipping to ``clip_norm``, Gaussian noise) and every Gaussian release of its style
prototypes.  Artist-level privacy (hiding *whether an artist participates* or their style as a
whole) is NOT provided.

The Opacus side (making a model private, clipping modes, which layers DP-SGD trains) is
:mod:`fedstyle_secure.training.dp_sgd`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedstyle_secure.errors import PrivacyError
from fedstyle_secure.models.embed import normalise_rows
from fedstyle_secure.models.factory import EncoderConfig
from fedstyle_secure.models.inputs import DEFAULT_BACKBONE
from fedstyle_secure.privacy.accounting import compute_epsilon, require_budget_accountant
from fedstyle_secure.privacy.budget import BudgetLedger, PrivacyBudget
from fedstyle_secure.privacy.calibration import (
    MAX_NOISE_MULTIPLIER,
    calibrate_noise_multiplier,
    default_delta,
    validate_delta,
)
from fedstyle_secure.privacy.mechanisms import (
    MAX_DP_SGD_STEPS,
    MAX_RUN_ROUNDS,
    MIN_NOISE_MULTIPLIER,
    DpSgdSteps,
    GaussianRelease,
    Mechanism,
)
from fedstyle_secure.randomness import NoiseSource

log = logging.getLogger(__name__)

PRIVATE_LAYERS: tuple[str, ...] = ("last", "all")
DEFAULT_PRIVATE_LAYERS = "last"
"""What DP-SGD updates.  ``last`` (default): the encoder's final layer ``fc2`` and the artist
classifier; earlier layers keep the weights every party starts from (the public warm start).
``all``: every trainable parameter.  Why ``last``: the Gaussian noise added to a step has norm
``sigma * C * sqrt(d)`` for ``d`` privately trained parameters while the signal is at most ``C`` per
artwork, so fewer private parameters mean less noise in the model and less time per step (the
noise draw and the second backward pass of ghost clipping scale with ``d``).  Measured
(``scripts/dp_gap.py``-style runs, 2 seeds, synthetic and wikiart-dev, epsilon 8 and 2): the same
accuracy as ``all``, because with tens of artworks per artist DP-SGD barely moves a 0.85 M-parameter
head either way."""
DEFAULT_MIN_TRAINING_ARTWORKS = 100
"""The portfolio-size rule: an artist with fewer private artworks than this runs no DP-SGD and no
release during training, and spends its whole epsilon on the final publication of its prototype
(what buyers are matched against).  Why: a DP-SGD step's noise has norm ``sigma * C * sqrt(d)``
against at most ``C`` per artwork, and every share of epsilon taken from the release adds release
noise.  Measured at epsilon 8, seed 0, 10 rounds: painters-dev (14 artworks per artist) release only
0.485 against the no-training reference 0.424; wikiart-dev (48 per artist) with DP-SGD (20 % of
epsilon) 0.290 against 0.354 for the release alone.  Portfolios above 48 were not measured.  The
rule reads only the planning size (:func:`noisy_portfolio_size`, a DP count charged to the ledger),
like every other parameter of the plan, so the accounting stays exact on both sides of it."""
MAX_CLIP_NORM = 1e6
"""Largest DP-SGD clipping norm (per-artwork gradient L2 norm) a plan takes: the noise std is the
multiplier (at most :data:`~fedstyle_secure.privacy.calibration.MAX_NOISE_MULTIPLIER`) times it, which
must stay finite (an announced 1.7e308 made it infinite and failed DP-SGD training alone; review,
2026-12-01).  Honest norms are 0.1-10."""
MAX_PROTOTYPE_REFRESHES = 32
"""Training-time prototype releases one run may plan (none by default; ``check_release_rounds``)."""
PROTOTYPE_RELEASE = "style-prototype-sums"
PROTOTYPE_SENSITIVITY = 1.0  # L2: one artwork adds one unit-norm embedding to its artist's sum
PORTFOLIO_SIZE_RELEASE = "portfolio-size"
PORTFOLIO_SIZE_SIGMA = 10.0
"""Std (artworks) of the Gaussian noise on the portfolio size the plan is calibrated from.

Why: every parameter of a plan -- the DP-SGD sample rate, steps and noise multiplier, Opacus's
expected batch size, the portfolio-size rule, delta -- used to be a function of the exact
portfolio size ``n``, so adding or removing one artwork changed the mechanism itself: at the
rule's threshold an artist of 100 artworks ran DP-SGD and one of 99 sent the broadcast back bit for
bit, and across a batch boundary the update's noise variance told 113 artworks from 112 (red-team
review, 2026-12-01).  No (epsilon, delta) for "add or remove one artwork" held there.  Now the plan
reads only ``n + N(0, 10^2)``, drawn once from the artist's own noise source and charged to its
ledger as a Gaussian release of sensitivity 1: the whole plan is post-processing of a DP count.
Gaussian mechanisms compose in quadrature, so the count costs little: the final release's sigma grows
by 0.2 % at epsilon 8 and by 2.2 % at epsilon 2 (release-only plans); DP-SGD's noise multiplier by
0.5 % and 6.7 % (200 artworks, 20 rounds)."""


def release_prototype_sums(sums: np.ndarray, sigma: float | None, noise: NoiseSource) -> np.ndarray:
    """The Gaussian mechanism on per-artist sums of unit embeddings ``(A, D)`` (L2 sensitivity
    :data:`PROTOTYPE_SENSITIVITY` per artwork): ``sums + N(0, sigma^2)`` per coordinate, the noise
    drawn from ``noise`` (privacy-relevant: an OS-keyed CSPRNG outside research runs), returned
    as unit directions.  ``sigma=None``: no noise (non-private)."""
    if sigma is None:
        return normalise_rows(sums)
    return normalise_rows(np.asarray(sums, dtype=np.float64) + noise.gaussian_array(sigma, sums.shape))


@dataclass(frozen=True)
class DpConfig:
    """An artist's privacy target: total ``(epsilon, delta)`` over all its rounds and releases.

    ``delta`` defaults to ``min(1e-5, 1 / (10 n))`` for ``n`` private artworks; ``noise_multiplier``
    may be given instead of being calibrated; ``release_fraction`` of epsilon is planned for the
    prototype releases, ``final_release_share`` of that for the final publication alone (the one
    buyers are matched against).  During training, prototypes are re-published at most
    ``prototype_refreshes`` times (evenly spaced rounds; in between the last publication is reused; 0:
    only the final publication, which then gets the whole release share),
    because every extra release of a small portfolio's 128-d prototype costs noise.
    ``epsilon = inf`` means no DP (and is not a DpConfig: pass ``None``).

    Why 80 % of epsilon goes to prototype releases (and 80 % of that to the final one): with
    portfolios of tens of artworks, record-level DP-SGD noise swamps the head's gradient (measured:
    retrieval mAP of the DP-trained encoder stays at its initial value for every epsilon <= 8, on
    synthetic and on wikiart-dev), while the published prototypes are what buyers are matched
    against.  Moving budget from training to the final release raised artist accuracy at
    epsilon = 8 from 0.50 to 0.55 (synthetic, seed 0) and from 0.254 to 0.268 (wikiart-dev); artists
    with large portfolios may want a smaller ``release_fraction``.
    """

    epsilon: float
    delta: float | None = None
    clip_norm: float = 1.0
    accountant: str = "prv"
    noise_multiplier: float | None = None
    release_fraction: float = 0.8
    final_release_share: float = 0.8
    prototype_refreshes: int = 0
    private_layers: str = DEFAULT_PRIVATE_LAYERS
    min_training_artworks: int = DEFAULT_MIN_TRAINING_ARTWORKS

    def validate(self) -> None:
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise PrivacyError(f"--epsilon must be a positive finite number, got {self.epsilon}")
        if not 0 < self.clip_norm <= MAX_CLIP_NORM:
            raise PrivacyError(f"--clip-norm must be in (0, {MAX_CLIP_NORM:g}], got {self.clip_norm}")
        require_budget_accountant(self.accountant)
        if not 0.0 < self.release_fraction < 1.0:
            raise PrivacyError(f"release fraction must be in (0, 1), got {self.release_fraction}")
        if not 0.0 < self.final_release_share <= 1.0:
            raise PrivacyError(f"final release share must be in (0, 1], got {self.final_release_share}")
        if not 0 <= self.prototype_refreshes <= MAX_PROTOTYPE_REFRESHES:
            raise PrivacyError(
                f"prototype refreshes must be in 0..{MAX_PROTOTYPE_REFRESHES}, got {self.prototype_refreshes}"
            )
        if (
            self.noise_multiplier is not None
            and not MIN_NOISE_MULTIPLIER <= self.noise_multiplier <= MAX_NOISE_MULTIPLIER
        ):
            raise PrivacyError(
                f"--noise-multiplier must be in [{MIN_NOISE_MULTIPLIER:g}, {MAX_NOISE_MULTIPLIER:g}], got "
                f"{self.noise_multiplier}"
            )
        if self.min_training_artworks < 1:
            raise PrivacyError(f"min training artworks must be >= 1, got {self.min_training_artworks}")
        if self.private_layers not in PRIVATE_LAYERS:
            raise PrivacyError(
                f"private layers must be one of {', '.join(PRIVATE_LAYERS)}, got {self.private_layers!r}"
            )


@dataclass(frozen=True)
class DpPlan:
    """The calibrated mechanisms of one artist's whole participation.

    ``sample_rate`` is Opacus's Poisson rate ``1 / ceil(m / batch_size)`` for the planning size
    ``m`` (:func:`noisy_portfolio_size`, never the exact ``n``); each round runs ``steps_per_round``
    DP-SGD steps and (if ``release_sigma``) one prototype release; the final publication (round
    ``final_round``) uses ``final_release_sigma``.  A plan built from a noisy size charges that
    count first (:meth:`setup_mechanisms`).
    """

    delta: float
    accountant: str
    sample_rate: float
    steps_per_round: int
    noise_multiplier: float
    clip_norm: float
    release_sigma: float | None
    final_release_sigma: float
    final_round: int
    release_rounds: frozenset[int] = frozenset()
    private_layers: str = DEFAULT_PRIVATE_LAYERS
    planning_size: int | None = None  # the noisy portfolio size it was calibrated from (None: a given size)

    @property
    def trains(self) -> bool:
        """Whether the plan runs DP-SGD at all (see :data:`DEFAULT_MIN_TRAINING_ARTWORKS`)."""
        return self.steps_per_round > 0

    def release_sigma_at(self, round_id: int) -> float | None:
        return self.final_release_sigma if round_id >= self.final_round else self.release_sigma

    def releases_at(self, round_id: int) -> bool:
        """Whether the plan releases prototypes at ``round_id`` (a training refresh or the final one)."""
        return round_id >= self.final_round or (round_id in self.release_rounds and self.release_sigma is not None)

    def charge_refusal(
        self, round_id: int, *, release: bool, final: bool, latest_charged: int | None, reported: bool = False
    ) -> str | None:
        """Why charging ``round_id`` now falls outside this plan's schedule (``None``: it does not).

        The plan charges DP-SGD in rounds ``0 .. final_round - 1``, training-time releases only in
        ``release_rounds``, and one final publication at ``final_round``; rounds are charged in order,
        and a round's report is signed before any of its charged results leaves the artist.  A server deviating from
        the protocol could otherwise have a release charged at an earlier round after that round's
        report (or after the final one) was signed, so that no report holds it, or final releases
        past ``final_round``, each a fresh draw of the final prototype.  ``reported``: the report of
        ``round_id`` is signed already (its DP-SGD is reported when it is charged, so a release the
        server asks for after the round's contribution would be in no report: refused too)."""
        if reported:
            return f"round {round_id}'s report is signed already: a charge now would be in no report"
        if latest_charged is not None and round_id < latest_charged:
            return f"round {round_id} comes after round {latest_charged} was charged (and reported)"
        if round_id > self.final_round:
            return f"round {round_id} is past the plan's final round {self.final_round}"
        if not release:
            return f"no DP-SGD in the final round {self.final_round}" if round_id == self.final_round else None
        if final != (round_id == self.final_round):
            kind = "the final publication" if final else "a training-time release"
            return f"{kind} at round {round_id}, but the plan's final publication is at round {self.final_round}"
        if not final and not self.releases_at(round_id):
            return f"a prototype release at round {round_id} that the announced plan did not count"
        return None

    def setup_mechanisms(self) -> list[Mechanism]:
        """What the plan itself cost, charged before anything else: the portfolio-size count."""
        return [] if self.planning_size is None else [portfolio_size_count()]

    @property
    def expected_batch_size(self) -> int:
        """Opacus's expected batch size (it divides the noised gradient sum by it), from the planning
        size: Opacus's own ``int(n * sample_rate)`` would put the exact ``n`` in every update's scale."""
        size = self.planning_size if self.planning_size is not None else 0
        return max(1, int(size * self.sample_rate))

    def run_mechanisms(self) -> list[Mechanism]:
        """Everything the plan charges over a whole run: the count, DP-SGD in every training round,
        the training-time releases and the final publication."""
        rounds = range(self.final_round + 1)
        return self.setup_mechanisms() + [
            m for r in rounds for m in self.round_mechanisms(r, train=r < self.final_round, release=self.releases_at(r))
        ]

    def round_mechanisms(self, round_id: int, *, train: bool = True, release: bool = True) -> list[Mechanism]:
        out: list[Mechanism] = []
        sigma = self.release_sigma_at(round_id)
        if release and sigma is not None:
            out.append(GaussianRelease(PROTOTYPE_SENSITIVITY, sigma, round_id, PROTOTYPE_RELEASE))
        if train and self.trains:
            out.append(
                DpSgdSteps(self.sample_rate, self.noise_multiplier, self.steps_per_round, self.clip_norm, round_id)
            )
        return out


def portfolio_size_count() -> GaussianRelease:
    """The charge of drawing a planning size (:func:`noisy_portfolio_size`): a count, sensitivity 1."""
    return GaussianRelease(1.0, PORTFOLIO_SIZE_SIGMA, 0, PORTFOLIO_SIZE_RELEASE)


def noisy_portfolio_size(n: int, noise: NoiseSource) -> int:
    """The planning size of a portfolio of ``n`` artworks: ``n + N(0, PORTFOLIO_SIZE_SIGMA^2)`` drawn
    from ``noise`` (the artist's own CSPRNG), rounded, at least 1.  Draw it once per ledger and keep
    it: every draw is charged (:func:`portfolio_size_count`), and two would average the noise."""
    return max(1, round(n + float(noise.gaussian_array(PORTFOLIO_SIZE_SIGMA, (1,))[0])))


def check_announced_plan(
    config: DpConfig, rounds: int, release_rounds: frozenset[int], training_releases: int | None = None
) -> None:
    """Raise PrivacyError for what no portfolio size could plan: an invalid ``config``, more than
    :data:`~fedstyle_secure.privacy.mechanisms.MAX_RUN_ROUNDS` rounds (reports the server's intake
    would refuse and the audit flag), refreshes outside the run or too many
    (:func:`check_release_rounds`).  An artist checks this before it draws its planning size, so
    that such a refusal says nothing about the size and costs nothing."""
    config.validate()
    if rounds > MAX_RUN_ROUNDS:  # its reports would hold more mechanisms than an auditable history
        raise PrivacyError(f"a run under DP has at most {MAX_RUN_ROUNDS} rounds, got {rounds}")
    releases = len(release_rounds) if training_releases is None else training_releases
    check_release_rounds(release_rounds, releases, rounds)


def check_release_rounds(release_rounds: frozenset[int], training_releases: int, rounds: int) -> None:
    """Raise PrivacyError unless the training-time releases are at most
    :data:`MAX_PROTOTYPE_REFRESHES` and each lies in a training round ``0 .. rounds - 1``.

    Threat model: the server announces the release rounds.  A refresh that can never come would
    reserve budget the run never spends (a noisier final release), and each announced refresh is
    calibrated and its ledgers evaluated before the artist acts (red-team review, 2026-12-01: 40
    refreshes past the run's end were planned; 200 kept an artist's planning busy for 331 s)."""
    if training_releases > MAX_PROTOTYPE_REFRESHES or len(release_rounds) > MAX_PROTOTYPE_REFRESHES:
        count = max(training_releases, len(release_rounds))
        raise PrivacyError(f"at most {MAX_PROTOTYPE_REFRESHES} prototype refreshes per run, the plan has {count}")
    outside = sorted(r for r in release_rounds if not 0 <= r < rounds)
    if outside:
        raise PrivacyError(
            f"prototype refreshes at rounds {outside[:5]} lie outside the run's training rounds 0..{rounds - 1}"
        )


def plan_dp(
    config: DpConfig,
    dataset_size: int,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    training_releases: int,
    release_rounds: frozenset[int] = frozenset(),
    *,
    noisy_size: bool = False,
) -> DpPlan:
    """Calibrate noise so that ``rounds`` rounds of DP-SGD, ``training_releases`` prototype
    releases during training (at ``release_rounds``) and one final publication (round
    ``rounds``) spend the target epsilon at delta (to 1 %) under ``config.accountant``.
    A portfolio below ``config.min_training_artworks`` runs no DP-SGD: the releases (by default the
    final publication alone) spend the whole epsilon.  ``noisy_size``: ``dataset_size`` is a
    planning size from :func:`noisy_portfolio_size`, whose charge the epsilon then includes
    (a given, public size otherwise: the canary audit's).  Refuses (PrivacyError) more than
    :data:`~fedstyle_secure.privacy.mechanisms.MAX_RUN_ROUNDS` rounds or
    :data:`~fedstyle_secure.privacy.mechanisms.MAX_DP_SGD_STEPS` DP-SGD steps, whose reports the
    server's intake would refuse and the audit flag.  With a planning size, a plan where no DP-SGD
    fits (the releases and the count already spend the budget, or the steps are over that cap)
    runs without DP-SGD instead (logged): a refusal there would hold only on one side of the
    portfolio-size rule and tell it (red-team review, 2026-12-01)."""
    check_announced_plan(config, rounds, release_rounds, training_releases)
    delta = default_delta(dataset_size) if config.delta is None else config.delta
    validate_delta(delta, dataset_size)
    count: list[Mechanism] = [portfolio_size_count()] if noisy_size else []
    planning_size = dataset_size if noisy_size else None
    if dataset_size < config.min_training_artworks:  # no DP-SGD: the whole epsilon on the releases
        return _release_only_plan(config, delta, rounds, training_releases, release_rounds, count, planning_size)
    try:
        plan = _dp_sgd_plan(
            config, dataset_size, batch_size, local_epochs, rounds, training_releases, release_rounds, delta, count
        )
        if noisy_size and config.noise_multiplier is not None:  # given, not calibrated: it may not fit
            _check_fits(plan, config.epsilon)
        return plan
    except PrivacyError as exc:
        if not noisy_size:  # a given size (the canary audit's): its plan or nothing
            raise
        # a participation plan: where no DP-SGD fits the budget, the budget goes where it helps (the releases),
        # as below the portfolio-size rule; so no announcement is refused on one side of the rule only
        log.warning("no DP-SGD fits this plan (%s); the whole epsilon goes to the prototype releases", exc)
        return _release_only_plan(config, delta, rounds, training_releases, release_rounds, count, planning_size)


def _check_fits(plan: DpPlan, epsilon: float) -> float:
    """The epsilon everything ``plan`` charges over its run spends; PrivacyError if more than
    ``epsilon``.  For the plans nothing calibrated to the target: a given DP-SGD noise multiplier
    (red-team review, 2026-12-01: an announced one made a DP-SGD plan that would spend 5.4 of 0.5 and
    was accepted, while a plan without DP-SGD refused the same announcement), and the releases of a
    DP-SGD plan's split taken without DP-SGD (:func:`_release_only_plan`)."""
    spent = compute_epsilon(plan.run_mechanisms(), plan.delta, plan.accountant)
    if spent > epsilon:
        raise PrivacyError(
            f"noise multiplier {plan.noise_multiplier:g}, release sigmas {plan.release_sigma} and "
            f"{plan.final_release_sigma:g}: the plan spends epsilon {spent:.4g} of {epsilon:g}"
        )
    return spent


def _release_only_plan(
    config: DpConfig,
    delta: float,
    rounds: int,
    training_releases: int,
    release_rounds: frozenset[int],
    count: list[Mechanism],
    planning_size: int | None,
) -> DpPlan:
    """A plan without DP-SGD: the size's ``count`` and the releases spend ``config.epsilon``.

    Where that split cannot fit the announced refreshes (the final publication's share and the count
    spend the target first), a participation plan takes the releases of :func:`_dp_sgd_plan`'s split
    instead, if they fit with the count: so every announcement a DP-SGD plan can make, a plan without
    DP-SGD can make too, and no refusal depends on the side of the portfolio-size rule (red-team
    review, 2026-12-01: epsilon 0.55-0.65 with one refresh fitted DP-SGD only)."""

    def without_dp_sgd(release_sigma: float | None, final_sigma: float) -> DpPlan:
        return DpPlan(
            delta,
            config.accountant,
            0.0,
            0,
            0.0,
            config.clip_norm,
            release_sigma,
            final_sigma,
            rounds,
            frozenset(release_rounds),
            config.private_layers,
            planning_size,
        )

    try:
        final_sigma, sigma = _whole_budget_release_sigmas(config, delta, rounds, training_releases, count)
        return without_dp_sgd(sigma, final_sigma)
    except PrivacyError as exc:
        if not (training_releases and count):
            raise
        final_sigma, sigma, _ = _dp_sgd_release_sigmas(config, delta, rounds, training_releases)
        plan = without_dp_sgd(sigma, final_sigma)
        spent = _check_fits(plan, config.epsilon)  # with the count: nothing calibrated this split to it
        log.warning(
            "%s; the releases take the DP-SGD plan's split instead (epsilon %.4g of %g)", exc, spent, config.epsilon
        )
        return plan


def _whole_budget_release_sigmas(
    config: DpConfig, delta: float, rounds: int, training_releases: int, count: list[Mechanism]
) -> tuple[float, float | None]:
    """(final publication's, training-time releases') sigmas when they and ``count`` spend the whole
    epsilon: the final publication ``final_release_share`` of it, the refreshes the rest."""
    share = config.final_release_share if training_releases else 1.0
    final_sigma = PROTOTYPE_SENSITIVITY * _gaussian_multiplier(
        config.epsilon * share, delta, 1, config.accountant, [] if training_releases else count
    )
    if not training_releases:
        return final_sigma, None
    final = GaussianRelease(PROTOTYPE_SENSITIVITY, final_sigma, rounds, PROTOTYPE_RELEASE)
    sigma = PROTOTYPE_SENSITIVITY * calibrate_noise_multiplier(
        target_epsilon=config.epsilon,
        delta=delta,
        sample_rate=1.0,
        steps=training_releases,
        accountant=config.accountant,
        history=[final, *count],
    )
    return final_sigma, sigma


def _dp_sgd_release_sigmas(
    config: DpConfig, delta: float, rounds: int, training_releases: int
) -> tuple[float, float | None, list[Mechanism]]:
    """A DP-SGD plan's releases: ``release_fraction`` of epsilon, ``final_release_share`` of that for the
    final publication; (its sigma, the refreshes' sigma, every release's mechanism)."""
    release_budget = config.epsilon * config.release_fraction
    share = config.final_release_share if training_releases else 1.0
    final_sigma = PROTOTYPE_SENSITIVITY * _gaussian_multiplier(release_budget * share, delta, 1, config.accountant)
    releases: list[Mechanism] = [GaussianRelease(PROTOTYPE_SENSITIVITY, final_sigma, rounds, PROTOTYPE_RELEASE)]
    release_sigma = None
    if training_releases:
        release_sigma = PROTOTYPE_SENSITIVITY * _gaussian_multiplier(
            release_budget * (1.0 - share), delta, training_releases, config.accountant
        )
        releases += [
            GaussianRelease(PROTOTYPE_SENSITIVITY, release_sigma, r, PROTOTYPE_RELEASE)
            for r in range(training_releases)
        ]
    return final_sigma, release_sigma, releases


def _dp_sgd_plan(
    config: DpConfig,
    dataset_size: int,
    batch_size: int,
    local_epochs: int,
    rounds: int,
    training_releases: int,
    release_rounds: frozenset[int],
    delta: float,
    count: list[Mechanism],
) -> DpPlan:
    """A plan with DP-SGD every training round; raises PrivacyError if none fits the budget."""
    planning_size = dataset_size if count else None
    steps_per_epoch = math.ceil(dataset_size / batch_size)
    sample_rate = 1.0 / steps_per_epoch
    steps_per_round = local_epochs * steps_per_epoch
    if rounds * steps_per_round > MAX_DP_SGD_STEPS:
        raise PrivacyError(
            f"{rounds} rounds of {local_epochs} epochs of {steps_per_epoch} batches are {rounds * steps_per_round} "
            f"DP-SGD steps, more than an auditable history holds ({MAX_DP_SGD_STEPS}): use larger batches, fewer "
            "epochs or fewer rounds"
        )
    final_sigma, release_sigma, releases = _dp_sgd_release_sigmas(config, delta, rounds, training_releases)
    history: list[Mechanism] = [*count, *releases]
    noise = config.noise_multiplier
    if noise is None:
        noise = calibrate_noise_multiplier(
            target_epsilon=config.epsilon,
            delta=delta,
            sample_rate=sample_rate,
            steps=rounds * steps_per_round,
            accountant=config.accountant,
            history=history,
        )
    return DpPlan(
        delta,
        config.accountant,
        sample_rate,
        steps_per_round,
        noise,
        config.clip_norm,
        release_sigma,
        final_sigma,
        rounds,
        frozenset(release_rounds),
        config.private_layers,
        planning_size,
    )


def _gaussian_multiplier(
    epsilon: float, delta: float, releases: int, accountant: str, history: list[Mechanism] | None = None
) -> float:
    """Noise multiplier of ``releases`` full-batch Gaussian releases spending ``epsilon`` together
    (with ``history``'s mechanisms)."""
    return calibrate_noise_multiplier(
        target_epsilon=epsilon,
        delta=delta,
        sample_rate=1.0,
        steps=releases,
        accountant=accountant,
        history=history or [],
    )


class LocalSchedule(Protocol):
    """What the plan reads of an artist's local training: its batch size and epochs per round."""

    @property
    def batch_size(self) -> int: ...

    @property
    def epochs(self) -> int: ...


def plan_participation(
    dp: DpConfig, planning_size: int, local: LocalSchedule, rounds: int, release_rounds: frozenset[int]
) -> DpPlan:
    """The calibrated mechanisms of an artist whose portfolio's planning size is ``planning_size``
    (:func:`noisy_portfolio_size`: never the exact size) over ``rounds`` rounds: the size's count,
    DP-SGD every round, a Gaussian prototype release in each of ``release_rounds`` and the final
    publication, together spending ``dp.epsilon`` at the plan's delta.  Raises PrivacyError
    (e.g. ``delta >= 1 / planning_size``)."""
    return plan_dp(
        dp,
        planning_size,
        local.batch_size,
        local.epochs,
        rounds,
        len(release_rounds),
        frozenset(release_rounds),
        noisy_size=True,
    )


def new_ledger(plan: DpPlan, n_train: int, epsilon: float, delta: float | None = None) -> BudgetLedger:
    """A ledger enforcing ``(epsilon, delta)`` (``delta`` defaults to the plan's) under the plan's
    accountant, charged with the plan's own cost (:meth:`DpPlan.setup_mechanisms`).  Raises
    PrivacyError for a delta that is not below ``1 / n_train`` (the exact size: the artist's own check)."""
    ledger = BudgetLedger(PrivacyBudget(epsilon, plan.delta if delta is None else delta), n_train, plan.accountant)
    ledger.record(plan.setup_mechanisms())
    return ledger


def planning_ledger(budget: PrivacyBudget, n_train: int, accountant: str) -> BudgetLedger:
    """A ledger enforcing ``budget`` under ``accountant`` before any plan was accepted, charged with the
    planning size's count alone (:func:`portfolio_size_count`): what an artist that refuses the first
    plan it is shown reports.  Raises PrivacyError if the count alone is over the budget."""
    ledger = BudgetLedger(budget, n_train, accountant)
    ledger.record([portfolio_size_count()])
    return ledger


DP_EMBEDDING_DIM = 32
"""Embedding (= released prototype) dimension under DP.  The Gaussian release adds noise of norm
``sigma * sqrt(d)`` to a prototype sum of norm at most ``n``; with a dozen artworks, 32 dimensions
kept more of the public-whitened statistics' accuracy after the release than 16, 64 or 128 (measured
on painters-dev and wikiart-dev at epsilon 8 and 2; README, Differential privacy)."""
INVARIANT_MAX_EPSILON = 4.0
"""Below this epsilon the DP encoder is the public augmentation-invariant projection with no warm
start (:func:`~fedstyle_secure.models.heads.public_invariant_projection`); at or above it, the PCA
whitening of the public images, warm-started on them.  The invariant projection keeps each
direction's public variance in proportion to how well it survives augmentation, so strong release
noise meets fewer dominant directions; whitening spreads the signal evenly, which a weak noise
rewards.  Measured (10 release draws, 3 seeds, painters-dev / wikiart-dev accuracy, invariant
against whitened): epsilon 1 0.159 / 0.260 against 0.147 / 0.243, epsilon 2 0.272 / 0.318 against
0.250 / 0.307, epsilon 4 0.389 / 0.349 against 0.391 / 0.345, epsilon 8 0.453 / 0.362 against
0.466 / 0.361 (docs/utility_levers.md)."""
PRETRAIN_STEPS_UNDER_DP = 300
"""Public warm-start steps of a DP run at epsilon >= :data:`INVARIANT_MAX_EPSILON` when none are
configured (:func:`public_warm_start_steps`)."""


def encoder_config_for(dp: DpConfig | None, backbone: str = DEFAULT_BACKBONE) -> EncoderConfig:
    """The encoder of a run: the defaults without DP; under DP a :data:`DP_EMBEDDING_DIM`-dimensional
    embedding started at the public PCA whitening at epsilon >= :data:`INVARIANT_MAX_EPSILON`, at the
    public augmentation-invariant projection below.  A rule on the public epsilon only: every party
    (simulator, artists, the server's index) derives the same encoder from the announced plan."""
    if dp is None:
        return EncoderConfig(backbone=backbone)
    projection = "invariant" if dp.epsilon < INVARIANT_MAX_EPSILON else "whitening"
    return EncoderConfig(backbone=backbone, embedding_dim=DP_EMBEDDING_DIM, projection=projection)


def public_warm_start_steps(dp: DpConfig | None) -> int:
    """Steps of public warm start of a run that configures none: :data:`PRETRAIN_STEPS_UNDER_DP`
    under DP at epsilon >= :data:`INVARIANT_MAX_EPSILON`, else 0 (without DP the federation trains
    the model; below that epsilon the warm start lowered accuracy after the release)."""
    return PRETRAIN_STEPS_UNDER_DP if dp is not None and dp.epsilon >= INVARIANT_MAX_EPSILON else 0
