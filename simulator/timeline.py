"""When things happen: SimPy processes over one round of simulated time.

A round is one retraining cycle of ``timeline.round_hours``. Four processes
share one :class:`simpy.Environment` per round, started in this order so that
simultaneous events resolve deterministically (SimPy breaks ties by insertion):

1. catalogue: at the round's start, items arrive and retire, users join, and
   the serving models are re-indexed on the new catalogue;
2. deployment: ``train_delay_hours`` later, the models retrained at the end of
   the previous round replace the stale ones that served until then;
3. traffic: one event per slice of ``slice_hours`` serves a whole batch of
   requests (never one event per user);
4. retrain: at the round's end, metrics, end-of-round dynamics (drift,
   boredom, churn) and the retraining of agent and ranker on the log window.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy

from simulator.world.traffic import sample_requests, slice_volume

if TYPE_CHECKING:
    from simulator.loop import ClosedLoop

Process = Generator[simpy.Event, None, None]


def catalogue_process(env: simpy.Environment, loop: ClosedLoop, r: int) -> Process:
    loop.start_round(r)
    yield env.timeout(0)


def deployment_process(env: simpy.Environment, loop: ClosedLoop, r: int) -> Process:
    yield env.timeout(loop.sc.timeline.train_delay_hours)
    loop.deploy(r)


def traffic_process(env: simpy.Environment, loop: ClosedLoop, r: int) -> Process:
    tl = loop.sc.timeline
    n_slices = int(tl.round_hours / tl.slice_hours)
    for s in range(n_slices):
        start = r * tl.round_hours + s * tl.slice_hours
        yield env.timeout(start - env.now)  # a zero timeout still lets an earlier-scheduled deployment go first
        n = slice_volume(loop.sc, r, s, start)
        if n == 0:
            continue
        batch, intents = sample_requests(loop.world, loop.sc, loop.seed, r, s, start, loop.next_request_id, n)
        loop.next_request_id += n
        loop.serve_batch(batch, intents)


def retrain_process(env: simpy.Environment, loop: ClosedLoop, r: int) -> Process:
    yield env.timeout(loop.sc.timeline.round_hours)
    loop.end_round(r)


def run_round(loop: ClosedLoop, r: int) -> None:
    """Simulate round ``r`` of ``loop`` from its first hour to its retrain."""
    env = simpy.Environment(initial_time=r * loop.sc.timeline.round_hours)
    for process in (catalogue_process, deployment_process, traffic_process, retrain_process):
        env.process(process(env, loop, r))
    env.run()
