"""Canary membership-inference audit of the project's DP-SGD: one training run, a lower bound on epsilon.

In the spirit of Steinke, Nasr & Jagielski 2023 (see :mod:`fedstyle_secure.privacy.empirical`):

1. a small private training set of style-feature vectors (synthetic Gaussian artist clusters)
   plus ``m`` input-space canaries -- random feature vectors in the null space of the initial
   head (see :func:`_null_space_directions`), each with a random artist label -- of which each
   is included independently with probability 1/2;
2. ONE run of the real training path: :func:`~fedstyle_secure.training.local.train_local` with a
   real :class:`~fedstyle_secure.privacy.plan.DpPlan` (Opacus DP-SGD, Poisson sampling,
   per-artwork clipping) on a :class:`~fedstyle_secure.models.heads.ProjectionHead` +
   classifier ("classifier" objective);
3. white-box score per canary: the alignment of its initial loss gradient with the total
   parameter update (:func:`update_alignment_scores`); guess "in" for the ``k`` highest scores,
   "out" for the ``k`` lowest;
4. the one-run bound at the requested confidence.

Broken configurations train with a plan that differs from the one the claim is computed from
(that is the bug the audit must catch): ``no-noise`` sets the noise multiplier to 0;
``no-clip`` raises the clipping bound to :data:`NO_CLIP_NORM` while keeping the absolute noise
standard deviation of the honest plan (``noise_multiplier * clip_norm``), i.e. noise calibrated
for a sensitivity that is no longer enforced.

The privacy unit is one record (one artwork or canary), as for the project's accountant.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedstyle_secure.errors import ConfigError, ModelError
from fedstyle_secure.models.heads import ProjectionHead, StyleModel
from fedstyle_secure.models.inputs import InputBank
from fedstyle_secure.models.params import get_flat_params
from fedstyle_secure.privacy.accounting import compute_epsilon
from fedstyle_secure.privacy.calibration import calibrate_noise_multiplier, default_delta
from fedstyle_secure.privacy.empirical import DEFAULT_CONFIDENCE, epsilon_lower_bound, max_lower_bound
from fedstyle_secure.privacy.plan import DpConfig, DpPlan, plan_dp
from fedstyle_secure.randomness import SeededNoise
from fedstyle_secure.training.local import LocalConfig, LocalData, RoundContext, train_local

CONFIGURATIONS: tuple[str, ...] = ("honest", "no-noise", "no-clip")
NO_CLIP_NORM = 1e6
OBJECTIVE = "classifier"


@dataclass(frozen=True)
class CanaryAuditConfig:
    """Size of the experiment.  ``canary_scale`` is the L2 norm of a canary input relative to a
    typical data point's; ``guess_fraction`` of the canaries is guessed (half "in", half "out").
    ``feature_dim`` is large so that random canaries are nearly orthogonal to each other and to
    the data (each one's influence on the head is then separable from the others')."""

    epsilon: float = 8.0
    canaries: int = 1000
    train_points: int = 500
    artists: int = 10
    feature_dim: int = 1024
    embedding_dim: int = 32
    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    canary_scale: float = 3.0
    guess_fraction: float = 0.2
    confidence: float = DEFAULT_CONFIDENCE
    accountant: str = "prv"
    seed: int = 0

    def validate(self) -> None:
        if not 0.0 < self.epsilon < float("inf"):
            raise ConfigError(f"--epsilon must be a positive finite number, got {self.epsilon}")
        if self.canaries < 2:
            raise ConfigError(f"--canaries must be >= 2, got {self.canaries}")
        if min(self.train_points, self.artists, self.feature_dim, self.embedding_dim, self.epochs, self.batch_size) < 1:
            raise ConfigError("training points, artists, dimensions, epochs and batch size must all be >= 1")
        if not 0.0 < self.guess_fraction <= 1.0:
            raise ConfigError(f"guess fraction must be in (0, 1], got {self.guess_fraction}")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"--confidence must be in (0, 1), got {self.confidence}")

    @property
    def guesses_per_side(self) -> int:
        return max(1, int(self.canaries * self.guess_fraction) // 2)


@dataclass(frozen=True)
class EmpiricalAuditResult:
    """One configuration's audit.  If the training really were (``claimed_epsilon``, ``delta``)-DP,
    ``lower_bound <= claimed_epsilon`` would hold with probability >= ``confidence`` (over the
    canary coins and the training randomness)."""

    configuration: str
    claimed_epsilon: float
    lower_bound: float
    confidence: float
    delta: float
    canaries: int
    guesses: int
    correct: int
    noise_multiplier: float
    clip_norm: float
    steps: int
    seconds: float

    @property
    def max_lower_bound(self) -> float:
        """The largest bound these many guesses could certify (all correct)."""
        return max_lower_bound(self.guesses, self.confidence, canaries=self.canaries, delta=self.delta)

    @property
    def violation(self) -> bool:
        return self.lower_bound > self.claimed_epsilon

    @property
    def verdict(self) -> str:
        """``VIOLATION`` (claim refuted), ``consistent``, or ``untestable`` when even all-correct
        guesses could not have refuted the claim (it is at or above :attr:`max_lower_bound`)."""
        if self.violation:
            return "VIOLATION"
        return "untestable" if self.claimed_epsilon >= self.max_lower_bound else "consistent"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "max_lower_bound": self.max_lower_bound, "verdict": self.verdict}


@dataclass(frozen=True)
class _Experiment:
    """Training data (non-canaries first, then the included canaries) and all canaries."""

    data: LocalData
    canary_inputs: torch.Tensor
    canary_labels: torch.Tensor
    included: np.ndarray  # (m,) bool: canary coin flips


def _null_space_directions(weight: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random unit vectors orthogonal to every row of ``weight`` (its null space).

    A canary there barely moves the head's pre-normalisation output, so the L2 normalisation
    turns its large input norm into a large per-sample gradient: harmless under clipping, but a
    loud signal whenever clipping is not enforced.  Uses only the (public) initial model.
    """
    rows, _ = np.linalg.qr(weight.T)  # orthonormal basis of the row space, (D, k)
    directions = rng.normal(size=(count, weight.shape[1]))
    directions -= (directions @ rows) @ rows.T
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def _build_experiment(cfg: CanaryAuditConfig, first_layer: np.ndarray, rng: np.random.Generator) -> _Experiment:
    centres = rng.normal(size=(cfg.artists, cfg.feature_dim))
    labels = rng.integers(cfg.artists, size=cfg.train_points)
    points = centres[labels] + rng.normal(size=(cfg.train_points, cfg.feature_dim))
    typical_norm = float(np.linalg.norm(points, axis=1).mean())
    directions = _null_space_directions(first_layer, cfg.canaries, rng)
    canaries = cfg.canary_scale * typical_norm * directions
    canary_labels = rng.integers(cfg.artists, size=cfg.canaries)
    included = rng.random(cfg.canaries) < 0.5
    inputs = np.concatenate([points, canaries[included]]).astype(np.float32)
    data = LocalData(InputBank(views=inputs[None], kind="features"), np.concatenate([labels, canary_labels[included]]))
    return _Experiment(data, torch.from_numpy(canaries.astype(np.float32)), torch.from_numpy(canary_labels), included)


def _honest_plan(cfg: CanaryAuditConfig, dataset_size: int) -> DpPlan:
    """DP-SGD alone spends ``cfg.epsilon`` (one round, no prototype releases)."""
    delta = default_delta(dataset_size)
    batch_size = min(cfg.batch_size, dataset_size)
    steps_per_epoch = -(-dataset_size // batch_size)
    noise = calibrate_noise_multiplier(
        target_epsilon=cfg.epsilon,
        delta=delta,
        sample_rate=1.0 / steps_per_epoch,
        steps=cfg.epochs * steps_per_epoch,
        accountant=cfg.accountant,
    )
    config = DpConfig(
        epsilon=cfg.epsilon, delta=delta, accountant=cfg.accountant, noise_multiplier=noise, min_training_artworks=1
    )  # the audit is of DP-SGD itself, whatever the portfolio size
    return plan_dp(config, dataset_size, batch_size, cfg.epochs, rounds=1, training_releases=0)


def _trained_plan(configuration: str, honest: DpPlan) -> DpPlan:
    """The plan actually run: the honest one, or one of the deliberately broken variants."""
    if configuration == "honest":
        return honest
    if configuration == "no-noise":
        return dataclasses.replace(honest, noise_multiplier=0.0)
    if configuration == "no-clip":
        noise_std = honest.noise_multiplier * honest.clip_norm
        return dataclasses.replace(honest, clip_norm=NO_CLIP_NORM, noise_multiplier=noise_std / NO_CLIP_NORM)
    raise ConfigError(f"unknown audit configuration {configuration!r}; choose one of {', '.join(CONFIGURATIONS)}")


def _new_model(cfg: CanaryAuditConfig) -> StyleModel:
    head = ProjectionHead(cfg.feature_dim, hidden_dim=0, out_dim=cfg.embedding_dim, dropout=0.0)
    return StyleModel(head, n_classes=cfg.artists, out_dim=cfg.embedding_dim)


def _canary_gradients(model: StyleModel, exp: _Experiment) -> np.ndarray:
    """Per-canary loss gradients ``(m, P)`` at the model's current parameters, flattened in the
    order of :func:`~fedstyle_secure.models.params.get_flat_params`."""
    if model.classifier is None:
        raise ModelError("the canary audit scores a classifier's loss gradients; the model has no classifier")
    classify = nn.Sequential(model.encoder, model.classifier)  # shares the model's parameters
    params = {name: p.detach() for name, p in classify.named_parameters() if p.requires_grad}

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(torch.func.functional_call(classify, p, (x[None],)), y[None])

    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, exp.canary_inputs, exp.canary_labels)
    return torch.cat([g.reshape(len(exp.canary_labels), -1) for g in grads.values()], dim=1).numpy()


def update_alignment_scores(gradients: np.ndarray, update: np.ndarray) -> np.ndarray:
    """Membership score of each canary: cosine between its initial loss gradient (rows of
    ``gradients``) and the descent actually taken (``update = theta_0 - theta_T``).  Training on a
    canary moves the parameters against its gradient, so members score high; the cosine makes
    the score independent of each canary's gradient norm."""
    norms = np.linalg.norm(gradients, axis=1)
    return gradients @ update / np.maximum(norms, np.finfo(np.float32).tiny)


def score_guesses(scores: np.ndarray, included: np.ndarray, per_side: int) -> tuple[int, int]:
    """Guess "in" for the ``per_side`` highest scores and "out" for the ``per_side`` lowest;
    return (guesses made, guesses correct).  Ties are broken by canary index (deterministic)."""
    order = np.argsort(-scores, kind="stable")
    per_side = min(per_side, len(scores) // 2)
    correct = int(included[order[:per_side]].sum()) + int((~included[order[len(order) - per_side :]]).sum())
    return 2 * per_side, correct


def run_canary_audit(configuration: str, cfg: CanaryAuditConfig) -> EmpiricalAuditResult:
    """Train once under ``configuration`` (see :data:`CONFIGURATIONS`) and bound its epsilon from below.

    The claim is always the honest plan's DP-SGD epsilon at its delta, per ``cfg.accountant``.
    """
    cfg.validate()
    started = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    # A research experiment: reproducible by --seed, so the DP noise is seeded too (the guessing attacker
    # is never given the seed); deployments draw it from an OS-keyed CSPRNG instead.
    noise = SeededNoise([cfg.seed, 0xCA])
    with torch.random.fork_rng():  # initialisation and dropout
        torch.manual_seed(cfg.seed)
        model = _new_model(cfg)
        exp = _build_experiment(cfg, model.get_parameter("encoder.fc2.weight").detach().numpy(), rng)
        honest = _honest_plan(cfg, len(exp.data))
        plan = _trained_plan(configuration, honest)
        claimed = compute_epsilon(honest.round_mechanisms(0, release=False), honest.delta, honest.accountant)
        gradients = _canary_gradients(model, exp)
        initial = get_flat_params(model)
        # Adam, pinned: the audit's lr and its power are Adam's, whatever optimiser federated rounds
        # default to (when LocalConfig's default became SGD, a no-noise run went from 198 to 164 right
        # guesses of 200 and the slow default-size test failed unnoticed); DP holds for any optimiser
        local = LocalConfig(epochs=cfg.epochs, lr=cfg.lr, optimizer="adam", proximal_mu=0.0)
        context = RoundContext(n_artists=cfg.artists)
        result = train_local(model, exp.data, context, OBJECTIVE, local, rng, dp=plan, noise=noise)
    scores = update_alignment_scores(gradients, initial - get_flat_params(model))
    guesses, correct = score_guesses(scores, exp.included, cfg.guesses_per_side)
    return EmpiricalAuditResult(
        configuration=configuration,
        claimed_epsilon=claimed,
        lower_bound=epsilon_lower_bound(guesses, correct, cfg.confidence, canaries=cfg.canaries, delta=honest.delta),
        confidence=cfg.confidence,
        delta=honest.delta,
        canaries=cfg.canaries,
        guesses=guesses,
        correct=correct,
        noise_multiplier=plan.noise_multiplier,
        clip_norm=plan.clip_norm,
        steps=result.steps,
        seconds=time.perf_counter() - started,
    )
