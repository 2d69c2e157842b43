"""Distribution figures and the summary table: Lorenz curves, popularity deciles, DAMCAR's score distributions.

They read the per-round distribution metrics a run writes:

* ``exposure_lorenz@p`` (p = 0.1..0.9): cumulative exposure share of the
  least-exposed share p of live items; the curve is closed with (0, 0) and (1, 1);
* ``exposure_share_decile@d`` (d = 1..10): share of the round's exposures going
  to popularity decile d of live items (10 = most popular);
* ``score_hist_pos@b`` / ``score_hist_neg@b`` (b = 0..19) with ``score_hist_lo``
  and ``score_hist_hi``: shares of unexposed true positives / negatives whose
  agent score falls in bin b of equal-width bins over [lo, hi].

Score bins differ between seeds (each round's range is its own), so the score
figure shows one seed's histograms exactly rather than averaging incompatible
bins. Missing metrics raise :class:`dashboards.figures.MissingData`.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from dashboards.data import Dataset, family, last_round_summary, seed_stats
from dashboards.figures import ROUND_AXIS, MissingData, agent_colors, base_layout, facets, json_float, metric_label, rgba, round_ticks


NEG_COLOR = "#666666"  # negatives are the reference class: grey and hatched under every agent's positives


def default_rounds(rounds: Sequence[int], n: int = 3) -> list[int]:
    """Up to ``n`` rounds spread over the run: first, middle, last."""
    rs = sorted(set(rounds))
    if len(rs) <= n:
        return rs
    return sorted({rs[round(i * (len(rs) - 1) / (n - 1))] for i in range(n)})


def lorenz_figure(ds: Dataset, rounds: Sequence[int] | None = None) -> go.Figure:
    """Lorenz curves of the round's exposures over live items, one panel per chosen round (rows: runs).

    Without ``rounds``, each run shows its own first, middle and last round.
    """
    fam = family(ds.names, "exposure_lorenz")
    if not fam:
        raise MissingData("Lorenz curves: these runs hold no exposure_lorenz@p metrics (written by newer cascadesim runs)")
    m = ds.metrics
    per_run = {run: sorted(set(rounds)) if rounds else default_rounds(m.loc[m["run"] == run, "round"].tolist()) for run in ds.runs}
    stats = seed_stats(m[m["round"].isin({r for rs in per_run.values() for r in rs})], fam.values())
    if stats.empty:
        raise MissingData(f"Lorenz curves: no exposure_lorenz@p values at rounds {sorted(set(rounds or []))}")
    colors = agent_colors(ds.palette)
    cols = max(len(rs) for rs in per_run.values())
    titles = [(f"{run} · round {rs[j]}" if len(ds.runs) > 1 else f"round {rs[j]}") if j < len(rs) else ""
              for run, rs in per_run.items() for j in range(cols)]
    fig = facets(len(ds.runs), cols, titles)
    param = {name: p for p, name in fam.items()}
    groups = {key: sub for key, sub in stats.groupby(["run", "agent", "round"], sort=False)}
    shown: set[str] = set()
    for i, run in enumerate(ds.runs, start=1):
        for j, rnd in enumerate(per_run[run], start=1):
            fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"color": "#999", "dash": "dot", "width": 1}, row=i, col=j)
            for agent in ds.agents:
                sub = groups.get((run, agent, rnd))
                if sub is None:
                    continue
                sub = sub.assign(p=sub["metric"].map(param)).sort_values("p")
                custom = [[json_float(lo), json_float(hi), int(n)] for lo, hi, n in zip(sub["lo"], sub["hi"], sub["n"])]
                fig.add_trace(go.Scatter(
                    x=[0.0, *[float(p) for p in sub["p"]], 1.0], y=[0.0, *[json_float(v) for v in sub["mean"]], 1.0],
                    customdata=[[None, None, None], *custom, [None, None, None]], mode="lines+markers",
                    line={"color": colors[agent], "width": 2}, marker={"size": 5}, name=agent, legendgroup=agent,
                    showlegend=agent not in shown, meta={"run": run, "agent": agent, "round": int(rnd), "role": "mean"},
                    hovertemplate=(f"<b>{agent}</b> ({run}), round {rnd}<br>least-exposed %{{x:.0%}} of items get %{{y:.4%}} of exposures"
                                   "<br>95% CI [%{customdata[0]:.4%}, %{customdata[1]:.4%}], seeds: %{customdata[2]}<extra></extra>")),
                    row=i, col=j)
                shown.add(agent)
    fig.update_xaxes(title_text="share of live items (least exposed first)", range=[0, 1], row=len(ds.runs))
    fig.update_yaxes(title_text="cumulative share of exposures", range=[0, 1], col=1)
    return base_layout(fig, "Lorenz curves of exposure (dotted: perfect equality)", rows=len(ds.runs))


def decile_figure(ds: Dataset) -> go.Figure:
    """Share of exposures by popularity decile over rounds: one heatmap per agent (rows: runs), one colour scale."""
    fam = family(ds.names, "exposure_share_decile")
    if not fam:
        raise MissingData("Popularity deciles: these runs hold no exposure_share_decile@d metrics (written by newer cascadesim runs)")
    stats = seed_stats(ds.metrics, fam.values())
    colors = agent_colors(ds.palette)
    decile = {name: int(d) for d, name in fam.items()}
    titles = [f"{run} · {a}" if len(ds.runs) > 1 else a for run in ds.runs for a in ds.agents]
    fig = facets(len(ds.runs), len(ds.agents), titles)
    for ann, (_, agent) in zip(fig.layout.annotations, [(r, a) for r in ds.runs for a in ds.agents]):
        ann.font = {"color": colors[agent], "size": 14}
    groups = {key: sub for key, sub in stats.groupby(["run", "agent"], sort=False)}
    for i, run in enumerate(ds.runs, start=1):
        for j, agent in enumerate(ds.agents, start=1):
            sub = groups.get((run, agent))
            if sub is None:
                continue
            sub = sub.assign(d=sub["metric"].map(decile))
            z = sub.pivot(index="d", columns="round", values="mean").sort_index()
            n = sub.pivot(index="d", columns="round", values="n").reindex_like(z)
            fig.add_trace(go.Heatmap(
                x=[int(r) for r in z.columns], y=[int(d) for d in z.index], z=[[json_float(v) for v in row] for row in z.to_numpy()],
                customdata=[[None if v != v else int(v) for v in row] for row in n.to_numpy()], coloraxis="coloraxis", name=agent,
                meta={"run": run, "agent": agent, "role": "heatmap"},
                hovertemplate=(f"<b>{agent}</b> ({run})<br>round %{{x}}, decile %{{y}}<br>share of exposures %{{z:.4%}}"
                               "<br>seeds: %{customdata}<extra></extra>")), row=i, col=j)
    colorbar = {"title": {"text": "share of<br>exposures"}, "tickformat": ".0%"}
    fig.update_layout(coloraxis={"colorscale": "Viridis", "cmin": 0, "colorbar": colorbar})
    fig.update_yaxes(title_text="popularity decile (10 = most popular)", col=1, dtick=1)
    fig.update_xaxes(title_text=ROUND_AXIS, row=len(ds.runs))
    fig.update_xaxes(**round_ticks(stats["round"]))
    return base_layout(fig, "Exposure share by popularity decile over rounds (mean over seeds)", rows=len(ds.runs))


def score_figure(ds: Dataset, round: int | None = None, seed: int | None = None) -> go.Figure:
    """DAMCAR's Figure 5, exact: agent scores on never-exposed true positives vs negatives at one round and seed."""
    pos, neg = family(ds.names, "score_hist_pos"), family(ds.names, "score_hist_neg")
    if not pos or not neg or not {"score_hist_lo", "score_hist_hi"} <= ds.names:
        raise MissingData("Score distributions: these runs hold no score_hist_* metrics (written by newer cascadesim runs)")
    m = ds.metrics
    seed = min(ds.seeds) if seed is None else int(seed)
    m = m[m["seed"] == seed]
    rnd = {run: (int(round) if round is not None else int(sub["round"].max())) for run, sub in m.groupby("run")}
    wanted = {*pos.values(), *neg.values(), "score_hist_lo", "score_hist_hi", "score_unexposed_true_pos", "score_unexposed_true_neg"}
    m = m[m["metric"].isin(wanted) & (m["round"] == m["run"].map(rnd))]
    if m.empty:
        raise MissingData(f"Score distributions: no score_hist_* values for seed {seed} at round {round}")
    values = {(r, a, k): v for r, a, k, v in zip(m["run"], m["agent"], m["metric"], m["value"])}
    colors = agent_colors(ds.palette)
    titles = [f"{run} · {a}" if len(ds.runs) > 1 else a for run in ds.runs for a in ds.agents]
    fig = facets(len(ds.runs), len(ds.agents), titles, shared=False)
    for ann, agent in zip(fig.layout.annotations, [a for _ in ds.runs for a in ds.agents]):
        ann.font = {"color": colors[agent], "size": 14}
    bins = len(pos)
    shown: set[tuple[str, str]] = set()
    for i, run in enumerate(ds.runs, start=1):
        for j, agent in enumerate(ds.agents, start=1):
            lo, hi = values.get((run, agent, "score_hist_lo")), values.get((run, agent, "score_hist_hi"))
            if lo is None or hi is None:
                continue
            width = (hi - lo) / bins
            edges = [[lo + b * width, lo + (b + 1) * width] for b in range(bins)]
            centres = [lo + (b + 0.5) * width for b in range(bins)]
            for role, fam, label in (("neg", neg, "unexposed negatives"), ("pos", pos, "unexposed true positives")):
                y = [json_float(values.get((run, agent, name), float("nan"))) for name in fam.values()]
                edge = colors[agent] if role == "pos" else NEG_COLOR
                marker = {"color": rgba(edge, 0.6 if role == "pos" else 0.25), "line": {"color": edge, "width": 1},
                          "pattern": {"shape": "/" if role == "neg" else "", "fgcolor": NEG_COLOR}}
                fig.add_trace(go.Bar(
                    x=centres, y=y, width=[width] * bins, customdata=edges, name=f"{agent} · {label}", legendgroup=agent,
                    showlegend=(agent, role) not in shown, marker=marker,
                    meta={"run": run, "agent": agent, "seed": seed, "round": rnd[run] if run in rnd else None, "role": role},
                    hovertemplate=(f"<b>{agent}</b> ({run}) · {label}<br>score in [%{{customdata[0]:.4g}}, %{{customdata[1]:.4g}})"
                                   "<br>share %{y:.4%}<extra></extra>")), row=i, col=j)
                shown.add((agent, role))
            for name, dash in (("score_unexposed_true_pos", "solid"), ("score_unexposed_true_neg", "dot")):
                if (run, agent, name) in values:
                    color = colors[agent] if name.endswith("pos") else NEG_COLOR
                    fig.add_vline(x=values[(run, agent, name)], line={"color": color, "dash": dash, "width": 1.5}, row=i, col=j)
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title_text="agent retrieval score", row=len(ds.runs))
    fig.update_yaxes(tickformat=".0%")
    fig.update_yaxes(title_text="share of unexposed items", col=1)
    at = f"round {round}" if round is not None else "last round"
    return base_layout(fig, f"Scores on never-exposed true positives vs negatives (seed {seed}, {at}; lines: means)", rows=len(ds.runs))


def summary_metrics(k: int | None) -> list[str]:
    """The metrics of the summary table."""
    recall = [f"true_recall@{k}", f"logged_recall@{k}", f"evaluation_bias@{k}"] if k is not None else []
    return [*recall, "exposure_gini", "exposure_top1_share", "homogenisation", "preference_drift", "score_gap_unexposed"]


def interval_text(mean: float, lo: float, hi: float, sep: str = " ") -> str:
    """``mean [lo, hi]`` (or ``mean`` without an interval)."""
    if mean != mean:
        return "–"
    return f"{mean:.4g}" if lo != lo or hi != hi else f"{mean:.4g}{sep}[{lo:.4g}, {hi:.4g}]"


def summary_table(ds: Dataset, k: int | None) -> go.Figure:
    """Per run and agent at the run's last round: mean over seeds [95% t-interval] of the headline metrics."""
    names = [n for n in summary_metrics(k) if n in ds.names]
    stats = last_round_summary(ds.metrics, names)
    if stats.empty:
        raise MissingData("Summary: none of the headline metrics is in these runs")
    colors = agent_colors(ds.palette)
    cells = {key: sub for key, sub in stats.groupby(["run", "agent"], sort=False)}
    rows = [(run, agent) for run in ds.runs for agent in ds.agents if (run, agent) in cells]
    columns: list[list[str]] = [[r for r, _ in rows], [a for _, a in rows]]
    columns.append([str(int(cells[key]["round"].max())) for key in rows])
    columns.append([str(int(cells[key]["n"].max())) for key in rows])
    for name in names:
        col = []
        for key in rows:
            hit = cells[key][cells[key]["metric"] == name]
            col.append(interval_text(*(float(hit[c].iloc[0]) for c in ("mean", "lo", "hi")), sep="<br>") if len(hit) else "–")
        columns.append(col)
    header = ["run", "agent", "round", "seeds", *[metric_label(n) for n in names]]
    font = [["#222"] * len(rows), [colors[a] for _, a in rows], *[["#222"] * len(rows)] * (len(columns) - 2)]
    fig = go.Figure(go.Table(
        header={"values": [f"<b>{h}</b>" for h in header], "fill": {"color": "#f0f0f0"}, "align": "left"},
        cells={"values": columns, "font": {"color": font}, "align": "left", "height": 44},
        columnwidth=[1.2, 1, 0.7, 0.7, *[1.6] * len(names)], meta={"role": "summary", "metrics": names}))
    base_layout(fig, "Last round per agent: mean over seeds [95% t-interval]", height=260 + 46 * len(rows))
    return fig
