"""One closed loop (scenario x agent x seed): serve batches, log, measure, retrain.

:meth:`ClosedLoop.serve_batch` is the whole cascade for one batch of requests,
step by step; :mod:`simulator.timeline` decides when batches, deployments and
retrains happen. Everything a loop carries between rounds is in
:meth:`ClosedLoop.save`, so a run resumed at a round boundary ends
identical to an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from simulator.agent_api import RetrievalAgent
from simulator.cascade import serving
from simulator.cascade.legacy import LegacyRetriever, UniformRanker
from simulator.cascade.ranker import make_ranker
from simulator.config import Scenario
from simulator.checkpoint import atomic_torch_save, load_torch_object
from simulator.log.store import LogStore, TruthStore
from simulator.log.view import TrainingView, build_view
from simulator.metrics.measure import MetricInput, MetricState, measure_round
from simulator.oracle import IntentLookup, NoisyOracleRanker
from simulator.rng import torch_stream
from simulator.types import RequestBatch
from simulator.world import dynamics
from simulator.world.relevance import true_relevance
from simulator.world.state import WorldState, generate_world, observe
from simulator.world.user_model import examination_curve, respond

AgentFactory = Callable[["ClosedLoop"], RetrievalAgent]


class ClosedLoop:
    """The state and the steps of one closed loop."""

    def __init__(self, sc: Scenario, seed: int, device: torch.device | str = "cpu") -> None:
        self.sc, self.seed, self.device = sc, seed, torch.device(device)
        self.world: WorldState = generate_world(sc, seed, self.device)
        self.log, self.truth = LogStore(), TruthStore()
        self.intents = IntentLookup()
        self.ranker = self._new_ranker()  # serving
        self.ranker_learner = self._new_ranker()  # trained at round ends, deployed after the delay
        self.rankers: dict[int, Any] = {}  # model registry: frozen ranker snapshots by version
        self.retrievers: dict[int, dict[str, Any]] = {}  # model registry: retriever state_dicts by version
        self.retriever: Any = LegacyRetriever(seed, sc.cascade.legacy_popularity_bias)  # serving
        self.learner: Any = None
        self.agent_name = "legacy"
        self.next_request_id = 0
        self.retriever_version = -1
        self.metric_state = MetricState.create(self.world, sc, seed)
        self.rows: list[dict[str, Any]] = []
        self.fit_info: dict[str, float] = {}
        self.timings: list[dict[str, Any]] = []  # wall seconds per fit; kept apart from the (deterministic) metrics
        self.legacy_ranker = UniformRanker(seed)
        self.serving_ranker: Any = self.legacy_ranker

    # ----- construction -------------------------------------------------
    def _new_ranker(self) -> Any:
        if self.sc.cascade.ranker == "noisy-oracle":
            return NoisyOracleRanker(self.world, self.sc, self.intents)
        return make_ranker(self.sc.cascade.ranker, self.sc, self.seed, self.device)

    def attach_agent(self, factory: AgentFactory, name: str) -> None:
        """Give the loop its agent: a learner and a serving copy, fitted on the warm-start log."""
        self.agent_name = name
        self.learner, server = factory(self), factory(self)
        for _ in range(self.sc.training.pretrain_fits):  # pretraining on the historical (warm-start) log
            self.fit_info = self.learner.fit(self.view(-1))
        server.load_state_dict(copy.deepcopy(self.learner.state_dict()))
        self.retriever = server
        self.retriever_version = 0
        self.retrievers[0] = copy.deepcopy(self.learner.state_dict())
        self.serving_ranker = self.ranker  # version 0, trained on the warm-start log

    def copy(self) -> ClosedLoop:
        """An independent copy (the warm-started loop is copied once per agent)."""
        return copy.deepcopy(self)

    # ----- the cascade for one batch ------------------------------------
    def serve_batch(self, batch: RequestBatch, intents: torch.Tensor) -> None:
        """Serve one batch: retrieval -> ranking -> exposure -> user -> log -> world."""
        r, key = batch.round, int(batch.request_id[0])
        self.intents.set(batch.request_id, intents)
        # 0. a share of the traffic is uniform exploration
        coin = torch.rand(len(batch), generator=self._gen("explore", r, key), device=self.device)
        explore = coin < self.sc.cascade.exploration_share
        chunks = [self._serve_part(batch.select(idx), intents[idx], bool(flag)) for flag, idx in ((False, ~explore), (True, explore)) if bool(idx.any())]
        # 5. log (observable) and truth, requests in id order
        for table in chunks[0]:
            merged = {c: torch.cat([ch[table][c] for ch in chunks]) for c in chunks[0][table]}
            if table in ("requests", "truth_requests"):
                order = merged["request_id"].argsort()
                merged = {c: v[order] for c, v in merged.items()}
            (self.truth if table.startswith("truth_") else self.log).append(table, r, merged)

    def _serve_part(self, batch: RequestBatch, intents: torch.Tensor, explore: bool) -> dict[str, dict[str, torch.Tensor]]:
        cfg, r, key = self.sc.cascade, batch.round, int(batch.request_id[0])
        tag = "-explore" if explore else ""
        live = self.world.item_live.nonzero().squeeze(1)
        # 1. retrieval over the whole live catalogue
        recall = self._recall(batch, live, explore, tag)
        # 2. ranking of the recalled set by the platform ranker
        ranker = self.serving_ranker
        rank_scores = ranker.score(batch, recall.item_ids)
        # 3. exposure: the top-S slate
        exposure = self._expose(batch, recall, rank_scores, len(live), explore, tag)
        slate = recall.item_ids.gather(1, exposure.slot_index)
        # 4. the user responds (ground truth + biases)
        relevance = true_relevance(self.world, self.sc, batch.user_id, slate, intents)
        fb = respond(self.world, self.sc, batch.user_id, batch.entry, slate, relevance, self._gen("choice" + tag, r, key))
        # 6. the world moves: counters, histories, consumption
        dynamics.record_feedback(self.world, batch.user_id, batch.request_id, slate, fb, batch.absolute_time())
        exam_p = (examination_curve(self.sc, slate.shape[1], self.device) * self.world.user_attention[batch.user_id].unsqueeze(1)).clamp(max=1.0)
        return _tables(batch, explore, self.retriever_version, ranker.version, recall, rank_scores, exposure, slate, fb, intents, exam_p)

    def _gen(self, name: str, *keys: int) -> torch.Generator:
        return torch_stream(self.seed, name, *keys, device=self.device)

    def _recall(self, batch: RequestBatch, live: torch.Tensor, explore: bool, tag: str) -> serving.Recall:
        cfg, r, key, k = self.sc.cascade, batch.round, int(batch.request_id[0]), self.sc.cascade.k_retrieve
        if k > len(live):
            raise RuntimeError(f"cascade.k_retrieve: {k} exceeds the {len(live)} live items in round {r}; lower it or the item retirement")
        if explore:
            return serving.uniform_recall(live, len(batch), k, self._gen("recall" + tag, r, key))
        if not cfg.stochastic:
            return serving.deterministic_recall(*self.retriever.retrieve(batch, k))
        pool = min(len(live), math.ceil(cfg.candidate_pool * k))
        ids, scores = self.retriever.retrieve(batch, pool)
        return serving.stochastic_recall(ids, scores, k, cfg, self._gen("recall", r, key), self._gen("recall-mc", r, key))

    def _expose(self, batch: RequestBatch, recall: serving.Recall, rank_scores: torch.Tensor, n_live: int, explore: bool, tag: str) -> serving.Exposure:
        cfg, r, key, s = self.sc.cascade, batch.round, int(batch.request_id[0]), self.sc.cascade.slate_size
        if explore:
            return serving.uniform_exposure(len(batch), recall.item_ids.shape[1], s, n_live, self._gen("expose" + tag, r, key), self.device)
        if not cfg.stochastic:
            return serving.deterministic_exposure(rank_scores, s)
        exp = serving.stochastic_exposure(rank_scores, s, cfg, self._gen("expose", r, key), self._gen("expose-mc", r, key))
        pool_rank = self.serving_ranker.score(batch, recall.pool_ids)
        shown = torch.zeros_like(rank_scores).scatter_(1, exp.slot_index, 1.0)
        marginal = serving.marginal_propensity(recall, pool_rank, s, cfg, self._gen("joint-mc", r, key), shown)
        return serving.Exposure(exp.slot_index, exp.expose_prob, marginal)

    # ----- rounds ---------------------------------------------------------
    def start_round(self, r: int) -> None:
        """Catalogue changes and newcomers, then re-index the serving models on the new catalogue."""
        dynamics.start_round(self.world, r)
        catalogue, users = observe(self.world)
        self.log.publish(r, catalogue, users)
        self.log.prune(r - self.sc.training.window_rounds + 1)  # the warm-start log once pretraining has used it
        self.retriever.index(catalogue)
        self.serving_ranker.set_catalogue(catalogue)
        self.metric_state.begin_round(self.world)

    def deploy(self, r: int) -> None:
        """The models trained at the end of round ``r - 1`` start serving now (version ``r``)."""
        if r <= 0 or self.learner is None:
            return  # round 0 is served by what attach_agent deployed
        self.serving_ranker = self.ranker
        self.serving_ranker.set_catalogue(self.log.catalogue[r])
        self.retriever.load_state_dict(copy.deepcopy(self.learner.state_dict()))
        self.retriever_version = r
        self.retriever.index(self.log.catalogue[r])

    def end_round(self, r: int) -> None:
        """Measure, run end-of-round dynamics, publish, retrain, prune the log window."""
        if r >= 0:
            self.rows.extend(self._measure(r))
        dynamics.end_round(self.world, self.sc, self.seed, r)
        catalogue, users = observe(self.world)
        self.log.users[r] = users
        self.log.catalogue[r] = catalogue
        self._retrain(r)
        keep_from = r - self.sc.training.window_rounds + 1
        self.log.prune(keep_from)
        self.truth.prune(r)  # metrics need only the round just measured
        self.rankers = {v: m for v, m in self.rankers.items() if v >= keep_from - 1}
        self.retrievers = {v: m for v, m in self.retrievers.items() if v >= keep_from - 1}

    def _retrain(self, r: int) -> None:
        """Ranker and agent fit on the same view; its teacher is the ranker snapshot serving now."""
        view = self.view(r)
        self.ranker_learner.set_catalogue(self.log.catalogue[r])
        started = time.perf_counter()
        ranker_info = self.ranker_learner.fit(view)
        self.timings.append({"round": r, "phase": "ranker_fit", "seconds": time.perf_counter() - started})
        self.ranker_learner.version = r + 1
        self.rankers[r + 1] = self.ranker_learner.frozen()
        self.ranker = self.rankers[r + 1]  # deployed after the training delay
        if r >= 0 and self.learner is not None:
            started = time.perf_counter()
            self.fit_info = {**self.learner.fit(view), **ranker_info}
            self.timings.append({"round": r, "phase": "agent_fit", "seconds": time.perf_counter() - started})
            self.retrievers[r + 1] = copy.deepcopy(self.learner.state_dict())

    def view(self, r: int) -> TrainingView:
        """The training view of the window ending at round ``r``; ``ranker`` is the snapshot serving now."""
        first = max(min(self.log.rounds()), r - self.sc.training.window_rounds + 1)
        teacher = self.ranker if self.serving_ranker is self.legacy_ranker else self.serving_ranker
        return build_view(self.log, first, r, teacher, dict(self.rankers), dict(self.retrievers))

    def _measure(self, r: int) -> list[dict[str, Any]]:
        inp = MetricInput(
            sc=self.sc, seed=self.seed, round=r, world=self.world, retriever=self.retriever, ranker=self.serving_ranker,
            set_intents=self.intents.set, requests=self.log.concat("requests", r, r), impressions=self.log.concat("impressions", r, r),
            recalled_counts=self.log.bincount("candidates", "item_id", r, self.world.item_live.shape[0]), truth_requests=self.truth.concat("truth_requests", r, r),
            truth_impressions=self.truth.concat("truth_impressions", r, r), state=self.metric_state,
        )
        values = measure_round(inp)
        values.update({f"fit_{k}": float(v) for k, v in self.fit_info.items()})
        return [{"round": r, "metric": k, "value": float(v)} for k, v in values.items()]

    # ----- checkpointing ----------------------------------------------------
    def save(self, path: str) -> None:
        """Write the whole loop (world, log, models, optimisers, metric state) atomically."""
        atomic_torch_save(self, path)

    @staticmethod
    def load(path: str) -> ClosedLoop:
        """Read a loop written by :meth:`save`; raises a one-line error if the file is corrupt."""
        return load_torch_object(path, ClosedLoop)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


def _tables(batch: RequestBatch, explore: bool, retriever_version: int, ranker_version: int, recall: serving.Recall, rank_scores: torch.Tensor, exposure: serving.Exposure, slate: torch.Tensor, fb: Any, intents: torch.Tensor, exam_p: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
    """The log and truth rows of one served part of a batch."""
    b, k = recall.item_ids.shape
    s = slate.shape[1]
    dev = slate.device
    rid = batch.request_id
    pos = torch.arange(s, device=dev).expand(b, s)
    exposed = torch.zeros(b, k, dtype=torch.bool, device=dev).scatter_(1, exposure.slot_index, True)
    gather = lambda t: _flat(t.gather(1, exposure.slot_index))  # noqa: E731
    requests = {
        "request_id": rid, "round": torch.full_like(rid, batch.round), "time": batch.absolute_time(),
        "user_id": batch.user_id, "domain": batch.domain, "entry": batch.entry,
        "explore": torch.full((b,), explore, dtype=torch.bool, device=dev),
        "retriever_version": torch.full_like(rid, retriever_version), "ranker_version": torch.full_like(rid, ranker_version),
        "history": batch.history,
        **({} if batch.history_time is None else {"history_time": batch.history_time}),
    }
    candidates = {  # the largest table (B * K_r rows): compact integer types
        "request_id": _flat(rid.unsqueeze(1).expand(b, k)), "item_id": _flat(recall.item_ids).int(),
        "retrieval_rank": _flat(torch.arange(k, device=dev, dtype=torch.int16).expand(b, k)), "retrieval_score": _flat(recall.scores),
        "ranking_score": _flat(rank_scores), "exposed": _flat(exposed), "recall_prob": _flat(recall.recall_prob),
        "expose_prob": _flat(exposure.expose_prob),
    }
    req_s = _flat(rid.unsqueeze(1).expand(b, s))
    impressions = {
        "request_id": req_s, "user_id": _flat(batch.user_id.unsqueeze(1).expand(b, s)), "item_id": _flat(slate),
        "position": _flat(pos), "retrieval_rank": _flat(exposure.slot_index), "retrieval_score": gather(recall.scores),
        "ranking_score": gather(rank_scores), "exposure_propensity": gather(exposure.propensity),
        "clicked": _flat(fb.clicked), "finished": _flat(fb.finished), "watch_time": _flat(fb.watch_time),
    }
    sessions = {"request_id": req_s, "position": _flat(pos), "dwell": _flat(fb.dwell), "portal_only": _flat(fb.portal_only)}
    truth_requests = {"request_id": rid, "intent": intents}
    truth_impressions = {
        "request_id": req_s, "position": _flat(pos), "item_id": _flat(slate), "user_id": impressions["user_id"],
        "relevance": _flat(fb.relevance), "examined": _flat(fb.examined), "motive": _flat(fb.motive), "examine_prob": _flat(exam_p),
    }
    return {"requests": requests, "candidates": candidates, "impressions": impressions, "sessions": sessions,
            "truth_requests": truth_requests, "truth_impressions": truth_impressions}
