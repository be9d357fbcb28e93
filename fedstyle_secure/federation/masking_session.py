"""Public parameters of one pairwise-masking session over gRPC, shared by server and artists.

With ``secure_mode`` ``secagg``/``secagg+`` the ``contribute`` step of a round becomes five
phases (:data:`MASKING_PHASES`, named as in :class:`~fedstyle_secure.secure.masking.config.MaskingPhase`);
in each the artist fetches the server's message of the phase (:data:`FETCH_NAMES`) and
uploads its reply.  Both sides build the same
:class:`~fedstyle_secure.secure.masking.config.RoundConfig` with :func:`round_config`, through
the simulator's own summation factory (:func:`~fedstyle_secure.secure.factory.make_summation`),
from public data only: the mode, the plan's participants and value range, the
:class:`MaskingParams` announced in the plan, and the packed vector length.  No I/O here.

Threat-model notes:

* The session id binds every signature, key derivation and sealed share to one attempt of
  one round; it is ``(round_id << 32) | tag`` with a fresh random 32-bit ``tag`` per attempt,
  so a retried or resumed round never reuses the id, and artists refuse ids they already used
  (:func:`check_session_id`): keys advertised in an aborted attempt (whose mask key the server
  may have reconstructed) can never be replayed into a later one.
* The SecAgg+ graph is not derived from anything the server chooses (plan seed, session id):
  it comes from the transcript of the artists' signed advertisements, each carrying 32 fresh
  random bytes, which every artist receives and verifies in full.  What the server still
  chooses -- which advertisements to include -- is discussed in ``docs/secure_masking.md``.
* Everything an artist signs binds the digest of the round configuration it built from its
  plan (participants, value range, threshold, degree, vector length): artists shown different
  participant lists never accept each other's keys or survivor-set signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedstyle_secure.errors import ConfigError, SecureAggregationError
from fedstyle_secure.secure.factory import make_summation
from fedstyle_secure.secure.masking.config import MASKING_MODES, MaskingPhase, RoundConfig
from fedstyle_secure.secure.masking.summation import MaskedSummation

# The server message an artist fetches at the start of each phase (advertise needs none).
FETCH_NAMES: dict[str, str] = {
    MaskingPhase.SHARE.value: "roster",
    MaskingPhase.MASKED_INPUT.value: "delivery",
    MaskingPhase.CONSISTENCY.value: "survivors",
    MaskingPhase.UNMASK.value: "unmask_request",
}
TAG_BITS = 32


def is_masking_mode(secure_mode: str) -> bool:
    return secure_mode in MASKING_MODES


def session_id(round_id: int, tag: int) -> int:
    """The masking session id of one attempt of federation round ``round_id``."""
    if not 0 <= round_id < 2**TAG_BITS or not 0 <= tag < 2**TAG_BITS:
        raise SecureAggregationError(f"round id {round_id} and tag {tag} must each fit in {TAG_BITS} bits")
    return (round_id << TAG_BITS) | tag


def check_session_id(session: int, round_id: int, used: set[int]) -> None:
    """Raise unless ``session`` belongs to federation round ``round_id`` and is not in ``used``."""
    if session >> TAG_BITS != round_id:
        raise SecureAggregationError(f"masking session {session:#x} does not belong to round {round_id}")
    if session in used:
        raise SecureAggregationError(
            f"masking session {session:#x} was already used; refusing to advertise keys twice under one id"
        )


@dataclass(frozen=True)
class MaskingParams:
    """What the plan announces: ``threshold`` as a fraction of share holders, ``degree`` 0 = default."""

    session_id: int
    threshold: float
    degree: int


def round_config(
    mode: str, participants: Sequence[str], value_range: tuple[float, float], params: MaskingParams, vector_length: int
) -> RoundConfig:
    """The session's :class:`RoundConfig`: codec over ``value_range`` for ``len(participants)``
    inputs, exactly as the simulator's ``summation_factory`` builds it."""
    options: dict[str, object] = {"clip_range": value_range, "threshold": params.threshold}
    if mode == "secagg+" and params.degree:
        options["degree"] = params.degree
    summation = make_summation(mode, list(participants), **options)
    if not isinstance(summation, MaskedSummation):
        raise ConfigError(f"secure mode {mode!r} has no pairwise-masking session")
    return summation.round_config(list(participants), round_id=params.session_id, vector_length=vector_length)
