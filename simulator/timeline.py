"""When things happen: SimPy processes over one round of simulated time.

A round is one retraining cycle of ``timeline.round_hours``. Four processes
share one :class:`simpy.Environment` per round, started in this order so that
simultaneous events resolve deterministically (SimPy breaks ties by insertion):

1. catalogue: at the round's start, items arrive and retire, users join, and
   the serving models are re-index on the new catalogue (:func:`simulator.round.start_round`);
2. deployment: ``train_delay_hours`` later, the models retrained at the end of
   the previous round replace the stale ones that served until then (:func:`simulator.round.deploy`);
3. traffic: one event per slice of ``slice_hours`` hands a whole batch of
   requests (never one event per user) to ``serve``: :func:`simulator.cascade.step.serve_batch`
   in a run; the gym's driver, which pauses the round until an action arrives;
4. retrain: at the round's end, metrics, end-of-round dynamics (drift,
   boredom, churn) and the retraining of agent and ranker (:func:`simulator.round.end_round`).

``note(kind, round)`` is told when steps 1, 2 (from round 1 on) and 4 are done.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import simpy
import torch

from simulator.cascade.step import serve_batch
from simulator.config import Scenario
from simulator.loop import ClosedLoop
from simulator.memory import settle_heap
from simulator.round import deploy, end_round, start_round
from simulator.types import RequestBatch
from simulator.world.traffic import sample_requests, slice_volume

Process = Generator[simpy.Event, None, None]
Serve = Callable[[ClosedLoop, RequestBatch, torch.Tensor], "simpy.Event | None"]  # an event to wait on, or None
Note = Callable[[str, int], None]


def _ignore(kind: str, r: int) -> None:
    return None


def run_round(loop: ClosedLoop, r: int, serve: Serve = serve_batch) -> None:
    """Simulate round ``r`` of ``loop`` from its first hour to its retrain."""
    settle_heap()  # full garbage collections would otherwise walk every long-lived object several times a round
    round_environment(loop, r, serve).run()


def round_environment(loop: ClosedLoop, r: int, serve: Serve = serve_batch, note: Note = _ignore) -> simpy.Environment:
    """The round's four processes on a fresh environment, ready to ``run()`` or to ``step()`` through."""
    env = simpy.Environment(initial_time=r * loop.sc.timeline.round_hours)
    env.process(catalogue_process(env, loop, r, note))
    env.process(deployment_process(env, loop, r, note))
    env.process(traffic_process(env, loop, r, serve))
    env.process(retrain_process(env, loop, r, note))
    return env


def catalogue_process(env: simpy.Environment, loop: ClosedLoop, r: int, note: Note = _ignore) -> Process:
    start_round(loop, r)
    yield env.timeout(0)
    note("round_start", r)


def deployment_process(env: simpy.Environment, loop: ClosedLoop, r: int, note: Note = _ignore) -> Process:
    yield env.timeout(loop.sc.timeline.train_delay_hours)
    deploy(loop, r)
    if r > 0:
        note("deploy", r)


def traffic_process(env: simpy.Environment, loop: ClosedLoop, r: int, serve: Serve = serve_batch, first_slice: int = 0) -> Process:
    """Slices ``first_slice ..`` of round ``r`` (a later first slice resumes a round, as the gym does on unpickling)."""
    tl = loop.sc.timeline
    for s in range(first_slice, int(tl.round_hours / tl.slice_hours)):
        start = r * tl.round_hours + s * tl.slice_hours
        yield env.timeout(start - env.now)  # a zero timeout still lets an earlier-scheduled deployment go first
        n = slice_volume(loop.sc, r, s, start)
        if n == 0:
            continue
        batch, intents = sample_requests(loop.world, loop.sc, loop.seed, r, s, start, loop.next_request_id, n)
        loop.next_request_id += n
        wait = serve(loop, batch, intents)
        if wait is not None:
            yield wait


def retrain_process(env: simpy.Environment, loop: ClosedLoop, r: int, note: Note = _ignore) -> Process:
    yield env.timeout(loop.sc.timeline.round_hours)
    end_round(loop, r)
    note("retrain", r)


def warm_started_loop(sc: Scenario, seed: int, device: torch.device | str = "cpu") -> ClosedLoop:
    """The shared starting point of a seed: the world after the legacy platform's warm-start rounds."""
    loop = ClosedLoop(sc, seed, device)
    for r in range(-sc.timeline.warm_start_rounds, 0):
        run_round(loop, r)
    return loop
