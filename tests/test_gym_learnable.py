"""The learnable environments: re-ranking candidates by features, and retrieval by a query vector."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.vector import DictInfoToList

from simulator.gym.learnable import CLIP, RerankEnv, RetrievalEnv, item_vectors
from tests.test_gym import _same

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"rounds": 2, "timeline": {"requests_per_round": 24}}


def _ranker_action(env: RerankEnv, obs: np.ndarray) -> np.ndarray:
    """The platform ranker's z-scores, read from the observation (the last feature of each candidate)."""
    codec = env.core.codec
    return (obs[codec.request_dim :].reshape(codec.k, codec.item_dim)[:, -1] / CLIP).astype(np.float32)


def test_rerank_with_the_rankers_scores_shows_the_platforms_slate() -> None:
    rerank, plain = RerankEnv(**FAST), gym.make("cascadesim/Cascade-v0", scenario=_learn(), action="ids+scores", **FAST).unwrapped
    obs, _ = rerank.reset(seed=3)
    plain.reset(seed=3)
    for _ in range(30):  # round 0 and into round 1 (24 requests a round): through the ranker's retrain
        ids, scores, _ = rerank.core.pending
        obs, r_rerank, _, _, info = rerank.step(_ranker_action(rerank, obs))
        _, r_plain, _, _, _ = plain.step({"item_ids": ids[0].numpy(), "scores": scores[0].numpy()})
        assert r_rerank == r_plain
    a, b = (env.core.loop.log.concat("impressions", 0, 1) for env in (rerank, plain))
    assert len(a["item_id"]) == 30 * 5 and all(bool((a[k] == b[k]).all()) for k in ("request_id", "item_id", "position", "clicked"))


def _learn() -> dict:
    from simulator.gym.registration import LEARN

    return LEARN


def test_rerank_observation_is_normalised_features_and_the_action_picks_the_slate() -> None:
    env = RerankEnv(**FAST)
    obs, _ = env.reset(seed=0)
    codec = env.core.codec
    assert obs.shape == (codec.request_dim + 20 * (12 + 4),) and obs in env.observation_space and np.abs(obs).max() <= CLIP
    ids = env.core.pending[0][0]
    action = np.full(20, -1.0, np.float32)
    action[[19, 3, 7, 0, 11]] = [1.0, 0.9, 0.8, 0.7, 0.6]  # the slate, best first
    env.step(action)
    shown = env.core.loop.log.tables["impressions"][0][-1]
    assert shown["item_id"].tolist() == ids[[19, 3, 7, 0, 11]].tolist() and shown["position"].tolist() == [0, 1, 2, 3, 4]


def test_retrieval_query_recalls_the_items_closest_to_it() -> None:
    env = RetrievalEnv(**FAST)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (8 + 12 + 4 + 2 + 3 + 1,) and env.action_space.shape == (12,)
    catalogue = env.catalogue()
    vectors = item_vectors(catalogue)
    target = int(catalogue.live_ids()[17])
    env.step(vectors[target].numpy())
    recalled = env.core.loop.log.tables["candidates"][0][-1]["item_id"].long()
    expected = (vectors @ vectors[target]).masked_fill(~catalogue.live, -2.0).topk(20).indices
    assert recalled[0] == target and set(recalled.tolist()) == set(expected.tolist())


@pytest.mark.parametrize("cls", [RerankEnv, RetrievalEnv])
def test_learnable_envs_fork_mid_episode(cls: type) -> None:
    env = cls(**FAST)
    env.action_space.seed(2)
    actions = [env.action_space.sample() for _ in range(30)]
    env.reset(seed=2)
    for a in actions[:10]:
        env.step(a)
    fork = copy.deepcopy(env)
    assert all(_same(list(env.step(a)), list(fork.step(a))) for a in actions[10:])


def test_a_reset_env_observes_the_new_worlds_candidates() -> None:
    """Request ids restart at every reset: candidates cached for the last world must not be shown in the next one."""
    used = RerankEnv(**FAST)
    used.reset(seed=5)
    assert np.array_equal(used.reset(seed=6)[0], RerankEnv(**FAST).reset(seed=6)[0])


def test_policies_see_the_same_spaces_on_every_world() -> None:
    env = gym.make("cascadesim/Rerank-v0", **FAST)
    shapes = {env.reset(seed=s)[0].shape for s in (0, 1)}
    assert shapes == {env.observation_space.shape} and env.spec.max_episode_steps == 1200


@pytest.mark.parametrize("env_id", ["cascadesim/Rerank-v0", "cascadesim/Retrieval-v0"])
def test_gymnasium_sync_vector_env_gives_independent_worlds_with_per_lane_info(env_id: str) -> None:
    """No native vector env for the learnable ids: gymnasium's sync mode is N single environments, seeded ``seed + i``,
    and its info (per-lane arrays with ``_key`` masks) goes through ``DictInfoToList``; every lane is a real request."""
    n, seed, limit = 2, 7, 4
    vec = DictInfoToList(gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", max_episode_steps=limit, **FAST))
    assert isinstance(vec.env, gym.vector.SyncVectorEnv)
    singles = [gym.make(env_id, max_episode_steps=limit, **FAST) for _ in range(n)]
    vec.action_space.seed(0)
    actions = [vec.action_space.sample() for _ in range(limit)]
    obs, infos = vec.reset(seed=seed)
    assert len(infos) == n and all(np.array_equal(obs[i], env.reset(seed=seed + i)[0]) for i, env in enumerate(singles))
    for step, action in enumerate(actions):
        obs, reward, _, truncated, infos = vec.step(action)
        for i, env in enumerate(singles):
            o, r, _, t, info = env.step(action[i])
            assert np.array_equal(obs[i], o) and reward[i] == r and truncated[i] == t == (step == limit - 1)
            assert infos[i]["clicks"] == info["clicks"] == r and infos[i]["request_id"] == info["request_id"]


@pytest.mark.slow
def test_gymnasium_async_vector_env_with_spawn_serves_a_learnable_id_after_torch_ran() -> None:
    torch.set_num_threads(2)
    torch.ones(256, 256) @ torch.ones(256, 256)  # OpenMP threads now exist in the parent: a fork could deadlock
    env = gym.make_vec("cascadesim/Rerank-v0", num_envs=2, vectorization_mode="async", vector_kwargs={"context": "spawn"}, **FAST)
    try:
        obs, _ = env.reset(seed=3)
        single = gym.make("cascadesim/Rerank-v0", **FAST)
        assert np.array_equal(obs[1], single.reset(seed=4)[0])  # lane i is the world of seed + i
        action = np.stack([np.linspace(-1, 1, 20, dtype=np.float32)] * 2)
        obs, reward, _, _, _ = env.step(action)
        assert np.array_equal(obs[1], single.step(action[1])[0]) and reward.shape == (2,)
    finally:
        env.close()
        torch.set_num_threads(1)
