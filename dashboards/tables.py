"""The summary table: per run and agent at its last round, mean over seeds [95% interval] of the headline metrics.

It leads with the contrast the simulator exists to show (true recall against
the offline hold-out recall at the headline K, and the hold-out bias), then concentration, drift
and the scale-free score separation (AUC; the raw score gap when a run has no
histograms). The same numbers feed the plotly table (the app), the HTML table
(the report) and the CSV download.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from dashboards.data import Dataset, last_round_summary
from dashboards.figures import MissingData, agent_colors, base_layout, metric_label


def summary_metrics(k: int | None, names: set[str] | None = None) -> list[str]:
    """The metrics of the summary table (the AUC replaces the raw score gap when ``names`` has it)."""
    recall = [f"true_recall@{k}", f"offline_holdout_recall@{k}", f"bias_holdout_recall@{k}"] if k is not None else []
    gap = "score_auc_unexposed" if names is None or "score_auc_unexposed" in names else "score_gap_unexposed"
    return [*recall, "exposure_gini", "exposure_top1_share", "homogenisation", "preference_drift", gap]


def interval_text(mean: float, lo: float, hi: float, sep: str = " ") -> str:
    """``mean [lo, hi]`` to 3 significant digits (or ``mean`` without an interval); exact values are in the CSV."""
    if mean != mean:
        return "–"
    return f"{mean:.3g}" if lo != lo or hi != hi else f"{mean:.3g}{sep}[{lo:.3g}, {hi:.3g}]"


def summary_frame(ds: Dataset, k: int | None) -> pd.DataFrame:
    """One row per (run, agent): ``run, agent, round, seeds`` then ``<metric>``, ``<metric> lo``, ``<metric> hi`` per metric."""
    names = [n for n in summary_metrics(k, ds.names) if n in ds.names]
    stats = last_round_summary(ds.metrics, names)
    if stats.empty:
        raise MissingData("Summary: none of the headline metrics is in these runs")
    rows = []
    for run in ds.runs:
        for agent in ds.agents:
            sub = stats[(stats["run"] == run) & (stats["agent"] == agent)].set_index("metric")
            if sub.empty:
                continue
            row: dict[str, object] = {"run": run, "agent": agent, "round": int(sub["round"].max()), "seeds": int(sub["n"].max())}
            for n in names:
                for col, suffix in (("mean", ""), ("lo", " lo"), ("hi", " hi")):
                    row[n + suffix] = float(sub.at[n, col]) if n in sub.index else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def summary_cells(frame: pd.DataFrame, sep: str = " ") -> tuple[list[str], list[list[str]]]:
    """Metric names and, per row of :func:`summary_frame`, the texts ``mean [lo, hi]`` of its metrics."""
    names = [c for c in frame.columns if c not in ("run", "agent", "round", "seeds") and not c.endswith((" lo", " hi"))]
    cells = [[interval_text(r[n], r[f"{n} lo"], r[f"{n} hi"], sep) for n in names] for _, r in frame.iterrows()]
    return names, cells


def summary_table(ds: Dataset, k: int | None) -> go.Figure:
    """The summary as a plotly table (the app; the report writes HTML from the same :func:`summary_frame`)."""
    frame = summary_frame(ds, k)
    names, cells = summary_cells(frame, sep="<br>")
    colors = agent_colors(ds.palette)
    columns = [
        list(frame["run"]),
        list(frame["agent"]),
        [str(v) for v in frame["round"]],
        [str(v) for v in frame["seeds"]],
        *[list(col) for col in zip(*cells, strict=False)],
    ]
    header = ["run", "agent", "round", "seeds", *[metric_label(n) for n in names]]
    n = len(frame)
    font = [["#222"] * n, [colors[a] for a in frame["agent"]], *[["#222"] * n] * (len(columns) - 2)]
    fig = go.Figure(
        go.Table(
            header={"values": [f"<b>{h}</b>" for h in header], "fill": {"color": "#f0f0f0"}, "align": "left"},
            cells={"values": columns, "font": {"color": font}, "align": "left", "height": 44},
            columnwidth=[1.2, 1, 0.7, 0.7, *[1.6] * len(names)],
            meta={"role": "summary", "metrics": names},
        )
    )
    return base_layout(fig, f"Last round per agent{f' (K = {k})' if k else ''}: mean over seeds [95% t-interval]", height=260 + 46 * n)
