"""The differential-privacy settings of a networked federation: parsed from ``server.toml`` /
``client.toml``, announced in every :class:`RoundPlan` as ``DpParameters``, and read back by artists.

Where what is configured (privacy unit: one artwork, record-level):

* ``[federation]`` of ``server.toml`` -- the plan the whole federation runs: target ``epsilon``
  (absent or ``inf`` = no DP), ``delta`` (absent = per artist ``min(1e-5, 1/(10 n))` rounded down to a power of ten`),
  ``clip_norm``, ``accountant`` (``prv`` default or ``rdp``: the sound ones; ``gdp`` is refused), ``private_layers``
  (``last`` default, ``all``: what DP-SGD updates) and optionally a fixed ``noise_multiplier``
  instead of calibrating one.  The server announces it; it never sees
  an artist's number of artworks ``n``, so ``delta < 1/n`` is checked by each artist.
* ``[client]`` of ``client.toml`` -- the artist's OWN budget ``budget_epsilon`` (absent = the
  federation's epsilon) and ``budget_delta`` (absent = the plan's delta), enforced by its own
  ledger whatever the server announces, plus ``state_dir`` (durable state, required under DP)
  and ``reports_dir`` (its signed epsilon reports; default ``<state_dir>/reports``).

Threat model: the server is trusted to coordinate, not to protect artists' privacy.  An
artist never spends beyond its own budget, refuses to send non-private statistics of its data
in a DP federation, and an artist that set a budget refuses a federation without DP.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fedstyle_secure.errors import ConfigError, PrivacyError
from fedstyle_secure.federation.coordinator import Schedule
from fedstyle_secure.federation.rounds import default_refresh_rounds
from fedstyle_secure.privacy.accounting import BUDGET_ACCOUNTANTS, DEFAULT_ACCOUNTANT
from fedstyle_secure.privacy.plan import DEFAULT_PRIVATE_LAYERS, PRIVATE_LAYERS, DpConfig, check_announced_plan
from fedstyle_secure.transport.wire import pb
from fedstyle_secure.validation import PositiveFinite, Probability, from_table, gt, one_of, validate_on_init


@dataclass(frozen=True)
class FederationDpTable:
    """The DP fields of ``[federation]`` (and of an announced plan), validated field by field.
    ``epsilon`` absent or ``inf``: no DP."""

    epsilon: Annotated[float, gt(0)] | None = None  # NaN fails gt; inf means no DP
    delta: Probability | None = None  # and below 1/n for every artist's n artworks (checked by each artist)
    clip_norm: PositiveFinite | None = None
    accountant: Annotated[str, one_of(BUDGET_ACCOUNTANTS)] | None = None
    noise_multiplier: PositiveFinite | None = None
    private_layers: Annotated[str, one_of(PRIVATE_LAYERS)] | None = None

    def __post_init__(self) -> None:
        validate_on_init(self)


FEDERATION_DP_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(FederationDpTable))


def pop_federation_dp(table: dict[str, Any], where: str) -> DpConfig | None:
    """Remove the DP fields from a ``[federation]`` table and validate them, naming the field.

    Returns ``None`` when ``epsilon`` is absent or ``inf`` (no DP); the other DP fields are then
    refused, since nothing would enforce them.
    """
    given = {name: table.pop(name) for name in FEDERATION_DP_FIELDS if name in table}
    dp = from_table(FederationDpTable, given, where)
    if dp.epsilon is None or dp.epsilon == math.inf:
        extra = sorted(set(given) - {"epsilon"})
        if extra:
            raise ConfigError(f"{where}.{extra[0]}: only meaningful with a finite federation.epsilon (DP is off)")
        return None
    return DpConfig(
        epsilon=dp.epsilon,
        delta=dp.delta,
        clip_norm=1.0 if dp.clip_norm is None else dp.clip_norm,
        accountant=dp.accountant or DEFAULT_ACCOUNTANT,
        noise_multiplier=dp.noise_multiplier,
        private_layers=dp.private_layers or DEFAULT_PRIVATE_LAYERS,
    )


def dp_schedule(schedule: Schedule, dp: DpConfig | None, given: Iterable[str], where: str) -> Schedule:
    """The ``[federation]`` defaults the simulator uses: unless ``refreshes`` is ``given``, prototype
    refreshes at :func:`~fedstyle_secure.federation.rounds.default_refresh_rounds` (every training
    round without DP; ``DpConfig.prototype_refreshes`` evenly spaced ones under DP; a server.toml
    without ``refreshes`` refreshed none before, unlike the simulator); under DP no set-up round (it
    would sum private feature moments without noise; the heads keep their public-set standardisation)."""
    given = set(given)
    if dp is None:
        return (
            schedule
            if "refreshes" in given
            else dataclasses.replace(schedule, refreshes=default_refresh_rounds(schedule.rounds, None))
        )
    if "standardise" in given and schedule.standardise:
        raise ConfigError(
            f"{where}.standardise: the set-up round sums private feature moments without DP noise; "
            "it cannot run in a DP federation (leave it out or set it to false)"
        )
    refreshes = schedule.refreshes if "refreshes" in given else default_refresh_rounds(schedule.rounds, dp)
    try:  # what every artist would refuse (and retire over): refused here, at the server's start
        check_announced_plan(dp, schedule.rounds, frozenset(refreshes))
    except PrivacyError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return dataclasses.replace(schedule, standardise=False, refreshes=frozenset(refreshes))


def require_dp_schedule(dp: DpConfig | None, standardise: bool) -> None:
    """Refuse to start a DP server whose schedule runs the non-private set-up round."""
    if dp is not None and standardise:
        raise ConfigError(
            "federation.standardise: the set-up round sums private feature moments without DP noise; "
            "a DP federation (federation.epsilon set) must run without it"
        )


def dp_parameters(dp: DpConfig | None, release_rounds: Iterable[int]) -> pb.DpParameters | None:
    """The plan's ``DpParameters`` (``None`` without DP); 0 marks values each artist derives itself."""
    if dp is None:
        return None
    return pb.DpParameters(
        noise_multiplier=dp.noise_multiplier or 0.0,
        clip_norm=dp.clip_norm,
        sample_rate=0.0,
        epsilon_budget=dp.epsilon,
        delta=dp.delta or 0.0,
        accountant=dp.accountant,
        release_rounds=sorted(int(r) for r in release_rounds),
        private_layers=dp.private_layers,
    )


def announced_dp(plan: pb.RoundPlan) -> tuple[DpConfig, frozenset[int]] | None:
    """An artist's reading of the plan's DP parameters (``None``: the federation runs without DP).

    Raises :class:`ConfigError` naming the announced field when it is unusable.
    """
    if not plan.HasField("dp"):
        return None
    msg = plan.dp
    table: dict[str, Any] = {
        "epsilon": msg.epsilon_budget,
        "clip_norm": msg.clip_norm,
        "accountant": msg.accountant or "prv",
    }
    if msg.delta:
        table["delta"] = msg.delta
    if msg.noise_multiplier:
        table["noise_multiplier"] = msg.noise_multiplier
    if msg.private_layers:
        table["private_layers"] = msg.private_layers
    dp = pop_federation_dp(table, "announced federation")
    if dp is None:
        raise ConfigError("announced federation.epsilon: a DP plan needs a finite epsilon")
    return dp, frozenset(int(r) for r in msg.release_rounds)
