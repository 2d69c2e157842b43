"""Interactive Dash app over run directories: choose runs, agents, a view or metric, K, a seed and a round window.

``make_app(run_dirs)`` reads the runs once (a one-line RunDirError if one is
missing or corrupt) and returns a ``dash.Dash`` app; ``serve`` runs it on
localhost. Every view is drawn by the same figure functions as the HTML
report, on the chosen subset of the data, so colours per agent are those of
the report. Several runs are drawn side by side, one column per run.
Dash serves its JavaScript from the installed package: the app works offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dash
import plotly.graph_objects as go
from dash import Input, Output, dcc, html

from dashboards.data import Dataset, default_k, read_runs, recall_ks
from dashboards.distributions import decile_figure, default_rounds, lorenz_figure, score_figure, summary_table
from dashboards.figures import (
    MissingData,
    agent_colors,
    bias_figure,
    concentration_figure,
    drift_figure,
    metric_figure,
    note_figure,
    recall_figure,
)

VIEWS: dict[str, str] = {
    "recall": "True vs logged recall@K",
    "bias": "Evaluation bias@K (logged − true)",
    "concentration": "Exposure Gini and top-1% share",
    "lorenz": "Lorenz curves of exposure (window start, middle, end)",
    "deciles": "Exposure share by popularity decile",
    "drift": "Homogenisation and preference drift",
    "scores": "Scores on unexposed positives vs negatives (window end)",
    "summary": "Summary table (last round of the window)",
    "metric": "Any metric over rounds",
}
GRAPH_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "svg", "scale": 2}}
DEFAULT_METRIC = "exposure_gini"


def render(ds: Dataset, view: str, runs: Sequence[str] | None, agents: Sequence[str] | None, metric: str | None = None,
           k: int | None = None, rounds: Sequence[int] | None = None, seed: int | None = None) -> tuple[go.Figure, str]:
    """The figure of one choice of controls, and a note ('' when there is nothing to say)."""
    window = (int(rounds[0]), int(rounds[1])) if rounds else None
    sub = ds.subset(runs, agents, window)
    if sub.metrics.empty or not sub.runs or not sub.agents:
        note = "Nothing to draw: choose at least one run and one agent (and a round window with data)."
        return note_figure(note), note
    k = k if k is not None else default_k(sub.names)
    try:
        fig = _build(sub, view, metric, k, window, seed)
    except MissingData as err:
        return note_figure(str(err)), str(err)
    return fig, ""


def _build(ds: Dataset, view: str, metric: str | None, k: int | None, window: tuple[int, int] | None, seed: int | None) -> go.Figure:
    if view in ("recall", "bias") and k is None:
        raise MissingData("no true_recall@K and logged_recall@K pair in these runs")
    if view == "recall":
        return recall_figure(ds, int(k))  # type: ignore[arg-type]
    if view == "bias":
        return bias_figure(ds, int(k))  # type: ignore[arg-type]
    if view == "concentration":
        return concentration_figure(ds)
    if view == "lorenz":
        return lorenz_figure(ds, default_rounds(ds.rounds))
    if view == "deciles":
        return decile_figure(ds)
    if view == "drift":
        return drift_figure(ds)
    if view == "scores":
        end = window[1] if window is not None and window[1] < max(ds.rounds) else None
        return score_figure(ds, round=end, seed=seed)
    if view == "summary":
        return summary_table(ds, k)
    if view == "metric":
        return metric_figure(ds, metric or DEFAULT_METRIC)
    raise MissingData(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")


def _control(label: str, component: Any, width: str = "220px") -> html.Div:
    return html.Div([html.Label(label, style={"fontWeight": 600, "display": "block", "marginBottom": "4px"}), component],
                    style={"minWidth": width, "marginRight": "24px", "marginBottom": "12px"})


def _round_marks(lo: int, hi: int) -> dict[int, str]:
    step = max(1, (hi - lo) // 10)
    marks = {r: str(r) for r in range(lo, hi + 1, step)}
    marks[hi] = str(hi)
    return marks


def _run_details(ds: Dataset, descriptions: dict[str, str], paths: dict[str, str]) -> html.Details:
    items = [html.Li([html.B(run), f" ({paths[run]}): ", descriptions[run] or "(no description)"]) for run in ds.runs]
    return html.Details([html.Summary("Runs and scenario descriptions"), html.Ul(items)], style={"marginTop": "16px"})


def make_app(run_dirs: Sequence[str | Path]) -> dash.Dash:
    """A Dash app over ``run_dirs`` (read once; bad directories raise RunDirError)."""
    runs = read_runs(list(run_dirs))
    ds = Dataset.from_runs(runs)
    colors = agent_colors(ds.palette)
    names = sorted(ds.names)
    ks = recall_ks(names)
    lo, hi = min(ds.rounds), max(ds.rounds)
    app = dash.Dash(__name__, title="cascadesim dashboard", serve_locally=True, update_title=None)
    controls = html.Div([
        _control("Runs", dcc.Checklist(id="runs", options=[{"label": r, "value": r} for r in ds.runs], value=list(ds.runs),
                                       inputStyle={"marginRight": "6px"}, labelStyle={"display": "block"})),
        _control("Agents", dcc.Dropdown(
            id="agents", value=list(ds.agents), multi=True, clearable=True, placeholder="choose agents",
            options=[{"label": html.Span(a, style={"color": colors[a], "fontWeight": 600}), "value": a, "search": a} for a in ds.agents]),
            width="280px"),
        _control("View", dcc.Dropdown(id="view", options=[{"label": v, "value": key} for key, v in VIEWS.items()], value="recall",
                                      clearable=False), width="340px"),
        _control("Metric (view 'Any metric')", dcc.Dropdown(id="metric", options=names, clearable=False,
                                                           value=DEFAULT_METRIC if DEFAULT_METRIC in names else names[0]), width="280px"),
        _control("K (recall, bias, summary)", dcc.Dropdown(id="k", options=ks, value=default_k(names), clearable=False), width="120px"),
        _control("Seed (scores)", dcc.Dropdown(id="seed", options=ds.seeds, value=ds.seeds[0], clearable=False), width="120px"),
    ], style={"display": "flex", "flexWrap": "wrap", "alignItems": "flex-start"})
    window = html.Div([html.Label("Rounds", style={"fontWeight": 600}),
                       dcc.RangeSlider(id="rounds", min=lo, max=hi, step=1, value=[lo, hi], marks=_round_marks(lo, hi), allowCross=False)],
                      style={"maxWidth": "900px", "marginBottom": "12px"})
    app.layout = html.Div([
        html.H1("cascadesim dashboard", style={"fontSize": "24px"}),
        controls, window,
        html.Div(id="note", style={"color": "#8a5a00", "minHeight": "1.2em"}),
        dcc.Graph(id="figure", config=GRAPH_CONFIG, style={"minHeight": "480px"}),
        _run_details(ds, {r.label: r.description for r in runs}, {r.label: str(r.path) for r in runs}),
    ], style={"fontFamily": "Helvetica, Arial, sans-serif", "maxWidth": "1400px", "margin": "0 auto", "padding": "0 24px"})

    @app.callback(Output("figure", "figure"), Output("note", "children"), Input("view", "value"), Input("runs", "value"),
                  Input("agents", "value"), Input("metric", "value"), Input("k", "value"), Input("rounds", "value"), Input("seed", "value"))
    def _update(view: str, runs_: list[str], agents_: list[str], metric: str, k: int | None, rounds: list[int],
                seed: int) -> tuple[go.Figure, str]:
        return render(ds, view, runs_, agents_, metric, k, rounds, seed)

    return app


def serve(run_dirs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8050, debug: bool = False) -> None:
    """Serve the app on ``http://host:port`` until interrupted."""
    make_app(run_dirs).run(host=host, port=port, debug=debug)
