"""Synthetic run directories for the dashboard tests and the report benchmark.

``make_run_dir`` writes what ``cascadesim run`` writes for the dashboards to
read (``manifest.json`` and a long ``metrics.parquet``) with seeded synthetic
values of plausible shape: recalls in [0, 1] with logged above true, Lorenz
points that increase to 1, decile and histogram shares that sum to 1. It uses
its own ``numpy.random.Generator``; the same arguments give the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simulator.checkpoint import atomic_write_json, atomic_write_parquet

COLUMNS = ["scenario", "agent", "seed", "round", "metric", "value"]
LORENZ_P = [round(0.1 * i, 1) for i in range(1, 10)]
BINS = 20


def synthetic_metrics(agents: Sequence[str], seeds: int, rounds: int, ks: Sequence[int] = (10, 100), scenario: str = "synthetic",
                      distributions: bool = True, rng_seed: int = 0) -> pd.DataFrame:
    """Long metrics for every (agent, seed, round), seeded by ``rng_seed``."""
    rng = np.random.default_rng(rng_seed)
    frames = []
    for a, agent in enumerate(agents):
        for seed in range(seeds):
            r = np.arange(rounds, dtype=float)
            cols: dict[str, np.ndarray] = {}
            level = 0.2 + 0.15 * a
            for k in ks:
                true = np.clip(level + 0.05 * np.log1p(k) / 5 - 0.001 * r + rng.normal(0, 0.01, rounds), 0, 1)
                logged = np.clip(true + 0.2 + 0.002 * r + rng.normal(0, 0.01, rounds), 0, 1)
                cols[f"true_recall@{k}"], cols[f"offline_holdout_recall@{k}"] = true, logged
                cols[f"true_holdout_recall@{k}"] = np.clip(true + rng.normal(0, 0.01, rounds), 0, 1)
                cols[f"bias_holdout_recall@{k}"] = logged - cols[f"true_holdout_recall@{k}"]
            cols["exposure_gini"] = np.clip(0.5 + 0.1 * a + 0.002 * r + rng.normal(0, 0.01, rounds), 0, 1)
            cols["exposure_top1_share"] = np.clip(0.05 + 0.05 * a + 0.001 * r + rng.normal(0, 0.005, rounds), 0, 1)
            cols["homogenisation"] = np.clip(0.1 + 0.02 * a + 0.001 * r + rng.normal(0, 0.005, rounds), 0, 1)
            cols["preference_drift"] = 0.002 * (1 + a) * r + np.abs(rng.normal(0, 0.001, rounds))
            cols["score_unexposed_true_pos"] = 0.6 + 0.05 * a + rng.normal(0, 0.01, rounds)
            cols["score_unexposed_true_neg"] = 0.4 + rng.normal(0, 0.01, rounds)
            cols["score_gap_unexposed"] = cols["score_unexposed_true_pos"] - cols["score_unexposed_true_neg"]
            cols["coverage"] = rng.uniform(0.2, 0.6, rounds)
            if distributions:
                cols.update(_distributions(rng, rounds, a))
            block = pd.DataFrame({"round": np.repeat(np.arange(rounds), len(cols)), "metric": np.tile(list(cols), rounds),
                                  "value": np.stack(list(cols.values()), axis=1).reshape(-1)})
            block.insert(0, "seed", seed)
            block.insert(0, "agent", agent)
            block.insert(0, "scenario", scenario)
            frames.append(block)
    out = pd.concat(frames, ignore_index=True)[COLUMNS]
    out["seed"] = out["seed"].astype("int64")
    out["round"] = out["round"].astype("int64")
    return out


def _distributions(rng: np.random.Generator, rounds: int, a: int) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    gaps = rng.gamma(1.0 + a, 1.0, size=(rounds, 10))  # sorted increasing exposure per decile of items
    lorenz = np.cumsum(np.sort(gaps, axis=1), axis=1) / gaps.sum(axis=1, keepdims=True)
    for i, p in enumerate(LORENZ_P):
        cols[f"exposure_lorenz@{p}"] = lorenz[:, i]
    cols["exposure_top1_share"] = (1 - lorenz[:, 8]) * rng.uniform(0.15, 0.35, rounds)  # within the top 10%'s share
    deciles = rng.dirichlet(np.linspace(1, 1 + 2 * (a + 1), 10), size=rounds)
    for d in range(10):
        cols[f"exposure_share_decile@{d + 1}"] = deciles[:, d]
    lo = rng.uniform(-1.0, -0.5, rounds)
    hi = rng.uniform(0.5, 1.0, rounds)
    cols["score_hist_lo"], cols["score_hist_hi"] = lo, hi
    pos = rng.dirichlet(np.linspace(1, 4 + a, BINS), size=rounds)
    neg = rng.dirichlet(np.linspace(4, 1, BINS), size=rounds)
    for b in range(BINS):
        cols[f"score_hist_pos@{b}"] = pos[:, b]
        cols[f"score_hist_neg@{b}"] = neg[:, b]
    return cols


def make_run_dir(path: str | Path, agents: Sequence[str] = ("oracle", "random", "popular"), seeds: int = 3, rounds: int = 10,
                 ks: Sequence[int] = (10, 100), scenario: str = "synthetic", description: str = "A synthetic run for the dashboard tests.",
                 distributions: bool = True, rng_seed: int = 0, k_retrieve: int | None = 100, extra: dict[str, Any] | None = None,
                 done: dict[str, int] | None = None) -> Path:
    """A run directory with ``manifest.json`` and ``metrics.parquet``; returns its path.

    ``k_retrieve`` goes to the manifest's ``scenario.cascade``; ``extra`` is merged into the manifest (e.g. provenance
    fields); ``done`` maps agents to the number of (seed, round) rows kept in order (a run in progress: seeds
    one after another, 0 = no metrics yet).
    """
    out = Path(path)
    metrics = synthetic_metrics(agents, seeds, rounds, ks, scenario, distributions, rng_seed)
    if done:
        metrics = in_progress(metrics, done)
    cascade = {"k_retrieve": k_retrieve} if k_retrieve is not None else {}
    manifest = {
        "scenario": {"name": scenario, "description": description, "metrics": {"k_values": list(ks)}, "timeline": {"rounds": rounds},
                     "cascade": cascade},
        "agents": list(agents), "seeds": list(range(seeds)), "rounds": rounds, "device": "cpu",
        "versions": {"cascadesim": "test", "python": "3"}, "format": 1, **(extra or {}),
    }
    atomic_write_json(manifest, out / "manifest.json")
    atomic_write_parquet(metrics, out / "metrics.parquet")
    return out


def in_progress(metrics: pd.DataFrame, done: dict[str, int]) -> pd.DataFrame:
    """Keep, per agent in ``done``, its first ``done[agent]`` (seed, round) pairs in run order (seed by seed, round by round)."""
    pairs = metrics[["agent", "seed", "round"]].drop_duplicates().sort_values(["agent", "seed", "round"])
    pairs["rank"] = pairs.groupby("agent").cumcount()
    limit = pairs["agent"].map(lambda a: done.get(a, 1 << 30))
    keep = pairs[pairs["rank"] < limit].drop(columns="rank")
    return metrics.merge(keep, on=["agent", "seed", "round"])[COLUMNS]
