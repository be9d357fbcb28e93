"""In-process federation: every client and the server in one process, same code paths as the
real deployment (strategy math on sums, a pluggable secure summation)."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.dataset import FederationData
from fedstyle_secure.federation.packing import pack, unpack
from fedstyle_secure.federation.strategy import (
    AlgorithmSpec,
    ServerState,
    aggregate,
    algorithm_spec,
    client_contribution,
    initial_state,
    publish_prototypes,
)
from fedstyle_secure.models.embed import embed, prototypes_from
from fedstyle_secure.models.factory import EncoderConfig, make_model
from fedstyle_secure.models.params import get_flat_params, set_flat_params, trainable_parameters
from fedstyle_secure.retrieval.evaluate import evaluate_global, evaluate_personal
from fedstyle_secure.retrieval.metrics import RetrievalMetrics
from fedstyle_secure.secure.api import PlainSummation, SecureSummation
from fedstyle_secure.training.local import LocalConfig, LocalData, RoundContext, train_local


@dataclass(frozen=True)
class SimulationConfig:
    """One federated run.  ``rounds`` x ``local.epochs`` is every algorithm's training budget."""

    algorithm: str = "fedstyle"
    rounds: int = 10
    seed: int = 0
    local: LocalConfig = field(default_factory=LocalConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    secure: str = "none"

    def validate(self) -> None:
        algorithm_spec(self.algorithm)
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")
        if self.local.epochs < 1:
            raise ConfigError(f"--local-epochs must be >= 1, got {self.local.epochs}")


@dataclass
class RoundRecord:
    round: int
    mean_loss: float
    metrics: dict[str, float]
    bytes_up_per_client: float
    seconds: float


@dataclass
class SimulationResult:
    algorithm: str
    metrics: RetrievalMetrics
    history: list[RoundRecord]
    wall_time_s: float
    state: ServerState
    global_model: nn.Module | None
    personal_models: list[nn.Module] | None

    def history_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.history]


def _client_datasets(data: FederationData, spec: AlgorithmSpec) -> list[LocalData]:
    if spec.pooled:
        items = data.split.train
        return [LocalData(bank=_subset(data, items), labels=data.labels[items])]
    out = []
    for c in range(len(data.clients)):
        items = data.client_train_items(c)
        out.append(LocalData(bank=_subset(data, items), labels=data.labels[items]))
    return out


def _subset(data: FederationData, items: np.ndarray):
    from fedstyle_secure.models.inputs import InputBank

    return InputBank(views=data.bank.views[:, items], kind=data.bank.kind)


def _round_context(spec: AlgorithmSpec, state: ServerState, data: FederationData, model: nn.Module) -> RoundContext:
    return RoundContext(
        n_artists=len(data.artists),
        prototypes=state.prototypes if spec.shares_prototypes and state.known.any() else None,
        known=state.known if spec.shares_prototypes and state.known.any() else None,
        consensus=state.consensus if spec.aligns_public else None,
        public=data.public.originals(),
        anchor=[p.detach().clone() for p in trainable_parameters(model)] if spec.proximal else None,
    )


def run_simulation(
    config: SimulationConfig,
    data: FederationData,
    summation: SecureSummation | None = None,
    progress: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> SimulationResult:
    """Train ``config.algorithm`` for ``config.rounds`` rounds and evaluate on the held-out queries."""
    config.validate()
    spec = algorithm_spec(config.algorithm)
    summation = summation or PlainSummation()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 0xF5])
    n_artists = len(data.artists)
    template = make_model(config.encoder, data.bank, data.public, n_artists if spec.needs_classifier else None)
    clients = _client_datasets(data, spec)
    personal = None if spec.has_global_model else [copy.deepcopy(template) for _ in clients]
    state = initial_state(n_artists, config.encoder.embedding_dim, get_flat_params(template) if spec.has_global_model else None)
    history: list[RoundRecord] = []
    started = time.perf_counter()
    bar = tqdm(range(config.rounds), desc=f"{spec.name}", disable=not progress, leave=False)
    for r in bar:
        t0 = time.perf_counter()
        vectors: dict[str, np.ndarray] = {}
        layout = None
        losses = []
        models = [personal[c] if personal is not None else copy.deepcopy(template) for c in range(len(clients))]
        for model in models if personal is None else ():
            set_flat_params(model, state.params)
        if spec.shares_prototypes:  # every artist publishes with the model it starts the round from
            for model, local_data in zip(models, clients):
                protos, known = prototypes_from(embed(model, local_data.bank.originals()), local_data.labels, n_artists)
                publish_prototypes(state, np.flatnonzero(known), protos[known])
        for c, (model, local_data) in enumerate(zip(models, clients)):
            ctx = _round_context(spec, state, data, model)
            result = train_local(model, local_data, ctx, spec.objective, config.local, rng)
            losses.extend(result.losses)
            if spec.pooled:
                state.params = get_flat_params(model)
            contribution = client_contribution(
                spec,
                get_flat_params(model) if spec.averages_parameters else None,
                float(len(local_data)),
                embed(model, ctx.public) if spec.aligns_public else None,
            )
            if contribution:
                vectors[f"client-{c:03d}"], layout = pack(contribution)
        bytes_up = 0.0
        if spec.averages_parameters or spec.aligns_public:
            agg = summation.sum(vectors, round_id=r)
            state = aggregate(spec, state, unpack(agg.total, layout))
            bytes_up = float(np.mean(list(agg.bytes_up.values()))) if agg.bytes_up else 0.0
        else:
            state.round += 1
        if spec.has_global_model:
            set_flat_params(template, state.params)
            metrics = evaluate_global(template, data)
        else:
            metrics = evaluate_personal(personal, data)
        record = RoundRecord(r + 1, float(np.mean(losses)), metrics.as_dict(), bytes_up, time.perf_counter() - t0)
        history.append(record)
        bar.set_postfix(acc=f"{metrics.artist_accuracy:.3f}", map=f"{metrics.map:.3f}")
        if on_round:
            on_round(record)
    final = evaluate_global(template, data) if spec.has_global_model else evaluate_personal(personal, data)
    return SimulationResult(
        algorithm=spec.name,
        metrics=final,
        history=history,
        wall_time_s=time.perf_counter() - started,
        state=state,
        global_model=template if spec.has_global_model else None,
        personal_models=personal,
    )
