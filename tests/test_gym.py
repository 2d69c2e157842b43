"""The gymnasium environments: registration, the env checker, seeding, lanes, retrain points, agents through the gym."""

from __future__ import annotations

import json
import math
import warnings

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch
from gymnasium.utils.env_checker import check_env, data_equivalence

import simulator.gym
from scenarios.evaluate import evaluate
from scenarios.experiment import agent_factory, make_experiment, run_experiment
from simulator.config import ConfigError
from simulator.gym import AgentPolicy, CascadeEnv, CascadeVectorEnv, max_slice_volume, resolve_scenario
from tests.conftest import tiny_scenario

pytestmark = pytest.mark.usefixtures("one_thread")

MICRO = {
    "name": "micro",
    "world": {"n_users": 60, "n_items": 40, "n_creators": 8, "n_categories": 4},
    "dynamics": {"new_items_per_round": 2, "item_lifetime_rounds": 3.0},
    "cascade": {"k_retrieve": 10, "slate_size": 3},
    "metrics": {"panel_size": 20, "k_values": [5, 10], "gap_negatives": 10, "homogenisation_users": 10},
    "training": {"window_rounds": 1, "epochs": 1, "batch_size": 256, "pretrain_fits": 1},
    "timeline": {"rounds": 2, "requests_per_round": 36},
}
SMALL_FAST = {"rounds": 2, "timeline": {"requests_per_round": 24}}


def _same(a: object, b: object) -> bool:
    """Exact equality of nested observations / infos, NaN equal to NaN."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype.kind == "f":
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
    return data_equivalence(a, b, exact=True)


def _lane(info: dict, i: int) -> dict:
    """Lane ``i`` of a vector info dict as Python scalars (the ``_key`` masks dropped)."""
    return {k: (_lane(v, i) if isinstance(v, dict) else v[i].item()) for k, v in info.items() if not k.startswith("_")}


def _episode(env: gym.Env | CascadeVectorEnv, seed: int, actions: list) -> list[tuple]:
    out = [env.reset(seed=seed)]
    for action in actions:
        out.append(env.step(action))
        if np.all(out[-1][3]):
            break
    return out


# ----- registration and the env checker -------------------------------------------------
def test_every_id_is_registered_with_a_native_vector_entry_point() -> None:
    learnable = {"cascadesim/Rerank-v0": "RerankEnv", "cascadesim/Retrieval-v0": "RetrievalEnv"}  # vectorised by gymnasium
    for env_id in simulator.gym.ENV_IDS:
        spec = gym.spec(env_id)
        assert spec.namespace == "cascadesim" and spec.version == 0
        if env_id in learnable:
            assert spec.entry_point == f"simulator.gym.learnable:{learnable[env_id]}" and spec.vector_entry_point is None
            continue
        assert spec.entry_point == "simulator.gym.env:CascadeEnv" and spec.vector_entry_point == "simulator.gym.vector:CascadeVectorEnv"
    simulator.gym.register_envs()  # idempotent: the plugin entry point may call it again
    env = gym.make("simulator.gym:cascadesim/Cascade-v0", scenario=MICRO)
    assert isinstance(env.unwrapped, CascadeEnv)


@pytest.mark.parametrize(("env_id", "kwargs"), [
    ("cascadesim/Cascade-v0", {"scenario": MICRO}),
    ("cascadesim/CascadeSmall-v0", SMALL_FAST),
    ("cascadesim/Cascade-v0", {"scenario": MICRO, "action": "ids+scores", "reward": "finished"}),
    ("cascadesim/Cascade-v0", {"scenario": MICRO, "action": "scores", "observation": "flat", "reward": "watch_time"}),
    ("cascadesim/Cascade-v0", {"scenario": MICRO, "cascade": {"stochastic": True, "exploration_share": 0.3, "propensity_samples": 8}}),
])
def test_check_env_passes_without_warnings(env_id: str, kwargs: dict) -> None:
    env = gym.make(env_id, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    # a retrieval model's raw scores are unbounded: the checker's advice to normalise a Box action is expected there
    expected = "we recommend using a symmetric and normalized space" if kwargs.get("action") == "ids+scores" else None
    assert not [str(w.message) for w in caught if expected is None or expected not in str(w.message)]


def test_scenarios_by_name_path_or_object_with_keyword_overrides(tmp_path) -> None:
    assert resolve_scenario("default").name == "default"
    sc = resolve_scenario("default", rounds=3, world={"n_users": 500}, cascade={"k_retrieve": 50})
    assert (sc.timeline.rounds, sc.world.n_users, sc.cascade.k_retrieve) == (3, 500, 50)
    assert resolve_scenario(tiny_scenario()) == tiny_scenario()
    with pytest.raises(ConfigError, match="unknown preset 'nope'; allowed: .*default"):
        resolve_scenario("nope")
    with pytest.raises(ConfigError, match="wrld: unknown keyword"):
        CascadeEnv(MICRO, wrld={"n_users": 5})
    with pytest.raises(ConfigError, match="cascade.slate_size"):
        CascadeEnv(MICRO, cascade={"slate_size": 20})
    with pytest.raises(ValueError, match="action: must be one of"):
        CascadeEnv(MICRO, action="nope")


# ----- observations, actions, episodes ------------------------------------------------------
def test_observation_is_observable_request_data_and_truth_is_only_in_info() -> None:
    env = CascadeEnv(MICRO)
    obs, _ = env.reset(seed=1)
    assert set(obs) == {"request_id", "user_id", "domain", "entry", "round", "time", "hour", "profile", "history", "history_age", "explore"}
    loop = env.core.loop
    req = env.core.chunk.batch
    assert int(obs["user_id"]) == int(req.user_id[0]) and np.array_equal(obs["history"], loop.world.user_history[req.user_id[0]].numpy())
    clicked = loop.world.user_history_time[req.user_id[0]].numpy()
    assert np.array_equal(obs["history_age"] < 0, np.isnan(clicked))  # -1 exactly on the padding
    assert np.allclose(obs["history_age"][~np.isnan(clicked)], float(obs["time"][0]) - clicked[~np.isnan(clicked)])
    _, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert not terminated and not truncated and reward == info["clicks"]
    assert 0.0 <= info["true_slate_relevance"] <= 1.0 and info["finished"] <= info["clicks"] <= MICRO["cascade"]["slate_size"]
    assert "text" not in env.render() and "round 0/1" in env.render()


def test_invalid_ids_are_dropped_and_topped_up_with_popular_live_items() -> None:
    env = CascadeEnv(MICRO)
    env.reset(seed=0)
    catalogue = env.catalogue()
    a, b, c, d = catalogue.live_ids()[[5, 1, 7, 2]].tolist()
    dead = catalogue.capacity - 1  # slots for items that arrive later are not live yet
    assert not bool(catalogue.live[dead])
    action = np.array([a, a, a, -1, dead, b, 10**6, b, c, d])
    _, _, _, _, info = env.step(action)
    assert info["repaired"] == 6
    ids = env.core.loop.log.tables["candidates"][0][-1]["item_id"].long()
    assert len(set(ids.tolist())) == len(ids) and bool(catalogue.live[ids].all())
    assert ids[:4].tolist() == [a, b, c, d]  # the valid ids keep their order, best first


def test_reset_with_a_seed_gives_the_same_episode_and_another_seed_another_world() -> None:
    env = CascadeEnv(MICRO, action="ids+scores")
    env.action_space.seed(5)
    actions = [env.action_space.sample() for _ in range(200)]
    one, two = _episode(env, 7, actions), _episode(env, 7, actions)
    assert len(one) == len(two) > MICRO["timeline"]["requests_per_round"]  # the whole episode: both rounds, retrain included
    assert all(_same(list(a), list(b)) for a, b in zip(one, two))
    assert one[-1][3] is True and any(step[4].get("retrain") for step in one[1:])
    other = env.reset(seed=8)[0]
    assert not _same(one[0][0], other)


# ----- the vector environment ------------------------------------------------------------------
def test_make_vec_uses_the_native_vector_env_and_stacks_lanes() -> None:
    env = gym.make_vec("cascadesim/Cascade-v0", num_envs=5, scenario=MICRO)
    assert isinstance(env, CascadeVectorEnv) and env.num_envs == 5
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space and obs["history"].shape == (5, 20) and obs["profile"].dtype == np.float32
    env.action_space.seed(0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs in env.observation_space and reward.shape == terminated.shape == truncated.shape == (5,)
    assert reward.dtype == np.float32 and np.array_equal(reward[info["active"]], info["clicks"][info["active"]])


def test_vector_env_with_one_lane_is_the_single_env_step_for_step() -> None:
    single, vector = CascadeEnv(MICRO), CascadeVectorEnv(1, MICRO)
    single.action_space.seed(3)
    actions = [single.action_space.sample() for _ in range(200)]
    a, b = _episode(single, 4, actions), _episode(vector, 4, [x[None] for x in actions])
    assert len(a) == len(b)
    for (obs_a, *rest_a), (obs_b, *rest_b) in zip(a, b):
        assert _same({k: np.asarray(v) for k, v in obs_a.items()}, {k: np.asarray(v[0]) for k, v in obs_b.items()})
        info_a, info_b = rest_a[-1], rest_b[-1]
        assert _same(info_a, _lane(info_b, 0))
        if len(rest_a) == 4:
            assert rest_a[0] == rest_b[0][0] and rest_a[2] == bool(rest_b[2][0])


def test_lanes_serve_every_request_once_in_order_and_idle_lanes_get_nothing() -> None:
    sc = resolve_scenario(MICRO)
    lanes = 4  # fewer than a slice: slices are served over several steps
    env = CascadeVectorEnv(lanes, sc)
    env.action_space.seed(1)
    obs, _ = env.reset(seed=2)
    served, truncated, clicks_round1 = [], np.zeros(lanes, bool), 0.0
    while not truncated.all():
        requested = obs["request_id"][:, 0].copy()
        obs, reward, _, truncated, info = env.step(env.action_space.sample())
        active = info["active"]
        assert np.array_equal(info["request_id"][active], requested[active]) and (requested[~active] == -1).all()
        assert (reward[~active] == 0).all() and active[: active.sum()].all()  # idle lanes are the last ones
        served.extend(requested[active].tolist())
        clicks_round1 += float(reward[active & (info["served_round"] == 1)].sum())
    assert served == list(range(served[0], env.core.loop.next_request_id))  # every request once, in arrival order
    assert clicks_round1 == float(env.core.loop.log.concat("impressions", 1, 1)["clicked"].sum())  # rewards are the logged clicks
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())  # next-step autoreset
    assert not truncated.any() and (reward == 0).all() and obs in env.observation_space and info["round_start"].all()


# ----- retrain points and agents through the gym --------------------------------------------------
class CountingFits:
    """Wraps an agent and counts its fits (a policy that refits at retrain points)."""

    def __init__(self, agent: object, log: list) -> None:
        self.agent, self.log = agent, log

    def fit(self, view):  # noqa: ANN001, ANN201
        self.log.append(view.round)
        return self.agent.fit(view)

    def __getattr__(self, name: str):  # noqa: ANN204
        if name == "agent" or name.startswith("__"):  # copies and pickles probe dunders before `agent` exists
            raise AttributeError(name)
        return getattr(self.agent, name)


def test_retrain_points_expose_the_view_and_refit_the_attached_agent() -> None:
    sc = resolve_scenario(MICRO)
    fits: list[int] = []
    inner = agent_factory("popular", sc, 0, torch.device("cpu"))
    env = CascadeVectorEnv(max_slice_volume(sc), sc, action="ids+scores")
    policy = AgentPolicy(env, lambda loop: CountingFits(inner(loop), fits), "popular")
    obs, _ = env.reset(seed=0)
    assert fits == [-1]  # the learner pretrained on the warm-start log (the serving copy never fits)
    retrains = []
    while True:
        obs, _, _, truncated, info = env.step(policy(obs))
        if info["retrain"].all():
            view = env.training_view()
            retrains.append(int(info["retrain_round"][0]))
            assert view.round == retrains[-1] and fits[-1] == view.round and "true_recall@5" in info["metrics"]
            assert len(view.impressions) > 0 and not hasattr(view, "world")
        if truncated.all():
            break
    assert retrains == [0, 1] and policy.agent is env.core.loop.retriever
    assert set(env.metrics()["round"]) == {0, 1}


def test_agent_policy_acts_on_single_env_observations_with_the_serving_agent() -> None:
    sc = resolve_scenario(MICRO)
    env = CascadeEnv(sc, action="ids")
    policy = AgentPolicy(env, agent_factory("random", sc, 0, torch.device("cpu")), "random")
    obs, _ = env.reset(seed=0)
    pending = env.core.chunk.batch
    action = policy(obs)
    assert np.array_equal(action, policy.agent.retrieve(pending, sc.cascade.k_retrieve)[0][0].numpy())
    _, _, _, _, info = env.step(action)
    assert info["repaired"] == 0
    with pytest.raises(ValueError, match="observation='dict'"):
        AgentPolicy(CascadeEnv(sc, observation="flat"), agent_factory("random", sc, 0, torch.device("cpu")), "random")


@pytest.mark.parametrize("agent", ["bc", "clrec"])  # clrec: its encoder buckets the click times the gym passes on
def test_agents_through_the_gym_give_the_metrics_of_cascadesim_run(tmp_path, agent: str) -> None:
    exp = make_experiment(tiny_scenario(timeline={"rounds": 2}), [agent], 1)
    ran = run_experiment(exp, tmp_path / "run")
    through_gym = evaluate(exp, tmp_path / "gym")
    pd.testing.assert_frame_equal(ran, through_gym)
    written = [pd.read_parquet(tmp_path / name / "metrics.parquet") for name in ("run", "gym")]
    pd.testing.assert_frame_equal(*written)


def test_stochastic_serving_and_exploration_through_the_gym_match_the_runner() -> None:
    stochastic = {"stochastic": True, "exploration_share": 0.3, "propensity_samples": 16}
    sc = resolve_scenario(MICRO, cascade=stochastic, timeline={"train_delay_hours": 0.0})
    exp = make_experiment(sc, ["random", "oracle"], 1)
    pd.testing.assert_frame_equal(run_experiment(exp), evaluate(exp))


def test_evaluate_command_writes_a_run_directory_like_run(tmp_path) -> None:
    from click.testing import CliRunner

    from scenarios.evaluate import evaluate_cmd
    from scenarios.experiment import load_run

    toml = tmp_path / "micro.toml"
    lines = ['name = "micro"']
    for section, values in MICRO.items():
        if isinstance(values, dict):
            lines += [f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    toml.write_text("\n".join(lines) + "\n")
    out = tmp_path / "gym"
    res = CliRunner().invoke(evaluate_cmd, ["--scenario", str(toml), "--agents", "random,popular", "--rounds", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    manifest, metrics = load_run(out)
    assert manifest["path"] == "gymnasium" and manifest["agents"] == ["random", "popular"] and "true_recall@5" in res.output
    assert set(metrics.agent) == {"random", "popular"} and set(metrics["round"]) == {0} and "popularity_index" in set(metrics.metric)
    again = CliRunner().invoke(evaluate_cmd, ["--scenario", str(toml), "--agents", "random", "--rounds", "1", "--out", str(out)])
    assert again.exit_code != 0 and "already exists" in str(again.exception)


def test_n_independent_worlds_are_n_single_environments_under_the_same_seeds() -> None:
    """The issue's check "N envs == N single envs", for N independent worlds (gymnasium's sync mode).

    The native vector env is one world whose lanes are users of one platform (tested above against
    the single env and the runner); N independent worlds are N single environments, and
    ``make_vec(..., vectorization_mode="sync")`` gives exactly those, seeded ``seed + i``.
    """
    n, seed = 3, 11
    vec = gym.make_vec("cascadesim/CascadeSmall-v0", num_envs=n, vectorization_mode="sync", scenario=MICRO, rounds=1)
    singles = [gym.make("cascadesim/CascadeSmall-v0", scenario=MICRO, rounds=1) for _ in range(n)]
    vec.action_space.seed(2)
    actions = [vec.action_space.sample() for _ in range(12)]
    obs, _ = vec.reset(seed=seed)
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    assert all(np.array_equal(obs[i], single_obs[i]) for i in range(n))
    for action in actions:
        obs, reward, _, truncated, _ = vec.step(action)
        for i, env in enumerate(singles):
            o, r, _, t, _ = env.step(action[i])
            assert np.array_equal(obs[i], o) and reward[i] == np.float32(r) and truncated[i] == t
    worlds = {tuple(np.round(o, 6)) for o in single_obs}
    assert len(worlds) == n  # the lanes are different worlds, not copies of one
