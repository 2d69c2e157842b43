"""Gymnasium conventions of the cascade environments: the checkers, vector info, copies, rendering, registration, async."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers.vector import DictInfoToList

import simulator.gym
from simulator.gym import CascadeEnv, CascadeVectorEnv
from simulator.gym.render import COLOURS
from tests.test_gym import MICRO, _same

pytestmark = pytest.mark.usefixtures("one_thread")

FAST: dict[str, dict] = {  # every registered id at a size a test can afford
    "cascadesim/Cascade-v0": {"scenario": MICRO},
    "cascadesim/CascadeSmall-v0": {"rounds": 2, "timeline": {"requests_per_round": 24}},
}


def _fast(env_id: str) -> dict:
    return FAST.get(env_id, {"rounds": 2, "timeline": {"requests_per_round": 24}})


@pytest.mark.parametrize("env_id", simulator.gym.ENV_IDS)
def test_gymnasium_and_sb3_checkers_pass_on_every_id(env_id: str) -> None:
    sb3_checker = pytest.importorskip("stable_baselines3.common.env_checker")
    env = gym.make(env_id, render_mode="rgb_array", **_fast(env_id))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
        sb3_checker.check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    assert all(np.ndim(space.sample()) >= 1 for space in _boxes(env.observation_space))  # no 0-d Box entries
    assert env.spec is not None and env.spec.max_episode_steps and isinstance(env, gym.wrappers.TimeLimit)


def _boxes(space: gym.Space) -> list[gym.spaces.Box]:
    if isinstance(space, gym.spaces.Dict):
        return [b for s in space.values() for b in _boxes(s)]
    return [space] if isinstance(space, gym.spaces.Box) else []


def test_vector_info_has_per_lane_arrays_and_masks_for_dict_info_to_list() -> None:
    env = DictInfoToList(gym.make_vec("cascadesim/Cascade-v0", num_envs=8, scenario=MICRO))
    env.action_space.seed(0)
    _, infos = env.reset(seed=0)
    assert len(infos) == 8 and all(info["seed"] == 0 for info in infos)
    saw_idle = saw_retrain = False
    for _ in range(40):
        _, reward, _, truncated, infos = env.step(env.action_space.sample())
        active = np.array([info["active"] for info in infos])
        for lane, info in enumerate(infos):
            assert ("request_id" in info) == active[lane] and ("clicks" in info) == active[lane]  # idle lanes: no transition data
            if active[lane]:
                assert info["clicks"] == reward[lane]
        assert (reward[~active] == 0).all()
        saw_idle |= not active.all()
        if infos[0]["retrain"]:
            saw_retrain = True
            assert all("true_recall@5" not in i["metrics"] and "exposure_gini" in i["metrics"] for i in infos)
        if truncated.all():
            break
    assert saw_idle and saw_retrain  # MICRO's slices (about 9 requests) leave some of 8 lanes idle


def _walk(env: gym.Env | CascadeVectorEnv, actions: list) -> list:
    out = []
    for action in actions:
        out.append(env.step(action))
        if np.all(out[-1][3]):
            break
    return out


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("lanes", [0, 4])  # 0: the single environment
def test_an_episode_forked_mid_way_continues_identically(how: str, lanes: int) -> None:
    env = CascadeEnv(MICRO, action="ids+scores") if lanes == 0 else CascadeVectorEnv(lanes, MICRO, action="ids+scores")
    env.action_space.seed(4)
    actions = [env.action_space.sample() for _ in range(120 if lanes == 0 else 40)]
    env.reset(seed=5)
    split = 20 if lanes == 0 else 3  # mid-way through round 0 (MICRO: 36 requests a round, 2 rounds)
    _walk(env, actions[:split])
    assert env.core.loop is not None and env.core.chunk.batch.round == 0
    fork = copy.deepcopy(env) if how == "deepcopy" else pickle.loads(pickle.dumps(env))
    rest, forked = _walk(env, actions[split:]), _walk(fork, actions[split:])
    assert len(rest) == len(forked) and np.all(rest[-1][3])  # both reach the horizon (through a retrain and a deployment)
    assert all(_same(list(a), list(b)) for a, b in zip(rest, forked, strict=True))
    assert env.core.loop.next_request_id == fork.core.loop.next_request_id and env.core.loop.rows == fork.core.loop.rows


def test_rgb_array_draws_the_round_curves() -> None:
    env = gym.make("cascadesim/CascadeSmall-v0", render_mode="rgb_array", **FAST["cascadesim/CascadeSmall-v0"])
    env.reset(seed=0)
    blank = env.render()
    for _ in range(30):
        env.step(env.action_space.sample())
    img = env.render()
    assert img.shape == blank.shape == (320, 480, 3) and img.dtype == np.uint8
    for colour in COLOURS.values():
        assert (img == np.array(colour, np.uint8)).all(axis=2).sum() > (blank == np.array(colour, np.uint8)).all(axis=2).sum()


def test_an_id_string_makes_the_env_in_a_fresh_process() -> None:
    code = (
        "import gymnasium as gym;"
        " env = gym.make('simulator:cascadesim/CascadeSmall-v0', rounds=1, timeline={'requests_per_round': 24});"
        " obs, _ = env.reset(seed=0); print(obs.shape, env.spec.max_episode_steps)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().endswith("1200")


@pytest.mark.slow
def test_async_vector_env_with_spawn_after_torch_ran_in_the_parent() -> None:
    torch.set_num_threads(2)
    torch.ones(256, 256) @ torch.ones(256, 256)  # OpenMP threads now exist in the parent: a fork could deadlock
    env = gym.make_vec(
        "cascadesim/CascadeSmall-v0", num_envs=2, vectorization_mode="async", vector_kwargs={"context": "spawn"},
        **FAST["cascadesim/CascadeSmall-v0"],
    )
    try:
        obs, _ = env.reset(seed=3)
        single = gym.make("cascadesim/CascadeSmall-v0", **FAST["cascadesim/CascadeSmall-v0"]).reset(seed=4)[0]
        assert np.array_equal(obs[1], single)  # lane i is the world of seed + i
        obs, reward, _, _, _ = env.step(np.array([0, 1]))
        assert obs.shape[0] == 2 and reward.shape == (2,)
    finally:
        env.close()
        torch.set_num_threads(1)


def test_make_vec_passes_the_step_limit_to_the_native_vector_env() -> None:
    env = gym.make_vec("cascadesim/Cascade-v0", num_envs=4, scenario=MICRO, max_episode_steps=3)
    assert isinstance(env, CascadeVectorEnv) and env.max_episode_steps == 3
    assert gym.make_vec("cascadesim/Cascade-v0", num_envs=2, scenario=MICRO).max_episode_steps == 15_000  # the registered limit
    env.action_space.seed(0)
    env.reset(seed=0)
    truncated = [env.step(env.action_space.sample())[3].all() for _ in range(4)]
    assert truncated == [False, False, True, False]  # the fourth step is the next-step autoreset
