"""The native vector environment: ``N`` request lanes of one world, served as one batch per step.

``gymnasium.make_vec("cascadesim/Cascade-v0", num_envs=N)`` builds a
:class:`CascadeVectorEnv`: every step serves up to ``N`` arriving requests of
the same world through one call of the runner's vectorised cascade
(:func:`~simulator.cascade.step.serve_batch`), never ``N`` copies of the
single environment. Lane ``i`` of a step is the ``i``-th pending request of the
current traffic slice.

The lanes share one world, as users share one platform: what one lane's
recommendation changes (popularity counters, the logs the models retrain on)
the others see. The lanes therefore share one episode and one seed, and a
step whose slice has fewer requests left than lanes leaves the rest idle:
``request_id`` -1 in the observation, ``info["active"]`` False, reward 0,
action ignored. With ``num_envs=1`` it is the single environment step for
step; with ``num_envs >= max_slice_volume(scenario)`` one step is one slice
of ``cascadesim run``, bit for bit (that is how ``cascadesim evaluate`` runs).

Autoreset is ``NEXT_STEP``: the step after the one that truncates resets the
world (a new seed from the env's generator) and returns reward 0.

``info`` follows gymnasium's vector convention (so ``DictInfoToList`` works):
every entry is a ``[num_envs]`` array (``metrics`` a dict of them) with a
``_key`` mask; the per-request entries (``request_id``, ``clicks``, ...) are
masked by ``active``, so an idle lane reports no transition data, and the
episode-wide ones (``retrain``, ``metrics``, ...) are given to every lane.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from simulator.config import Scenario
from simulator.gym.core import LANE_KEYS, CascadeCore
from simulator.gym.env import RENDER_MODES, SEED_SPACE, CoreFacade, check_render_mode
from simulator.gym.scenario import resolve_scenario


class CascadeVectorEnv(CoreFacade, VectorEnv):
    """``num_envs`` request lanes of one closed loop.

    Args:
        num_envs: requests served per step.
        max_episode_steps: truncate the (shared) episode after this many steps; None: at the scenario's horizon.
        scenario, rounds, action, observation, reward, device, render_mode, **sections: as :class:`~simulator.gym.env.CascadeEnv`.
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 4, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        scenario: Scenario | str | Mapping[str, Any] = "default",
        *,
        rounds: int | None = None,
        action: str = "ids",
        observation: str = "dict",
        reward: str = "clicks",
        device: str = "cpu",
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        **sections: Mapping[str, Any],
    ) -> None:
        self.scenario = resolve_scenario(scenario, rounds, **sections)
        self.core = CascadeCore(self.scenario, num_envs, device, action, observation, reward)
        self.num_envs = self.core.lanes
        self.single_observation_space = self.core.codec.observation_space
        self.single_action_space = self.core.codec.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = check_render_mode(render_mode)
        self._autoreset, self._steps = False, 0
        self.max_episode_steps = max_episode_steps  # the id's registered limit (make_vec passes it): truncate after that many steps

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode on the world of ``seed`` (one seed: the lanes share the world)."""
        if isinstance(seed, Sequence):
            if len(set(seed)) != 1:
                raise ValueError("seed: the lanes share one world, so give one seed (an int, or a list of equal ints)")
            seed = int(seed[0])
        super().reset(seed=seed)
        world_seed = seed if seed is not None else int(self.np_random.integers(SEED_SPACE))
        self._autoreset, self._steps = False, 0
        obs, info = self.core.reset(world_seed)
        return obs, lane_info(info, self.num_envs)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Serve the pending requests (one per active lane) with ``actions`` as their recall."""
        if self._autoreset:
            obs, info = self.reset()
            zeros = np.zeros(self.num_envs, dtype=bool)
            return obs, np.zeros(self.num_envs, dtype=np.float32), zeros, zeros.copy(), info
        obs, reward, truncated, core_info = self.core.step(actions)
        info = lane_info(core_info, self.num_envs)
        self._steps += 1
        truncated = truncated or (self.max_episode_steps is not None and self._steps >= self.max_episode_steps)
        self._autoreset = truncated
        if self.render_mode == "human":
            print(self.core.render_text())
        return obs, reward, np.zeros(self.num_envs, dtype=bool), np.full(self.num_envs, truncated), info


def lane_info(info: dict[str, Any], lanes: int) -> dict[str, Any]:
    """A core info dict in gymnasium's vector form: ``[lanes]`` arrays with ``_key`` masks (per-request keys: ``active``)."""
    active = np.asarray(info.get("active", np.ones(lanes, dtype=bool)), dtype=bool)
    every = np.ones(lanes, dtype=bool)
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, dict):
            out[key] = {k: np.full(lanes, v) for k, v in value.items()}
        elif isinstance(value, np.ndarray) and value.shape[:1] == (lanes,):
            out[key] = value
        else:
            out[key] = np.full(lanes, value)
        out[f"_{key}"] = active if key in PER_REQUEST else every
    return out


PER_REQUEST = (*LANE_KEYS, "served_round")
