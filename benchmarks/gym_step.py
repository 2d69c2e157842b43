"""A step of the gym vector environment next to the runner's loop doing the same work, in one process.

    python benchmarks/gym_step.py [--users 10000] [--items 10000] [--requests 2000] [--repeats 5] [--device cpu]

World: ``simulator.bench``'s benchmark scenario (noisy-oracle ranker, K_r = 100,
S = 10) at ``users x items``, traffic of ``--requests`` requests per slice, and
a fixed-embedding two-tower retriever as the agent (exact top-K_r over the
whole catalogue). Both sides start from the same warm-started world.

* runner: what :func:`simulator.timeline.traffic_process` does for one slice:
  ``sample_requests`` + :func:`~simulator.cascade.step.serve_batch` (the agent retrieves inside);
* gym: one step of :class:`~simulator.gym.vector.CascadeVectorEnv` with one lane per
  request of the slice: :class:`~simulator.gym.policy.AgentPolicy` acting on the
  observation (the same agent's ``retrieve``), the step (action decoding and
  checks, the same ``serve_batch``, per-request rewards and truth info) and the
  next observation (sampling and encoding the next slice).

Both serve the same slices in the same order and are timed alternately; the
figure is ``runner_s / gym_s`` (>= 1.0: the gym step is no slower), from the medians and
from the minima (the least disturbed repetition, as ``timeit`` reports: on a shared machine the median
moves with the load).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from simulator.bench import FixedEmbeddingRetriever, bench_scenario
from simulator.cascade.step import serve_batch
from simulator.gym import AgentPolicy, CascadeVectorEnv
from simulator.round import attach_agent, start_round
from simulator.world.traffic import sample_requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=2_000, help="requests per traffic slice (= lanes of the vector env)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    slices = args.repeats + 2  # the first is a warm-up; the last step would also run the round's end
    sc = bench_scenario(args.users, args.items, args.requests).with_overrides(
        timeline={
            "requests_per_round": args.requests * slices, "slice_hours": 24.0 / slices, "daily_profile": [1.0], "weekend_traffic": 1.0,
        },
        dynamics={"new_users_per_round": 0},
    )
    dev = torch.device(args.device)
    factory = lambda loop: FixedEmbeddingRetriever(sc.user_capacity, sc.item_capacity, sc.training.embedding_dim, 0, dev)  # noqa: E731
    env = CascadeVectorEnv(num_envs=args.requests, scenario=sc, action="ids+scores", device=args.device)
    policy = AgentPolicy(env, factory, "fixed")
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=0)
    setup = time.perf_counter() - t0
    runner = env.core.warm_world(0).copy()
    attach_agent(runner, factory, "fixed")
    start_round(runner, 0)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def runner_slice(s: int) -> float:
        start = time.perf_counter()
        hour = s * sc.timeline.slice_hours
        batch, intents = sample_requests(runner.world, sc, runner.seed, 0, s, hour, runner.next_request_id, args.requests)
        runner.next_request_id += args.requests
        serve_batch(runner, batch, intents)
        sync()
        return time.perf_counter() - start

    def gym_step() -> float:
        nonlocal obs
        start = time.perf_counter()
        obs, _, _, _, _ = env.step(policy(obs))
        sync()
        return time.perf_counter() - start

    runner_t, gym_t = [], []
    for s in range(slices - 1):  # both serve slice s; who goes first alternates
        r, g = (runner_slice(s), gym_step()) if s % 2 == 0 else (gym_step(), runner_slice(s))[::-1]
        if s:
            runner_t.append(r)
            gym_t.append(g)
    assert torch.equal(runner.world.item_clicks, env.core.loop.world.item_clicks), "the two sides diverged"
    print(f"{args.requests} requests per step, {args.users} users x {args.items} items, K_r={sc.cascade.k_retrieve}, "
          f"S={sc.cascade.slate_size}, {args.device}, {torch.get_num_threads()} threads, {len(runner_t)} steps (setup {setup:.1f} s)")
    for name, stat in (("median", statistics.median), ("min", min)):
        r, g = stat(runner_t), stat(gym_t)
        print(f"{name:6s} runner loop per slice: {r * 1e3:8.1f} ms   gym vector step: {g * 1e3:8.1f} ms   ratio runner/gym: {r / g:.3f}")


if __name__ == "__main__":
    main()
