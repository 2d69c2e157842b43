"""The contract between the simulator and a retrieval agent.

The simulator calls agents only through :class:`RetrievalAgent`; it never
imports :mod:`agents`. Agents are built from an :class:`AgentContext`, which
carries observable sizes only (id capacities, feature dimensions), the device
and a seed for the agent's own random streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from simulator.config import TrainingConfig
from simulator.log.view import TrainingView
from simulator.types import Catalogue, RequestBatch


@dataclass(frozen=True)
class AgentContext:
    """What an agent may know when it is built."""

    n_users: int  # user id capacity
    n_items: int  # item id capacity
    n_categories: int
    n_creators: int
    modality_dim: int  # each of the three modality vectors
    profile_dim: int
    history_len: int
    training: TrainingConfig
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_scenario(cls, sc: Any, seed: int, device: torch.device | str = "cpu") -> AgentContext:
        """The context for ``sc`` (a Scenario): observable sizes only."""
        return cls(
            n_users=sc.user_capacity,
            n_items=sc.item_capacity,
            n_categories=sc.world.n_categories,
            n_creators=sc.world.n_creators,
            modality_dim=sc.features.modality_dim,
            profile_dim=sc.features.profile_dim,
            history_len=sc.features.history_len,
            training=sc.training,
            seed=seed,
            device=torch.device(device),
        )


@runtime_checkable
class RetrievalAgent(Protocol):
    """A retrieval model: trained on the training view, retrieving over the live catalogue."""

    name: str

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Retrain (warm-started) on the view; return scalar training diagnostics (e.g. loss)."""
        ...

    def index(self, catalogue: Catalogue) -> None:
        """(Re)build the retrieval index over ``catalogue``'s live items."""
        ...

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` live items per request: ``(item_ids [B, k] int64, scores [B, k] float32)``, scores descending."""
        ...

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K] float32`` scores of ``item_ids [B, K]``, on the same scale as ``retrieve``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (weights, optimiser, counters)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
