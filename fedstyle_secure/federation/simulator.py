"""In-process federation: every client and the server in one process, same code paths as the
real deployment (:class:`StyleClient`, strategy math on sums, a pluggable secure summation)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import overload

import numpy as np
import torch
from tqdm.auto import tqdm

from fedstyle_secure.errors import ConfigError, PrivacyError
from fedstyle_secure.federation.client import Broadcast, StyleClient, federation_shape
from fedstyle_secure.federation.packing import compact_lossless, pack_as, unpack
from fedstyle_secure.federation.reporting import ReportWriter
from fedstyle_secure.federation.round_layout import FederationShape, round_layout
from fedstyle_secure.federation.rounds import RoundRules, default_refresh_rounds, plan_round
from fedstyle_secure.federation.strategy import (
    CONTRIBUTION_RANGE,
    FEATURE_MOMENT_RANGE,
    AlgorithmSpec,
    ServerOptimizer,
    ServerState,
    algorithm_spec,
    initial_state,
    publish_prototypes,
)
from fedstyle_secure.federation.sum_checks import checked_aggregate, checked_standardisation, decode_tolerance
from fedstyle_secure.models.factory import EncoderConfig
from fedstyle_secure.models.heads import StyleModel
from fedstyle_secure.models.inputs import InputBank
from fedstyle_secure.models.params import get_flat_params, set_flat_params
from fedstyle_secure.privacy.plan import (
    DpConfig,
    new_ledger,
    noisy_portfolio_size,
    plan_participation,
    public_warm_start_steps,
)
from fedstyle_secure.randomness import CsprngNoise, SeededNoise
from fedstyle_secure.retrieval.evaluate import evaluate_global, evaluate_personal
from fedstyle_secure.retrieval.metrics import RetrievalMetrics
from fedstyle_secure.secure.api import PlainSummation, SecureSummation
from fedstyle_secure.secure.factory import summation_factory
from fedstyle_secure.training.dataset import FederationData
from fedstyle_secure.training.local import LocalConfig, LocalData
from fedstyle_secure.training.pretrain import (
    MAX_PUBLIC_PRETRAIN_STEPS,
    make_initial_model,
    warm_start_cache,
)

SummationFactory = Callable[[Sequence[str], tuple[float, float]], SecureSummation]
"""Builds the secure summation over the given client ids for inputs within ``(low, high)``."""


def plain_summation(participants: Sequence[str], value_range: tuple[float, float]) -> SecureSummation:
    return PlainSummation()


@dataclass(frozen=True)
class SimulationConfig:
    """One federated run.  ``rounds`` x ``local.epochs`` is every algorithm's training budget.

    ``seed`` fixes everything DP does not rest on (split, initialisation, view choice).  The DP noise
    and Poisson batches come from a fresh OS-keyed CSPRNG per client, so DP runs are not
    reproducible, unless ``insecure_seeded_noise``: then they come from a generator seeded by ``seed``
    and the client's index, for research only -- anyone knowing the seed can strip the noise.
    """

    algorithm: str = "fedstyle"
    rounds: int = 20
    seed: int = 0
    local: LocalConfig = field(default_factory=LocalConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    secure: str = "none"
    dp: DpConfig | None = None
    public_pretrain_steps: int | None = None  # public warm start; None: on under DP, off without
    server: ServerOptimizer = field(default_factory=ServerOptimizer)
    federated_standardisation: bool = True  # non-private set-up round (off under DP regardless)
    insecure_seeded_noise: bool = False

    @property
    def pretrain_steps(self) -> int:
        if self.public_pretrain_steps is None:
            return public_warm_start_steps(self.dp)
        return self.public_pretrain_steps

    def validate(self) -> None:
        algorithm_spec(self.algorithm)
        self.server.validate()
        if self.dp is not None:
            self.dp.validate()
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {self.rounds}")
        steps = self.public_pretrain_steps
        if steps is not None and not 0 <= steps <= MAX_PUBLIC_PRETRAIN_STEPS:
            raise ConfigError(f"--public-pretrain-steps must be in 0..{MAX_PUBLIC_PRETRAIN_STEPS}, got {steps}")
        if self.local.epochs < 1:
            raise ConfigError(f"--local-epochs must be >= 1, got {self.local.epochs}")
        if self.local.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.local.batch_size}")
        for flag, value in (("--lr", self.local.lr), ("--tau", self.local.tau)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{flag} must be a finite number > 0, got {value}")


@dataclass
class RoundRecord:
    """One round.  ``metrics`` use exact (un-noised) prototypes of the current model: a
    simulation-only monitor; the final metrics use what the artists actually published."""

    round: int
    mean_loss: float
    metrics: dict[str, float]
    bytes_up_per_client: float
    seconds: float
    participants: int = 0


@dataclass
class SimulationResult:
    algorithm: str
    metrics: RetrievalMetrics
    history: list[RoundRecord]
    wall_time_s: float
    state: ServerState
    global_model: StyleModel | None
    personal_models: Sequence[StyleModel] | None  # built on access (ClientModels)
    privacy: dict[str, dict] = field(default_factory=dict)

    def history_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.history]


def round_rules(config: SimulationConfig) -> RoundRules:
    """The run's round rules, as the server derives them from its schedule."""
    return RoundRules(algorithm_spec(config.algorithm), config.rounds, default_refresh_rounds(config.rounds, config.dp))


class TurnTaking:
    """All clients of a simulation share ONE model object (the workspace) and train in turn.

    Between calls a client keeps only its own trainable parameters as one flat float32 vector, and
    only where the algorithm needs them across rounds (personal models: ``local``, ``fedproto``, the
    pooled ``central``); parameter-averaging algorithms keep none, since every round starts from the
    broadcast.  Memory per artist is then its parameters (or nothing) instead of a model object:
    the simulator's share of 1,000 artists fits a few GB.  Buffers (the input standardisation) are
    the same for every client and live in the workspace.
    """

    def __init__(self, workspace: StyleModel, keeps_own: bool) -> None:
        self.workspace = workspace
        self._start = get_flat_params(workspace) if keeps_own else None
        self._own: dict[str, np.ndarray] = {}

    def load(self, client: StyleClient) -> None:
        """Put ``client``'s parameters into the workspace (no-op when the broadcast supplies them)."""
        if self._start is not None:
            set_flat_params(self.workspace, self._own.get(client.client_id, self._start))

    def save(self, client: StyleClient) -> None:
        """Keep what ``client`` just trained in the workspace, as its own parameters."""
        if self._start is not None:
            self._own[client.client_id] = get_flat_params(self.workspace)

    def kept_bytes(self) -> dict[str, int]:
        """Bytes of parameters kept per client (empty when the broadcast supplies them)."""
        return {cid: int(params.nbytes) for cid, params in self._own.items()}

    def model_of(self, client: StyleClient) -> StyleModel:
        """An independent copy of ``client``'s model (for evaluation and results)."""
        self.load(client)
        return copy.deepcopy(self.workspace)


class ClientModels(Sequence[StyleModel]):
    """Each client's model, built on access (``TurnTaking.model_of``): n models never exist at once."""

    def __init__(self, turns: TurnTaking, clients: Sequence[StyleClient]) -> None:
        self.turns, self.clients = turns, list(clients)

    def __len__(self) -> int:
        return len(self.clients)

    @overload
    def __getitem__(self, index: int) -> StyleModel: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[StyleModel]: ...

    def __getitem__(self, index: int | slice) -> StyleModel | Sequence[StyleModel]:
        if isinstance(index, slice):
            return ClientModels(self.turns, self.clients[index])
        return self.turns.model_of(self.clients[index])


def make_clients(
    config: SimulationConfig,
    data: FederationData,
    model: StyleModel,
    rng: np.random.Generator,
    turns: TurnTaking | None = None,
) -> list[StyleClient]:
    """One client per artist group, or a single client holding everything for ``central``.  With
    ``turns``, every client uses its workspace instead of a copy of ``model`` (see :class:`TurnTaking`)."""
    spec = algorithm_spec(config.algorithm)
    groups = [data.split.train] if spec.pooled else [data.client_train_items(c) for c in range(len(data.clients))]
    public = data.public.originals()
    releases = round_rules(config).release_plan_rounds()  # the final publication comes on top
    clients = []
    for i, items in enumerate(groups):
        noise = SeededNoise([config.seed, i, 0xD9]) if config.insecure_seeded_noise else CsprngNoise()
        plan = ledger = None
        if config.dp is not None:
            counting = (
                SeededNoise([config.seed, i, 0xC0]) if config.insecure_seeded_noise else noise
            )  # apart: same release draws
            size = noisy_portfolio_size(len(items), counting)
            plan = plan_participation(config.dp, size, config.local, config.rounds, releases)
            ledger = new_ledger(plan, len(items), config.dp.epsilon)
        clients.append(
            StyleClient(
                client_id=f"client-{i:03d}",
                data=LocalData(
                    bank=InputBank(views=data.bank.views[:, items], kind=data.bank.kind), labels=data.labels[items]
                ),
                spec=spec,
                model=turns.workspace if turns is not None else model,
                config=config.local,
                public_inputs=public,
                n_artists=len(data.artists),
                rng=rng,
                dp=plan,
                ledger=ledger,
                noise=noise,
                share_model=turns is not None,
            )
        )
    return clients


def standardise_inputs(
    clients: list[StyleClient],
    template: StyleModel,
    summation: SecureSummation,
    spec: AlgorithmSpec,
    shape: FederationShape,
) -> None:
    """Set-up round: the frozen features' mean/std from the secure sum of every client's
    feature moments, installed in every model (no client's moments are seen alone).  The
    layout and the checks of the sum come from the plan (``shape``), as on the gRPC server."""
    layout = round_layout(spec, shape, "setup")
    assert layout is not None
    agg = summation.sum({c.client_id: pack_as(c.feature_moments(), layout) for c in clients}, round_id=0)
    n = len(agg.contributors)
    tolerance = decode_tolerance(FEATURE_MOMENT_RANGE, n, len(clients))
    mean, std = checked_standardisation(spec, shape, unpack(agg.total, layout), n, tolerance)
    for client in clients:
        client.set_standardisation(mean, std)
    template.projection_head().set_standardisation(torch.from_numpy(mean), torch.from_numpy(std))


def _broadcast(state: ServerState) -> Broadcast:
    return Broadcast(state.round, state.params, state.consensus, state.prototypes.copy(), state.known.copy())


def run_simulation(
    config: SimulationConfig,
    data: FederationData,
    summations: SummationFactory | None = None,
    progress: bool = False,
    on_round: Callable[[RoundRecord], None] | None = None,
    reports_dir: Path | None = None,
) -> SimulationResult:
    """Train ``config.algorithm`` for ``config.rounds`` rounds and evaluate on the held-out queries.

    Every sum goes through ``config.secure``'s summation; ``summations`` overrides it (tests and
    benchmarks that need options, e.g. a dropout schedule)."""
    config.validate()
    spec = algorithm_spec(config.algorithm)
    if summations is None:
        summations = summation_factory(config.secure) or plain_summation
    rng = np.random.default_rng([config.seed, 0xF5])
    n_artists = len(data.artists)
    template = make_initial_model(
        config.encoder,
        data.bank,
        data.public,
        n_artists if spec.needs_classifier else None,
        seed=config.seed,
        pretrain_steps=config.pretrain_steps,
        cache=warm_start_cache(data.cache_dir),
    )
    turns = TurnTaking(copy.deepcopy(template), keeps_own=not spec.averages_parameters)
    clients = make_clients(config, data, template, rng, turns)
    ids = [c.client_id for c in clients]
    if spec.pooled and summations is not plain_summation:
        raise ConfigError("--secure protects federated sums; 'central' pools all data in one place and has none")
    reports = _report_writer(reports_dir, clients, data) if config.dp is not None and reports_dir is not None else None
    private_layers = config.dp.private_layers if config.dp is not None else None
    feature_dim, embedding_dim = int(np.prod(data.bank.input_shape)), config.encoder.embedding_dim
    # the plan: what every round sums, computed as the gRPC server computes it
    shape = federation_shape(spec, template, feature_dim, len(data.public), embedding_dim, private_layers)
    # under DP: public-set statistics (free)
    if data.bank.kind == "features" and config.dp is None and config.federated_standardisation:
        standardise_inputs(clients, template, summations(ids, FEATURE_MOMENT_RANGE), spec, shape)
    summation = summations(ids, CONTRIBUTION_RANGE)
    rules = round_rules(config)
    state = initial_state(
        n_artists, config.encoder.embedding_dim, get_flat_params(template) if spec.averages_parameters else None
    )
    history: list[RoundRecord] = []
    started = time.perf_counter()
    bar = tqdm(rules.training_round_ids(), desc=spec.name, disable=not progress, leave=False)
    for round_id in bar:
        r, t0 = plan_round(round_id), time.perf_counter()
        active = _active_clients(clients, state, r)
        if not active:
            break
        if rules.refreshes_prototypes(round_id):  # artists publish with the model they start from
            for client in (c for c in active if c.publishes_at(r)):
                turns.load(client)
                pub = client.publish(_broadcast(state), round_id=r)
                if rules.sends_prototypes(round_id):
                    publish_prototypes(state, pub.artist_rows, pub.prototypes)
        broadcast = _broadcast(state)
        layout = round_layout(spec, shape, "train")  # the plan's, never a client's
        packed: dict[str, np.ndarray] = {}  # packed contributions only: the named arrays go once packed
        for client in active:
            arrays = _fit_in_turn(turns, client, broadcast, r)
            if layout is not None:
                packed[client.client_id] = compact_lossless(pack_as(arrays, layout))
        losses = _last_losses(active) or [float("nan")]  # no active client: no loss
        bytes_up = 0.0
        if layout is not None:
            agg = summation.sum(packed, round_id=round_id)
            del packed
            n = len(agg.contributors)
            tolerance = decode_tolerance(CONTRIBUTION_RANGE, n, len(ids))
            state = checked_aggregate(spec, shape, state, unpack(agg.total, layout), n, tolerance, config.server)
            bytes_up = float(np.mean(list(agg.bytes_up.values()))) if agg.bytes_up else 0.0
        else:
            state.round += 1
        if reports is not None:
            reports.write_round(active, r)
        metrics = _evaluate(spec.has_global_model, turns, clients, state, template, data)
        record = RoundRecord(
            round_id, float(np.mean(losses)), metrics.as_dict(), bytes_up, time.perf_counter() - t0, len(active)
        )
        history.append(record)
        bar.set_postfix(acc=f"{metrics.artist_accuracy:.3f}", map=f"{metrics.map:.3f}")
        if on_round:
            on_round(record)
    final_r = plan_round(rules.final_round_id)
    final = _final_publication(spec, turns, clients, state, template, data, final_r)
    if reports is not None:
        reports.write_round([c for c in clients if c.ledger is not None], final_r)
    global_model = None
    if spec.has_global_model:
        global_model = _global_model(spec.averages_parameters, turns, clients, state, template)
    return SimulationResult(
        algorithm=spec.name,
        metrics=final,
        history=history,
        wall_time_s=time.perf_counter() - started,
        state=state,
        global_model=global_model,
        personal_models=None if spec.has_global_model else ClientModels(turns, clients),
        privacy=_privacy_summary(clients, data),
    )


def _last_losses(clients: list[StyleClient]) -> list[float]:
    """The per-epoch training losses of every client's last ``fit``."""
    losses: list[float] = []
    for client in clients:
        if client.last_result is None:
            raise RuntimeError(f"{client.client_id} has no training result: fit it before reading its losses")
        losses.extend(client.last_result.losses)
    return losses


def _fit_in_turn(turns: TurnTaking, client: StyleClient, broadcast: Broadcast, round_id: int) -> dict[str, np.ndarray]:
    turns.load(client)
    contribution = client.fit(broadcast, round_id=round_id)
    turns.save(client)
    return contribution


def _global_model(
    averages: bool, turns: TurnTaking, clients: list[StyleClient], state: ServerState, template: StyleModel
) -> StyleModel:
    if averages:
        if state.params is None:
            raise ConfigError("the global model averages parameters, but the server state holds none")
        set_flat_params(template, state.params)
        return template
    return turns.model_of(clients[0])  # pooled: the single client's model is the model


def _evaluate(has_global: bool, turns: TurnTaking, clients, state, template, data) -> RetrievalMetrics:
    if has_global:
        return evaluate_global(_global_model(state.params is not None, turns, clients, state, template), data)
    return evaluate_personal(ClientModels(turns, clients), data)


def _active_clients(clients: list[StyleClient], state: ServerState, round_id: int) -> list[StyleClient]:
    """Clients whose budget admits this round; the others are marked retired with the reason."""
    active = []
    for client in clients:
        if client.check_round(round_id):
            active.append(client)
        else:
            state.retired.setdefault(client.client_id, client.retired_reason or "retired")
    return active


def _final_publication(spec, turns: TurnTaking, clients, state, template, data, round_id: int) -> RetrievalMetrics:
    """Every artist still in the run publishes its prototypes with the final model (a DP release
    under DP); an artist retired during training does not, as over the network (its budget is
    spent or it left).  The held-out queries are scored against exactly what was published."""
    models = None if spec.has_global_model else ClientModels(turns, clients)
    model = None if models else _global_model(spec.averages_parameters, turns, clients, state, template)
    table = np.zeros_like(state.prototypes)
    known = np.zeros(len(data.artists), dtype=bool)
    final = _broadcast(state)
    for client in clients:
        if client.client_id in state.retired:
            continue
        decision = client.release_decision(round_id)
        if decision is not None and not decision.allowed:
            state.retired.setdefault(client.client_id, "privacy budget exhausted before the final publication")
            continue
        if model is not None:
            client.model.load_state_dict(model.state_dict())
        else:
            turns.load(client)
        pub = client.publish(final, round_id=round_id, final=True)
        table[pub.artist_rows] = pub.prototypes
        known[pub.artist_rows] = True
    publish_prototypes(state, np.flatnonzero(known), table[known])
    if model is not None:
        return evaluate_global(model, data, prototypes=table)
    assert models is not None  # no global model only when every client keeps its own
    return evaluate_personal(models, data, prototypes=table)


def _report_writer(reports_dir: Path, clients: list[StyleClient], data: FederationData) -> _RoundReports:
    return _RoundReports(ReportWriter(reports_dir, list(data.artists)), data)


class _RoundReports:
    def __init__(self, writer: ReportWriter, data: FederationData) -> None:
        self.writer, self.data = writer, data

    def write_round(self, clients: list[StyleClient], round_id: int) -> None:
        for client in clients:
            if client.ledger is None or client.dp is None:
                raise PrivacyError(f"{client.client_id}: an ε report needs the client's DP plan and budget ledger")
            for artist in client.artists:
                self.writer.write(
                    self.data.artists[artist],
                    client.ledger,
                    round_id,
                    noise_source=client.noise.name,
                    final_round=client.dp.final_round,
                )


def _privacy_summary(clients: list[StyleClient], data: FederationData) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for client in clients:
        if client.ledger is None or client.dp is None:  # a client has both or neither
            continue
        for artist in client.artists:
            out[data.artists[artist]] = {
                "epsilon_spent": client.ledger.epsilon_spent,
                "epsilon_budget": client.ledger.budget.epsilon,
                "delta": client.ledger.budget.delta,
                "accountant": client.ledger.accountant,
                "noise_multiplier": client.dp.noise_multiplier,
                "prototype_release_sigma": client.dp.release_sigma,
                "final_release_sigma": client.dp.final_release_sigma,
                "noise_source": client.noise.name,
                "retired": client.retired_reason,
                "privacy_unit": "one artwork (record-level)",
            }
    return out
