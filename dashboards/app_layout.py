"""The app's controls and run facts (Dash components); the callbacks are in :mod:`dashboards.app`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dash import dcc, html

from dashboards.app_state import Choices, metric_options
from dashboards.data import Dataset, Run
from dashboards.figures import agent_colors
from dashboards.runinfo import agent_progress, provenance

LABEL = {"fontWeight": 600, "display": "block", "marginBottom": "4px"}
ROW = {"display": "flex", "flexWrap": "wrap", "alignItems": "flex-start"}


def _control(label: str, component: Any, width: str = "220px") -> html.Div:
    return html.Div([html.Label(label, style=LABEL), component], style={"width": width, "marginRight": "20px", "marginBottom": "10px"})


def round_marks(lo: int, hi: int) -> dict[int, str]:
    """Slider marks: about ten rounds, always the first and the last (numbered from 1)."""
    step = max(1, -(-(hi - lo) // 8))  # at most about nine marks
    marks = {r: str(r) for r in range(lo, hi + 1, step) if r == hi or hi - r >= step / 2}  # no crowding at the end
    marks[hi] = str(hi)
    return marks


def controls(ds: Dataset, choices: Choices, views: Mapping[str, str], compares: Mapping[str, str]) -> html.Div:
    """Every control, at its default value (the URL callback then sets them from the query string)."""
    d = choices.defaults()
    definition = html.Div(id="metric-definition", style={"color": "#444", "fontSize": "13px", "maxWidth": "1100px", "marginBottom": "6px"})
    csv = html.Button("Download the data shown (CSV)", id="csv-button", style={"marginBottom": "6px"})
    return html.Div([_what_controls(ds, choices, views, d), _how_controls(choices, compares, d), definition, csv])


def _what_controls(ds: Dataset, choices: Choices, views: Mapping[str, str], d: dict[str, Any]) -> html.Div:
    """What is drawn: runs, agents, view and metric."""
    colors = agent_colors(ds.palette)
    agents = [{"label": html.Span(a, style={"color": colors[a], "fontWeight": 600}), "value": a, "search": a} for a in ds.palette]
    runs = dcc.Checklist(id="runs", options=[{"label": r, "value": r} for r in ds.runs], value=d["runs"],
                         inputStyle={"marginRight": "6px"}, labelStyle={"display": "block"})  # fmt: skip
    view = dcc.Dropdown(id="view", options=[{"label": v, "value": key} for key, v in views.items()], value=d["view"], clearable=False)
    metric = dcc.Dropdown(id="metric", options=metric_options(choices.metrics), value=d["metric"], clearable=False,
                          search_order="original", maxHeight=420)  # fmt: skip
    return html.Div([
        _control("Runs", runs, width="160px"),
        _control("Agents", dcc.Dropdown(id="agents", options=agents, value=d["agents"], multi=True, clearable=True,
                                        placeholder="choose agents"), width="260px"),
        _control("View", view, width="300px"),
        _control("Metric (view 'Any metric'; grouped, defined)", metric, width="400px"),
    ], style=ROW)  # fmt: skip


def _how_controls(choices: Choices, compares: Mapping[str, str], d: dict[str, Any]) -> html.Div:
    """How it is drawn: run comparison, K, the seed of the score view, the rounds window."""
    lo, hi = choices.rounds
    compare = dcc.RadioItems(id="compare", options=[{"label": v, "value": key} for key, v in compares.items()], value=d["compare"],
                             inline=True, inputStyle={"marginRight": "4px"}, labelStyle={"marginRight": "14px"})  # fmt: skip
    rounds = dcc.RangeSlider(id="rounds", min=lo, max=hi, step=1, value=d["rounds"], marks=round_marks(lo, hi), allowCross=False)
    return html.Div([
        _control("Compare runs", compare, width="430px"),
        _control("K", dcc.Dropdown(id="k", options=list(choices.ks), value=d["k"], clearable=False), width="90px"),
        _control("Seed (scores)", dcc.Dropdown(id="seed", options=list(choices.seeds), value=d["seed"], clearable=False), width="110px"),
        _control("Rounds", rounds, width="420px"),
    ], style=ROW)  # fmt: skip


FACTS = ("started", "wall time", "command", "git commit")


def run_facts(runs: Sequence[Run]) -> html.Table:
    """One row per run: name, description, date, wall time, command, commit and agents (with what is not finished)."""
    cell = {"padding": "2px 10px", "borderBottom": "1px solid #eee", "textAlign": "left", "verticalAlign": "top"}
    head = html.Tr([html.Th(h, style=cell) for h in ("run", "description", *FACTS, "agents")])
    rows = []
    for run in runs:
        facts = provenance(run)
        agents = ", ".join(f"{a} ({note})" if note else a for a, note in agent_progress(run).items())
        values = [
            html.B(run.label),
            run.description or "(no description)",
            *[html.Code(facts[k]) if k in ("command", "git commit") else facts[k] for k in FACTS],
            agents,
        ]
        rows.append(html.Tr([html.Td(v, style=cell) for v in values], **{"data-run": run.label}))  # type: ignore[arg-type]
    return html.Table(
        [html.Thead(head), html.Tbody(rows)],
        id="run-table",
        style={"fontSize": "13px", "borderCollapse": "collapse", "marginBottom": "8px"},
    )
