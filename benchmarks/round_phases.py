"""A whole round split per phase, next to a NumPy floor of each phase's arithmetic, in one process.

    python benchmarks/round_phases.py [--sizes 1000 10000] [--rounds 3] [--agent bc] [--requests N] [--json out.json]

Each size is ``n users x n items, n requests per round`` (the issue-18 sizes). The run builds the
world, serves the warm-start round, pretrains the agent, then runs ``--rounds`` rounds. Per-round
wall is ``(wall of R rounds - wall of round 0) / (R - 1)`` (set-up and warm start cancel); phases are
averaged over the same rounds, and the floors are measured right after each of those rounds and averaged.
Phases (exclusive time: a phase called inside another is not counted twice):

* serve.sample / retrieve / rank / expose / respond / log / other: the traffic slices
  (:func:`simulator.cascade.step.serve_batch` and the request sampler);
* truth metrics (:func:`simulator.round.measure`), offline evaluation (:func:`simulator.round.evaluate_candidate`),
  dynamics (start- and end-of-round world changes), deploy, the training view, model copies (state dicts,
  ranker snapshots, the offline candidate), ranker fit, agent fit, and what is left (other).

The floor of each phase is the same arithmetic in plain NumPy float32 on the same sizes (see ``floors.py``).
One torch thread; the ratio is ours / floor (1.0 = as fast as the floor).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages, not an installed copy

import torch  # noqa: E402

from benchmarks.floors import phase_floors  # noqa: E402
from benchmarks.phase_clock import PhaseClock, instrument  # noqa: E402
from scenarios.experiment import agent_factory  # noqa: E402
from simulator.config import Scenario, scenario_from_dict  # noqa: E402
from simulator.loop import ClosedLoop  # noqa: E402
from simulator.round import attach_agent  # noqa: E402
from simulator.timeline import run_round, warm_started_loop  # noqa: E402

PHASES = ("serve.sample", "serve.retrieve", "serve.rank", "serve.expose", "serve.respond", "serve.log", "serve.other",
          "truth metrics", "offline evaluation", "dynamics", "deploy", "training view", "model copies", "ranker fit", "agent fit", "other")


def round_scenario(n: int, requests: int | None = None, ranker: str | None = None) -> Scenario:
    """``n`` users x ``n`` items, ``n`` requests per round, the default cascade (DeepFM ranker) or ``ranker``."""
    cascade = {} if ranker is None else {"cascade": {"ranker": ranker}}
    return scenario_from_dict({
        **cascade, "name": f"round-{n}", "world": {"n_users": n, "n_items": n, "n_creators": max(10, n // 50)},
        "metrics": {"panel_size": min(n, 500)},
        "timeline": {"rounds": 3, "requests_per_round": requests or n},
    })


def run_size(n: int, rounds: int, agent: str, device: str = "cpu", ranker: str | None = None, requests: int | None = None) -> dict:
    """Per-round wall, per-phase seconds and floors for one size (``ranker``: the cascade's, default DeepFM; ``requests``: n)."""
    sc = round_scenario(n, requests, ranker)
    loop = warm_started_loop(sc, 0, device)
    attach_agent(loop, agent_factory(agent, sc, 0, torch.device(device)), agent)
    clock = PhaseClock(torch.cuda.synchronize if torch.device(device).type == "cuda" else None)
    walls, floor_sets = [], []
    with instrument(loop, clock) as serve:
        for r in range(rounds):
            clock.reset()
            t = time.perf_counter()
            run_round(loop, r, serve)
            walls.append(time.perf_counter() - t)
            clock.close_round(walls[-1], skip=r == 0)
            if r > 0:  # the floors right after each measured round: a shared machine's load drifts over minutes
                floor_sets.append(phase_floors(loop, sc))
    with tempfile.TemporaryDirectory(prefix="round-phases-") as folder:  # after the clock's patches are undone
        save_s, save_bytes = checkpoint_cost(loop, Path(folder) / "loop.pt")
    per_round = (sum(walls) - walls[0]) / max(rounds - 1, 1)
    phases = clock.mean()
    floors = {k: sum(f[k] for f in floor_sets) / len(floor_sets) for k in floor_sets[0]}
    return {
        "size": n, "requests": sc.timeline.requests_per_round, "agent": agent, "ranker": sc.cascade.ranker, "rounds": rounds,
        "walls": walls,
        "per_round_s": per_round, "ms_per_request": 1000 * per_round / sc.timeline.requests_per_round,
        "phases": {p: phases.get(p, 0.0) for p in PHASES}, "floors": floors, "threads": torch.get_num_threads(),
        "checkpoint_s": save_s, "checkpoint_mib": save_bytes / 2**20,
    }


def checkpoint_cost(loop: ClosedLoop, path: Path) -> tuple[float, int]:
    """Seconds and bytes of the loop's checkpoint after the last round, written as a run writes it (atomic, fsynced).

    Not part of the round's wall: a run writes it after each round, and this benchmark's rounds are not a run.
    """
    t = time.perf_counter()
    loop.save(str(path))
    took = time.perf_counter() - t
    size = path.stat().st_size
    path.unlink()
    return took, size


def print_size(res: dict) -> None:
    print(f"\n{res['size']} users x {res['size']} items, {res['requests']} requests/round, agent {res['agent']}, "
          f"{res['threads']} thread(s): {res['per_round_s']:.3f} s per round, {res['ms_per_request']:.3f} ms per request")
    print(f"  {'phase':20s} {'ours s':>9s} {'floor s':>9s} {'ours/floor':>10s}")
    for p in PHASES:
        ours, fl = res["phases"][p], res["floors"].get(p)
        ratio = f"{ours / fl:10.1f}" if fl else f"{'-':>10s}"
        print(f"  {p:20s} {ours:9.4f} {fl if fl is not None else float('nan'):9.4f} {ratio}")
    tot_f = sum(v for v in res["floors"].values())
    print(f"  {'round (sum)':20s} {res['per_round_s']:9.4f} {tot_f:9.4f} {res['per_round_s'] / tot_f:10.1f}")
    print(f"  checkpoint after the last round (not in it): {res['checkpoint_s']:.3f} s, {res['checkpoint_mib']:.1f} MiB")


GIB_PER_100K = 2.0  # peak RSS of a 100k x 100k round with 100k requests (issue 18); grows about linearly in n


def estimate_gib(n: int) -> float:
    """Rough peak memory of a round at size ``n`` (linear in ``n`` from the 100k figure, plus the interpreter)."""
    return 0.5 + GIB_PER_100K * n / 100_000


def available_gib() -> float:
    """``MemAvailable`` of this machine (Linux), else infinity."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--agent", default="bc")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ranker", default=None, help="the cascade's ranker (default: the scenario default, DeepFM)")
    ap.add_argument("--requests", type=int, default=None, help="requests per round (default: the size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.rounds < 2:
        ap.exit(2, "error: --rounds: must be >= 2 (the first round's wall is subtracted)\n")
    if args.requests is not None and args.requests < 1:
        ap.exit(2, f"error: --requests: must be >= 1, got {args.requests}\n")
    for n in args.sizes:
        need, have = estimate_gib(n), available_gib()
        if n < 100 or need > have:
            msg = f"error: --sizes: {n} needs ~{need:.1f} GiB (have {have:.1f} GiB available); sizes must be >= 100 and fit in memory"
            ap.exit(2, msg + "\n")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    results = []
    for n in args.sizes:
        results.append(run_size(n, args.rounds, args.agent, args.device, args.ranker, args.requests))
        print_size(results[-1])
        if args.json:  # after every size: a long run cut short keeps what it measured
            args.json.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1))


if __name__ == "__main__":
    main()
