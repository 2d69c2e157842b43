"""Interactive Dash app over run directories: runs, agents, a view or any metric, K, seed, rounds, and how to compare runs.

``make_app(run_dirs)`` reads the runs (a one-line RunDirError if one is
missing or corrupt) and returns a ``dash.Dash`` app; ``serve`` runs it on
localhost. Every view is drawn by the same figure functions as the HTML
report, on the chosen subset of the data, so colours per agent are those of
the report. Several runs are drawn side by side, overlaid (runs told apart by
dash) or as the difference of the first two (Welch 95% interval). The metric
picker is grouped and defined (the definitions of ``cascadesim list metrics``),
with internals hidden; every control is kept in the URL; every 5 s the app
re-reads runs whose files changed, so a run in progress grows on screen; the
"CSV" button downloads the numbers drawn. Dash serves its JavaScript from
the installed package: the app works offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dash
import plotly.graph_objects as go
from dash import Input, Output, State, ctx, dcc, html

from dashboards.app_layout import controls, round_marks, run_facts
from dashboards.app_state import KEYS, Choices, LiveRuns, decode, encode
from dashboards.catalog import definition
from dashboards.data import Dataset, default_k
from dashboards.distributions import decile_figure, default_rounds, lorenz_figure
from dashboards.export import figure_frame, to_csv
from dashboards.figures import (
    COMPARE_MODES,
    MissingData,
    auc_figure,
    bias_figure,
    concentration_figure,
    drift_figure,
    metric_figure,
    note_figure,
    offline_figure,
    recall_figure,
)
from dashboards.report import PLOT_CONFIG
from dashboards.runinfo import k_note, pending_text, seed_counts, seeds_caption
from dashboards.scores import score_figure
from dashboards.tables import summary_table

VIEWS: dict[str, str] = {
    "recall": "True vs offline (hold-out) recall@K",
    "bias": "Hold-out bias@K (estimate − its truth)",
    "offline": "Offline vs truth, every protocol",
    "concentration": "Exposure Gini and top-1% share",
    "lorenz": "Concentration curves: top shares (window start, middle, end)",
    "deciles": "Exposure share by popularity decile",
    "drift": "Homogenisation and preference drift",
    "auc": "Score separation across agents (AUC)",
    "scores": "Scores on unexposed positives vs negatives (window end)",
    "summary": "Summary table (last round of the window)",
    "metric": "Any metric (chosen under Metric)",
}
LINE_VIEWS = frozenset({"recall", "bias", "offline", "concentration", "drift", "auc", "metric"})
GRAPH_CONFIG = {key: value for key, value in PLOT_CONFIG.items() if key != "responsive"}
REFRESH_MS = 5000
CONTROLS = [Output(key, "value") for key in KEYS]


def render(
    ds: Dataset,
    view: str,
    runs: Sequence[str] | None,
    agents: Sequence[str] | None,
    metric: str | None = None,
    k: int | None = None,
    rounds: Sequence[int] | None = None,
    seed: int | None = None,
    compare: str = "side",
) -> tuple[go.Figure, str]:
    """The figure of one choice of controls, and a note ('' when there is nothing to say)."""
    window = (int(rounds[0]), int(rounds[1])) if rounds else None
    sub = ds.subset(runs, agents, window)
    if sub.metrics.empty or not sub.runs or not sub.agents:
        note = "Nothing to draw: choose at least one run and one agent (and a round window with data)."
        return note_figure(note), note
    k = k if k is not None else default_k(sub.names, ds.k_retrieve)
    compare = compare if view in LINE_VIEWS else "side"
    try:
        fig = _build(sub, view, metric, k, window, seed, compare)
    except MissingData as err:
        return note_figure(str(err)), str(err)
    return fig, ""


def _build(
    ds: Dataset, view: str, metric: str | None, k: int | None, window: tuple[int, int] | None, seed: int | None, compare: str
) -> go.Figure:
    if view in ("recall", "bias", "offline") and k is None:
        raise MissingData("no true_recall@K and offline_holdout_recall@K pair in these runs")
    lines = {
        "recall": lambda: recall_figure(ds, int(k or 0), compare),
        "bias": lambda: bias_figure(ds, int(k or 0), compare),
        "offline": lambda: offline_figure(ds, int(k or 0), compare),
        "concentration": lambda: concentration_figure(ds, compare),
        "drift": lambda: drift_figure(ds, compare),
        "auc": lambda: auc_figure(ds, compare),
        "metric": lambda: metric_figure(ds, metric or "exposure_gini", compare),
    }
    if view in lines:
        return lines[view]()
    if view == "lorenz":
        return lorenz_figure(ds, default_rounds(ds.rounds))
    if view == "deciles":
        return decile_figure(ds)
    if view == "scores":
        end = window[1] if window is not None and window[1] < max(ds.rounds) else None
        return score_figure(ds, round=end, seed=seed)
    if view == "summary":
        return summary_table(ds, k)
    raise MissingData(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")


def caption(ds: Dataset, view: str, k: int | None, compare: str, runs: Sequence[str] | None) -> str:
    """What the figure's lines and bands are (plain about one seed), why this K, and how runs are compared."""
    sub = ds.subset(runs)
    parts = []
    if view in ("recall", "bias", "offline", "summary"):
        parts.append(k_note(k, ds.k_retrieve, chosen=k != default_k(ds.names, ds.k_retrieve)))
    if compare != "side" and view not in LINE_VIEWS:
        parts.append("Overlay and difference apply to the figures over rounds; this view shows runs side by side.")
    if compare == "diff" and view in LINE_VIEWS:
        parts.append(
            "Lines: the first chosen run's mean over seeds minus the second's, per agent and round; bands: Welch 95% "
            "intervals (none where a run has a single seed), clipped to the possible range of a difference."
        )
    elif view in LINE_VIEWS or view == "lorenz":
        parts.append(seeds_caption(seed_counts(sub.metrics), bands=view != "lorenz"))
    return " ".join(p for p in parts if p)


def make_app(run_dirs: Sequence[str | Path]) -> dash.Dash:
    """A Dash app over ``run_dirs`` (bad directories raise RunDirError); the runs are re-read when they change.

    The layout is built on each page load from the runs as they are then (a reload shows what is on disk now).
    """
    live = LiveRuns(run_dirs)
    app = dash.Dash(__name__, title="cascadesim dashboard", serve_locally=True, update_title="")
    app.layout = lambda: page(live)
    _state_callbacks(app, live)
    _view_callbacks(app, live)
    return app


def page(live: LiveRuns) -> html.Div:
    """The whole page over the runs as they are on disk now."""
    live.refresh()
    choices = Choices.of(live.ds, list(VIEWS), list(COMPARE_MODES))
    return html.Div(
        [
            dcc.Location(id="url", refresh=False),
            dcc.Interval(id="tick", interval=REFRESH_MS),
            dcc.Store(id="version", data=live.version),
            dcc.Download(id="csv"),
            html.H1("cascadesim dashboard", style={"fontSize": "24px", "marginBottom": "4px"}),
            html.Div(run_facts(live.runs), id="run-facts", style={"overflowX": "auto"}),
            html.Div(pending_text(live.runs), id="progress", style={"color": "#8a5a00"}),
            controls(live.ds, choices, VIEWS, COMPARE_MODES),
            html.Div(id="note", style={"color": "#8a5a00", "minHeight": "1.2em"}),
            html.Div(id="caption", style={"color": "#333", "fontSize": "14px", "minHeight": "1.2em"}),
            dcc.Graph(id="figure", config=GRAPH_CONFIG, style={"minHeight": "480px"}),  # type: ignore[arg-type]
        ],
        style={"fontFamily": "Helvetica, Arial, sans-serif", "maxWidth": "1400px", "margin": "0 auto", "padding": "0 24px"},
    )


def _state_callbacks(app: dash.Dash, live: LiveRuns) -> None:
    """URL <-> controls, and the periodic re-read of the runs."""

    @app.callback(Output("url", "search"), *CONTROLS, Input("url", "search"), *[Input(key, "value") for key in KEYS])
    def _sync(search: str | None, *values: Any) -> tuple[Any, ...]:
        trigger = ctx.triggered_id
        if trigger is None or trigger == "url":  # page load, back / forward: the URL sets the controls
            state = decode(search, Choices.of(live.ds, list(VIEWS), list(COMPARE_MODES)))  # the runs as they are now
            return (dash.no_update, *[state[key] for key in KEYS])
        state = dict(zip(KEYS, values, strict=True))
        if trigger == "metric" and state["view"] != "metric":  # picking a metric shows it
            state["view"] = "metric"
            return (encode(state), *[state[key] if key == "view" else dash.no_update for key in KEYS])
        return (encode(state), *[dash.no_update] * len(KEYS))

    @app.callback(
        Output("version", "data"),
        Output("rounds", "max"),
        Output("rounds", "marks"),
        Output("rounds", "value", allow_duplicate=True),
        Output("run-facts", "children"),
        Output("progress", "children"),
        Output("seed", "options"),
        Input("tick", "n_intervals"),
        State("rounds", "value"),
        State("rounds", "max"),
        prevent_initial_call=True,
    )
    def _refresh(_: int, window: list[int], old_max: int) -> tuple[Any, ...]:
        if not live.refresh():
            return (dash.no_update,) * 7
        lo, hi = min(live.ds.rounds), max(live.ds.rounds)
        grow = [window[0], hi] if window and window[1] >= old_max else dash.no_update  # a window at the end follows new rounds
        return live.version, hi, round_marks(lo, hi), grow, run_facts(live.runs), pending_text(live.runs), live.ds.seeds


def _view_callbacks(app: dash.Dash, live: LiveRuns) -> None:
    """The figure, the metric's definition and the CSV download."""

    @app.callback(
        Output("figure", "figure"),
        Output("note", "children"),
        Output("caption", "children"),
        *[Input(key, "value") for key in KEYS],
        Input("version", "data"),
    )
    def _draw(
        view: str, metric: str, runs: list[str], agents: list[str], k: int | None, seed: int, rounds: list[int], compare: str, _version: str
    ) -> tuple[go.Figure, str, str]:
        fig, note = render(live.ds, view, runs, agents, metric, k, rounds, seed, compare or "side")
        return fig, note, caption(live.ds, view, k, compare or "side", runs) if not note else ""

    @app.callback(Output("metric-definition", "children"), Input("metric", "value"))
    def _define(metric: str | None) -> str:
        return f"{metric}: {definition(metric) or '(no definition recorded)'}" if metric else ""

    @app.callback(Output("csv", "data"), Input("csv-button", "n_clicks"), *[State(key, "value") for key in KEYS], prevent_initial_call=True)
    def _csv(
        _: int, view: str, metric: str, runs: list[str], agents: list[str], k: int | None, seed: int, rounds: list[int], compare: str
    ) -> dict[str, Any]:
        fig, _note = render(live.ds, view, runs, agents, metric, k, rounds, seed, compare or "side")
        name = f"cascadesim-{view}{'-' + metric if view == 'metric' and metric else ''}{'-' + compare if compare != 'side' else ''}.csv"
        return dcc.send_string(to_csv(figure_frame(fig)), name)


def serve(run_dirs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8050, debug: bool = False) -> None:
    """Serve the app on ``http://host:port`` until interrupted."""
    make_app(run_dirs).run(host=host, port=port, debug=debug)
