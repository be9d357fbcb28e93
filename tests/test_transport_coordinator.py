"""The server's round state machine, without a network (time is passed in)."""

from __future__ import annotations

import numpy as np
import pytest

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.federation.coordinator import Coordinator, Phase, Schedule
from fedstyle_secure.federation.packing import pack
from fedstyle_secure.federation.rejections import Malformed
from fedstyle_secure.federation.round_layout import FederationShape, ModelShape
from fedstyle_secure.federation.strategy import initial_state
from fedstyle_secure.secure.ckks.primitives import CkksContext

ROSTER = ("a", "b", "c")
SHAPE = FederationShape(feature_dim=3, embedding_dim=4, public_count=2, model=ModelShape.everything(5))  # the plan


def _moments(value: float) -> dict[str, np.ndarray]:
    return {"clients": np.array([1.0]), "feature_mean": np.full(3, value), "feature_sq_mean": np.full(3, value * value)}


def _coordinator(**schedule) -> Coordinator:
    defaults = {"rounds": 1, "quorum": 2, "phase_seconds": 10, "max_retries": 1, "startup_seconds": 0}
    timing = Schedule(**{**defaults, **schedule})
    c = Coordinator(schedule=timing, roster=ROSTER, state=initial_state(3, 4, np.zeros(5, np.float32)), shape=SHAPE)
    c.start(now=0.0)
    return c


def _submit(c: Coordinator, artist: str, value: float, now: float, nonce: bytes) -> None:
    vector, layout = pack(_moments(value))
    c.submit_contribution(artist, 0, layout, vector.astype("<f8").tobytes(), nonce.ljust(16, b"."), now)


def test_all_answers_close_the_phase_at_once_with_the_mixture_statistics():
    c = _coordinator()
    for i, (artist, value) in enumerate(zip(ROSTER, (1.0, 2.0, 3.0))):
        _submit(c, artist, value, now=1.0, nonce=bytes([i]))
    assert c.standardisation is not None
    mean, std = c.standardisation
    np.testing.assert_allclose(mean, 2.0, rtol=1e-6)
    np.testing.assert_allclose(std, np.sqrt(2 / 3), rtol=1e-5)  # each client's moments are point masses
    assert (c.plan().round_id, c.plan().phase) == (1, Phase.CONTRIBUTE)


def test_plain_contributions_are_held_in_float32_only_where_that_is_exact():
    """Until its phase closes the server holds every plain contribution (``_Collect``): as float32
    where that loses nothing (half the memory per artist), else as sent; the sum is the same."""
    c = _coordinator(quorum=3)
    _submit(c, "a", 0.5, 1.0, b"1")  # 0.5 and 0.25 are exact in float32
    _submit(c, "b", 0.1, 1.0, b"2")  # 0.1 and 0.01 are not

    held = c._collect.vectors
    assert held["a"].dtype == np.float32 and held["b"].dtype == np.float64
    _submit(c, "c", 1.0, 1.0, b"3")
    assert c.standardisation is not None
    np.testing.assert_allclose(c.standardisation[0], (0.5 + 0.1 + 1.0) / 3, rtol=1e-6)  # stored as float32


def test_a_ckks_server_with_a_bad_key_file_refuses_to_start_instead_of_failing_every_round():
    """The key store defers TenSEAL's parse of the server's context; a 'ckks' coordinator parses and
    checks it when it starts, so a damaged file stops the server at once (every artist's contribution
    would otherwise be refused at the first CKKS round, blaming the artists)."""
    data = CkksContext.generate().public().serialize()
    damaged = CkksContext.load_deferred(data[:-64] + bytes(64))
    schedule = Schedule(rounds=1, quorum=2, phase_seconds=10, max_retries=1, startup_seconds=0, secure_mode="ckks")
    c = Coordinator(schedule=schedule, roster=ROSTER, state=initial_state(3, 4, None), shape=SHAPE, ckks=damaged)

    with pytest.raises(SecureAggregationError, match="TenSEAL cannot parse"):
        c.start(now=0.0)


def test_quorum_at_the_deadline_proceeds_without_stragglers():
    c = _coordinator()
    _submit(c, "a", 1.0, 1.0, b"1")
    _submit(c, "b", 3.0, 1.0, b"2")
    assert not c.tick(5.0)  # before the deadline: keep waiting for c
    assert c.tick(10.5)
    assert c.standardisation is not None
    np.testing.assert_allclose(c.standardisation[0], 2.0, rtol=1e-6)


def test_below_quorum_retries_then_gives_up_instead_of_waiting_forever():
    c = _coordinator()
    _submit(c, "a", 1.0, 1.0, b"1")
    assert c.tick(10.5) and c.attempt == 1 and not c.finished and "quorum 2" in c.last_error
    assert c.plan().round_id == 0 and c.plan().phase_deadline == pytest.approx(20.5)
    assert c.tick(21.0)
    assert c.finished and "gave up after 1 retries" in c.failed


def test_the_first_phase_after_a_start_waits_for_artists_to_set_up():
    """Artists extract features and build the starting model before their first submission: the
    first phase's deadline adds ``startup_seconds``, later ones (and retries) get ``phase_seconds``."""
    c = _coordinator(startup_seconds=100)
    assert c.plan().phase_deadline == pytest.approx(110.0)
    _submit(c, "a", 1.0, 1.0, b"1")
    assert not c.tick(50.0)  # past phase_seconds, inside the start-up grace: keep waiting
    assert c.tick(110.5) and c.attempt == 1 and "quorum 2" in c.last_error
    assert c.plan().phase_deadline == pytest.approx(120.5)  # a retry gets phase_seconds only
    with pytest.raises(ConfigError, match="startup_seconds"):
        Schedule(startup_seconds=-1).validate(3)


def test_contribution_with_unexpected_arrays_is_malformed():
    c = _coordinator()
    vector, layout = pack({"weighted_params": np.zeros(3)})
    with pytest.raises(Malformed, match="expects"):
        c.submit_contribution("a", 0, layout, vector.tobytes(), b"n" * 16, 1.0)


def test_schedule_validation_names_the_field():
    with pytest.raises(ConfigError, match="quorum"):
        Schedule(quorum=5).validate(3)
    with pytest.raises(ConfigError, match="secure_mode"):
        Schedule(secure_mode="paillier").validate(3)


def test_identical_publication_resend_is_acknowledged_but_a_second_draw_is_refused():
    """An artist whose answer got lost resends the same publication; swapping in a new DP draw is refused."""
    from fedstyle_secure.federation.rejections import Duplicate

    c = _coordinator(standardise=False, refreshes=frozenset({0}))
    plan = c.plan()
    assert plan.phase is Phase.PUBLISH
    proto = np.full((1, 4), 0.5)
    c.submit_publication("a", plan.round_id, np.array([0]), proto, b"n1".ljust(16, b"."), now=1.0)
    c.submit_publication("a", plan.round_id, np.array([0]), proto.copy(), b"n2".ljust(16, b"."), now=1.5)  # no error
    with pytest.raises(Duplicate, match="already submitted"):
        c.submit_publication("a", plan.round_id, np.array([0]), proto + 0.1, b"n3".ljust(16, b"."), now=2.0)
    assert c.plan().phase is Phase.PUBLISH  # one of three artists so far: still waiting
