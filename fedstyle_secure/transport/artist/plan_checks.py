"""What an artist checks in every plan and broadcast before it acts on them (pure: no I/O).

Threat model: the server announces every plan -- its secure mode and phase, the run id, the
round's kind and value range -- and sends every broadcast.  Each check here refuses what a server
deviating from the protocol could use to read an artist's contribution or its private values; each
names the attack it stops.  :class:`~fedstyle_secure.transport.artist.runner.ArtistRunner` runs them
for the gRPC artist and the Flower artist alike.
"""

from __future__ import annotations

import numpy as np

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.coordinator import phases_of_mode
from fedstyle_secure.federation.round_layout import round_value_range
from fedstyle_secure.federation.rounds import SETUP_ROUND_ID, round_kind
from fedstyle_secure.federation.strategy import FEATURE_MOMENT_RANGE, STD_FLOOR
from fedstyle_secure.privacy.reports import is_run_id
from fedstyle_secure.transport.artist.state import NEW_RUN_BUDGET_NOTE
from fedstyle_secure.transport.config import ClientConfig
from fedstyle_secure.transport.wire import ROUND_KINDS_OF_WIRE, pb


def check_secure_mode(config: ClientConfig, plan: pb.RoundPlan, pinned: str | None) -> str:
    """The plan's secure mode, if this artist takes part in it; raise :class:`ConfigError` otherwise.

    Threat model: the server announces the secure mode and the phase in every plan, and a
    ``contribute`` plan of mode ``none`` asks for the artist's contribution in the clear.  So the
    artist takes part only in ``client.secure_mode`` when set, never in another mode than ``pinned``
    (the run's first plan's), and never in a phase its mode does not have
    (:func:`~fedstyle_secure.federation.coordinator.phases_of_mode`): a server switching a masked or
    encrypted federation to ``none`` mid-run, or announcing ``contribute`` under ``secagg``, would
    otherwise read an artist's own update instead of the sum."""
    mode = plan.secure_mode
    if plan.phase not in phases_of_mode(mode):
        raise ConfigError(
            f"round {plan.round_id}: the plan announces phase {plan.phase!r} under secure_mode {mode!r}, "
            "which has no such phase; refused"
        )
    if config.secure_mode is not None and mode != config.secure_mode:
        raise ConfigError(
            f"round {plan.round_id}: the plan announces secure_mode {mode!r}; this artist takes part only "
            f"with {config.secure_mode!r} (client.secure_mode)"
        )
    if pinned is not None and mode != pinned:
        raise ConfigError(
            f"round {plan.round_id}: the plan announces secure_mode {mode!r}, but this run began with "
            f"{pinned!r}; refused (a server switching modes mid-run could read this artist's contribution)"
        )
    return mode


def check_run_id(plan: pb.RoundPlan, pinned: str | None) -> str:
    """The plan's run id if this artist acts on it: well formed (or empty, from a server that names
    none) and the one of the run's first plan (``pinned``); else raise :class:`ConfigError`.  The
    artist signs it into every epsilon report, so a server cannot pass one run's reports off as
    another's to an auditor who knows the run's id."""
    if plan.run_id and not is_run_id(plan.run_id):
        raise ConfigError(
            f"round {plan.round_id}: the plan's run id {plan.run_id[:80]!r} is not 32 hex digits; refused"
        )
    if pinned is not None and plan.run_id != pinned:
        raise ConfigError(
            f"round {plan.round_id}: the plan announces run {plan.run_id!r}, but this artist's run is "
            f"{pinned!r}; refused (another federation needs a fresh client.state_dir, {NEW_RUN_BUDGET_NOTE})"
        )
    return plan.run_id


def check_round_kind(plan: pb.RoundPlan) -> str:
    """The kind of ``plan``'s round by the run's round rules (:func:`~fedstyle_secure.federation.rounds.round_kind`);
    raise :class:`ConfigError` if the plan announces another.

    Threat model: a set-up round sums each artist's feature moments, which are the same every time
    they are computed and carry no DP noise.  Every per-round guard (one CKKS decryption, one
    unmasking, never an earlier round) holds within a round id, so a server announcing the set-up
    round again under a later round id, without the victim, would read the victim's moments from
    the difference of the two sums.  The artist sums moments only in round
    :data:`~fedstyle_secure.federation.rounds.SETUP_ROUND_ID`, which its guards never let it enter twice."""
    expected = round_kind(plan.round_id, plan.total_rounds)
    announced = ROUND_KINDS_OF_WIRE.get(plan.kind, f"unknown ({plan.kind})")
    if announced != expected:
        raise ConfigError(
            f"round {plan.round_id}: the plan announces a {announced} round, but round {plan.round_id} of a run of "
            f"{plan.total_rounds} training rounds is a {expected} round; refused (set-up moments are summed "
            f"only in round {SETUP_ROUND_ID}: a second set-up round could be differenced with the first)"
        )
    return expected


def accepted_broadcast_standardisation(
    standardisation: tuple[np.ndarray, np.ndarray], private: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A broadcast's feature standardisation (mean, std), if this artist may apply it; else raise
    :class:`ConfigError`.  Under DP (``private``) none is accepted: the inputs keep the public-set
    statistics every party computes itself, because a server-chosen std (a tiny one on a feature
    one candidate artwork stands out in) could overflow a forward pass on that artwork alone.
    Otherwise both must be finite, the mean inside the set-up round's value range and the std at
    least the floor the server's own :func:`~fedstyle_secure.federation.strategy.standardisation_from_sums` keeps."""
    if private:
        raise ConfigError(
            "the broadcast carries a feature standardisation, but under DP the inputs are standardised with "
            "public-set statistics only (no set-up round); refused"
        )
    mean, std = standardisation
    low, high = FEATURE_MOMENT_RANGE
    honest = mean.shape == std.shape and np.all((mean >= low) & (mean <= high))  # NaN fails both comparisons
    if not (honest and np.all(np.isfinite(std)) and np.all(std >= STD_FLOOR)):
        raise ConfigError(
            f"the broadcast's feature standardisation is not one a set-up round gives (one shape, finite, mean in "
            f"[{low:g}, {high:g}], std >= {STD_FLOOR:g}); refused"
        )
    return mean, std


def check_value_range(plan: pb.RoundPlan, kind: str) -> None:
    """Raise :class:`ConfigError` unless the plan's value range is the one the round rules give a
    ``kind`` round (:func:`~fedstyle_secure.federation.round_layout.round_value_range`).

    Threat model: a masking artist sits a session out when its vector does not fit the session's
    range, so a range the server picked per session, over fresh sessions of one round, was a binary
    search on the artist's exact values (red-team review, 2026-11-30: a set-up round's extreme
    feature moments to 1e-9 in 80 sessions)."""
    expected = round_value_range(kind)
    if (plan.value_low, plan.value_high) != expected:
        raise ConfigError(
            f"round {plan.round_id}: the plan's value range [{plan.value_low:g}, {plan.value_high:g}] is not a "
            f"{kind} round's [{expected[0]:g}, {expected[1]:g}]; refused"
        )
