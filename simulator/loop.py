"""The state of one closed loop (scenario x agent x seed), and nothing else.

What happens to it lives elsewhere: :mod:`simulator.cascade.step` serves one batch of
requests through the cascade, :mod:`simulator.round` holds the steps of a round (start,
deploy, measure, retrain) and :mod:`simulator.timeline` decides when each happens.
Everything a loop carries between rounds is an attribute here, so a run resumed from
:meth:`ClosedLoop.save` ends identical to an uninterrupted one.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

import torch

from simulator.agent_api import RetrievalAgent
from simulator.cascade.legacy import LegacyRetriever, UniformRanker
from simulator.cascade.protocols import LearningRanker, ServingRanker
from simulator.cascade.ranker import make_ranker
from simulator.checkpoint import atomic_torch_save, load_torch_object
from simulator.config import Scenario
from simulator.log.store import LogStore, TruthStore
from simulator.log.view import TrainingView
from simulator.memory import fit_malloc_to
from simulator.metrics.audit import Audit
from simulator.metrics.measure import MetricState
from simulator.metrics.offline import SharedRound
from simulator.oracle import IntentLookup, NoisyOracleRanker
from simulator.world.state import WorldState, generate_world

MetricRow = dict[str, Any]  # {"round": int, "metric": str, "value": float}


class SharedRounds(Protocol):
    """The seed's shared log (:class:`simulator.shared_log.SharedLog`): round ``r`` on demand."""

    def round(self, r: int) -> SharedRound: ...


class ClosedLoop:
    """Everything one closed loop carries: world, log, truth, models, registry, results.

    Attributes:
        world, log, truth: the private world, the observable log and the truth store.
        intents: the intents of live requests, for privileged policies (oracle, noisy-oracle ranker).
        ranker_learner: the platform ranker fitted at every round end.
        next_ranker: its latest snapshot, deployed ``train_delay_hours`` into the next round.
        serving_ranker: the ranker serving now (the uniform legacy ranker during the warm start).
        rankers, retrievers: the model registry (ranker snapshots and retriever state_dicts by version).
        learner, retriever: the agent being trained and its serving copy (the legacy retriever before one is attached).
        rows: metric rows measured so far; ``timings``: wall seconds per fit (machine-dependent, kept apart).
        last_view: the training view of the last retrain, kept only when ``keep_last_view`` (the gym reads it).
        shared_log: the seed's common log the offline ``shared`` protocol scores candidates on (None: not run).
    """

    def __init__(self, sc: Scenario, seed: int, device: torch.device | str = "cpu") -> None:
        self.sc, self.seed, self.device = sc, seed, torch.device(device)
        fit_malloc_to(sc.world.n_items)  # the allocator's time / memory trade for this size, before the world's tensors
        self.world: WorldState = generate_world(sc, seed, self.device)
        self.log, self.truth = LogStore(), TruthStore()
        self.intents = IntentLookup()
        self.next_ranker: ServingRanker = new_ranker(sc, seed, self.device, self.world, self.intents)
        self.ranker_learner: LearningRanker = new_ranker(sc, seed, self.device, self.world, self.intents)
        self.legacy_ranker = UniformRanker(seed)
        self.serving_ranker: ServingRanker = self.legacy_ranker
        self.rankers: dict[int, ServingRanker] = {}
        self.retrievers: dict[int, dict[str, Any]] = {}
        self.learner: RetrievalAgent | None = None
        self.retriever: RetrievalAgent = LegacyRetriever(seed, sc.cascade.legacy_popularity_bias)
        self.agent_name = "legacy"
        self.retriever_version = -1
        self.next_request_id = 0
        self.metric_state = MetricState.create(self.world, sc, seed)
        self.rows: list[MetricRow] = []
        self.fit_info: dict[str, float] = {}
        self.timings: list[dict[str, Any]] = []
        self.keep_last_view = False
        self.last_view: TrainingView | None = None
        self.logging_only = False  # a shared-log logger: served by the legacy system, never measured or retrained
        self.shared_log: SharedRounds | None = None  # the seed's common log (not saved: regenerated from the warm start)
        self.save_truth = False  # keep each round's Audit of what the truth and offline metrics were computed from
        self.audit: Audit | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["shared_log"] = None  # shared by every agent of the seed: neither copied nor checkpointed
        state["audit"] = None  # written out after its round, never checkpointed
        return state

    def copy(self) -> ClosedLoop:
        """An independent copy (the warm-started loop is copied once per agent)."""
        return copy.deepcopy(self)

    def save(self, path: str) -> None:
        """Write the whole loop (world, log, models, optimisers, metric state) atomically."""
        atomic_torch_save(self, path)

    @staticmethod
    def load(path: str) -> ClosedLoop:
        """Read a loop written by :meth:`save`; raises a one-line error if the file is corrupt."""
        return load_torch_object(path, ClosedLoop)


def new_ranker(sc: Scenario, seed: int, device: torch.device, world: WorldState, intents: IntentLookup) -> LearningRanker:
    """A fresh platform ranker of the scenario's kind (the noisy oracle reads the truth, as a controlled ranker)."""
    if sc.cascade.ranker == "noisy-oracle":
        return NoisyOracleRanker(world, sc, intents)
    return make_ranker(sc.cascade.ranker, sc, seed, device)
