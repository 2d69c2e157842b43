"""Leaderboard agreement: does each offline protocol rank the agents as its truth does?

Reads the run's ``leaderboard.parquet`` (written by the runner: Kendall's tau-b and top-1 agreement per
protocol, seed and round). Each seed's values are averaged over rounds, then the mean over seeds is drawn
with a 95% t-interval (seeds are the independent replicates).
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from dashboards.data import Dataset
from dashboards.figures import PALETTE, MissingData, base_layout, facets
from dashboards.stats import t_quantile

PANELS = (("leaderboard_tau_", "Kendall's tau-b (estimate vs truth)"), ("leaderboard_top1_", "picks the truth's best agent (share)"))


def leaderboard_stats(board: pd.DataFrame) -> pd.DataFrame:
    """Per run and metric: mean over seeds of each seed's mean over rounds, with a 95% t-interval (``lo``, ``hi``)."""
    per_seed = board.dropna(subset=["value"]).groupby(["run", "metric", "seed"])["value"].mean().reset_index()
    rows = []
    for (run, metric), grp in per_seed.groupby(["run", "metric"], sort=True):
        n, mean = len(grp), float(grp["value"].mean())
        half = t_quantile(n - 1) * float(grp["value"].std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
        lo, hi = (-1.0, 1.0) if metric.startswith("leaderboard_tau_") else (0.0, 1.0)
        rows.append({"run": run, "metric": metric, "mean": mean, "lo": max(lo, mean - half), "hi": min(hi, mean + half), "n": n})
    return pd.DataFrame(rows, columns=["run", "metric", "mean", "lo", "hi", "n"])


def leaderboard_figure(ds: Dataset) -> go.Figure:
    """Bars per protocol (one colour per run): mean tau-b and top-1 agreement with 95% intervals across seeds."""
    if ds.leaderboard.empty:
        raise MissingData("these runs have no leaderboard.parquet (fewer than two agents, or an older run)")
    stats = leaderboard_stats(ds.leaderboard)
    fig = facets(len(PANELS), 1, [title for _, title in PANELS], shared=False)
    for i, run in enumerate(ds.runs):
        for row, (prefix, _) in enumerate(PANELS, start=1):
            sub = stats[(stats["run"] == run) & stats["metric"].str.startswith(prefix)]
            fig.add_trace(go.Bar(
                x=[m.removeprefix(prefix) for m in sub["metric"]], y=sub["mean"], name=run, legendgroup=run, showlegend=row == 1,
                marker_color=PALETTE[i % len(PALETTE)], customdata=sub[["lo", "hi", "n"]].to_numpy(),
                error_y={"type": "data", "symmetric": False, "array": sub["hi"] - sub["mean"], "arrayminus": sub["mean"] - sub["lo"]},
                hovertemplate="%{x}: %{y:.3f}<br>95% CI [%{customdata[0]:.3f}, %{customdata[1]:.3f}]<br>seeds: %{customdata[2]}"
                              "<extra>" + run + "</extra>",
            ), row=row, col=1)  # fmt: skip
    fig.update_yaxes(range=[-1.05, 1.05], row=1, col=1)
    fig.update_yaxes(range=[0, 1.05], row=2, col=1)
    return base_layout(fig, "Leaderboard agreement per offline protocol", rows=len(PANELS))
