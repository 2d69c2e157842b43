"""``cascadesim/Cascade-v0``: the cascade as a request-level :class:`gymnasium.Env`.

Each step is one arriving request. The observation is what the platform
observes about it (the user's profile and recent history, the entry action,
the domain, the time); the action is its recall (see
:mod:`simulator.gym.spaces` for the spaces and why); the step runs the
platform ranker, exposure and the simulated user, logs everything and moves
the world. The reward is observable engagement (clicks by default). Truth
(true relevance of the slate, attention, and at each round's end the round's
truth metrics) is in ``info`` for evaluation only.

Episodes follow the scenario's timeline: requests arrive in SimPy traffic
slices, the platform ranker (and an attached agent, see
:class:`~simulator.gym.policy.AgentPolicy`) retrains at the end of every
round and serves after the training delay; ``info["retrain"]`` marks the step
after which a round ended, and :meth:`CascadeEnv.training_view` is the log
window the platform retrained on. The episode is truncated after
``timeline.rounds`` rounds (``rounds=`` sets it). ``reset(seed=s)`` builds the
world of seed ``s`` (the same world as ``cascadesim run`` seed ``s``), runs the
legacy warm start and seeds every random stream from ``s``.

Example:
    >>> import gymnasium as gym, simulator.gym  # doctest: +SKIP
    >>> env = gym.make("cascadesim/Cascade-v0", scenario="default", rounds=3)  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from simulator.config import Scenario
from simulator.gym.core import CascadeCore
from simulator.gym.scenario import resolve_scenario
from simulator.log.view import TrainingView
from simulator.types import Catalogue

RENDER_MODES = ["ansi", "human", "rgb_array"]
SEED_SPACE = 2**31 - 1


def check_render_mode(render_mode: str | None) -> str | None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode: must be one of {', '.join(RENDER_MODES)} or None, got {render_mode!r}")
    return render_mode


class CoreFacade:
    """What the single and the vector environment add around their :class:`CascadeCore` (written once):
    ``render`` and the methods beyond the gymnasium API."""

    core: CascadeCore
    render_mode: str | None

    def render(self) -> Any:
        """The text summary as a ``str`` (``ansi``), or print it and return None (``human``), or the round's curves as an
        ``[H, W, 3] uint8`` image (``rgb_array``, for ``RecordVideo``); one lane or many alike."""
        if self.render_mode == "rgb_array":
            return self.core.render_rgb()
        text = self.core.render_text()
        if self.render_mode == "human":
            print(text)
            return None
        return text

    # ----- beyond the gymnasium API -----------------------------------------
    def attach_agent(self, factory: Any, name: str = "agent") -> None:
        """Serve and retrain a retrieval agent from the next reset on (see :class:`~simulator.gym.policy.AgentPolicy`)."""
        self.core.attach_agent(factory, name)

    def training_view(self) -> TrainingView | None:
        """The training view of the last retrain point (``info["retrain"]``): the log window the platform fitted on."""
        return self.core.training_view()

    def catalogue(self) -> Catalogue:
        """The observable catalogue of the current round (live items, features, popularity counters)."""
        return self.core.catalogue()

    def metrics(self) -> pd.DataFrame:
        """Round metrics so far (``round, metric, value``), truth included: for evaluation, never for acting."""
        return self.core.metrics()


class CascadeEnv(CoreFacade, gym.Env):
    """One closed loop of the cascade, one request per step.

    Args:
        scenario: a :class:`~simulator.config.Scenario`, a preset name, a TOML path or a dict.
        rounds: episode horizon in rounds (replaces ``timeline.rounds``).
        action: ``"ids"`` (default), ``"ids+scores"``, ``"scores"`` or ``"discrete"``.
        observation: ``"dict"`` (default) or ``"flat"`` (one float32 vector, for MLP policies).
        reward: ``"clicks"`` (default), ``"finished"`` or ``"watch_time"`` (minutes).
        device: ``"cpu"`` or ``"cuda[:N]"``: where the world and the cascade run.
        render_mode: ``"ansi"`` (``render`` returns text) or ``"human"`` (prints it).
        **sections: scenario overrides by section, e.g. ``world={"n_users": 500}``.
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 4}
    core_class: type[CascadeCore] = CascadeCore  # what serves an action (the learnable environments change it)

    def __init__(
        self,
        scenario: Scenario | str | Mapping[str, Any] = "default",
        *,
        rounds: int | None = None,
        action: str = "ids",
        observation: str = "dict",
        reward: str = "clicks",
        device: str = "cpu",
        render_mode: str | None = None,
        **sections: Mapping[str, Any],
    ) -> None:
        self.scenario = resolve_scenario(scenario, rounds, **sections)
        self.core = self.core_class(self.scenario, 1, device, action, observation, reward)
        self.observation_space = self.core.codec.observation_space
        self.action_space = self.core.codec.action_space
        self.render_mode = check_render_mode(render_mode)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode on the world of ``seed`` (drawn from the env's generator when None)."""
        super().reset(seed=seed)
        world_seed = seed if seed is not None else int(self.np_random.integers(SEED_SPACE))
        obs, info = self.core.reset(world_seed)
        return self._one(obs), _scalars(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Serve the pending request with ``action`` as its recall; observe the next request."""
        obs, reward, truncated, info = self.core.step(_batch_of_one(action))
        if self.render_mode == "human":
            print(self.core.render_text())
        return self._one(obs), float(reward[0]), False, bool(truncated), _scalars(info)

    def _one(self, obs: Any) -> Any:
        if isinstance(obs, dict):
            scalar = lambda key: isinstance(cast(spaces.Dict, self.observation_space)[key], spaces.Discrete)  # noqa: E731
            return {k: (v[0] if scalar(k) else np.array(v[0])) for k, v in obs.items()}
        return np.array(obs[0])


def _batch_of_one(action: Any) -> Any:
    """A single env's action with the lane axis added."""
    if isinstance(action, Mapping):
        return {k: np.asarray(v)[None] for k, v in action.items()}
    return np.asarray(action)[None]


def _scalars(info: dict[str, Any]) -> dict[str, Any]:
    """Lane 0 of a core info dict, as Python scalars."""
    return {k: (v[0].item() if isinstance(v, np.ndarray) else v) for k, v in info.items()}
