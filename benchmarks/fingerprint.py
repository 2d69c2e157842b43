"""Fingerprint of the simulator's behaviour, to prove a refactor changes no number.

Runs the tiny test scenario (tests/conftest.py) for random, popular, oracle and bc over 3 rounds in three
cases (deterministic serving, stochastic serving with a 10% uniform slice, a 20% uniform slice), one torch
thread, and writes the long metrics; ``--compare`` checks two fingerprints value for value (NaN equals NaN).

    python benchmarks/fingerprint.py before.parquet            # on the commit before the change
    python benchmarks/fingerprint.py after.parquet             # after it
    python benchmarks/fingerprint.py --compare before.parquet after.parquet

``--no-holdout`` turns the offline hold-out off (it withholds training data by design, so a change of its
default is not a refactor).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = {
    "plain": {},
    "stochastic": {"cascade": {"stochastic": True, "exploration_share": 0.1}},
    "explore": {"cascade": {"exploration_share": 0.2}},
}


def fingerprint(no_holdout: bool) -> pd.DataFrame:
    from scenarios.experiment import make_experiment, run_experiment
    from tests.conftest import tiny_scenario

    torch.set_num_threads(1)
    frames = []
    for name, sections in CASES.items():
        extra = {"evaluation": {"holdout_share": 0.0}} if no_holdout else {}
        exp = make_experiment(tiny_scenario(**sections, **extra), agent_names=["random", "popular", "oracle", "bc"], seeds=1, rounds=3)
        frames.append(run_experiment(exp).assign(case=name))
    return pd.concat(frames, ignore_index=True)


def compare(before: str, after: str) -> int:
    """0 when every value of ``before`` is in ``after`` and equal; prints what differs."""
    keys = ["case", "agent", "seed", "round", "metric"]
    a, b = pd.read_parquet(before), pd.read_parquet(after)
    both = a.merge(b, on=keys, how="left", suffixes=("_a", "_b"), indicator=True)
    missing = both[both["_merge"] != "both"]
    found = both[both["_merge"] == "both"]
    differ = found[~((found.value_a == found.value_b) | (found.value_a.isna() & found.value_b.isna()))]
    print(f"{len(a)} values before, {len(b)} after; {len(missing)} missing after, {len(differ)} differ")
    if len(differ):
        print(differ[[*keys, "value_a", "value_b"]].head(20).to_string())
    return int(bool(len(missing) or len(differ)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", help="where to write the fingerprint (Parquet)")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--no-holdout", action="store_true", help="evaluation.holdout_share = 0")
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
    if not args.out:
        ap.error("give OUT or --compare BEFORE AFTER")
    fingerprint(args.no_holdout).to_parquet(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
