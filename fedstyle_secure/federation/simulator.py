"""In-process federation: every client and the server in one process, same code paths as the
real deployment (:class:`StyleClient`, strategy math on sums, a pluggable secure summation)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.client import Broadcast, StyleClient
from fedstyle_secure.federation.dataset import FederationData
from fedstyle_secure.federation.packing import pack, unpack
from fedstyle_secure.federation.strategy import (
    CONTRIBUTION_RANGE,
    FEATURE_MOMENT_RANGE,
    ServerState,
    aggregate,
    algorithm_spec,
    initial_state,
    publish_prototypes,
    standardisation_from_sums,
)
from fedstyle_secure.models.factory import EncoderConfig, make_model
from fedstyle_secure.models.inputs import InputBank
from fedstyle_secure.models.params import get_flat_params, set_flat_params
from fedstyle_secure.retrieval.evaluate import evaluate_global, evaluate_personal
from fedstyle_secure.retrieval.metrics import RetrievalMetrics
from fedstyle_secure.secure.api import PlainSummation, SecureSummation

SummationFactory = Callable[[Sequence[str], tuple[float, float]], SecureSummation]
"""Builds the secure summation over the given client ids for inputs within ``(low, high)``."""


def plain_summation(participants: Sequence[str], value_range: tuple[float, float]) -> SecureSummation:
    return PlainSummation()
from fedstyle_secure.training.local import LocalConfig, LocalData


@dataclass(frozen=True)
class SimulationConfig:
    """One federated run.  ``rounds`` x ``local.epochs`` is every algorithm's training budget."""

    algorithm: str = "fedstyle"
    rounds: int = 20
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


def make_clients(config: SimulationConfig, data: FederationData, model: nn.Module, rng: np.random.Generator) -> list[StyleClient]:
    """One client per artist group, or a single client holding everything for ``central``."""
    spec = algorithm_spec(config.algorithm)
    groups = [data.split.train] if spec.pooled else [data.client_train_items(c) for c in range(len(data.clients))]
    public = data.public.originals()
    return [
        StyleClient(
            client_id=f"client-{i:03d}",
            data=LocalData(bank=InputBank(views=data.bank.views[:, items], kind=data.bank.kind), labels=data.labels[items]),
            spec=spec,
            model=model,
            config=config.local,
            public_inputs=public,
            n_artists=len(data.artists),
            rng=rng,
        )
        for i, items in enumerate(groups)
    ]


def standardise_inputs(clients: list[StyleClient], template: nn.Module, summation: SecureSummation) -> None:
    """Set-up round: the frozen features' mean/std from the secure sum of every client's
    feature moments, installed in every model (no client's moments are seen alone)."""
    packed = {c.client_id: pack(c.feature_moments()) for c in clients}
    layout = next(iter(packed.values()))[1]
    total = summation.sum({cid: vec for cid, (vec, _) in packed.items()}, round_id=-1).total
    mean, std = standardisation_from_sums(unpack(total, layout))
    for client in clients:
        client.set_standardisation(mean, std)
    template.encoder.set_standardisation(torch.from_numpy(mean), torch.from_numpy(std))


def _broadcast(state: ServerState) -> Broadcast:
    return Broadcast(state.round, state.params, state.consensus, state.prototypes.copy(), state.known.copy())


def run_simulation(
    config: SimulationConfig,
    data: FederationData,
    summations: SummationFactory = plain_summation,
    progress: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> SimulationResult:
    """Train ``config.algorithm`` for ``config.rounds`` rounds and evaluate on the held-out queries."""
    config.validate()
    spec = algorithm_spec(config.algorithm)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 0xF5])
    n_artists = len(data.artists)
    template = make_model(config.encoder, data.bank, data.public, n_artists if spec.needs_classifier else None)
    clients = make_clients(config, data, template, rng)
    ids = [c.client_id for c in clients]
    if spec.pooled and summations is not plain_summation:
        raise ConfigError("--secure protects federated sums; 'central' pools all data in one place and has none")
    if data.bank.kind == "features":
        standardise_inputs(clients, template, summations(ids, FEATURE_MOMENT_RANGE))
    summation = summations(ids, CONTRIBUTION_RANGE)
    state = initial_state(n_artists, config.encoder.embedding_dim, get_flat_params(template) if spec.averages_parameters else None)
    history: list[RoundRecord] = []
    started = time.perf_counter()
    bar = tqdm(range(config.rounds), desc=spec.name, disable=not progress, leave=False)
    for r in bar:
        t0 = time.perf_counter()
        if spec.shares_prototypes:  # every artist publishes with the model it starts the round from
            for client in clients:
                pub = client.publish(_broadcast(state))
                publish_prototypes(state, pub.artist_rows, pub.prototypes)
        broadcast = _broadcast(state)
        packed = {client.client_id: pack(client.fit(broadcast)) for client in clients}
        losses = [loss for client in clients for loss in client.last_result.losses]
        bytes_up = 0.0
        if spec.averages_parameters or spec.aligns_public:
            layout = next(iter(packed.values()))[1]
            agg = summation.sum({cid: vec for cid, (vec, _) in packed.items()}, round_id=r)
            state = aggregate(spec, state, unpack(agg.total, layout))
            bytes_up = float(np.mean(list(agg.bytes_up.values()))) if agg.bytes_up else 0.0
        else:
            state.round += 1
        metrics = _evaluate(spec.has_global_model, clients, state, template, data)
        record = RoundRecord(r + 1, float(np.mean(losses)), metrics.as_dict(), bytes_up, time.perf_counter() - t0)
        history.append(record)
        bar.set_postfix(acc=f"{metrics.artist_accuracy:.3f}", map=f"{metrics.map:.3f}")
        if on_round:
            on_round(record)
    global_model = _global_model(spec.averages_parameters, clients, state, template) if spec.has_global_model else None
    return SimulationResult(
        algorithm=spec.name,
        metrics=RetrievalMetrics(**history[-1].metrics),
        history=history,
        wall_time_s=time.perf_counter() - started,
        state=state,
        global_model=global_model,
        personal_models=None if spec.has_global_model else [c.model for c in clients],
    )


def _global_model(averages: bool, clients: list[StyleClient], state: ServerState, template: nn.Module) -> nn.Module:
    if averages:
        set_flat_params(template, state.params)
        return template
    return clients[0].model  # pooled: the single client's model is the model


def _evaluate(has_global: bool, clients, state, template, data) -> RetrievalMetrics:
    if has_global:
        return evaluate_global(_global_model(state.params is not None, clients, state, template), data)
    return evaluate_personal([c.model for c in clients], data)
