"""What the loop needs of the platform's rankers, as protocols (no implementation here).

A :class:`ServingRanker` scores recalled candidates; a :class:`LearningRanker` is also fitted on the
training view at every round end and hands out frozen snapshots that serve and that agents may query.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from simulator.log.view import TrainingView
from simulator.types import Catalogue, RequestBatch


class ServingRanker(Protocol):
    """A ranker that serves: scores ``item_ids [B, K]`` of ``requests`` against its catalogue."""

    version: int

    def set_catalogue(self, catalogue: Catalogue) -> None: ...

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor: ...


class LearningRanker(ServingRanker, Protocol):
    """The platform ranker being trained: fitted at round ends, snapshotted for serving."""

    def fit(self, view: TrainingView) -> dict[str, float]: ...

    def frozen(self) -> ServingRanker: ...

    def state_dict(self) -> dict[str, Any]: ...
