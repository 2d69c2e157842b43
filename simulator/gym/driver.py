"""The closed loop under a gym API: the SimPy timeline, paused at every traffic batch.

:class:`RoundDriver` steps through the very round that ``cascadesim run`` runs
(:func:`simulator.timeline.round_environment`), with one hook changed: the traffic's
``serve`` callable hands each slice to the environment and returns an event that
the round waits on. The environment serves the batch with the action as the recall
and releases the event; the timeline then runs on to the next slice. So an agent
acting through the gym sees the same world, the same deployments and the same
retrains as in ``cascadesim run``.

The recall comes from the action through :class:`GivenRecall`, which stands
in the loop's serving-retriever slot for the duration of one
:func:`~simulator.cascade.step.serve_batch` call: exploration, ranking, exposure,
the user model, logging and the world's updates are the runner's own code.
"""

from __future__ import annotations

from typing import Any, cast

import simpy
import torch

from simulator.agent_api import RetrievalAgent
from simulator.cascade.step import serve_batch
from simulator.config import Scenario
from simulator.log.view import TrainingView
from simulator.loop import ClosedLoop
from simulator.round import AgentFactory, attach_agent, deploy, end_round
from simulator.timeline import Process, round_environment, traffic_process, warm_started_loop
from simulator.types import Catalogue, RequestBatch

EXTERNAL = "external"


class ExternalPolicy:
    """Fills the loop's agent slots when the recall comes from outside (an RL policy's actions).

    Nothing is fitted; the platform ranker still retrains and deploys on schedule.
    Round metrics then cover exposure, popularity and drift only: the retriever
    metrics need a model that can be queried for any user.
    """

    name = EXTERNAL
    queryable = False  # the round measures exposure metrics only

    def fit(self, view: TrainingView) -> dict[str, float]:
        return {}

    def index(self, catalogue: Catalogue) -> None:
        return None

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError("external policy: the recall comes from the action; there is no model to query")

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("external policy: there is no model to score with")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class GivenRecall:
    """The recall of one batch, given as ``item_ids``/``scores`` ``[B, K]`` rows keyed by request id."""

    name = "given"

    def __init__(self, request_id: torch.Tensor, item_ids: torch.Tensor, scores: torch.Tensor) -> None:
        self.request_id, self.item_ids, self.scores = request_id, item_ids, scores

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if len(requests) == len(self.request_id):  # the whole batch (no exploration share): rows as given
            return self.item_ids[:, :k], self.scores[:, :k]
        rows = torch.searchsorted(self.request_id, requests.request_id)
        return self.item_ids[rows, :k], self.scores[rows, :k]


def warm_loop(sc: Scenario, seed: int, device: torch.device) -> ClosedLoop:
    """The world of ``seed`` after the legacy platform's warm-start rounds, keeping its training views from now on."""
    loop = warm_started_loop(sc, seed, device)
    loop.keep_last_view = True
    return loop


def attach(loop: ClosedLoop, agent: AgentFactory | None, name: str) -> None:
    """Put an agent (a factory ``loop -> RetrievalAgent``) or, with None, :class:`ExternalPolicy` in the loop."""
    attach_agent(loop, agent if agent is not None else (lambda _: ExternalPolicy()), name if agent is not None else EXTERNAL)


def serve_given(loop: ClosedLoop, batch: RequestBatch, intents: torch.Tensor, item_ids: torch.Tensor, scores: torch.Tensor) -> None:
    """Serve ``batch`` with the given recall ``[B, K]`` through the loop's own cascade."""
    server = loop.retriever
    loop.retriever = cast(RetrievalAgent, GivenRecall(batch.request_id, item_ids, scores))  # serve_batch only retrieves with it
    try:
        serve_batch(loop, batch, intents)
    finally:
        loop.retriever = server


class RoundDriver:
    """Walks rounds ``0 .. timeline.rounds - 1`` of a loop and stops at every traffic slice.

    Attributes:
        round: the round being simulated (-1 before the first).
        events: ``(kind, round)`` in the order they happened: ``round_start``, ``deploy`` (round > 0) and ``retrain``.
    """

    def __init__(self, loop: ClosedLoop) -> None:
        self.loop = loop
        self.round = -1
        self.events: list[tuple[str, int]] = []
        self._sim: simpy.Environment | None = None
        self._gate: simpy.Event | None = None
        self._slice: tuple[RequestBatch, torch.Tensor] | None = None

    def next_slice(self) -> tuple[RequestBatch, torch.Tensor] | None:
        """Release the slice handed out last, run the timeline to the next one; None once the last round has ended."""
        if self._gate is not None:
            self._gate.succeed()
            self._gate = None
        while self._slice is None:
            if self._sim is None or self._sim.peek() == simpy.core.Infinity:
                if self.round + 1 >= self.loop.sc.timeline.rounds:
                    self._sim = None
                    return None
                self.round += 1
                self._sim = self._round(self.round)
            self._sim.step()
        out, self._slice = self._slice, None
        return out

    # ----- copies and pickles: the position as data, the SimPy round rebuilt from it -----------------
    def __getstate__(self) -> dict[str, Any]:
        """The loop, the round, the events and the simulated time of the pending slice (no live generators)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_sim", "_gate")}
        state["_paused_at"] = self._sim.now if self._sim is not None and self._gate is not None else None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        paused_at = state.pop("_paused_at")
        self.__dict__.update(state)
        self._sim, self._gate = None, None
        if paused_at is not None:
            self._sim, self._gate = self._resume(self.round, paused_at)

    def _resume(self, r: int, now: float) -> tuple[simpy.Environment, simpy.Event]:
        """Round ``r`` from the slice handed out at ``now``: what is still due (deployment, later slices, retrain), in order."""
        tl = self.loop.sc.timeline
        start = r * tl.round_hours
        env = simpy.Environment(initial_time=now)
        gate = env.event()
        if now < start + tl.train_delay_hours:  # at equal times the deployment went before the slice
            env.process(self._later(env, start + tl.train_delay_hours - now, "deploy", r))
        env.process(self._traffic_after(env, r, round((now - start) / tl.slice_hours) + 1, gate))
        env.process(self._later(env, start + tl.round_hours - now, "retrain", r))
        return env, gate

    def _later(self, env: simpy.Environment, delay: float, kind: str, r: int) -> Process:
        yield env.timeout(delay)
        (deploy if kind == "deploy" else end_round)(self.loop, r)
        if kind == "retrain" or r > 0:
            self.events.append((kind, r))

    def _traffic_after(self, env: simpy.Environment, r: int, first: int, gate: simpy.Event) -> Process:
        yield gate
        yield from traffic_process(env, self.loop, r, self._hand_out, first)

    def _round(self, r: int) -> simpy.Environment:
        return round_environment(self.loop, r, self._hand_out, lambda kind, r: self.events.append((kind, r)))

    def _hand_out(self, loop: ClosedLoop, batch: RequestBatch, intents: torch.Tensor) -> simpy.Event:
        """The traffic's ``serve`` hook: keep the slice for the environment and pause the round until it is served."""
        assert self._sim is not None
        self._slice = (batch, intents)
        self._gate = self._sim.event()
        return self._gate  # released by the next call of next_slice, once the batch has been served
