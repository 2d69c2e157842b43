"""Popular: the most-clicked live items, the same for every request (reference agent).

Scores are ``log1p(observed count)`` read from the catalogue at index time
(clicks by default). Ties are broken by item id, lower first, so the order is
deterministic. This is the popularity-only ceiling of a feedback loop that
rewards exposure, and a lower bound any personalised model should beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from agents.backbone.index import check_k
from agents.registry import register
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.types import Catalogue, RequestBatch


@dataclass(frozen=True)
class PopularConfig:
    """Popular-agent settings."""

    count: Literal["clicks", "exposures"] = "clicks"
    """Which observed counter ranks the items."""


@register("popular", config=PopularConfig)
class PopularAgent:
    """Most-clicked live items for everyone; score = log1p(observed clicks), ties by item id.

    Args:
        ctx: sizes, device and seed.
        config: settings (default :class:`PopularConfig`).
    """

    def __init__(self, ctx: AgentContext, config: PopularConfig | None = None, name: str = "popular") -> None:
        self.ctx, self.name = ctx, name
        self.config = config or PopularConfig()
        self._scores: torch.Tensor | None = None  # [M] log1p(count) of every item id
        self._order: torch.Tensor | None = None  # [M_live] live ids, score descending, id ascending on ties

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Nothing to learn: the counters are read at index time."""
        return {}

    def index(self, catalogue: Catalogue) -> None:
        """Rank the live items by ``log1p(count)``, ties by ascending id (a stable sort over ascending ids)."""
        counts = getattr(catalogue, self.config.count).to(self.ctx.device).float()
        self._scores = torch.log1p(counts)
        live = catalogue.live_ids().to(self.ctx.device)
        order = torch.sort(self._scores[live], descending=True, stable=True).indices
        self._order = live[order]

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The global top-``k``, repeated per request: ``(item_ids [B, k] int64, scores [B, k] float32)``."""
        if self._order is None or self._scores is None:
            raise RuntimeError("popular: no index; call index(catalogue) first")
        check_k(k, len(self._order), self.name)
        top = self._order[:k]
        n = len(requests)
        return top.expand(n, k).clone(), self._scores[top].expand(n, k).clone()

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` ``log1p(count)`` of ``item_ids`` (independent of the request)."""
        if self._scores is None:
            raise RuntimeError("popular: no index; call index(catalogue) first")
        return self._scores[item_ids]

    def state_dict(self) -> dict[str, Any]:
        """Stateless: everything is recomputed by :meth:`index`."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""
