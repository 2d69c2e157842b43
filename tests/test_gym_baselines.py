"""``experiments/gym_baselines.py``: its statistics, its page, and one RLlib PPO iteration (slow, optional extra)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import gym_baselines as gb  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"rounds": 2, "timeline": {"requests_per_round": 24}}


def test_interval_is_the_t_interval_over_seeds() -> None:
    # mean 2, sample sd 1, n = 3: half width t(0.975, 2) / sqrt(3) = 4.303 / 1.732
    assert gb.interval(np.array([1.0, 2.0, 3.0])) == "2.000 ± 2.484"


def _result(ranker: list[float], ppo: list[float]) -> dict:
    scores = {"random": np.array([0.5, 0.5, 0.5]), "ranker": np.array(ranker), "SB3 PPO": np.array(ppo)}
    return {"env": "cascadesim/Rerank-v0", "scores": scores, "training": {"random": "-", "ranker": "-", "SB3 PPO": "8 steps, 1 s"}}


def test_headline_says_beats_only_when_the_paired_interval_excludes_zero() -> None:
    beats = gb.headline(_result([0.5, 0.6, 0.7], [0.6, 0.7, 0.8]))  # +0.1 on every seed: zero spread
    assert "SB3 PPO, beats the platform ranker" in beats and "+0.100 ± 0.000" in beats
    mixed = gb.headline(_result([0.5, 0.6, 0.7], [0.7, 0.5, 0.8]))  # +0.2, -0.1, +0.1: interval includes 0
    assert "does not beat the platform ranker" in mixed and "the best fixed policy is `ranker`" in mixed


def test_rllib_row_says_not_run_without_ray_rllib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gb, "rllib_available", lambda: False)
    monkeypatch.setattr(gb, "score", lambda policies, env_id, seeds, episode: {k: np.zeros(len(seeds)) for k in policies})  # no world
    budget = {"ppo_steps": 0, "sac_steps": 0, "rllib_steps": 512, "rllib_env": "cascadesim/Rerank-v0"}
    args = argparse.Namespace(**budget, train_seeds=[0], test_seeds=[9, 10], episode=8)
    result = gb.run_env(args, "cascadesim/Rerank-v0")
    assert set(result["scores"]) == {"random", "popular", "ranker"}
    assert "| RLlib PPO | - | - | not run: install ray[rllib] |" in gb.table(result)


def test_write_replaces_only_the_generated_part(tmp_path: Path) -> None:
    page = tmp_path / "gym.md"
    page.write_text(f"intro\n{gb.BEGIN}\nold table\n{gb.END}\noutro\n")
    gb.write(str(page), "new table\n")
    assert page.read_text() == f"intro\n{gb.BEGIN}\nnew table\n{gb.END}\noutro\n"
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(SystemExit, match="error: --write: .* has no"):
        gb.write(str(tmp_path / "bare.md"), "x")
    assert gb.command_options(["--write", "docs/gym.md", "--ppo-steps", "8", "--write=x"]) == ["--ppo-steps", "8"]


@pytest.mark.slow
def test_one_rllib_ppo_iteration_on_rerank_learns_and_reports_episodes() -> None:
    """An RLlib PPO iteration on ``cascadesim/Rerank-v0`` (short episodes, so RLlib reports their returns)."""
    if not gb.rllib_available():
        pytest.skip("ray.rllib is not importable: pip install -e '.[rllib]' (RLlib's extra pins gymnasium 1.2.2, see the README)")
    import ray

    algo = gb.build_rllib("cascadesim/Rerank-v0", [0, 1], episode=32, batch=64, **FAST)
    try:
        before = [p.detach().clone() for p in algo.get_module().parameters()]
        result = algo.train()
        after = list(algo.get_module().parameters())
        runners = result["env_runners"]
        assert gb.sampled(result) == 64 and runners["num_episodes"] == 2 and runners["episode_len_mean"] == 32
        assert 0 <= runners["episode_return_mean"] <= 5 * 32  # clicks on slates of 5
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # the learner stepped
        space = gym.make("cascadesim/Rerank-v0", **FAST).action_space
        obs = np.zeros((3, *gym.make("cascadesim/Rerank-v0", **FAST).observation_space.shape), np.float32)
        action, _ = gb.RLlibPolicy(algo.get_module(), space).predict(obs)
        assert action.shape == (3, 20) and all(a in space for a in action)
    finally:
        algo.stop()
        ray.shutdown()
