"""Leaderboard agreement: does an offline protocol rank the agents as the truth does?

For every (scenario, seed, round), the agents are ranked by a protocol's estimate and by its truth on the
same requests; Kendall's tau-b (ties handled) and top-1 agreement measure whether a team choosing by the
protocol would pick what the truth picks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

LEADERBOARD_COLUMNS = ["scenario", "seed", "round", "metric", "value", "n_agents"]


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of two equally long vectors: (C - D) / sqrt((n0 - n1)(n0 - n2)); NaN if either is constant."""
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    n1, n2 = int((sx == 0).sum()), int((sy == 0).sum())
    denom = math.sqrt((n0 - n1) * (n0 - n2))
    return float((sx * sy).sum() / denom) if denom > 0 else float("nan")


def top1_agreement(estimate: np.ndarray, truth: np.ndarray) -> float:
    """The chance that the agent a team picks by the estimate is among the truth's best.

    Ties in the estimate's best are broken uniformly at random (so the answer never depends on agent names):
    the share of the estimate's tied best agents that are also the truth's best.
    """
    picked = estimate == estimate.max()
    return float((truth[picked] == truth.max()).mean())


def protocol_pairs(metrics: set[str], k: int) -> dict[str, tuple[str, str]]:
    """Protocol name -> (estimate metric, truth metric), for those present in ``metrics``."""
    pairs = {
        "holdout": (f"offline_holdout_recall@{k}", f"true_holdout_recall@{k}"),
        "shared": (f"offline_shared_recall@{k}", f"true_shared_recall@{k}"),
        "onpolicy_replay": (f"onpolicy_replay_recall@{k}", f"unbiased_recall@{k}"),
    }
    for name in sorted(metrics):
        if name.startswith("ope_") and name.endswith("_clicks"):
            pairs[name.removesuffix("_clicks")] = (name, "true_clicks")
    return {p: (e, t) for p, (e, t) in pairs.items() if e in metrics and t in metrics}


def leaderboard(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """``leaderboard_tau_<protocol>`` and ``leaderboard_top1_<protocol>`` per (scenario, seed, round) from long-form metrics."""
    pairs = protocol_pairs(set(frame.metric.unique()), k)
    rows = []
    for (sc, seed, rnd), grp in frame.groupby(["scenario", "seed", "round"], sort=True):
        wide = grp.pivot_table(index="agent", columns="metric", values="value", aggfunc="first")
        for protocol, (est, tru) in pairs.items():
            if est not in wide or tru not in wide:
                continue
            both = wide[[est, tru]].dropna()
            if len(both) < 2:
                continue
            e, t = both[est].to_numpy(float), both[tru].to_numpy(float)
            common = {"scenario": sc, "seed": seed, "round": rnd, "n_agents": len(both)}
            rows.append({**common, "metric": f"leaderboard_tau_{protocol}", "value": kendall_tau_b(e, t)})
            rows.append({**common, "metric": f"leaderboard_top1_{protocol}", "value": top1_agreement(e, t)})
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)
