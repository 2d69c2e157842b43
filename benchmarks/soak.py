"""Soak: many rounds of one closed loop on a tiny world; memory must stay flat, per-round time must not grow.

    python benchmarks/soak.py [--rounds 1000] [--agent bc] [--out soak.csv] [--checkpoint-dir DIR]

The world is stationary on purpose (items retire after ~80 rounds as 5 arrive per round, no newcomers),
so the live catalogue, the traffic and the log window keep their sizes: any growth of RSS or of the time
per round over the horizon is a leak or a cost that grows with the round number. With
``--checkpoint-dir`` every round is also checkpointed (the run directory's commit path). Prints the RSS
curve and the time per round in windows of 10% of the horizon, and a verdict line; ``--out`` keeps the
per-round series as CSV.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scenarios.experiment import agent_factory, warm_started_loop  # noqa: E402
from simulator.config import scenario_from_dict  # noqa: E402
from simulator.round import attach_agent  # noqa: E402
from simulator.timeline import run_round  # noqa: E402


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak_scenario(rounds: int) -> dict:
    return {
        "name": "soak",
        "world": {"n_users": 300, "n_items": 400, "n_creators": 40, "n_categories": 8},
        "dynamics": {"new_items_per_round": 5, "new_users_per_round": 0, "item_lifetime_rounds": 80.0},
        "cascade": {"k_retrieve": 50, "slate_size": 5},
        "metrics": {"panel_size": 80, "k_values": [20, 50], "gap_negatives": 30, "homogenisation_users": 40},
        "training": {"window_rounds": 2, "epochs": 1, "batch_size": 512},
        "timeline": {"rounds": rounds, "requests_per_round": 240},
    }


def _results_mib(rows: list[dict]) -> float:
    """Bytes of the metric rows the loop keeps by design (every round's results, written at the run's end)."""
    per_row = [sys.getsizeof(r) + sys.getsizeof(r["metric"]) + sys.getsizeof(r["value"]) for r in rows[-500:]]
    return len(rows) * (sum(per_row) / max(len(per_row), 1)) / 2**20


def soak(rounds: int, agent: str, checkpoint_dir: Path | None) -> pd.DataFrame:
    """Per round: ``round, seconds, rss_mib, live_items``."""
    sc = scenario_from_dict(soak_scenario(rounds))
    loop = warm_started_loop(sc, 0, torch.device("cpu")).copy()
    attach_agent(loop, agent_factory(agent, sc, 0, torch.device("cpu")), agent)
    rows = []
    for r in range(rounds):
        started = time.perf_counter()
        run_round(loop, r)
        if checkpoint_dir is not None:
            loop.save(str(checkpoint_dir / "soak.pt"))
        seconds = time.perf_counter() - started
        gc.collect()
        rows.append({"round": r, "seconds": seconds, "rss_mib": _rss_mib(), "live_items": int(loop.world.item_live.sum()),
                     "results_mib": _results_mib(loop.rows)})  # fmt: skip
        if (r + 1) % max(1, rounds // 20) == 0:  # partial results survive a killed soak
            print(f"round {r + 1}: rss {rows[-1]['rss_mib']:.1f} MiB, {seconds:.3f} s", flush=True)
    return pd.DataFrame(rows)


def report(frame: pd.DataFrame) -> str:
    """RSS and time per round in windows of 10% of the horizon, and the growth between the second and last window."""
    n = len(frame)
    size = max(1, n // 10)
    lines = [f"{'rounds':>13} {'rss MiB (end)':>14} {'s/round median':>15} {'live items':>11}"]
    windows = [frame.iloc[i : i + size] for i in range(0, n, size)]
    for w in windows:
        lines.append(f"{int(w['round'].iloc[0]):>6}-{int(w['round'].iloc[-1]):<6} {w['rss_mib'].iloc[-1]:>14.1f} "
                     f"{statistics.median(w['seconds']):>15.3f} {int(w['live_items'].mean()):>11}")
    first, last = windows[min(1, len(windows) - 1)], windows[-1]  # skip the first window: allocator warm-up
    rss_growth = last["rss_mib"].iloc[-1] - first["rss_mib"].iloc[-1]
    results_growth = last["results_mib"].iloc[-1] - first["results_mib"].iloc[-1]
    time_ratio = statistics.median(last["seconds"]) / statistics.median(first["seconds"])
    lines.append(f"RSS growth after the first window: {rss_growth:+.1f} MiB over {n - size} rounds; "
                 f"time per round, last window / second window: {time_ratio:.2f}x")
    lines.append(f"of which the metric rows kept in memory by design (the results): {results_growth:+.1f} MiB; "
                 f"the rest: {rss_growth - results_growth:+.1f} MiB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--agent", default="bc")
    parser.add_argument("--out", type=Path, default=None, help="CSV of the per-round series")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="also checkpoint every round here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    frame = soak(args.rounds, args.agent, args.checkpoint_dir)
    if args.out is not None:
        frame.to_csv(args.out, index=False)
    print(f"soak: {args.rounds} rounds, agent {args.agent}, tiny stationary world, 1 thread")
    print(report(frame))


if __name__ == "__main__":
    main()
