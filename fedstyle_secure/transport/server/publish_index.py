"""After the final round: the server's public style index (global model + published prototypes)
for buyers' ``Query`` calls.  Uses only public information: the aggregated model, the
federated standardisation, the prototypes the artists published, and the public image set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from fedstyle_secure.errors import ConfigError
from fedstyle_secure.federation.coordinator import Coordinator
from fedstyle_secure.federation.publish import index_of_publication
from fedstyle_secure.models.factory import make_model
from fedstyle_secure.models.inputs import default_cache_dir
from fedstyle_secure.models.params import set_flat_params
from fedstyle_secure.privacy.plan import DpConfig, encoder_config_for
from fedstyle_secure.retrieval.index import StyleIndex
from fedstyle_secure.transport.federation_model import public_bank


def index_from_run(
    coordinator: Coordinator, embedding_dim: int, cache_dir: Path | None = None, dp: DpConfig | None = None
) -> StyleIndex:
    """The index of a finished run of a global-model algorithm (same model layout as the artists',
    whose encoder follows the federation's DP plan ``dp``: :func:`encoder_config_for`)."""
    state, spec = coordinator.state, coordinator.spec
    if state.params is None or not spec.averages_parameters:
        raise ConfigError(f"algorithm {spec.name!r} keeps no global model; there is no server-side index to publish")
    public = public_bank(cache_dir or default_cache_dir())  # the artists' own: the start's projection reads its views
    config = dataclasses.replace(encoder_config_for(dp), embedding_dim=embedding_dim)
    model = make_model(config, public, public, len(coordinator.roster) if spec.needs_classifier else None)
    set_flat_params(model, state.params)
    if coordinator.standardisation is not None:
        model.projection_head().set_standardisation(*(torch.from_numpy(a) for a in coordinator.standardisation))
    return index_of_publication(model, config, coordinator.roster, state)
