"""DAMCAR's Figure 5, exact: an agent's scores on never-exposed true positives vs negatives at one round and seed.

Score bins differ between seeds (each round's range ``[score_hist_lo,
score_hist_hi]`` is its own), so the figure shows one seed's histograms
exactly rather than averaging incompatible bins. Bar ``b`` covers
``[lo + b·w, lo + (b+1)·w)`` with ``w = (hi − lo) / bins``. For a comparison
across agents use the scale-free AUC (:mod:`dashboards.derived`).
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from dashboards.data import Dataset, family
from dashboards.figures import MissingData, agent_colors, base_layout, facets, json_float, rgba

NEG_COLOR = "#666666"  # negatives are the reference class: grey and hatched under every agent's positives
MEANS = ("score_unexposed_true_pos", "score_unexposed_true_neg")


def _score_values(ds: Dataset, round: int | None, seed: int) -> tuple[dict[tuple[str, str, str], float], dict[str, int]]:
    """``{(run, agent, metric): value}`` of the histogram metrics at one seed, and the round drawn per run."""
    pos, neg = family(ds.names, "score_hist_pos"), family(ds.names, "score_hist_neg")
    if not pos or not neg or not {"score_hist_lo", "score_hist_hi"} <= ds.names:
        raise MissingData("Score distributions: these runs hold no score_hist_* metrics (written by newer cascadesim runs)")
    m = ds.metrics[ds.metrics["seed"] == seed]
    rnd = {run: (int(round) if round is not None else int(sub["round"].max())) for run, sub in m.groupby("run")}
    wanted = {*pos.values(), *neg.values(), "score_hist_lo", "score_hist_hi", *MEANS}
    m = m[m["metric"].isin(wanted) & (m["round"] == m["run"].map(rnd))]
    if m.empty:
        raise MissingData(f"Score distributions: no score_hist_* values for seed {seed} at round {round}")
    return {(r, a, k): v for r, a, k, v in zip(m["run"], m["agent"], m["metric"], m["value"], strict=False)}, rnd


def score_figure(ds: Dataset, round: int | None = None, seed: int | None = None) -> go.Figure:
    """Histograms of an agent's scores on never-exposed true positives (agent colour) and negatives (grey, hatched)."""
    seed = min(ds.seeds) if seed is None else int(seed)
    values, rnd = _score_values(ds, round, seed)
    colors = agent_colors(ds.palette)
    titles = [f"{run} · {a}" if len(ds.runs) > 1 else a for run in ds.runs for a in ds.agents]
    fig = facets(len(ds.runs), len(ds.agents), titles, shared=False)
    for ann, agent in zip(fig.layout.annotations, [a for _ in ds.runs for a in ds.agents], strict=False):
        ann.font = {"color": colors[agent], "size": 14}
    bins = len(family(ds.names, "score_hist_pos"))
    shown: set[tuple[str, str]] = set()
    for i, run in enumerate(ds.runs, start=1):
        for j, agent in enumerate(ds.agents, start=1):
            lo, hi = values.get((run, agent, "score_hist_lo")), values.get((run, agent, "score_hist_hi"))
            if lo is None or hi is None:
                fig.add_annotation(
                    text=f"{agent}: no scores for seed {seed} in {run}",
                    x=0.5,
                    y=0.5,
                    xref="x domain",
                    yref="y domain",
                    showarrow=False,
                    font={"color": "#8a5a00"},
                    row=i,
                    col=j,
                )
                continue
            meta = {"run": run, "agent": agent, "seed": seed, "round": rnd.get(run)}
            _histograms(fig, values, meta, (lo, hi, bins), colors[agent], shown, (i, j))
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title_text="agent retrieval score", row=len(ds.runs))
    fig.update_yaxes(tickformat=".0%")
    fig.update_yaxes(title_text="share of unexposed items", col=1)
    at = f"round {round}" if round is not None else "last round"
    return base_layout(fig, f"Scores on never-exposed true positives vs negatives (seed {seed}, {at}; lines: means)", rows=len(ds.runs))


def _histograms(
    fig: go.Figure,
    values: dict[tuple[str, str, str], float],
    meta: dict[str, Any],
    grid: tuple[float, float, int],
    color: str,
    shown: set[tuple[str, str]],
    cell: tuple[int, int],
) -> None:
    """The two histograms of one (run, agent) and the vertical lines at their means."""
    run, agent = meta["run"], meta["agent"]
    for role, label in (("neg", "unexposed negatives"), ("pos", "unexposed true positives")):
        bar = _histogram_bar(values, meta, grid, color if role == "pos" else NEG_COLOR, role, label)
        fig.add_trace(bar.update(showlegend=(agent, role) not in shown), row=cell[0], col=cell[1])
        shown.add((agent, role))
    for name, dash in zip(MEANS, ("solid", "dot"), strict=False):
        if (run, agent, name) in values:
            line = {"color": color if name.endswith("pos") else NEG_COLOR, "dash": dash, "width": 1.5}
            fig.add_vline(x=values[(run, agent, name)], line=line, row=cell[0], col=cell[1])


def _histogram_bar(
    values: dict[tuple[str, str, str], float], meta: dict[str, Any], grid: tuple[float, float, int], edge: str, role: str, label: str
) -> go.Bar:
    """One role's (pos / neg) score histogram of one (run, agent) as bars over the shared bins."""
    (lo, hi, bins), run, agent = grid, meta["run"], meta["agent"]
    width = (hi - lo) / bins
    y = [json_float(values.get((run, agent, f"score_hist_{role}@{b}"), float("nan"))) for b in range(bins)]
    marker = {
        "color": rgba(edge, 0.6 if role == "pos" else 0.25),
        "line": {"color": edge, "width": 1},
        "pattern": {"shape": "/" if role == "neg" else "", "fgcolor": NEG_COLOR},
    }
    hover = (
        f"<b>{agent}</b> ({run}) · {label}<br>score in [%{{customdata[0]:.4g}}, %{{customdata[1]:.4g}})<br>share %{{y:.2%}}<extra></extra>"
    )
    return go.Bar(
        x=[lo + (b + 0.5) * width for b in range(bins)], y=y, width=[width] * bins, name=f"{agent} · {label}", legendgroup=agent,
        customdata=[[lo + b * width, lo + (b + 1) * width] for b in range(bins)], marker=marker, hovertemplate=hover,
        meta={**meta, "role": role, "x": "score_bin_centre", "y": "share", "custom": ["bin_lo", "bin_hi"]},
    )  # fmt: skip
