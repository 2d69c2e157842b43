"""Plotly figures over run directories: one function per figure, one colour per agent in every figure.

Each function takes a :class:`dashboards.data.Dataset` (one or several runs)
and returns a ``plotly.graph_objects.Figure``. Several runs are drawn side by
side (one column per run, shared y axis). Lines are the mean over seeds of
the values in ``metrics.parquet``, with a shaded 95% t-interval when there
are two seeds or more; hover shows the mean, the interval and the number of
seeds. Every trace carries ``meta = {"run", "agent", "metric", "role"}`` so
tests and the browser can find the trace of an agent. A figure whose metrics
are absent from the runs raises :class:`MissingData` with a one-line note.

The distribution figures (Lorenz curves, popularity deciles, DAMCAR's score
distributions) and the summary table live in :mod:`dashboards.distributions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from dashboards.data import Dataset
from dashboards.stats import diff_stats, seed_sds, seed_stats

# Okabe-Ito (colour-blind safe) first, then a long qualitative palette for many agents.
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#8C564B",
    "#7F7F7F",
    "#BCBD22",
    *qualitative.Dark24,
)
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
ROUND_AXIS = "round (simulated day)"
FONT = "Helvetica, Arial, sans-serif"

AXIS_LABELS: dict[str, str] = {
    "true_recall": "true recall@{p} (share of the true top-{p})",
    "offline_holdout_recall": "offline hold-out recall@{p} (share of held-out clicks)",
    "bias_holdout_recall": "hold-out bias@{p} (estimate − its truth)",
    "true_holdout_recall": "true hold-out recall@{p} (same requests)",
    "offline_shared_recall": "offline shared-log recall@{p}",
    "true_shared_recall": "true shared-log recall@{p} (same requests)",
    "true_ndcg": "true NDCG@{p}",
    "exposure_gini": "exposure Gini (0 = equal, 1 = one item)",
    "exposure_top1_share": "top-1% items' share of exposures",
    "homogenisation": "homogenisation (mean pairwise Jaccard)",
    "preference_drift": "preference drift (mean 1 − cos to start)",
    "score_gap_unexposed": "score gap (unexposed positives − negatives)",
    "coverage": "coverage (share of live items exposed)",
    "long_tail_coverage": "long-tail coverage (share exposed)",
    "novelty": "novelty (bits)",
    "aggregate_diversity": "distinct items exposed",
    "score_auc_unexposed": "score AUC (0.5 = no separation)",
}


class MissingData(ValueError):
    """The metrics a figure needs are not in these runs (older runs, or a metric not configured)."""


def agent_colors(agents: Sequence[str]) -> dict[str, str]:
    """One colour per agent name: the palette in sorted name order, so the same agents get the same colours."""
    names = sorted(dict.fromkeys(agents))
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(names)}


def rgba(color: str, alpha: float) -> str:
    """``#rrggbb`` -> ``rgba(r, g, b, alpha)``."""
    h = color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


def metric_label(metric: str) -> str:
    """A readable axis title (with units) for a metric name."""
    head, _, param = metric.partition("@")
    text = AXIS_LABELS.get(head)
    if text is None:
        return metric.replace("_", " ")
    return text.format(p=param) if param else text


def base_layout(fig: go.Figure, title: str, rows: int = 1, height: int | None = None) -> go.Figure:
    """The look every figure shares."""
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.01, "xanchor": "left"},
        font={"family": FONT, "size": 13},
        height=height or 140 + 300 * rows,
        margin={"l": 70, "r": 30, "t": 90, "b": 60},
        hovermode="closest",
        legend={"groupclick": "togglegroup"},
    )
    return fig


def facets(rows: int, cols: int, titles: Sequence[str] | None, shared: bool = True, spacing: float = 0.06) -> go.Figure:
    """Subplots with room between them (axes shared along rows and columns unless ``shared`` is false); titles row-major."""
    return make_subplots(
        rows=rows,
        cols=cols,
        shared_xaxes=shared,
        shared_yaxes=shared,
        subplot_titles=list(titles) if titles else None,
        horizontal_spacing=spacing if cols > 1 else 0.02,
        vertical_spacing=min(0.12, 0.6 / max(rows, 1)),
    )


def run_titles(ds: Dataset) -> list[str] | None:
    return list(ds.runs) if len(ds.runs) > 1 else None


COMPARE_MODES: dict[str, str] = {"side": "side by side", "overlay": "overlaid", "diff": "difference of the first two runs"}


def compare_stats(ds: Dataset, names: Sequence[str], compare: str = "side") -> tuple[pd.DataFrame, list[str]]:
    """Statistics to draw and the column titles: one column per run, one for all runs (overlay), or ``A − B`` (diff)."""
    stats = seed_stats(ds.metrics, names)
    if compare == "side":
        return stats, list(ds.runs)
    if compare == "overlay":
        return stats, [" · ".join(ds.runs)]
    if compare != "diff":
        raise MissingData(f"compare: {compare!r} is not one of {', '.join(COMPARE_MODES)}")
    if len(ds.runs) < 2:
        raise MissingData("Difference: choose two runs (the first minus the second)")
    diff = diff_stats(stats, seed_sds(ds.metrics, names), ds.runs[0], ds.runs[1])
    if diff.empty:
        raise MissingData(f"Difference: {ds.runs[0]} and {ds.runs[1]} share no agent, metric and round")
    return diff, [f"{ds.runs[0]} − {ds.runs[1]}"]


def line_figure(
    ds: Dataset,
    panels: Sequence[Sequence[str]],
    title: str,
    ylabels: Sequence[str] | None = None,
    styles: Sequence[str] | None = None,
    ref: float | None = None,
    compare: str = "side",
) -> go.Figure:
    """Metrics over rounds: one row per panel (its metrics share the axes, told apart by dash), one column per run.

    ``styles`` names the metrics of a panel in the legend (e.g. ``("true", "logged")``); ``ref`` draws a
    horizontal reference line; ``compare`` is a key of :data:`COMPARE_MODES` (overlay: runs told apart by dash).
    """
    names = [m for row in panels for m in row]
    stats, columns = compare_stats(ds, names, compare)
    if stats.empty:
        raise MissingData(f"{title}: none of {', '.join(names)} is in these runs")
    runs = [r for r in ds.runs if r in set(stats["run"])] if compare != "diff" else columns
    titles = columns if len(columns) > 1 or compare != "side" else None
    fig = facets(len(panels), len(columns), titles + [""] * (len(columns) * (len(panels) - 1)) if titles else None)
    groups = {key: sub for key, sub in stats.groupby(["run", "agent", "metric"], sort=False)}
    shown: set[tuple[str, str]] = set()
    for r, row in enumerate(panels, start=1):
        for j, run in enumerate(runs):
            col = 1 if len(columns) == 1 else j + 1
            _draw_panel(fig, ds, groups, run, row, styles, (r, col), shown, run_dash=j if compare == "overlay" else None)
        ylabel = ylabels[r - 1] if ylabels else metric_label(row[0])
        fig.update_yaxes(title_text=f"difference in {ylabel}" if compare == "diff" else ylabel, row=r, col=1)
        for c in range(1, len(columns) + 1):
            if ref is not None or compare == "diff":
                fig.add_hline(y=0.0 if compare == "diff" else ref, line={"color": "#888", "width": 1}, row=r, col=c)
    fig.update_xaxes(title_text=ROUND_AXIS, row=len(panels))
    fig.update_xaxes(**round_ticks(stats["round"]))
    return base_layout(fig, title if compare != "diff" else f"{title}: {columns[0]}", rows=len(panels))


def _draw_panel(
    fig: go.Figure,
    ds: Dataset,
    groups: dict[Any, pd.DataFrame],
    run: str,
    row: Sequence[str],
    styles: Sequence[str] | None,
    cell: tuple[int, int],
    shown: set[tuple[str, str]],
    run_dash: int | None,
) -> None:
    """The lines of one panel and run: every agent, every metric of the panel."""
    colors = agent_colors(ds.palette)
    for agent in ds.agents:
        for i, metric in enumerate(row):
            sub = groups.get((run, agent, metric))
            if sub is None or sub.empty:
                continue
            style = styles[i] if styles and len(row) > 1 else ""
            if run_dash is not None:
                style = " · ".join(s for s in (style, run) if s)
            dash = DASHES[(i + (run_dash or 0) * len(row)) % len(DASHES)]
            add_series(fig, sub, agent, run, metric, colors[agent], dash, style, (agent, style) not in shown, *cell)
            shown.add((agent, style))


def round_ticks(rounds: pd.Series, pad: float = 0.3) -> dict[str, Any]:
    """Whole-number round ticks (every round when there are few), no padding rounds (0, n + 1) at the ends."""
    n = int(rounds.nunique()) if len(rounds) else 0
    span = {"range": [float(rounds.min()) - pad, float(rounds.max()) + pad]} if n > 1 else {}
    return {"tickformat": "d", **({"dtick": 1} if 0 < n <= 20 else {}), **span}


def add_series(
    fig: go.Figure,
    sub: pd.DataFrame,
    agent: str,
    run: str,
    metric: str,
    color: str,
    dash: str,
    style: str,
    legend: bool,
    row: int,
    col: int,
) -> None:
    """The mean line of one (run, agent, metric) with its 95% band (only where an interval exists)."""
    sub = sub.sort_values("round")
    meta: dict[str, Any] = {"run": run, "agent": agent, "metric": metric, "x": "round", "y": "mean", "custom": ["lo", "hi", "seeds"]}
    band = sub[sub["lo"].notna() & sub["hi"].notna()]
    if not band.empty:
        fig.add_trace(_band_trace(band, agent, color, meta), row=row, col=col)
    name = f"{agent} · {style}" if style else agent
    fig.add_trace(_mean_trace(sub, name, agent, run, metric, {"color": color, "dash": dash, "width": 2}, legend, not band.empty, meta),
                  row=row, col=col)  # fmt: skip


def _band_trace(band: pd.DataFrame, agent: str, color: str, meta: dict[str, Any]) -> go.Scatter:
    """The 95% interval as a filled polygon (upper edge forward, lower edge back)."""
    bx = [int(v) for v in band["round"]]
    return go.Scatter(
        x=bx + bx[::-1], y=[float(v) for v in band["hi"]] + [float(v) for v in band["lo"][::-1]], fill="toself",
        fillcolor=rgba(color, 0.15), line={"width": 0}, mode="lines", hoverinfo="skip", showlegend=False, legendgroup=agent,
        name=f"{agent} 95% interval", meta={**meta, "role": "band"},
    )  # fmt: skip


def _mean_trace(sub: pd.DataFrame, name: str, agent: str, run: str, metric: str, line: dict[str, Any], legend: bool, banded: bool,
                meta: dict[str, Any]) -> go.Scatter:  # fmt: skip
    """The mean over seeds, with the interval and the seed count on hover."""
    x = [int(v) for v in sub["round"]]
    custom = [[json_float(lo), json_float(hi), int(n)] for lo, hi, n in zip(sub["lo"], sub["hi"], sub["n"], strict=False)]
    interval = "<br>95% CI [%{customdata[0]:.6~g}, %{customdata[1]:.6~g}]" if banded else ""
    hover = f"<b>{name}</b> ({run})<br>round %{{x}}<br>{metric} = %{{y:.10~g}}{interval}<br>seeds: %{{customdata[2]}}<extra></extra>"
    return go.Scatter(
        x=x, y=[json_float(v) for v in sub["mean"]], customdata=custom, mode="lines+markers" if len(x) < 30 else "lines", line=line,
        marker={"size": 5}, name=name, legendgroup=agent, showlegend=legend, meta={**meta, "role": "mean"}, hovertemplate=hover,
    )  # fmt: skip


def json_float(v: Any) -> float | None:
    """A float for JSON (NaN -> None, drawn as a gap)."""
    f = float(v)
    return None if f != f else f


def recall_figure(ds: Dataset, k: int, compare: str = "side") -> go.Figure:
    """True (solid) vs offline hold-out (dashed) recall@K over rounds per agent, 95% band across seeds."""
    return line_figure(
        ds,
        [[f"true_recall@{k}", f"offline_holdout_recall@{k}"]],
        f"True vs offline (hold-out) recall@{k} over rounds",
        ylabels=[f"recall@{k} (solid: true, dashed: hold-out)"],
        styles=("true", "hold-out"),
        compare=compare,
    )


def bias_figure(ds: Dataset, k: int, compare: str = "side") -> go.Figure:
    """The hold-out protocol's bias, estimate minus its truth on the same requests (0 = the offline metric tells the truth)."""
    return line_figure(ds, [[f"bias_holdout_recall@{k}"]], f"Hold-out bias@{k}: offline recall minus its truth", ref=0.0, compare=compare)


def offline_figure(ds: Dataset, k: int, compare: str = "side") -> go.Figure:
    """Each offline protocol's estimate (dashed) against its truth on the same requests (solid), one panel per protocol."""
    pairs = [(f"true_holdout_recall@{k}", f"offline_holdout_recall@{k}"), (f"true_shared_recall@{k}", f"offline_shared_recall@{k}")]
    pairs += [("true_clicks", name) for name in sorted(n for n in ds.names if n.startswith("ope_") and n.endswith("_clicks"))]
    panels = [list(p) for p in pairs if p[0] in ds.names and p[1] in ds.names]
    if not panels:
        raise MissingData("no offline protocol with its truth in these runs")
    labels = [f"{p[1].removesuffix(f'@{k}')} (dashed) vs truth" for p in panels]
    return line_figure(
        ds,
        panels,
        f"Offline estimates against their truth (K = {k} for the recalls)",
        ylabels=labels,
        styles=("truth", "estimate"),
        compare=compare,
    )


def concentration_figure(ds: Dataset, compare: str = "side") -> go.Figure:
    """Exposure Gini and the top-1% items' share of exposures over rounds."""
    return line_figure(ds, [["exposure_gini"], ["exposure_top1_share"]], "Exposure concentration over rounds", compare=compare)


def drift_figure(ds: Dataset, compare: str = "side") -> go.Figure:
    """Homogenisation of users' exposure sets and the drift of their true preferences over rounds."""
    return line_figure(ds, [["homogenisation"], ["preference_drift"]], "Homogenisation and preference drift over rounds", compare=compare)


def auc_figure(ds: Dataset, compare: str = "side") -> go.Figure:
    """Scale-free score separation (binned AUC, :mod:`dashboards.derived`) over rounds; 0.5 = scores do not separate."""
    return line_figure(ds, [["score_auc_unexposed"]], "Score separation on never-exposed items (AUC; 0.5 = none)", ref=0.5, compare=compare)


def metric_figure(ds: Dataset, metric: str, compare: str = "side") -> go.Figure:
    """Any one metric over rounds."""
    return line_figure(ds, [[metric]], f"{metric} over rounds", compare=compare)


def note_figure(text: str) -> go.Figure:
    """An empty figure that says why there is nothing to draw (the app shows it for missing data)."""
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 15})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return base_layout(fig, "", height=300)
