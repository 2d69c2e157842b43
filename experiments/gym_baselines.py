"""Baselines on the learnable environments: SB3 PPO and SAC, RLlib PPO, against random, popular and the platform ranker.

    python experiments/gym_baselines.py [--env cascadesim/Rerank-v0 cascadesim/Retrieval-v0] [--train-seeds 0 1]
        [--test-seeds 100 101 102 103 104] [--ppo-steps 4096] [--sac-steps 1024] [--rllib-steps 4096]
        [--rllib-env cascadesim/Rerank-v0] [--episode 480] [--write docs/gym.md]

Every policy is scored with stable-baselines3's ``evaluate_policy`` (deterministic) on world seeds it never
trained on (``--test-seeds``): one episode of ``--episode`` requests a seed, reported as clicks per request,
mean and 95% t-interval over the seeds. The RL policies train on ``--train-seeds`` (episodes of ``--episode``
requests, the next seed at each reset) for a tiny budget on one CPU thread. The heuristics read the observation:
``popular`` scores candidates by observed popularity, ``ranker`` by the platform ranker's score (what the platform
shows), ``history`` (Retrieval-v0) queries with the user's history vector. RLlib's PPO (the same network, batch
and learning rate as SB3's) trains on ``--rllib-env`` only when ``ray.rllib`` imports; otherwise its row says so.
``--write`` replaces the generated part of that Markdown page (between the ``gym_baselines`` markers).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path
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


RLLIB_MISSING = "not run: install ray[rllib]"


class RLlibPolicy:
    """An RLlib RLModule behind SB3's ``predict``: the deterministic action (the Gaussian's mean), clipped to the space."""

    def __init__(self, module: Any, space: gym.spaces.Box) -> None:
        self.module, self.low, self.high = module, space.low, space.high

    def predict(self, obs: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = True) -> tuple[np.ndarray, None]:
        with torch.no_grad():
            out = self.module.forward_inference({"obs": torch.as_tensor(np.asarray(obs, np.float32))})
            dist = self.module.get_inference_action_dist_cls().from_logits(out["action_dist_inputs"])
            action = (dist.to_deterministic() if deterministic else dist).sample()
        return np.clip(action.numpy(), self.low, self.high), None


def rllib_available() -> bool:
    try:
        import ray.rllib  # noqa: F401
    except ImportError:
        return False
    return True


def build_rllib(env_id: str, seeds: list[int], episode: int, batch: int = 512, **env_kwargs: Any) -> Any:
    """RLlib PPO (new API stack, sampling and learning in this process) with SB3's PPO settings; starts a local Ray."""
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    register_env("cascadesim-train", lambda _: Seeds(gym.make(env_id, max_episode_steps=episode, **env_kwargs), seeds))
    config = (
        PPOConfig()
        .environment("cascadesim-train")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, rollout_fragment_length=batch)
        .learners(num_learners=0)
        .training(
            train_batch_size_per_learner=batch,
            minibatch_size=min(128, batch),
            num_epochs=10,
            lr=1e-3,
            gamma=0.0,
            lambda_=1.0,
            entropy_coeff=0.0,
            clip_param=0.2,
            use_kl_loss=False,
        )  # fmt: skip
        .rl_module(model_config={"fcnet_hiddens": [64, 64]})
        .debugging(seed=0)
    )
    return config.build_algo()


def sampled(result: dict[str, Any]) -> int:
    """Environment steps sampled so far, from an RLlib result (the key moved between Ray versions)."""
    lifetime = result.get("num_env_steps_sampled_lifetime", result.get("env_runners", {}).get("num_env_steps_sampled_lifetime"))
    return int(lifetime)


def train_rllib(env_id: str, seeds: list[int], steps: int, episode: int) -> RLlibPolicy:
    """Train RLlib's PPO for at least ``steps`` environment steps; the trained module as an SB3-style policy."""
    import ray

    algo = build_rllib(env_id, seeds, episode)
    try:
        while sampled(algo.train()) < steps:
            pass
        return RLlibPolicy(algo.get_module(), gym.make(env_id).action_space)
    finally:
        algo.stop()
        ray.shutdown()


def score(policies: dict[str, Any], env_id: str, seeds: list[int], episode: int) -> dict[str, np.ndarray]:
    """Clicks per request of every policy on each held-out world seed (one deterministic episode each).

    One environment per seed serves every policy, so its warm-started world (cached by seed) is built once, not once per policy.
    """
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    out: dict[str, list[float]] = {name: [] for name in policies}
    for s in seeds:
        env = gym.make(env_id, max_episode_steps=episode)
        for name, policy in policies.items():
            vec = DummyVecEnv([lambda env=env: Monitor(env)])
            vec.seed(s)
            returns, lengths = evaluate_policy(policy, vec, n_eval_episodes=1, deterministic=True, return_episode_rewards=True)
            out[name].append(returns[0] / lengths[0])
    return {name: np.array(x) for name, x in out.items()}


T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # Student t, 97.5%


def half_width(x: np.ndarray) -> float:
    t = T975.get(len(x) - 1, 1.96 + 2.5 / max(len(x) - 1, 1))  # beyond the table: close to the t quantile
    return float(t * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def interval(x: np.ndarray) -> str:
    return f"{x.mean():.3f} ± {half_width(x):.3f}"


def learners(args: argparse.Namespace, env_id: str) -> list[tuple[str, int]]:
    out = [("SB3 PPO", args.ppo_steps), ("SB3 SAC", args.sac_steps)]
    return out + ([("RLlib PPO", args.rllib_steps)] if env_id == args.rllib_env else [])


def run_env(args: argparse.Namespace, env_id: str) -> dict[str, Any]:
    """Train and score every policy on one environment id; the numbers of its table."""
    started = time.perf_counter()
    env = gym.make(env_id)
    policies: dict[str, tuple[Any, str]] = {k: (v, "-") for k, v in heuristics(env_id, env.action_space, env.unwrapped.core.codec).items()}
    for name, steps in learners(args, env_id):
        if steps <= 0:
            continue
        if name.startswith("RLlib") and not rllib_available():
            policies[name] = (None, RLLIB_MISSING)
            continue
        t = time.perf_counter()
        if name.startswith("RLlib"):
            model = train_rllib(env_id, args.train_seeds, steps, args.episode)
        else:
            model = train(name.split()[1], env_id, args.train_seeds, steps, args.episode)
        policies[name] = (model, f"{steps} steps, {time.perf_counter() - t:.0f} s")
        print(f"{env_id}: {name} trained, {policies[name][1]}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    scores = score({name: p for name, (p, _) in policies.items() if p is not None}, env_id, args.test_seeds, args.episode)
    print(f"{env_id}: {len(scores)} policies scored in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    result = {"env": env_id, "scores": scores, "training": {k: v[1] for k, v in policies.items()}, "wall": time.perf_counter() - started}
    print("\n".join(table(result)), file=sys.stderr, flush=True)
    return result


def table(result: dict[str, Any]) -> list[str]:
    """The Markdown table of one environment: every policy, and its difference from the reference paired by seed."""
    scores, ref = result["scores"], reference(result["scores"])
    lines = [f"| policy | clicks / request | minus {ref} (paired by seed) | training |", "|---|---|---|---|"]
    for name, how in result["training"].items():
        if name in scores:
            lines.append(f"| {name} | {interval(scores[name])} | {interval(scores[name] - scores[ref])} | {how} |")
        else:
            lines.append(f"| {name} | - | - | {how} |")
    return lines


def reference(scores: dict[str, np.ndarray]) -> str:
    return "ranker" if "ranker" in scores else "random"  # the paired difference: the same worlds, the same requests arrive


def headline(result: dict[str, Any]) -> str:
    """One sentence per environment, from the numbers: does an RL policy beat the reference on held-out worlds?"""
    scores, env_id = result["scores"], result["env"]
    ref = reference(scores)
    learnt = [k for k in scores if k.startswith(("SB3", "RLlib"))]
    if not learnt:
        return f"`{env_id}`: no RL policy was trained."
    diffs = {k: scores[k] - scores[ref] for k in learnt}
    best = max(diffs, key=lambda k: diffs[k].mean())
    d, h = diffs[best].mean(), half_width(diffs[best])
    simple = max((k for k in scores if k not in learnt), key=lambda k: scores[k].mean())
    verdict = "beats" if d - h > 0 else "does not beat"
    name = "the platform ranker" if ref == "ranker" else "the random policy"
    return (
        f"`{env_id}`: the best RL policy, {best}, {verdict} {name} on held-out worlds ({d:+.3f} ± {h:.3f} clicks a request,"
        f" paired by seed); the best fixed policy is `{simple}` ({scores[simple].mean():.3f} against {best}'s {scores[best].mean():.3f})."
    )


def command_options(argv: list[str]) -> list[str]:
    """The options that set the numbers (``--write`` and its page only say where they go)."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--write"):
            skip = a == "--write"
            continue
        out.append(a)
    return out


def markdown(args: argparse.Namespace, results: list[dict[str, Any]], wall: float) -> str:
    """The generated part of docs/gym.md: the command, the budget, a table per id, the headline."""
    budget = f"{args.ppo_steps:,} SB3 PPO, {args.sac_steps:,} SB3 SAC and {args.rllib_steps:,} RLlib PPO (on `{args.rllib_env}` only)"
    out = [
        "```",
        " ".join(["python experiments/gym_baselines.py", *command_options(sys.argv[1:])]) + "   # --write docs/gym.md updates this page",
        "```",
        "",
        f"Training budget: {budget} environment steps (requests), on world seeds {args.train_seeds} in episodes of"
        f" {args.episode} requests; scored on held-out world seeds {args.test_seeds}, one episode of {args.episode} requests"
        f" each (mean ± 95% t-interval over the seeds). Wall time of the whole command: {wall:.0f} s on one CPU thread.",
    ]
    for r in results:
        out += ["", f"`{r['env']}` (wall time {r['wall']:.0f} s):", "", *table(r)]
    out += ["", "**Headline**, generated from these numbers:", ""] + [f"* {headline(r)}" for r in results]
    return "\n".join(out) + "\n"


BEGIN, END = "<!-- gym_baselines: begin (generated by experiments/gym_baselines.py --write) -->", "<!-- gym_baselines: end -->"


def write(path: str, text: str) -> None:
    """Replace the generated part of ``path`` (between the markers) with ``text``."""
    page = Path(path).read_text()
    if BEGIN not in page or END not in page:
        raise SystemExit(f"error: --write: {path} has no {BEGIN} ... {END} markers")
    head, rest = page.split(BEGIN, 1)
    Path(path).write_text(head + BEGIN + "\n" + text + END + rest.split(END, 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", nargs="+", default=["cascadesim/Rerank-v0", "cascadesim/Retrieval-v0"])
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--test-seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    ap.add_argument("--ppo-steps", type=int, default=4096)
    ap.add_argument("--sac-steps", type=int, default=1024)
    ap.add_argument("--rllib-steps", type=int, default=4096)
    ap.add_argument("--rllib-env", default="cascadesim/Rerank-v0")
    ap.add_argument("--episode", type=int, default=480)
    ap.add_argument("--write", metavar="PAGE", help="replace the generated part of this Markdown page (docs/gym.md)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    results = [run_env(args, env_id) for env_id in args.env]
    text = markdown(args, results, time.perf_counter() - started)
    print(text)
    if args.write:
        write(args.write, text)


if __name__ == "__main__":
    main()
