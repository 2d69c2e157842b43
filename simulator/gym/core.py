"""What both cascade environments run: one closed loop, served ``lanes`` requests per step.

A step takes the recall of the pending requests from the action, serves them
through the loop's own cascade (:func:`~simulator.gym.driver.serve_given`:
ranking, exposure, the user model, logging, the world's updates), reads each
request's outcome back from the log chunk it appended, and runs the timeline on
to the next requests: through round ends (metrics, dynamics, retraining),
round starts (catalogue changes) and deployments. A traffic slice larger than
``lanes`` is served over several steps; a step whose slice has fewer requests
left than lanes leaves the rest idle (``request_id`` -1, reward 0). With
``lanes`` at least :func:`~simulator.gym.scenario.max_slice_volume`, a step
is exactly one slice of the runner, served by the same code with the same
random streams.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from simulator.cascade.step import exploration_flags
from simulator.config import Scenario
from simulator.gym.driver import EXTERNAL, RoundDriver, attach, serve_given, warm_loop
from simulator.gym.spaces import Chunk, Codec, popular_fallback, repair
from simulator.log.view import Candidates, TrainingView
from simulator.loop import ClosedLoop
from simulator.shared_log import SharedLog
from simulator.types import Catalogue

REWARDS = ("clicks", "finished", "watch_time")
LANE_KEYS = ("request_id", "user_id", "explore", "clicks", "finished", "watch_time", "repaired", "true_slate_relevance", "true_examined")
EVENTS = ("round_start", "deploy", "retrain")
AgentFactory = Callable[[Any], Any]


class CascadeCore:
    """One closed loop, served ``lanes`` requests at a time.

    Args:
        sc: the scenario (its ``timeline.rounds`` is the episode horizon).
        lanes: requests served per step.
        device: where the world and the cascade run.
        action, observation: see :mod:`simulator.gym.spaces`.
        reward: per request, ``clicks``, ``finished`` (items watched to the end) or ``watch_time`` (minutes).
        warm_cache: warm-started worlds kept by seed (a reset with a seed seen before copies one).
    """

    def __init__(
        self,
        sc: Scenario,
        lanes: int,
        device: torch.device | str = "cpu",
        action: str = "ids",
        observation: str = "dict",
        reward: str = "clicks",
        warm_cache: int = 2,
    ) -> None:
        if reward not in REWARDS:
            raise ValueError(f"reward: must be one of {', '.join(REWARDS)}, got {reward!r}")
        if int(lanes) < 1:
            raise ValueError(f"num_envs: must be >= 1, got {lanes}")
        self.sc, self.lanes, self.device, self.reward = sc, int(lanes), torch.device(device), reward
        self.codec = Codec(sc, action, observation)
        self.agent: AgentFactory | None = None
        self.agent_name = EXTERNAL
        self.loop: ClosedLoop | None = None
        self.chunk: Chunk | None = None
        self._warm: OrderedDict[int, tuple[ClosedLoop, SharedLog | None]] = OrderedDict()
        self._warm_size = warm_cache
        self._driver: RoundDriver | None = None
        self._slice: tuple[Any, torch.Tensor] | None = None
        self._offset = 0
        self._host: tuple[int, np.ndarray, np.ndarray | None] | None = None
        self._round_totals: dict[str, float] = {}
        self._curves: list[dict[str, float]] = []  # per finished round: clicks and true relevance per request

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the warm-start cache (rebuilt on demand); the loop's shared log travels alongside it."""
        loop = self.loop
        view = loop.last_view if loop is not None else None
        if loop is not None and view is not None and not isinstance(view.candidate_source, Candidates):  # a closure over the log
            loop.last_view = dataclasses.replace(view, candidate_source=view.candidates)  # materialised: picklable
        state = dict(self.__dict__)
        state["_warm"] = OrderedDict()
        state["_shared_log"] = self.loop.shared_log if self.loop is not None else None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        shared = state.pop("_shared_log")
        self.__dict__.update(state)
        if self.loop is not None:
            self.loop.shared_log = shared

    # ----- agents --------------------------------------------------------------
    def attach_agent(self, factory: AgentFactory | None, name: str = "agent") -> None:
        """Serve and retrain ``factory(loop)`` (a :class:`~simulator.agent_api.RetrievalAgent`) from the next reset on.

        The loop builds a learner and a serving copy, pretrains on the warm-start log, refits the learner at
        every retrain point and deploys it after the training delay, exactly as ``cascadesim run``. None
        detaches it: the actions then come from outside and nothing but the platform ranker is fitted.
        """
        self.agent, self.agent_name = factory, (name if factory is not None else EXTERNAL)

    # ----- episode -------------------------------------------------------------
    def reset(self, seed: int) -> tuple[Any, dict[str, Any]]:
        """A new episode on the world of ``seed``: warm start, attach the agent, run to the first requests."""
        warm, shared = self._warm_start(int(seed))
        loop = warm.copy()
        loop.shared_log = shared  # the offline shared-log protocol scores candidates as in `cascadesim run`
        attach(loop, self.agent, self.agent_name)
        self.loop, self._driver = loop, RoundDriver(loop)
        self._slice, self._offset, self._host = None, 0, None
        self._round_totals, self._curves = {}, []
        events = self._advance()
        obs = self._observe()
        return obs, {**self._event_info(events), "seed": int(seed), "active": self._active()}

    def step(self, action: Any) -> tuple[Any, np.ndarray, bool, dict[str, Any]]:
        """Serve the pending requests with ``action`` as their recall.

        Returns:
            ``(observation, reward [lanes] float32, truncated, info)``; truncated once the horizon's last round has ended.
        """
        if self.chunk is None or self.loop is None:
            raise RuntimeError("step: the episode has ended (or never started); call reset()")
        chunk = self.chunk
        n, r = len(chunk.batch), chunk.batch.round
        repaired = self._serve(chunk, action)
        outcome = self._outcome(chunk)
        outcome["repaired"] = torch.as_tensor(repaired)
        self._tally(outcome, n)
        events = self._advance()
        values = {"request_id": chunk.batch.request_id, "user_id": chunk.batch.user_id, "explore": chunk.explore, **outcome}
        info: dict[str, Any] = {key: self._lanes(values[key], key) for key in LANE_KEYS}
        info["served_round"] = np.full(self.lanes, r, np.int64)
        info["active"] = np.arange(self.lanes) < n
        info.update(self._event_info(events))
        reward = self._lanes(outcome[self.reward] / (60.0 if self.reward == "watch_time" else 1.0), self.reward).astype(np.float32)
        return self._observe(), reward, self.chunk is None, info

    def _serve(self, chunk: Chunk, action: Any) -> np.ndarray:
        """Serve the pending requests with ``action`` as their recall; ``[B]`` entries repaired per request."""
        assert self.loop is not None
        live, popular = self._host_catalogue(chunk.batch.round)
        ids, scores = self.codec.decode(action, len(chunk.batch), live)
        ids, scores, repaired = repair(ids, scores, live, popular)
        item_ids, item_scores = torch.as_tensor(ids, device=self.device), torch.as_tensor(scores, device=self.device)
        serve_given(self.loop, chunk.batch, chunk.intents, item_ids, item_scores)
        return repaired

    def warm_world(self, seed: int) -> ClosedLoop:
        """The loop of ``seed`` after the warm start (cached; copy it before changing it)."""
        return self._warm_start(int(seed))[0]

    def _warm_start(self, seed: int) -> tuple[ClosedLoop, SharedLog | None]:
        """The warm-started loop of ``seed`` and its shared log (cached by seed)."""
        if seed in self._warm:
            self._warm.move_to_end(seed)
        else:
            loop = warm_loop(self.sc, seed, self.device)
            self._warm[seed] = (loop, SharedLog(loop) if self.sc.evaluation.shared_log else None)
            while len(self._warm) > self._warm_size:
                self._warm.popitem(last=False)
        return self._warm[seed]

    def _advance(self) -> list[tuple[str, int]]:
        """Make the next requests pending (None at the horizon); the timeline events passed on the way."""
        assert self._driver is not None and self.loop is not None
        start = len(self._driver.events)
        while self._slice is None or self._offset >= len(self._slice[0]):
            self._slice, self._offset = self._driver.next_slice(), 0
            if self._slice is None:
                self.chunk = None
                return self._driver.events[start:]
        batch, intents = self._slice
        a, b = self._offset, min(self._offset + self.lanes, len(batch))
        self._offset = b
        if (a, b) != (0, len(batch)):
            idx = torch.arange(a, b, device=intents.device)
            batch, intents = batch.select(idx), intents[idx]
        self.loop.intents.set(batch.request_id, intents)  # privileged policies (oracle) read them while acting
        self.chunk = Chunk(batch, intents, exploration_flags(self.loop, batch))
        return self._driver.events[start:]

    # ----- outcomes ------------------------------------------------------------
    def _outcome(self, chunk: Chunk) -> dict[str, torch.Tensor]:
        """Per-request sums from the log (and, for evaluation, the truth) chunks the batch appended."""
        assert self.loop is not None
        r, n, first = chunk.batch.round, len(chunk.batch), chunk.batch.request_id[0]
        imp = self.loop.log.tables["impressions"][r][-1]
        tru = self.loop.truth.tables["truth_impressions"][r][-1]

        def per_request(table: dict[str, torch.Tensor], col: str) -> torch.Tensor:
            return torch.zeros(n, dtype=torch.float64, device=first.device).index_add_(0, table["request_id"] - first, table[col].double())

        slate = self.sc.cascade.slate_size
        return {
            "clicks": per_request(imp, "clicked"),
            "finished": per_request(imp, "finished"),
            "watch_time": per_request(imp, "watch_time"),
            "true_slate_relevance": per_request(tru, "relevance") / slate,
            "true_examined": per_request(tru, "examined"),
        }

    def _lanes(self, values: torch.Tensor, key: str) -> np.ndarray:
        """``[lanes]`` numpy array: the chunk's values, then idle lanes (-1 for ids, 0 otherwise)."""
        arr = values.detach().cpu().numpy()
        out = np.full(self.lanes, -1 if key in ("request_id", "user_id") and arr.dtype.kind == "i" else 0, dtype=arr.dtype)
        out[: len(arr)] = arr
        return out

    def _host_catalogue(self, r: int) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
        """Host copies of round ``r``'s live mask and (lazily) its popular items, where actions are checked."""
        assert self.loop is not None
        catalogue = self.loop.log.catalogue[r]
        if self._host is None or self._host[0] != r:
            self._host = (r, catalogue.live.cpu().numpy(), None)

        def popular() -> np.ndarray:
            assert self._host is not None
            if self._host[2] is None:
                self._host = (*self._host[:2], popular_fallback(catalogue))
            assert self._host[2] is not None
            return self._host[2]

        return self._host[1], popular

    def _observe(self) -> Any:
        assert self._driver is not None and self.loop is not None
        r = self.chunk.batch.round if self.chunk is not None else max(self._driver.round, 0)
        return self.codec.encode(self.chunk, self.lanes, r, self.loop.log.catalogue[max(self.loop.log.catalogue)])

    def _active(self) -> np.ndarray:
        return np.arange(self.lanes) < (len(self.chunk.batch) if self.chunk is not None else 0)

    def _event_info(self, events: list[tuple[str, int]]) -> dict[str, Any]:
        assert self.loop is not None
        info: dict[str, Any] = {kind: any(k == kind for k, _ in events) for kind in EVENTS}
        ended = [r for k, r in events if k == "retrain"]
        if ended:
            info["retrain_round"] = ended[-1]
            info["metrics"] = {row["metric"]: row["value"] for row in self.loop.rows if row["round"] == ended[-1]}
        if info["round_start"]:
            if self._round_totals:
                self._curves.append(self._per_request())
            self._round_totals = {}
        return info

    def _per_request(self) -> dict[str, float]:
        """This round's totals per request served (what ``rgb_array`` plots)."""
        n = max(self._round_totals.get("requests", 0.0), 1.0)
        return {k: v / n for k, v in self._round_totals.items() if k != "requests"}

    def _tally(self, outcome: dict[str, torch.Tensor], n: int) -> None:
        totals = self._round_totals
        totals["requests"] = totals.get("requests", 0.0) + n
        for key in ("clicks", "finished", "true_slate_relevance"):
            totals[key] = totals.get(key, 0.0) + float(outcome[key].sum())

    # ----- what the environments expose ---------------------------------------
    def recall_size(self) -> int:
        """How many candidates the pending requests' recall needs (the runner's ``retrieve`` size)."""
        cfg = self.sc.cascade
        if not cfg.stochastic:
            return cfg.k_retrieve
        assert self.loop is not None and self.chunk is not None
        n_live = int(self.loop.log.catalogue[self.chunk.batch.round].live.sum())
        return min(n_live, math.ceil(cfg.candidate_pool * cfg.k_retrieve))

    def training_view(self) -> TrainingView | None:
        """The training view of the last retrain point (what an agent fits on); None before the first."""
        return None if self.loop is None else self.loop.last_view

    def catalogue(self) -> Catalogue:
        """The observable catalogue of the current round."""
        assert self.loop is not None, "reset() first"
        return self.loop.log.catalogue[max(self.loop.log.catalogue)]

    def metrics(self) -> pd.DataFrame:
        """Every round measured so far: columns ``round, metric, value`` (as the runner's ``metrics.parquet``)."""
        rows = self.loop.rows if self.loop is not None else []
        return pd.DataFrame(rows, columns=["round", "metric", "value"])

    def render_rgb(self) -> np.ndarray:
        """The finished rounds' and the current round's curves as an ``[H, W, 3] uint8`` image."""
        from simulator.gym.render import draw_curves

        head = self.render_text().splitlines()[0] if self.loop is not None else "cascadesim: not started"
        return draw_curves(self._curves + ([self._per_request()] if self._round_totals else []), head)

    def render_text(self) -> str:
        """A few lines on where the episode is: round, time, serving models, this round's engagement."""
        if self.loop is None or self._driver is None:
            return "cascadesim: not started (call reset)"
        sc, t = self.sc, self._round_totals
        head = f"cascadesim {sc.name} | agent {self.loop.agent_name} | round {max(self._driver.round, 0)}/{sc.timeline.rounds - 1}"
        pending = self.chunk.batch if self.chunk is not None else None
        when = f"t = {float(pending.time[0]):.1f} h" if pending is not None and pending.time is not None else "episode over"
        models = f"retriever v{self.loop.retriever_version}, ranker v{getattr(self.loop.serving_ranker, 'version', -1)}"
        n = max(t.get("requests", 0.0), 1.0)
        perf = (
            f"this round: {int(t.get('requests', 0))} requests, {t.get('clicks', 0) / n:.3f} clicks"
            f" and {t.get('finished', 0) / n:.3f} finished per request"
        )
        truth = f"(truth) mean slate relevance {t.get('true_slate_relevance', 0) / n:.3f}"
        return "\n".join([head, f"{when}; {models}", perf, truth])
