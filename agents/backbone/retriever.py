"""Serving half of a two-tower agent: index, exact top-k, pair scores, weights.

Agents compose a :class:`TwoTowerRetriever` (they do not subclass it) and
delegate ``index`` / ``retrieve`` / ``score`` to it; they keep their own
optimiser, losses and extra modules. ``fit`` must call :meth:`invalidate`
after changing the weights: a stale index would pair new user vectors with old
item vectors, so ``retrieve`` refuses to run until ``index`` is called again.
"""

from __future__ import annotations

from typing import Any

import torch

from agents.backbone.index import IndexedServing, check_k
from agents.backbone.two_tower import TowerConfig, TwoTower, evaluating
from simulator.agent_api import AgentContext
from simulator.rng import stream_seed
from simulator.types import Catalogue, RequestBatch


class TwoTowerRetriever(IndexedServing):
    """A :class:`TwoTower` model plus the item index built from it.

    Args:
        ctx: the run's context (sizes, device, seed).
        tower: tower shape and scoring.
        name: the owning agent's name; seeds the initialisation stream ``"<name>/init"``.

    Attributes:
        model: the trainable :class:`TwoTower` (on ``ctx.device``).
    """

    def __init__(self, ctx: AgentContext, tower: TowerConfig, name: str) -> None:
        self.name = name
        self.model = TwoTower(ctx, tower, seed=stream_seed(ctx.seed, f"{name}/init"))
        super().__init__()

    def index(self, catalogue: Catalogue) -> None:
        """Embed every live item of ``catalogue`` once (eval mode) and keep the vectors."""
        self._catalogue = catalogue
        self._index = self.model.embed_catalogue(catalogue)

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` live items: ``(item_ids [B, k] int64, logits [B, k] float32)``, descending."""
        index, _ = self._indexed()
        check_k(k, len(index), self.name)
        ids, scores = index.topk(self.model.user_queries(requests), k)
        return ids, scores + self.model.user_offset(requests).unsqueeze(1)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K] float32`` logits of ``item_ids [B, K]``; indexed vectors are reused, others embedded now."""
        index, catalogue = self._indexed()
        queries = self.model.user_queries(requests)
        emb, found = index.lookup(item_ids)
        if not bool(found.all()):
            with evaluating(self.model):
                missing = self.model.normalise(self.model.item_embedding(catalogue, item_ids[~found]))
                if self.model.item_bias is not None:
                    missing = torch.cat([missing, self.model.item_bias(item_ids[~found]) / index.scale], dim=1)
            emb = emb.index_put((~found).nonzero(as_tuple=True), missing)
        scores = index.scale * torch.bmm(emb, queries.unsqueeze(-1)).squeeze(-1)
        return (scores + self.model.user_offset(requests).unsqueeze(1)).float()

    def state_dict(self) -> dict[str, Any]:
        """The model weights (the index is rebuilt by :meth:`index`)."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load weights and drop the index."""
        self.model.load_state_dict(state)
        self.invalidate()
