"""Any retrieval agent as a policy over the cascade environments, refitted at their retrain points.

:class:`AgentPolicy` plugs an agent into an environment's retrain points and
acts on its observations:

* at every reset the environment builds a learner and a serving copy of the
  agent from the factory and pretrains the learner on the warm-start log;
* at every retrain point (the end of a round, ``info["retrain"]``) the learner
  fits on the environment's training view (the same window ``cascadesim run``
  gives it), and after ``train_delay_hours`` the serving copy takes its
  weights;
* ``policy(obs)`` rebuilds the :class:`~simulator.types.RequestBatch` of the
  observed requests and returns the serving copy's ``retrieve`` as the action
  (requests served by exploration are left out, as the runner leaves them out).

The simulator never imports :mod:`agents`; the factory comes from the
composition root, e.g. ``scenarios.experiment.agent_factory("bc", sc, seed, device)``.

Example:
    >>> env = CascadeVectorEnv(num_envs=256, scenario="default", action="ids+scores")  # doctest: +SKIP
    >>> policy = AgentPolicy(env, agent_factory("bc", env.scenario, 0, "cpu"), "bc")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    >>> obs, reward, terminated, truncated, info = env.step(policy(obs))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from simulator.gym.spaces import F32_MAX

AgentFactory = Callable[[Any], Any]


class AgentPolicy:
    """A :class:`~simulator.agent_api.RetrievalAgent` acting on a cascade environment's observations.

    Args:
        env: a :class:`~simulator.gym.env.CascadeEnv` or :class:`~simulator.gym.vector.CascadeVectorEnv`
            (wrapped or not) with ``observation="dict"``; the agent applies from its next ``reset``.
        factory: builds the agent for a loop (``loop -> RetrievalAgent``), called for the learner and the serving copy.
        name: the agent's name in metrics and logs.
    """

    def __init__(self, env: Any, factory: AgentFactory, name: str) -> None:
        self.env = env.unwrapped
        self.core = self.env.core
        if self.core.codec.observation != "dict":
            raise ValueError("observation: AgentPolicy needs observation='dict' (it rebuilds the request batch from it)")
        if self.core.codec.action not in ("ids", "ids+scores"):
            raise ValueError(f"action: AgentPolicy needs action='ids' or 'ids+scores', got {self.core.codec.action!r}")
        self.name = name
        self.batched = isinstance(self.env, VectorEnv)
        self.core.attach_agent(factory, name)

    @property
    def agent(self) -> Any:
        """The serving copy (the model that retrieves now; it lags the learner by the training delay)."""
        return None if self.core.loop is None else self.core.loop.retriever

    @property
    def learner(self) -> Any:
        """The copy that refits at every retrain point."""
        return None if self.core.loop is None else self.core.loop.learner

    def __call__(self, obs: Any) -> Any:
        """The agent's recall for the observed requests, as an action of the environment's action space."""
        codec, core = self.core.codec, self.core
        batch, lanes = codec.requests(obs, core.device)
        explore = np.atleast_1d(obs["explore"])[lanes].astype(bool)
        n_lanes = core.lanes
        ids = np.full((n_lanes, codec.k), -1, dtype=np.int64)  # -1: no candidate (the env drops and tops up)
        scores = np.full((n_lanes, codec.k), -F32_MAX, dtype=np.float32)
        served = lanes[~explore]
        if len(served):
            sub = batch.select(torch.as_tensor(~explore, device=batch.request_id.device)) if explore.any() else batch
            k = core.recall_size()
            got_ids, got_scores = self.agent.retrieve(sub, k)
            rows = slice(0, len(served)) if len(served) == len(lanes) else served  # active lanes come first
            ids[rows, :k] = got_ids.detach().cpu().numpy()
            scores[rows, :k] = got_scores.detach().cpu().numpy()
        action: Any = {"item_ids": ids, "scores": scores} if codec.action == "ids+scores" else ids
        if not self.batched:
            action = {k: v[0] for k, v in action.items()} if isinstance(action, dict) else action[0]
        return action
