"""CP2Rec (our reading) as the platform's CTR ranker: an adapter to the loop's ``LearningRanker`` protocol.

CP2Rec is a CTR model (seeds/002); the simulator's ranker slot takes any object with ``version``,
``set_catalogue``, ``score`` (click probabilities), ``fit(view)``, ``frozen()`` and ``state_dict`` /
``load_state_dict`` (``simulator.cascade.protocols``). This adapter wraps a :class:`~agents.cp2rec.CP2Rec`
under its own name (``cp2rec-ranker``: its own random streams), scores ``σ(s + γ·<b_u, b_i>)`` (the slot is
not known when the ranker orders the candidates, so the context term is dropped as at retrieval), and
prefixes its fit diagnostics with ``ranker_`` so they never overwrite the retrieval agent's.

Agents may not import ``simulator.cascade``, so the kind is registered by the caller::

    from simulator.cascade.ranker import register_ranker
    register_ranker("cp2rec", CP2RecRanker)   # before the scenario with cascade.ranker = "cp2rec" is loaded
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from agents.cp2rec import CP2Rec, CP2RecConfig
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.types import Catalogue, RequestBatch

RANKER_NAME = "cp2rec-ranker"


class FrozenCP2Rec:
    """A frozen CP2Rec snapshot serving as the ranker (and as ``view.ranker`` for agents)."""

    def __init__(self, agent: CP2Rec, version: int, catalogue: Catalogue | None) -> None:
        self.agent, self.version = agent, version
        if catalogue is not None:
            self.agent.index(catalogue)

    def set_catalogue(self, catalogue: Catalogue) -> None:
        """Score against ``catalogue`` from now on (re-indexes the item side)."""
        self.agent.index(catalogue)

    @torch.no_grad()
    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K] float32`` click probabilities ``σ(s + γ·<b_u, b_i>)``."""
        return torch.sigmoid(self.agent.score(requests, item_ids))


class CP2RecRanker(FrozenCP2Rec):
    """The learning ranker: a ``CP2Rec`` fitted on the training view at every round end (warm-started).

    Args:
        sc: the scenario (sizes and the ``training`` section).
        seed: the loop's seed.
        device: torch device.
        config: CP2Rec hyperparameters (default: the registered ``cp2rec`` defaults).
    """

    def __init__(self, sc: Any, seed: int, device: torch.device | str = "cpu", config: CP2RecConfig | None = None) -> None:
        super().__init__(CP2Rec(AgentContext.from_scenario(sc, seed, device), config or CP2RecConfig(), RANKER_NAME), 0, None)
        self._catalogue: Catalogue | None = None

    def set_catalogue(self, catalogue: Catalogue) -> None:
        """Score (and snapshot) against ``catalogue`` from now on."""
        self._catalogue = catalogue
        self.agent.index(catalogue)

    def fit(self, view: TrainingView) -> dict[str, float]:
        """One warm-started CP2Rec fit; its diagnostics prefixed ``ranker_`` (``ranker_loss``, ``ranker_probe_r2``, ...)."""
        info = self.agent.fit(view)
        self.version += 1
        if self._catalogue is not None:
            self.agent.index(self._catalogue)
        return {f"ranker_{k}": v for k, v in info.items()}

    def frozen(self) -> FrozenCP2Rec:
        """An independent deep copy, indexed on the current catalogue."""
        return FrozenCP2Rec(copy.deepcopy(self.agent), self.version, self._catalogue)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped agent's state and the version."""
        return {"kind": "cp2rec", "agent": self.agent.state_dict(), "version": self.version}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (re-indexes on the current catalogue, if any)."""
        self.agent.load_state_dict(state["agent"])
        self.version = int(state["version"])
        if self._catalogue is not None:
            self.agent.index(self._catalogue)
