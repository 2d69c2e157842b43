"""Baselines on the learnable environments: SB3 PPO and SAC against random, popular and the platform ranker.

    python experiments/gym_baselines.py [--env cascadesim/Rerank-v0] [--train-seeds 0 1] [--test-seeds 100 101 102 103 104]
        [--ppo-steps 4096] [--sac-steps 1024] [--episode 480] [--out docs/results/gym_baselines.md]

Every policy is scored with stable-baselines3's ``evaluate_policy`` (deterministic) on world seeds it never
trained on (``--test-seeds``): one episode of ``--episode`` requests a seed, reported as clicks per request,
mean and 95% t-interval over the seeds. The RL policies train on ``--train-seeds`` (episodes of ``--episode``
requests, the next seed at each reset) for a tiny budget on one CPU thread. The heuristics read the observation:
``popular`` scores candidates by observed popularity, ``ranker`` by the platform ranker's score (what the platform
shows), ``history`` (Retrieval-v0) queries with the user's history vector.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import simulator  # noqa: F401  (registers the cascadesim/ ids)
from simulator.gym.learnable import CLIP


class Heuristic:
    """A fixed policy with SB3's ``predict`` signature."""

    def __init__(self, act: Callable[[np.ndarray], np.ndarray]) -> None:
        self.act = act

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = True) -> tuple[np.ndarray, None]:
        return np.stack([self.act(o) for o in obs]), None


def heuristics(env_id: str, space: gym.Space, codec: Any) -> dict[str, Heuristic]:
    space.seed(0)
    out = {"random": Heuristic(lambda o: space.sample())}
    if env_id.endswith("Rerank-v0"):
        col = lambda o, j: o[codec.request_dim :].reshape(codec.k, codec.item_dim)[:, codec.d + j]  # noqa: E731
        out["popular"] = Heuristic(lambda o: (col(o, 0) * 2 - 1).astype(np.float32))
        out["ranker"] = Heuristic(lambda o: (col(o, 3) / CLIP).astype(np.float32))
    else:
        p = codec.sc.features.profile_dim
        out["history"] = Heuristic(lambda o: np.clip(o[p : p + codec.d] / 2.0, -1, 1).astype(np.float32))
    return out


class Seeds(gym.Wrapper):
    """Each reset moves to the next of the given world seeds (training on several worlds)."""

    def __init__(self, env: gym.Env, seeds: list[int]) -> None:
        super().__init__(env)
        self.seeds = itertools.cycle(seeds)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        return self.env.reset(seed=next(self.seeds), options=options)


def train(algo: str, env_id: str, seeds: list[int], steps: int, episode: int) -> Any:
    from stable_baselines3 import PPO, SAC

    env = Seeds(gym.make(env_id, max_episode_steps=episode), seeds)
    if algo == "PPO":
        model = PPO("MlpPolicy", env, n_steps=512, batch_size=128, n_epochs=10, learning_rate=1e-3, gamma=0.0, gae_lambda=1.0,
                    ent_coef=0.0, policy_kwargs={"net_arch": [64, 64]}, seed=0, device="cpu", verbose=0)  # fmt: skip
    else:
        model = SAC("MlpPolicy", env, learning_starts=256, batch_size=128, gamma=0.0, train_freq=1, gradient_steps=1,
                    policy_kwargs={"net_arch": [64, 64]}, seed=0, device="cpu", verbose=0)  # fmt: skip
    model.learn(total_timesteps=steps)
    return model


def score(policy: Any, env_id: str, seeds: list[int], episode: int) -> np.ndarray:
    """Clicks per request on each held-out world seed (one deterministic episode each)."""
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    out = []
    for s in seeds:
        vec = DummyVecEnv([lambda: Monitor(gym.make(env_id, max_episode_steps=episode))])
        vec.seed(s)
        returns, lengths = evaluate_policy(policy, vec, n_eval_episodes=1, deterministic=True, return_episode_rewards=True)
        out.append(returns[0] / lengths[0])
    return np.array(out)


T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # Student t, 97.5%


def interval(x: np.ndarray) -> str:
    t = T975.get(len(x) - 1, 1.96 + 2.5 / max(len(x) - 1, 1))  # beyond the table: close to the t quantile
    half = t * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return f"{x.mean():.3f} ± {half:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="cascadesim/Rerank-v0")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--test-seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    ap.add_argument("--ppo-steps", type=int, default=4096)
    ap.add_argument("--sac-steps", type=int, default=1024)
    ap.add_argument("--episode", type=int, default=480)
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    env = gym.make(args.env)
    codec = env.unwrapped.core.codec
    policies: dict[str, tuple[Any, str]] = {k: (v, "-") for k, v in heuristics(args.env, env.action_space, codec).items()}
    for algo, steps in (("PPO", args.ppo_steps), ("SAC", args.sac_steps)):
        if steps > 0:
            t = time.perf_counter()
            model = train(algo, args.env, args.train_seeds, steps, args.episode)
            policies[algo] = (model, f"{steps} steps, {time.perf_counter() - t:.0f} s")
    scores = {name: score(p, args.env, args.test_seeds, args.episode) for name, (p, _) in policies.items()}
    ref = "ranker" if "ranker" in scores else "random"  # the paired difference: the same worlds, the same requests arrive
    rows = [f"| {name} | {interval(x)} | {interval(x - scores[ref])} | {policies[name][1]} |" for name, x in scores.items()]
    print(f"{args.env}: clicks per request on held-out world seeds {args.test_seeds} (mean ± 95% t-interval over seeds)")
    print(f"| policy | clicks / request | minus {ref} (paired by seed) | training |\n|---|---|---|---|\n" + "\n".join(rows))
    print(f"wall time {time.perf_counter() - started:.0f} s (one CPU thread)")


if __name__ == "__main__":
    main()
