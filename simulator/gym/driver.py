"""The closed loop under a gym API: the SimPy timeline, paused at every traffic batch.

:class:`RoundDriver` runs each round on a :class:`simpy.Environment` with the
processes of :mod:`simulator.timeline` (catalogue at the start, deployment
after ``train_delay_hours``, retrain at the end), in the same order, and with a
traffic process that samples each slice exactly as the runner does but, instead
of serving it, hands it to the environment and waits on an event. The
environment serves the batch with the action as the recall and releases the
event; the timeline then runs on to the next slice. Simultaneous events keep
the runner's order, so an agent acting through the gym sees the same world,
the same deployments and the same retrains as in ``cascadesim run``.

The recall comes from the action through :class:`GivenRecall`, which stands
in the loop's serving-retriever slot for the duration of one
:meth:`~simulator.loop.ClosedLoop.serve_batch` call: ranking, exposure, the
user model, logging and the world's updates are the runner's own code.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy
import torch

from simulator.loop import ClosedLoop
from simulator.log.view import TrainingView
from simulator.metrics.measure import MetricInput, exposure_metrics
from simulator.rng import torch_stream
from simulator.timeline import catalogue_process, deployment_process, retrain_process, run_round
from simulator.types import Catalogue, RequestBatch
from simulator.world.traffic import sample_requests, slice_volume

EXTERNAL = "external"


class ExternalPolicy:
    """Fills the loop's agent slots when the recall comes from outside (an RL policy's actions).

    Nothing is fitted; the platform ranker still retrains and deploys on schedule.
    Round metrics then cover exposure, popularity and drift only: the retriever
    metrics need a model that can be queried for any user.
    """

    name = EXTERNAL

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


class GymLoop(ClosedLoop):
    """A :class:`ClosedLoop` that remembers its last training view and measures external policies."""

    last_view: TrainingView | None = None

    def view(self, r: int) -> TrainingView:
        """The training view of the window ending at ``r`` (kept as :attr:`last_view`)."""
        self.last_view = super().view(r)
        return self.last_view

    def _measure(self, r: int) -> list[dict[str, Any]]:
        if not isinstance(self.retriever, ExternalPolicy):
            return super()._measure(r)
        inp = MetricInput(
            sc=self.sc, seed=self.seed, round=r, world=self.world, retriever=self.retriever, ranker=self.serving_ranker,
            set_intents=self.intents.set, requests=self.log.concat("requests", r, r), impressions=self.log.concat("impressions", r, r),
            recalled_counts=self.log.bincount("candidates", "item_id", r, self.world.item_live.shape[0]), truth_requests=self.truth.concat("truth_requests", r, r),
            truth_impressions=self.truth.concat("truth_impressions", r, r), state=self.metric_state,
        )
        values = exposure_metrics(inp)
        alive = self.world.user_alive
        drift = 1 - torch.cosine_similarity(self.world.user_latent[alive], self.world.user_latent0[alive], dim=1)
        values["preference_drift"] = float(drift.mean())
        values.update({f"fit_{k}": float(v) for k, v in self.fit_info.items()})
        return [{"round": r, "metric": k, "value": float(v)} for k, v in values.items()]


def warm_loop(sc: Any, seed: int, device: torch.device) -> GymLoop:
    """The world of ``seed`` after the legacy platform's warm-start rounds (as ``warm_started_loop``)."""
    loop = GymLoop(sc, seed, device)
    for r in range(-sc.timeline.warm_start_rounds, 0):
        run_round(loop, r)
    loop.last_view = None
    return loop


def attach(loop: ClosedLoop, agent: Any | None, name: str) -> None:
    """Put an agent (a factory ``loop -> RetrievalAgent``) or, with None, :class:`ExternalPolicy` in the loop."""
    loop.attach_agent(agent if agent is not None else (lambda _: ExternalPolicy()), name if agent is not None else EXTERNAL)


def exploration_flags(loop: ClosedLoop, batch: RequestBatch) -> torch.Tensor:
    """``[B] bool``: the requests :meth:`ClosedLoop.serve_batch` will serve by uniform exploration (same coin)."""
    share = loop.sc.cascade.exploration_share
    if share == 0.0:  # the coin cannot come up: skip drawing it
        return torch.zeros(len(batch), dtype=torch.bool, device=loop.device)
    gen = torch_stream(loop.seed, "explore", batch.round, int(batch.request_id[0]), device=loop.device)
    return torch.rand(len(batch), generator=gen, device=loop.device) < share


def serve_given(loop: ClosedLoop, batch: RequestBatch, intents: torch.Tensor, item_ids: torch.Tensor, scores: torch.Tensor) -> None:
    """Serve ``batch`` with the given recall ``[B, K]`` through the loop's own cascade."""
    server = loop.retriever
    loop.retriever = GivenRecall(batch.request_id, item_ids, scores)
    try:
        loop.serve_batch(batch, intents)
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

    def _round(self, r: int) -> simpy.Environment:
        env = simpy.Environment(initial_time=r * self.loop.sc.timeline.round_hours)
        env.process(self._noted(catalogue_process(env, self.loop, r), "round_start", r))
        env.process(self._noted(deployment_process(env, self.loop, r), "deploy" if r > 0 else "", r))
        env.process(self._traffic(env, r))
        env.process(self._noted(retrain_process(env, self.loop, r), "retrain", r))
        return env

    def _noted(self, process: Generator[simpy.Event, None, None], kind: str, r: int) -> Generator[simpy.Event, None, None]:
        yield from process
        if kind:
            self.events.append((kind, r))

    def _traffic(self, env: simpy.Environment, r: int) -> Generator[simpy.Event, None, None]:
        """:func:`simulator.timeline.traffic_process`, handing each slice out instead of serving it."""
        loop, tl = self.loop, self.loop.sc.timeline
        for s in range(int(tl.round_hours / tl.slice_hours)):
            start = r * tl.round_hours + s * tl.slice_hours
            yield env.timeout(start - env.now)
            n = slice_volume(loop.sc, r, s, start)
            if n == 0:
                continue
            batch, intents = sample_requests(loop.world, loop.sc, loop.seed, r, s, start, loop.next_request_id, n)
            loop.next_request_id += n
            self._slice = (batch, intents)
            self._gate = env.event()
            yield self._gate  # released by the next call of next_slice, once the batch has been served

