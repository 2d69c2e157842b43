"""The legacy platform that produces the warm-start log before any agent serves.

Retrieval samples items without replacement with weights ``(1 + clicks)^bias``
(Plackett-Luce: Gumbel-top-k, or first-distinct draws for large catalogues): a popularity-biased
legacy recall (``bias = 0`` is uniform). Ranking is uniform random (no trained ranker yet). Both are
seeded per request id, so the warm-start log is identical for every agent compared on a seed.
"""

from __future__ import annotations

from typing import Any

import torch

from simulator.cascade.serving import gumbel_topk, sample_fixed_weights
from simulator.rng import hash_uniform, stream_seed, torch_stream
from simulator.types import Catalogue, RequestBatch


class LegacyRetriever:
    """Popularity-biased random recall (not an agent under study)."""

    name = "legacy"

    def __init__(self, seed: int, popularity_bias: float) -> None:
        self.seed, self.popularity_bias = seed, popularity_bias
        self.catalogue: Catalogue | None = None

    def fit(self, view: Any) -> dict[str, float]:
        return {}

    def index(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def _prior(self) -> torch.Tensor:
        assert self.catalogue is not None, "index() first"
        return (self.popularity_bias * torch.log1p(self.catalogue.clicks)).masked_fill(~self.catalogue.live, float("-inf"))

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch_stream(self.seed, "legacy-recall", requests.round, int(requests.request_id[0]), device=requests.user_id.device)
        prior = self._prior()
        assert self.catalogue is not None
        if int(self.catalogue.live.sum()) > 8 * k:  # few repeats: draw from the shared weights, O(k log M) a request
            idx = sample_fixed_weights(prior, len(requests), k, gen)
        else:  # k close to the catalogue: Gumbel keys over every item (the same law)
            rows = max(1, (1 << 22) // prior.shape[0])  # bounded [rows, M] blocks of Gumbel keys
            idx = torch.cat(
                [gumbel_topk(prior.expand(min(rows, len(requests) - a), -1), k, 1.0, gen) for a in range(0, len(requests), rows)]
            )
        scores = prior[idx]
        order = scores.argsort(dim=1, descending=True)
        return idx.gather(1, order), scores.gather(1, order)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        return self._prior()[item_ids]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class UniformRanker:
    """Random ranking scores in (0, 1), fixed per (request, item) by a counter-based hash."""

    version = -1

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._salt = stream_seed(seed, "legacy-rank") & ((1 << 62) - 1)

    def set_catalogue(self, catalogue: Catalogue) -> None:
        return None

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        # keyed by (request, item), not by position: the recalled set and the candidate pool of one request
        # must see the same score for the same item, or the logged exposure propensities are wrong
        u = hash_uniform(requests.request_id.unsqueeze(1), item_ids, self._salt)
        return u.float().clamp(1e-4, 1 - 1e-4)
