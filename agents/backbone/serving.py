"""The serving half of the agent protocol, delegated to a composed core (``self.core``), written once.

Every two-tower family (:class:`~agents.backbone.exposure.ExposureCore`, :class:`~agents.backbone.sequence_core.SequenceCore`,
:class:`~agents.backbone.gmm.GMMCore`) serves the same way: ``index`` / ``retrieve`` / ``score`` go to the core, which
owns the model and its item index. The family mixins add only how their state is saved; an agent adds its own
:meth:`CoreServing.extra_state` / :meth:`CoreServing.load_extra_state` (queues, heads, frequency estimates, ...).
"""

from __future__ import annotations

from typing import Any

import torch

from simulator.types import Catalogue, RequestBatch


class CoreServing:
    """``index``, ``retrieve``, ``score``, ``model`` and ``retriever`` of an agent that composes ``self.core``."""

    core: Any

    def extra_state(self) -> dict[str, Any]:
        """Method-specific state saved beside the core's (none here)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state` (nothing here)."""
        return None

    @property
    def model(self) -> Any:
        """The trainable two tower."""
        return self.core.model

    @property
    def retriever(self) -> Any:
        """The serving half (model and index)."""
        return self.core.retriever

    def index(self, catalogue: Catalogue) -> None:
        """Embed all live items once."""
        self.core.index(catalogue)

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` by logit: ``(item_ids [B, k] int64, logits [B, k] float32)``."""
        return self.core.retrieve(requests, k)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` logits ``s_ui``."""
        return self.core.score(requests, item_ids)
