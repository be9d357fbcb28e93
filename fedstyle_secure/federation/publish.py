"""Turn a finished federation into what buyers query: the artists' published prototypes."""

from __future__ import annotations

from collections.abc import Sequence

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.simulator import SimulationConfig, SimulationResult
from fedstyle_secure.federation.strategy import ServerState
from fedstyle_secure.models.factory import EncoderConfig
from fedstyle_secure.models.heads import StyleModel
from fedstyle_secure.retrieval.index import StyleIndex, build_index
from fedstyle_secure.training.dataset import FederationData


def index_of_publication(
    model: StyleModel, encoder: EncoderConfig, artists: Sequence[str], state: ServerState
) -> StyleIndex:
    """The index buyers query: ``model``'s encoder and exactly the prototypes the artists published in
    the final round (under DP their Gaussian releases, never exact means), of those that published.
    One home for the simulator's ``--index-out`` and the server's index."""
    known = state.known
    return build_index(model, encoder, tuple(a for a, k in zip(artists, known) if k), state.prototypes[known])


def index_from_result(result: SimulationResult, config: SimulationConfig, data: FederationData) -> StyleIndex:
    """The index of a finished simulation: its final publication.  Personal-model algorithms have no
    shared encoder to index with."""
    if result.global_model is None:
        raise ConfigError(
            f"algorithm {result.algorithm!r} trains one model per client and has no shared encoder "
            "to build an index with; use fedstyle, fedavg, fedprox or central"
        )
    return index_of_publication(result.global_model, config.encoder, data.artists, result.state)
