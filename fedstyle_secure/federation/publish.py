"""Turn a finished federation into what buyers query: the artists' published prototypes."""

from __future__ import annotations

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.simulator import SimulationConfig, SimulationResult
from fedstyle_secure.models.embed import embed_views, prototypes_from
from fedstyle_secure.retrieval.index import StyleIndex, build_index
from fedstyle_secure.training.dataset import FederationData


def index_from_result(result: SimulationResult, config: SimulationConfig, data: FederationData) -> StyleIndex:
    """Every artist embeds its own training artworks with the final shared encoder and publishes
    the mean as its prototype.  Personal-model algorithms have no shared encoder to index with."""
    if result.global_model is None:
        raise ConfigError(
            f"algorithm {result.algorithm!r} trains one model per client and has no shared encoder "
            "to build an index with; use fedstyle, fedavg, fedprox or central"
        )
    train = data.split.train
    protos, _ = prototypes_from(
        embed_views(result.global_model, data.bank, train), data.labels[train], len(data.artists)
    )
    return build_index(result.global_model, config.encoder, data.artists, protos)
