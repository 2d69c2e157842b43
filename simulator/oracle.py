"""Privileged references built by the simulator, never by agents.

* :class:`OracleAgent` (registered as ``oracle``): retrieves the true top-K
  for the request's true current intent. It is the ceiling of true recall.
* :class:`NoisyOracleRanker`: the platform ranker of controlled studies,
  true relevance plus a fixed per-pair Gaussian noise.
* :class:`IntentLookup`: how both learn the true intent of the requests being
  served (set by the loop, from the truth of the current batch).
* :class:`OracleScorerHandle`: what an agent's training view holds of a
  noisy-oracle snapshot (its version and a ticket, no reference to the world).

Only this module and :mod:`simulator.metrics` read the world's truth.
"""

from __future__ import annotations

import copy
import itertools
import weakref
from typing import Any

import torch

from simulator.config import Scenario
from simulator.rng import hash_normal
from simulator.types import Catalogue, RequestBatch
from simulator.world.relevance import true_relevance, true_topk
from simulator.world.state import WorldState


class IntentLookup:
    """True intents of the requests currently being served, by request id."""

    def __init__(self) -> None:
        self.request_ids = torch.empty(0, dtype=torch.int64)
        self.intents = torch.empty(0, dtype=torch.int64)

    def set(self, request_ids: torch.Tensor, intents: torch.Tensor) -> None:
        order = request_ids.argsort()
        self.request_ids, self.intents = request_ids[order], intents[order]

    def get(self, request_ids: torch.Tensor) -> torch.Tensor | None:
        """``[B]`` intents, or None when any request is unknown (then the intent mixture is used)."""
        if self.request_ids.numel() == 0:
            return None
        pos = torch.searchsorted(self.request_ids, request_ids).clamp(max=len(self.request_ids) - 1)
        if not bool((self.request_ids[pos] == request_ids).all()):
            return None
        return self.intents[pos]


class OracleAgent:
    """oracle: the true top-K for the request's true intent (the ceiling; privileged)."""

    name = "oracle"

    def __init__(self, world: WorldState, sc: Scenario, intents: IntentLookup) -> None:
        self.world, self.sc, self.intents = world, sc, intents

    def fit(self, view: Any) -> dict[str, float]:
        return {}

    def index(self, catalogue: Catalogue) -> None:
        return None

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_live = int(self.world.item_live.sum())
        if k > n_live:
            raise ValueError(f"k: must be <= live items ({n_live}), got {k}")
        return true_topk(self.world, self.sc, requests.user_id, self.intents.get(requests.request_id), k, self.sc.metrics.block_size)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        return true_relevance(self.world, self.sc, requests.user_id, item_ids, self.intents.get(requests.request_id))

    def state_dict(self) -> dict[str, Any]:
        return {}  # the world it reads is checkpointed with the loop

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class NoisyOracleRanker:
    """noisy-oracle ranker: true relevance + N(0, ranker_noise) fixed per (user, item) pair."""

    def __init__(self, world: WorldState, sc: Scenario, intents: IntentLookup, version: int = 0) -> None:
        self.world, self.sc, self.intents, self.version = world, sc, intents, version

    def set_catalogue(self, catalogue: Catalogue) -> None:
        return None

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        rel = true_relevance(self.world, self.sc, requests.user_id, item_ids, self.intents.get(requests.request_id))
        noise = hash_normal(requests.user_id.unsqueeze(1), item_ids, salt=17)
        return (rel + self.sc.cascade.ranker_noise * noise).clamp(1e-4, 1 - 1e-4)

    def fit(self, view: Any) -> dict[str, float]:
        return {}

    def frozen(self) -> NoisyOracleRanker:
        return copy.copy(self)  # shares the world (truth moves on), keeps its version

    def agent_handle(self) -> OracleScorerHandle:
        """The handle a training view carries instead of this snapshot (the information barrier)."""
        ticket = next(_TICKETS)
        _SNAPSHOTS[ticket] = self
        return OracleScorerHandle(self.version, ticket)

    def state_dict(self) -> dict[str, Any]:
        return {"version": self.version}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.version = int(state["version"])


# Snapshots by ticket: a handle reaches its snapshot through this table, never through an attribute, so
# nothing reachable from a training view leads to the world. Weak: a snapshot lives as long as the loop keeps it.
_SNAPSHOTS: weakref.WeakValueDictionary[int, NoisyOracleRanker] = weakref.WeakValueDictionary()
_TICKETS = itertools.count()


class OracleScorerHandle:
    """A noisy-oracle snapshot as an agent sees it: ``version`` and ``score``, the same scores, no world.

    Python cannot stop code that walks module globals or ``gc.get_objects()``; agents are held to the
    import contract for that. This closes the data path: attributes, containers and closures.
    """

    __slots__ = ("version", "_ticket")

    def __init__(self, version: int, ticket: int) -> None:
        self.version, self._ticket = version, ticket

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` scores of the snapshot this handle stands for (valid while the loop keeps that snapshot)."""
        snapshot = _SNAPSHOTS.get(self._ticket)
        if snapshot is None:
            raise RuntimeError(f"ranker: the noisy-oracle snapshot of version {self.version} is no longer kept; score during fit")
        return snapshot.score(requests, item_ids)
