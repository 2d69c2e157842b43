"""Distribution figures: concentration (top-share) curves and exposure by popularity decile.

They read the per-round distribution metrics a run writes:

* ``exposure_lorenz@p`` (p = 0.1..0.9): cumulative exposure share of the
  least-exposed share p of live items, drawn from the top: the share held by
  the most-exposed q = 1 - p of items, with ``exposure_top1_share`` at
  q = 0.01, on a log axis (where exposures concentrate, that is where the
  curves differ; a Lorenz curve at 10% steps is flat near 0 for every agent
  with Gini > 0.9). Finer stored points (e.g. p = 0.99) are drawn too;
* ``exposure_share_decile@d`` (d = 1..10): share of the round's exposures going
  to popularity decile d of live items (10 = most popular).

DAMCAR's score histograms are in :mod:`dashboards.scores`, the summary table
in :mod:`dashboards.tables`. Missing metrics raise :class:`dashboards.figures.MissingData`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from dashboards.data import Dataset, family, seed_stats
from dashboards.figures import ROUND_AXIS, MissingData, agent_colors, base_layout, facets, json_float, round_ticks


def default_rounds(rounds: Sequence[int], n: int = 3) -> list[int]:
    """Up to ``n`` rounds spread over the run: first, middle, last."""
    rs = sorted(set(rounds))
    if len(rs) <= n:
        return rs
    return sorted({rs[round(i * (len(rs) - 1) / (n - 1))] for i in range(n)})


def top_share_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Long ``exposure_top_share@q`` rows: 1 - ``exposure_lorenz@p`` at q = 1 - p, and ``exposure_top1_share`` at q = 0.01.

    The Lorenz curve read from the top: where exposures concentrate (Gini > 0.9) its stored points
    (p = 0.1..0.9) are all near 0, while the most-exposed 1% and 10% of items show the difference.
    """
    lorenz = metrics[metrics["metric"].str.startswith("exposure_lorenz@")]
    p = pd.to_numeric(lorenz["metric"].str.slice(len("exposure_lorenz@")), errors="coerce")
    lorenz = lorenz[(p > 0) & (p < 1)]
    q = (1.0 - p[lorenz.index]).round(6)
    top = lorenz.assign(metric="exposure_top_share@" + q.map(lambda v: f"{v:g}"), value=1.0 - lorenz["value"])
    one = metrics[metrics["metric"] == "exposure_top1_share"]
    one = one.assign(metric="exposure_top_share@0.01")
    keys = ["run", "agent", "seed", "round", "metric"]
    return pd.concat([top, one], ignore_index=True).drop_duplicates(keys, keep="first")


def lorenz_figure(ds: Dataset, rounds: Sequence[int] | None = None) -> go.Figure:
    """Top-share curves of the round's exposures (share held by the most-exposed q of items, q on a log axis), one panel per round.

    Without ``rounds``, each run shows its own first, middle and last round (rows: runs).
    """
    if not family(ds.names, "exposure_lorenz"):
        raise MissingData("Concentration curves: these runs hold no exposure_lorenz@p metrics (written by newer cascadesim runs)")
    m = ds.metrics
    per_run = {run: sorted(set(rounds)) if rounds else default_rounds(m.loc[m["run"] == run, "round"].tolist()) for run in ds.runs}
    chosen = m[m["round"].isin({r for rs in per_run.values() for r in rs})]
    stats = seed_stats(top_share_rows(chosen))
    if stats.empty:
        raise MissingData(f"Concentration curves: no exposure_lorenz@p values at rounds {sorted(set(rounds or []))}")
    cols = max(len(rs) for rs in per_run.values())
    titles = [
        (f"{run} · round {rs[j]}" if len(ds.runs) > 1 else f"round {rs[j]}") if j < len(rs) else ""
        for run, rs in per_run.items()
        for j in range(cols)
    ]
    fig = facets(len(ds.runs), cols, titles)
    stats = stats.assign(q=stats["metric"].str.slice(len("exposure_top_share@")).astype("float64"))
    groups = {key: sub for key, sub in stats.groupby(["run", "agent", "round"], sort=False)}
    shown: set[str] = set()
    for i, run in enumerate(ds.runs, start=1):
        for j, rnd in enumerate(per_run[run], start=1):
            _equality(fig, float(stats["q"].min()), i, j, first=(i, j) == (1, 1))
            for agent in ds.agents:
                if (run, agent, rnd) in groups:
                    _top_share_trace(fig, ds, groups[(run, agent, rnd)], run, agent, int(rnd), agent not in shown, (i, j))
                    shown.add(agent)
    ticks = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{t:.0%}" for t in ticks], range=[-2.05, 0.02])
    fig.update_xaxes(title_text="most-exposed share of live items (log scale)", row=len(ds.runs))
    fig.update_yaxes(title_text="share of the round's exposures", range=[0, 1.02], tickformat=".0%", col=1)
    return base_layout(fig, "Concentration of exposure: share held by the most-exposed items (dotted: equal exposure)", rows=len(ds.runs))


def _equality(fig: go.Figure, q_min: float, row: int, col: int, first: bool) -> None:
    """The equal-exposure reference y = q (a curve on the log axis)."""
    xs = [10 ** (math.log10(min(q_min, 0.01)) * (1 - t / 40)) for t in range(41)]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=xs,
            mode="lines",
            line={"color": "#999", "dash": "dot", "width": 1},
            hoverinfo="skip",
            name="equal exposure",
            showlegend=first,
            meta={"role": "reference"},
        ),
        row=row,
        col=col,
    )


def _top_share_trace(
    fig: go.Figure, ds: Dataset, sub: pd.DataFrame, run: str, agent: str, rnd: int, legend: bool, cell: tuple[int, int]
) -> None:
    sub = sub.sort_values("q")
    custom = [[json_float(lo), json_float(hi), int(n)] for lo, hi, n in zip(sub["lo"], sub["hi"], sub["n"], strict=False)]
    fig.add_trace(
        go.Scatter(
            x=[float(q) for q in sub["q"]],
            y=[json_float(v) for v in sub["mean"]],
            customdata=custom,
            mode="lines+markers",
            line={"color": agent_colors(ds.palette)[agent], "width": 2},
            marker={"size": 6},
            name=agent,
            legendgroup=agent,
            showlegend=legend,
            meta={
                "run": run,
                "agent": agent,
                "round": rnd,
                "role": "mean",
                "metric": "exposure_top_share",
                "x": "top_share_of_items",
                "y": "share_of_exposures",
                "custom": ["lo", "hi", "seeds"],
            },
            hovertemplate=(
                f"<b>{agent}</b> ({run}), round {rnd}<br>the most-exposed %{{x:.0%}} of items get %{{y:.2%}} of exposures"
                "<br>95% CI [%{customdata[0]:.2%}, %{customdata[1]:.2%}], seeds: %{customdata[2]}<extra></extra>"
            ),
        ),
        row=cell[0],
        col=cell[1],
    )


def decile_figure(ds: Dataset) -> go.Figure:
    """Share of exposures by popularity decile over rounds: one heatmap per agent (rows: runs), a colour scale per agent.

    A shared scale would be set by the most concentrated agent (``popular`` puts most exposures in decile 10)
    and flatten the others, so each agent has its own scale from 0 to its largest share (colour bar beside its column).
    """
    fam = family(ds.names, "exposure_share_decile")
    if not fam:
        raise MissingData("Popularity deciles: these runs hold no exposure_share_decile@d metrics (written by newer cascadesim runs)")
    stats = seed_stats(ds.metrics, fam.values())
    decile = {name: int(d) for d, name in fam.items()}
    stats = stats.assign(d=stats["metric"].map(decile))
    fig = facets(
        len(ds.runs), len(ds.agents), [f"{run} · {a}" if len(ds.runs) > 1 else a for run in ds.runs for a in ds.agents], spacing=0.08
    )
    colors = agent_colors(ds.palette)
    for ann, (_, agent) in zip(fig.layout.annotations, [(r, a) for r in ds.runs for a in ds.agents], strict=False):
        ann.font = {"color": colors[agent], "size": 14}
    groups = {key: sub for key, sub in stats.groupby(["run", "agent"], sort=False)}
    for j, agent in enumerate(ds.agents, start=1):
        axis = "coloraxis" if j == 1 else f"coloraxis{j}"
        for i, run in enumerate(ds.runs, start=1):
            if (run, agent) in groups:
                _decile_trace(fig, groups[(run, agent)], run, agent, axis, i, j)
            else:
                _empty_cell(fig, f"{agent}: no data in {run}", i, j)
        _agent_colorbar(fig, axis, agent, j, stats.loc[stats["agent"] == agent, "mean"].max())
    fig.update_yaxes(title_text="popularity decile (10 = most popular)", col=1, dtick=1)
    fig.update_xaxes(title_text=ROUND_AXIS, row=len(ds.runs))
    fig.update_xaxes(**round_ticks(stats["round"], pad=0.5))
    return base_layout(fig, "Exposure share by popularity decile over rounds (mean over seeds; colour scale per agent)", rows=len(ds.runs))


def _decile_trace(fig: go.Figure, sub: pd.DataFrame, run: str, agent: str, axis: str, row: int, col: int) -> None:
    z = sub.pivot(index="d", columns="round", values="mean").sort_index()
    n = sub.pivot(index="d", columns="round", values="n").reindex_like(z)
    fig.add_trace(
        go.Heatmap(
            x=[int(r) for r in z.columns],
            y=[int(d) for d in z.index],
            z=[[json_float(v) for v in r] for r in z.to_numpy()],
            customdata=[[None if v != v else int(v) for v in r] for r in n.to_numpy()],
            coloraxis=axis,
            name=agent,
            meta={"run": run, "agent": agent, "role": "heatmap", "x": "round", "y": "decile", "z": "share_of_exposures", "custom": "seeds"},
            hovertemplate=(
                f"<b>{agent}</b> ({run})<br>round %{{x}}, decile %{{y}}<br>share of exposures %{{z:.2%}}"
                "<br>seeds: %{customdata}<extra></extra>"
            ),
        ),
        row=row,
        col=col,
    )


def _agent_colorbar(fig: go.Figure, axis: str, agent: str, col: int, top: float) -> None:
    """The agent's own colour scale, its bar just right of the agent's column."""
    domain = fig.layout["xaxis" if col == 1 else f"xaxis{col}"].domain
    colorbar = {
        "tickformat": ".0%",
        "x": domain[1] + 0.004,
        "xanchor": "left",
        "thickness": 10,
        "len": 1.0,
        "y": 0.5,
        "outlinewidth": 0,
        "nticks": 5,
    }
    cmax = float(top) if top == top and top > 0 else 1.0
    fig.update_layout({axis: {"colorscale": "Viridis", "cmin": 0, "cmax": cmax, "colorbar": colorbar}})


def _empty_cell(fig: go.Figure, text: str, row: int, col: int) -> None:
    fig.add_annotation(
        text=text, x=0.5, y=0.5, xref="x domain", yref="y domain", showarrow=False, font={"color": "#8a5a00"}, row=row, col=col
    )


from dashboards.scores import score_figure  # noqa: E402,F401  (re-exported: the figures used to live here)
from dashboards.tables import interval_text, summary_metrics, summary_table  # noqa: E402,F401
