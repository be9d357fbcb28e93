"""One artist-side federated client: private data, a model, and the two things it does each
round -- publish its artists' prototypes and fit locally -- with no transport inside.

The in-process simulator and the gRPC artist process both drive this class.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedstyle_secure.federation.strategy import AlgorithmSpec, client_contribution, feature_moments
from fedstyle_secure.models.embed import embed, prototypes_from
from fedstyle_secure.models.params import get_flat_params, set_flat_params, trainable_parameters
from fedstyle_secure.training.local import LocalConfig, LocalData, LocalResult, RoundContext, train_local


@dataclass(frozen=True)
class Broadcast:
    """What the server sends every client at the start of a round (all of it public)."""

    round: int
    params: np.ndarray | None
    consensus: np.ndarray | None
    prototypes: np.ndarray
    known: np.ndarray


@dataclass(frozen=True)
class Publication:
    """Prototypes an artist publishes: rows of the artist table and unit vectors ``(k, D)``."""

    artist_rows: np.ndarray
    prototypes: np.ndarray


class StyleClient:
    """A federated client holding one or more artists' private training artworks."""

    def __init__(
        self,
        client_id: str,
        data: LocalData,
        spec: AlgorithmSpec,
        model: nn.Module,
        config: LocalConfig,
        public_inputs: torch.Tensor,
        n_artists: int,
        rng: np.random.Generator,
    ) -> None:
        self.client_id = client_id
        self.data = data
        self.spec = spec
        self.model = copy.deepcopy(model)
        self.config = config
        self.public_inputs = public_inputs
        self.n_artists = n_artists
        self.rng = rng
        self.last_result: LocalResult | None = None

    @property
    def n_train(self) -> int:
        return len(self.data)

    def feature_moments(self) -> dict[str, np.ndarray]:
        """This client's contribution to the federated input standardisation (see strategy)."""
        return feature_moments(self.data.bank.views[0].reshape(self.n_train, -1))

    def set_standardisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.model.encoder.set_standardisation(torch.from_numpy(mean), torch.from_numpy(std))

    def _load_global(self, broadcast: Broadcast) -> None:
        if self.spec.averages_parameters and broadcast.params is not None:
            set_flat_params(self.model, broadcast.params)

    def publish(self, broadcast: Broadcast) -> Publication:
        """Prototypes of this client's artists, embedded with the model it starts the round from."""
        self._load_global(broadcast)
        protos, known = prototypes_from(embed(self.model, self.data.bank.originals()), self.data.labels, self.n_artists)
        rows = np.flatnonzero(known)
        return Publication(artist_rows=rows, prototypes=protos[rows])

    def _context(self, broadcast: Broadcast) -> RoundContext:
        shares = self.spec.shares_prototypes and bool(broadcast.known.any())
        return RoundContext(
            n_artists=self.n_artists,
            prototypes=broadcast.prototypes if shares else None,
            known=broadcast.known if shares else None,
            consensus=broadcast.consensus if self.spec.aligns_public else None,
            public=self.public_inputs,
            anchor=[p.detach().clone() for p in trainable_parameters(self.model)] if self.spec.proximal else None,
        )

    def fit(self, broadcast: Broadcast) -> dict[str, np.ndarray]:
        """Train locally from the broadcast; return the named arrays this client adds to the secure sum."""
        self._load_global(broadcast)
        ctx = self._context(broadcast)
        self.last_result = train_local(self.model, self.data, ctx, self.spec.objective, self.config, self.rng)
        return client_contribution(
            self.spec,
            get_flat_params(self.model) if self.spec.averages_parameters else None,
            1.0,
            embed(self.model, self.public_inputs) if self.spec.aligns_public else None,
        )
