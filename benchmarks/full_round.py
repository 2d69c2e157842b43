"""One full round at industrial-ish scale on the CPU: time and peak memory.

    python benchmarks/full_round.py [--users 100000] [--items 100000] [--requests 100000] [--agent bc]

Builds the world, serves the warm-start round (the legacy platform), pretrains
the agent, then times round 0 end to end: catalogue changes, traffic
(retrieval over the whole catalogue, ranking, exposure, user model, logging),
truth metrics on the evaluation panel, dynamics, and the retraining of ranker
and agent. Reports wall seconds per phase and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import functools
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import simulator.round
from scenarios.experiment import agent_factory
from simulator.cascade.step import serve_batch
from simulator.config import scenario_from_dict
from simulator.round import attach_agent
from simulator.timeline import run_round, warm_started_loop


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PhasePeaks:
    """Peak RSS above the phase's starting RSS, per named phase (Linux: resets VmHWM via /proc/self/clear_refs)."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.peaks: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.sync = sync or (lambda: None)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
            except OSError:
                return fn(*args, **kwargs)
            before, start = _status_kib("VmRSS"), time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if elapsed > 2.0:  # a long call shows at once: a run stopped at its limit still tells where the time went
                print(f"  ... {name}: {elapsed:.1f} s", flush=True)
            self.peaks[name] = max(self.peaks.get(name, 0.0), (_status_kib("VmHWM") - before) / 2**20)
            return out

        return timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--agent", default="bc")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    sc = scenario_from_dict(
        {
            "name": "bench-full-round",
            "world": {"n_users": args.users, "n_items": args.items, "n_categories": 100, "n_creators": max(10, args.items // 50)},
            "dynamics": {"new_items_per_round": args.items // 100, "new_users_per_round": args.users // 100},
            "metrics": {"panel_size": min(500, args.users)},
            "training": {"window_rounds": 1, "epochs": 1, "batch_size": 4096, "pretrain_fits": 1},
            "timeline": {"rounds": 1, "requests_per_round": args.requests},
        }
    )
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    t0 = time.perf_counter()
    loop = warm_started_loop(sc, 0, dev)
    t1 = time.perf_counter()
    print(f"warm start done in {t1 - t0:.1f} s", flush=True)
    print(f"peak RSS after warm start: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB", flush=True)
    attach_agent(loop, agent_factory(args.agent, sc, 0, dev), args.agent)
    t2 = time.perf_counter()
    print(f"peak RSS after pretraining: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB", flush=True)
    phases = PhasePeaks(sync)
    serve = phases.wrap("serve a traffic slice", serve_batch)
    simulator.round.measure = phases.wrap("truth + logged metrics", simulator.round.measure)  # end_round looks it up here
    loop.ranker_learner.fit = phases.wrap("ranker fit", loop.ranker_learner.fit)
    loop.learner.fit = phases.wrap("agent fit", loop.learner.fit)
    rss_before = _status_kib("VmRSS") / 2**20
    run_round(loop, 0, serve)
    t3 = time.perf_counter()
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # whole process (clear_refs resets only VmHWM)
    rows = {r["metric"]: r["value"] for r in loop.rows}
    size = f"{args.users} users x {args.items} items, {args.requests} requests/round"
    print(f"world {size}, agent {args.agent}, {torch.get_num_threads()} threads, device {dev}")
    print(f"warm-start round (world + legacy serving + ranker fit): {t1 - t0:7.1f} s")
    print(f"agent pretraining:                                      {t2 - t1:7.1f} s")
    print(f"round 0 (serve, metrics, dynamics, retrain):            {t3 - t2:7.1f} s")
    print(f"RSS entering round 0: {rss_before:.2f} GiB; peak above the phase's start:")
    for name, gib in phases.peaks.items():
        print(f"  {name:24s} +{gib:.2f} GiB  {phases.seconds[name]:8.2f} s")
    samples, fit_s = rows["fit_examples"] * sc.training.epochs, phases.seconds["agent fit"]
    print(f"agent fit: {samples:.0f} examples x epochs in {fit_s:.2f} s = {samples / fit_s:,.0f} samples/s")
    if dev.type == "cuda":
        print(f"GPU peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"peak RSS: {peak_gib:.2f} GiB; true_recall@100 {rows['true_recall@100']:.4f}; exposure_gini {rows['exposure_gini']:.4f}")


if __name__ == "__main__":
    main()
