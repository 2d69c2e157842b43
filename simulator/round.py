"""The steps of a round, each a function of the loop's state.

A round (one retraining cycle) is, in the order :mod:`simulator.timeline` runs it:
:func:`start_round` (catalogue and users change, serving models re-index), :func:`deploy`
(``train_delay_hours`` in, the models retrained last round start serving), the traffic
slices (:func:`simulator.cascade.step.serve_batch`), and :func:`end_round` (measure, the
world's end-of-round dynamics, retrain agent and ranker on the log window).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

from simulator.agent_api import RetrievalAgent
from simulator.guard import DivergenceError, with_round
from simulator.log.split import holdout_flags
from simulator.log.view import TrainingView, build_view
from simulator.loop import ClosedLoop, MetricRow
from simulator.memory import heap_reuse
from simulator.metrics.audit import Audit
from simulator.metrics.measure import MetricInput, measure_external, measure_round
from simulator.metrics.mini_app import mini_app_truth_metrics
from simulator.metrics.offline import OfflineInput, offline_metrics
from simulator.world import dynamics
from simulator.world.state import observe

AgentFactory = Callable[[ClosedLoop], RetrievalAgent]


def attach_agent(loop: ClosedLoop, factory: AgentFactory, name: str) -> None:
    """Give the loop its agent: a learner and a serving copy, fitted on the warm-start log."""
    loop.agent_name = name
    learner, server = factory(loop), factory(loop)
    loop.learner = learner
    for _ in range(loop.sc.training.pretrain_fits):  # pretraining on the historical (warm-start) log
        with heap_reuse():
            loop.fit_info = learner.fit(training_view(loop, -1))
    server.load_state_dict(copy.deepcopy(learner.state_dict()))
    loop.retriever, loop.retriever_version = server, 0
    loop.retrievers[0] = copy.deepcopy(learner.state_dict())
    loop.serving_ranker = loop.next_ranker  # version 0, trained on the warm-start log


def start_round(loop: ClosedLoop, r: int) -> None:
    """Catalogue changes and newcomers, then re-index the serving models on the new catalogue."""
    dynamics.start_round(loop.world, r)
    catalogue, users = observe(loop.world)
    loop.log.publish(r, catalogue, users)
    loop.log.prune(r - loop.sc.training.window_rounds + 1)  # the warm-start log once pretraining has used it
    loop.retriever.index(catalogue)
    loop.serving_ranker.set_catalogue(catalogue)
    loop.metric_state.begin_round(loop.world)


def deploy(loop: ClosedLoop, r: int) -> None:
    """The models trained at the end of round ``r - 1`` start serving now (version ``r``)."""
    if r <= 0 or loop.learner is None:
        return  # round 0 is served by what attach_agent deployed
    loop.serving_ranker = loop.next_ranker
    loop.serving_ranker.set_catalogue(loop.log.catalogue[r])
    loop.retriever.load_state_dict(copy.deepcopy(loop.learner.state_dict()))
    loop.retriever_version = r
    loop.retriever.index(loop.log.catalogue[r])


def end_round(loop: ClosedLoop, r: int) -> None:
    """Measure, run end-of-round dynamics, publish, retrain, prune the log window and the registry."""
    loop.audit = Audit() if loop.save_truth and r >= 0 else None  # drained by whoever saves the run, after the round
    if r >= 0 and not loop.logging_only:
        loop.rows.extend(measure(loop, r))
    dynamics.end_round(loop.world, loop.sc, loop.seed, r)
    catalogue, users = observe(loop.world)
    loop.log.users[r], loop.log.catalogue[r] = users, catalogue
    if not loop.logging_only:
        retrain(loop, r)
        loop.rows.extend(evaluate_candidate(loop, r))
    keep_from = r - loop.sc.training.window_rounds + 1
    loop.log.prune(keep_from)
    loop.truth.prune(r)  # metrics need only the round just measured
    loop.rankers = {v: m for v, m in loop.rankers.items() if v >= keep_from - 1}
    loop.retrievers = {v: m for v, m in loop.retrievers.items() if v >= keep_from - 1}


def retrain(loop: ClosedLoop, r: int) -> None:
    """Ranker and agent fit on the same view; its teacher is the ranker snapshot serving now."""
    view = training_view(loop, r)
    loop.ranker_learner.set_catalogue(loop.log.catalogue[r])
    ranker_info = _timed(loop, r, "ranker_fit", lambda: loop.ranker_learner.fit(view))
    loop.ranker_learner.version = r + 1
    loop.rankers[r + 1] = loop.next_ranker = loop.ranker_learner.frozen()  # deployed after the training delay
    learner = loop.learner
    if r >= 0 and learner is not None:
        loop.fit_info = {**_timed(loop, r, "agent_fit", lambda: learner.fit(view)), **ranker_info}
        loop.retrievers[r + 1] = copy.deepcopy(learner.state_dict())


def _timed(loop: ClosedLoop, r: int, phase: str, fit: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run ``fit`` and keep its wall time apart from the (deterministic) metrics; a divergence names the round."""
    started = time.perf_counter()
    try:
        with heap_reuse():
            info = fit()
    except DivergenceError as err:
        raise with_round(err, r) from None
    loop.timings.append({"round": r, "phase": phase, "seconds": time.perf_counter() - started})
    return info


def evaluate_candidate(loop: ClosedLoop, r: int) -> list[MetricRow]:
    """The offline protocols on the model just trained (the one that will serve next), each against the truth."""
    if r < 0 or loop.learner is None or not getattr(loop.learner, "queryable", True):
        return []
    req, imp = loop.log.concat("requests", r, r), loop.log.concat("impressions", r, r)
    if not req:
        return []
    inp = OfflineInput(
        sc=loop.sc,
        seed=loop.seed,
        round=r,
        world=loop.world,
        candidate=_candidate(loop, r),
        ranker=loop.next_ranker,
        set_intents=loop.intents.set,
        requests=req,
        impressions=imp,
        truth_requests=loop.truth.concat("truth_requests", r, r),
        shared=loop.shared_log.round(r) if loop.shared_log is not None and loop.sc.evaluation.shared_log else None,
        audit=loop.audit,
    )
    return [{"round": r, "metric": k, "value": float(v)} for k, v in offline_metrics(inp).items()]


def _candidate(loop: ClosedLoop, r: int) -> RetrievalAgent:
    """A copy of the learner indexed on the round-end catalogue (sharing the world with privileged agents)."""
    candidate = copy.deepcopy(loop.learner, {id(loop.world): loop.world, id(loop.intents): loop.intents})
    assert candidate is not None
    candidate.index(loop.log.catalogue[r])
    return candidate


def training_view(loop: ClosedLoop, r: int) -> TrainingView:
    """The training view of the window ending at round ``r``; its ``ranker`` is the snapshot serving now."""
    first = max(min(loop.log.rounds()), r - loop.sc.training.window_rounds + 1)
    teacher = loop.next_ranker if loop.serving_ranker is loop.legacy_ranker else loop.serving_ranker
    share = loop.sc.evaluation.holdout_share
    withhold = (lambda users, rounds: holdout_flags(loop.seed, users, rounds, share)) if share > 0 else None
    view = build_view(loop.log, first, r, teacher, dict(loop.rankers), dict(loop.retrievers), withhold)
    if loop.keep_last_view:  # the gym hands the last view to an agent acting from outside
        loop.last_view = view
    return view


def metric_input(loop: ClosedLoop, r: int) -> MetricInput:
    """What measurement reads of round ``r``: the truth, the round's log and the serving models."""
    log, truth = loop.log, loop.truth
    return MetricInput(
        sc=loop.sc,
        seed=loop.seed,
        round=r,
        world=loop.world,
        retriever=loop.retriever,
        ranker=loop.serving_ranker,
        set_intents=loop.intents.set,
        requests=log.concat("requests", r, r),
        impressions=log.concat("impressions", r, r),
        recalled_counts=log.bincount("candidates", "item_id", r, loop.world.item_live.shape[0]),
        truth_requests=truth.concat("truth_requests", r, r),
        truth_impressions=truth.concat("truth_impressions", r, r),
        state=loop.metric_state,
        audit=loop.audit,
    )


def measure(loop: ClosedLoop, r: int) -> list[MetricRow]:
    """The metric rows of round ``r`` (a retriever that cannot be queried gets the exposure metrics only)."""
    inp = metric_input(loop, r)
    queryable = getattr(loop.retriever, "queryable", True)
    values = measure_round(inp) if queryable else measure_external(inp)
    if queryable:
        values.update(mini_app_truth_metrics(inp))
    values.update({f"fit_{k}": float(v) for k, v in loop.fit_info.items()})
    return [{"round": r, "metric": k, "value": float(v)} for k, v in values.items()]
