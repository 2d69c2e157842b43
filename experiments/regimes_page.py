"""The regime page (issue 16 item 5): "when does debiasing pay?", generated from a sweep of ``experiments/regimes.toml``.

Reads the sweep's merged long-form table, keeps the metrics the page uses in ``docs/results/regimes.parquet`` (the
page's numbers are then read back from that file), and writes ``docs/results/regimes.md`` with its heatmap
(``regimes-heatmap.png`` and an interactive ``regimes.html``)::

    python experiments/regimes_page.py runs/regimes                       # after the sweep
    python experiments/regimes_page.py --from-parquet docs/results/regimes.parquet   # regenerate the page only

Statistics: every cell of a seed shares its world and request stream (common random numbers), so each method is
compared with ``bc`` by the paired difference of the per-seed time averages over the last rounds; 95% t-intervals,
two-sided paired t-tests Holm-adjusted across every method x regime comparison of the headline metric, and the
minimal detectable effect at 80% power for the seeds used.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from offline_evaluation_page import fmt, fmt_plain, holm, interval, mde, table  # noqa: E402
from offline_evaluation_page import paired_p as _t_test_p  # noqa: E402

REFERENCES = ("oracle", "random", "popular", "bc")
BASELINE = "bc"
USER_FACING = ("logged_ctr", "logged_finish_rate", "slate_utility")
DIAGNOSTICS = ("fit_prop_logcorr", "fit_clipped_share", "fit_clip_share_a", "fit_clip_share_b", "fit_weight_p99", "fit_weight_max")
AXES = {
    "world.n_items": "catalogue size",
    "world.conformity_mean": "conformity",
    "user_model.position_bias": "position bias",
    "cascade.exploration_share": "exploration share",
}
KEEP = ("scenario", "agent", "seed", "round", "metric", "value")
OUT_DIR = ROOT / "docs" / "results"


@dataclass(frozen=True)
class Regime:
    """One grid point: the axis it varies (``base`` for the base point) and the label shown."""

    point: int
    axis: str
    value: float
    label: str


# --- data ----------------------------------------------------------------------------------------------------------


def headline_metric(metrics: pd.DataFrame) -> str:
    """``true_recall@K`` at the largest K present (the spec keeps one K below K_r)."""
    ks = sorted(int(m.split("@")[1]) for m in metrics.metric.unique() if m.startswith("true_recall@"))
    if not ks:
        raise SystemExit("error: results: no true_recall@K metric in the sweep's table")
    return f"true_recall@{ks[-1]}"


def slim(results: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """The rows the page reads, with the grid point as an integer column ``point`` (keeps the parquet small)."""
    head = headline_metric(results)
    keep = results[results.metric.isin([head, *USER_FACING, *DIAGNOSTICS])].copy()
    points = keep[fields].drop_duplicates().reset_index(drop=True)
    keep = keep.merge(points.reset_index().rename(columns={"index": "point"}), on=fields, how="left")
    return keep[["point", *fields, *KEEP]].sort_values(["point", "agent", "seed", "round", "metric"]).reset_index(drop=True)


def regimes(frame: pd.DataFrame, fields: list[str], base: dict[str, float]) -> list[Regime]:
    """Each point named by the one field it changes from the base point (``base`` when none)."""
    out = []
    for _, row in frame[["point", *fields]].drop_duplicates().sort_values("point").iterrows():
        moved = [f for f in fields if not math.isclose(float(row[f]), float(base[f]))]
        if len(moved) > 1:
            raise SystemExit(f"error: points: point {int(row.point)} changes {', '.join(moved)}; the page expects one axis at a time")
        axis = moved[0] if moved else "base"
        value = float(row[axis]) if moved else math.nan
        out.append(Regime(int(row.point), axis, value, "base" if axis == "base" else f"{AXES.get(axis, axis)} = {value:g}"))
    return out


def time_average(frame: pd.DataFrame, window: int) -> pd.DataFrame:
    """Per (point, agent, seed, metric) the mean over the last ``window`` rounds."""
    top = int(frame["round"].max())
    last = frame[frame["round"] > top - window]
    return last.groupby(["point", "agent", "seed", "metric"], sort=False).value.mean().reset_index()


def paired_by_seed(avg: pd.DataFrame, point: int, agent: str, metric: str) -> pd.Series:
    """``agent - bc`` per seed at one point (seeds where both ran), indexed by seed."""
    sub = avg[(avg.point == point) & (avg.metric == metric) & avg.agent.isin([agent, BASELINE])]
    wide = sub.pivot_table(index="seed", columns="agent", values="value").dropna()
    if agent not in wide or BASELINE not in wide:
        return pd.Series(dtype=float)
    return wide[agent] - wide[BASELINE]


def paired(avg: pd.DataFrame, point: int, agent: str, metric: str) -> np.ndarray:
    """``agent - bc`` per seed at one point (seeds where both ran)."""
    return paired_by_seed(avg, point, agent, metric).to_numpy()


def level(avg: pd.DataFrame, point: int, agent: str, metric: str) -> tuple[float, float]:
    return interval(avg[(avg.point == point) & (avg.agent == agent) & (avg.metric == metric)].value.tolist())[:2]


# --- statistics ----------------------------------------------------------------------------------------------------


def paired_p(diff: list[float]) -> float:
    """Two-sided paired t-test p, in [0, 1]; NaN for a (numerically) constant difference, where the t-test is undefined.

    The shared t CDF integrates the density numerically, which overshoots 1 for a huge t (a difference constant up to
    rounding), so such cases are caught here rather than reported as a negative p.
    """
    xs = np.asarray([d for d in diff if np.isfinite(d)], dtype=float)
    if len(xs) < 2 or xs.std(ddof=1) <= 1e-9 * max(1.0, float(np.abs(xs).max())):
        return math.nan
    return float(min(1.0, max(0.0, _t_test_p(xs.tolist()))))


def comparisons(avg: pd.DataFrame, methods: list[str], points: list[int], head: str) -> pd.DataFrame:
    """One row per (point, method): the paired difference vs bc on every metric, p, MDE and the oracle-random gap."""
    rows = []
    for point in points:
        gap = level(avg, point, "oracle", head)[0] - level(avg, point, "random", head)[0]
        bc_sd = interval(avg[(avg.point == point) & (avg.agent == BASELINE) & (avg.metric == head)].value.tolist())[2]
        for agent in methods:
            d = paired(avg, point, agent, head)
            mean, half, sd = interval(d.tolist())
            row = {"point": point, "agent": agent, "n": len(d), "diff": mean, "half": half, "sd": sd,
                   "p": paired_p(d.tolist()), "mde": mde(sd, len(d)), "gap": gap, "bc_sd": bc_sd}  # fmt: skip
            for m in USER_FACING:
                row[m], row[m + "_half"], _ = interval(paired(avg, point, agent, m).tolist())
            rows.append(row)
    out = pd.DataFrame(rows)
    adjusted = holm({i: p for i, p in enumerate(out.p)})
    return out.assign(holm=[adjusted[i] for i in range(len(out))])


def axis_trends(avg: pd.DataFrame, regs: list[Regime], base: dict[str, float], methods: list[str], head: str) -> pd.DataFrame:
    """Per method and axis: Δ vs bc at the axis's highest value minus Δ at its lowest, paired by seed (does the regime matter?)."""
    rows = []
    for axis, members in axis_panels(regs).items():
        ordered = sorted(members, key=lambda r: base[axis] if r.axis == "base" else r.value)
        lo, hi = ordered[0], ordered[-1]
        for agent in methods:
            both = pd.concat([paired_by_seed(avg, hi.point, agent, head), paired_by_seed(avg, lo.point, agent, head)], axis=1).dropna()
            d = (both.iloc[:, 0] - both.iloc[:, 1]).tolist()
            mean, half, sd = interval(d)
            rows.append({"agent": agent, "axis": axis, "lo": lo.label, "hi": hi.label, "n": len(d), "diff": mean, "half": half,
                         "p": paired_p(d), "mde": mde(sd, len(d))})  # fmt: skip
    return pd.DataFrame(rows)


def joint_holm(comp: pd.DataFrame, trends: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Holm over every test of the page at once: the method x regime differences and the per-axis trends."""
    raw = {("c", i): p for i, p in enumerate(comp.p)} | {("t", i): p for i, p in enumerate(trends.p)}
    adj = holm(raw)
    return (comp.assign(holm=[adj[("c", i)] for i in range(len(comp))]),
            trends.assign(holm=[adj[("t", i)] for i in range(len(trends))]))  # fmt: skip


def trend_lines(trends: pd.DataFrame, head: str, family: int) -> list[str]:
    rows = [[f"`{t.agent}`", AXES[t.axis], f"{t.hi} minus {t.lo}", fmt(t["diff"], t.half), _p(t.holm), f"{t.mde:.3f}",
             verdict(t).replace("pays", "grows").replace("hurts", "shrinks")]
            for _, t in trends.iterrows()]  # fmt: skip
    return ["## Does the regime matter? The trend of each difference along each axis", "",
            f"Δ vs `bc` in {head} at the axis's highest value minus Δ at its lowest, paired by seed (the same seeds ran both "
            f"points): a test of *when* a method pays rather than *whether*. Holm-adjusted together with the differences above "
            f"({family} tests in one family).", "",
            table(["method", "axis", "contrast", f"ΔΔ {head}", "Holm p", "MDE", "verdict"], rows), *_trend_reading(trends)]  # fmt: skip


def _trend_reading(trends: pd.DataFrame) -> list[str]:
    sig = trends[trends.holm < 0.05]
    if sig.empty:
        return [f"No trend is significant after Holm: at this power, none of the axes measurably changes how much a method "
                f"pays; changes smaller than their MDE ({trends.mde.min():.3f} to {trends.mde.max():.3f} here) would go "
                "unseen.", ""]  # fmt: skip
    named = "; ".join(f"`{t.agent}` along {AXES[t.axis]} ({t['diff']:+.3f})" for _, t in sig.iterrows())
    return [f"Significant after Holm: {named}.", ""]


def verdict(row: pd.Series) -> str:
    if not np.isfinite(row.holm):
        return "–"
    if row.holm < 0.05:
        return "pays" if row["diff"] > 0 else "hurts"
    return "tie (within MDE)" if abs(row["diff"]) < row.mde else "tie"


# --- figures -------------------------------------------------------------------------------------------------------


def axis_panels(regs: list[Regime]) -> dict[str, list[Regime]]:
    """Per axis, its regimes sorted by value, with the base point inserted at the base value."""
    base = [r for r in regs if r.axis == "base"]
    out: dict[str, list[Regime]] = {}
    for axis in [a for a in AXES if any(r.axis == a for r in regs)]:
        out[axis] = [r for r in regs if r.axis == axis] + base
    return out


def _tick(axis: str, value: float, k_r: int) -> str:
    return f"{value:g}<br>({value / k_r:g} x K_r)" if axis == "world.n_items" else f"{value:g}"


def heatmap(comp: pd.DataFrame, regs: list[Regime], base: dict[str, float], methods: list[str], head: str, k_r: int):
    """One heatmap panel per axis: methods x axis values, colour = paired difference vs bc, text with the Holm mark."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = axis_panels(regs)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[AXES[a] for a in panels], shared_yaxes=True, horizontal_spacing=0.04)
    lim = float(np.nanmax(np.abs(comp["diff"]))) if len(comp) else 1.0
    for col, (axis, members) in enumerate(panels.items(), start=1):
        members = sorted(members, key=lambda r: base[axis] if r.axis == "base" else r.value)
        xs = [_tick(axis, base[axis] if r.axis == "base" else r.value, k_r) + ("<br>(base)" if r.axis == "base" else "") for r in members]
        z, text = [], []
        for agent in methods:
            cells = [comp[(comp.point == r.point) & (comp.agent == agent)].iloc[0] for r in members]
            z.append([c["diff"] for c in cells])
            text.append([f"{c['diff']:+.3f}{'*' if c.holm < 0.05 else ''}" for c in cells])
        fig.add_trace(go.Heatmap(z=z, x=xs, y=methods, text=text, texttemplate="%{text}", zmin=-lim, zmax=lim, zmid=0,
                                 colorscale="RdBu", showscale=col == len(panels),
                                 colorbar={"title": f"Δ {head}<br>vs bc"},
                                 hovertemplate="%{y} at %{x}: %{text}<extra></extra>"), row=1, col=col)  # fmt: skip
    fig.update_layout(title=f"Paired difference vs bc in {head} (last rounds; * Holm p < 0.05)", height=370,
                      width=300 * len(panels) + 150, margin={"l": 70, "r": 20, "t": 70, "b": 40}, template="plotly_white")  # fmt: skip
    return fig


def round_figure(frame: pd.DataFrame, point: int, methods: list[str], head: str):
    """Per-round paired difference vs bc at the base point, mean and 95% band over seeds."""
    import plotly.graph_objects as go

    fig = go.Figure()
    sub = frame[(frame.point == point) & (frame.metric == head)]
    wide = sub.pivot_table(index=["seed", "round"], columns="agent", values="value")
    for agent in methods:
        d = (wide[agent] - wide[BASELINE]).dropna().reset_index()
        stats = [(r, *interval(g[0].tolist())[:2]) for r, g in d.groupby("round")]
        rounds, means, halves = (list(x) for x in zip(*stats, strict=True))
        halves = [h if np.isfinite(h) else 0.0 for h in halves]
        fig.add_trace(go.Scatter(x=rounds, y=means, name=agent, mode="lines+markers",
                                 error_y={"type": "data", "array": halves, "visible": True}))  # fmt: skip
    fig.add_hline(y=0, line_dash="dot")
    fig.update_layout(title=f"Base regime: paired Δ {head} vs bc per round (95% band over seeds)", xaxis_title="round",
                      yaxis_title=f"Δ {head}", height=360, width=760, template="plotly_white")  # fmt: skip
    return fig


def write_figures(figs: dict[str, object], out_dir: Path, html_name: str) -> list[str]:
    """Each figure as a PNG (kaleido + Chromium) and all of them in one HTML file; returns the PNG names written."""
    import plotly.io as pio

    html = "".join(pio.to_html(f, full_html=False, include_plotlyjs="cdn" if i == 0 else False) for i, f in enumerate(figs.values()))
    (out_dir / html_name).write_text(f"<html><head><meta charset='utf-8'></head><body>{html}</body></html>\n")
    written = []
    try:
        for name, fig in figs.items():
            pio.write_image(fig, out_dir / f"{name}.png", scale=1.5)
            written.append(f"{name}.png")
    except Exception as err:  # noqa: BLE001  (no kaleido / Chromium: the HTML and the tables carry the numbers)
        print(f"warning: PNG export failed ({type(err).__name__}); the page links {html_name} instead", file=sys.stderr)
    return written


# --- page sections -------------------------------------------------------------------------------------------------


def _p(p: float) -> str:
    return "–" if not np.isfinite(p) else ("< 0.001" if p < 1e-3 else f"{p:.3f}")


def _rel(diff: float, gap: float) -> str:
    return f"{diff / gap:+.2f}" if np.isfinite(diff) and np.isfinite(gap) and gap > 0 else "–"


def header(meta: dict, regen: str | None) -> list[str]:
    spec = meta["spec"]
    return [
        "# When does debiasing pay? Each method against `bc` across regimes (issue 16 item 5)",
        "",
        "*Generated by `experiments/regimes_page.py`; do not edit by hand.* Sweep: `"
        + meta["command"]
        + "`; page: `"
        + (regen or meta["page_command"])
        + "`.",
        "",
        f"- Commit: `{meta['commit']}` (sweep), `{meta['page_commit']}` (page). Machine: {meta['machine']}; "
        f"{meta['threads']} torch thread per cell. Wall time: {meta['wall_min']:.0f} min for {meta['cells']} cells "
        f"({meta['cell_min']:.0f} cell-minutes; the sum exceeds the wall time because cells ran {meta['workers']} at a time; wall "
        "time from the first part's start to the last part's write)." + (f" {meta['note']}" if meta.get("note") else ""),
        "- Tuning budget: **none**. Every agent runs at its registered defaults (`cascadesim list agents`); nothing was tuned "
        "on these seeds or any other, so a method that needs tuning to pay is reported at its defaults, as a practitioner "
        "adopting it would first meet it.",
        f"- Spec: [`experiments/{meta['spec_file']}`](../../experiments/{meta['spec_file']}) on the `{spec['sweep']['scenario']}` "
        "preset (stochastic serving, so every exposure carries a logged propensity and IPW/UMA² have something to weight by).",
        "",
    ]


CLAIM = [
    "## The claims",
    "",
    '- CLRec (seed `004_a0db5a260ad52808.txt`, abstract): *"live recommender systems face severe exposure bias [...] MLE will '
    'preserve and even exacerbate the exposure bias in the long run"*, and *"a popular choice of contrastive loss is equivalent '
    'to reducing the exposure bias via inverse propensity weighting"* (`clrec`; the explicit IPW loss, CLRec Eq. 4, is `ipw`).',
    '- UMA² (seed `001_84f12ef6cd570566.txt`, abstract): the Negative Samples Debias Network *"discriminates negative samples '
    'by borrowing the idea of Inverse Propensity Weighting (IPW) and re-weighs the loss"* (`uma2`).',
    "- The project's criterion for any debiasing method `M` (`/work/shared/algorithms.md` §0): *\"Recall@20 vs the true "
    'top-20 `p*` is higher by a margin larger than 2× the seed standard deviation"* under biased logging, and *"`M` must be '
    'within noise of BC. Debiasing should not hurt when there is no bias."*',
    "",
    "The question here is where in the space of worlds the gain over the biased baseline `bc` appears in the closed loop, "
    "and where it vanishes or reverses. Expected: more exposure bias (a larger catalogue per candidate slot, stronger "
    "conformity, a steeper position bias) makes debiasing pay more; an exploration slice (uniform traffic in the log) "
    "makes it pay less.",
    "",
]


def power_lines(meta: dict, comp: pd.DataFrame, regs: list[Regime]) -> list[str]:
    base = meta["base_scenario"]
    ratios = sorted(
        {int(r.value) // base["k_retrieve"] for r in regs if r.axis == "world.n_items"} | {base["n_items"] // base["k_retrieve"]}
    )
    mdes = comp.mde[np.isfinite(comp.mde)]
    gaps = comp.drop_duplicates("point").gap
    return [
        "## What ran, against the power standard (`/work/shared/studies.md` §3)",
        "",
        table(
            ["", "standard", "this page"],
            [
                ["seeds", ">= 10 (20 where cheap)", str(meta["n_seeds"])],
                ["rounds after the warm start", ">= 20", str(meta["rounds"])],
                ["catalogue / K_r", ">= 100", ", ".join(f"{r}" for r in ratios) + f" (K_r = {base['k_retrieve']})"],
                ["time average", "last rounds", f"last {meta['window']} rounds"],
            ],
        ),
        f"**This is a reduced run.** Minimal detectable effect (80% power, two-sided 5%, paired over {meta['n_seeds']} seeds) of "
        f"the headline difference: {mdes.min():.3f} to {mdes.max():.3f} (median {mdes.median():.3f}), against an `oracle` - "
        f"`random` gap of {gaps.min():.3f} to {gaps.max():.3f}: differences smaller than the MDE read as ties, which are not "
        f"refutations. The loop is also short: {meta['trend']}. On this 2-core machine shared with six other jobs the full design "
        f"would take about {meta['full_hours']:.0f} hours at this run's pace (linear in cells, rounds, requests and catalogue). "
        "The full-power grid (10 seeds, 20 rounds, every point at >= 100 x K_r) "
        "is the same sweep with more seeds and rounds and a larger catalogue, [`experiments/regimes-full.toml`]"
        "(../../experiments/regimes-full.toml); it scales out on Ray unchanged:",
        "",
        "    cascadesim sweep experiments/regimes-full.toml --ray auto --out runs/regimes-full"
        "   # or --workers N locally; --resume after a crash",
        "    python experiments/regimes_page.py runs/regimes-full --spec experiments/regimes-full.toml",
        "",
    ]


def setup_lines(meta: dict, regs: list[Regime]) -> list[str]:
    b = meta["base_scenario"]
    pts = meta["points"]
    rows = [[r.label, f"{r.point}", f"{pts[r.point]['world.n_items']} ({pts[r.point]['world.n_items'] // b['k_retrieve']} x K_r)",
             f"{pts[r.point]['world.conformity_mean']:g}", f"{pts[r.point]['user_model.position_bias']:g}",
             f"{pts[r.point]['cascade.exploration_share']:g}"] for r in regs]  # fmt: skip
    return [
        "## The regimes",
        "",
        f"One axis at a time around a base world, not the full factorial ({len(regs)} points instead of 3^4 = 81): the "
        "heatmap reads each axis with the others at their base values, and interactions between axes are not measured. "
        f"Base world: {b['n_users']} users, K_r = {b['k_retrieve']} candidates, slate of {b['slate_size']}, "
        f"{b['requests_per_round']} requests per round, {meta['rounds']} rounds after the warm start, stochastic serving "
        "(Gumbel-top-k recall and exposure, Monte-Carlo propensities), the `noisy-oracle` ranker (noise "
        f"{b['ranker_noise']:g}; as in `clrec-testbed`, it isolates the retrieval stage and skips the per-round ranker fit).",
        "",
        table(["regime", "point", "items", "conformity_mean", "position_bias", "exploration_share"], rows),
        "- `conformity_mean`: mean weight of observed popularity in a user's click propensity (0: none). `position_bias`: "
        "examination = (1 + slot)^-bias (0: every slot examined). `exploration_share`: the share of requests served uniformly "
        "at random (their clicks enter the training log).",
        "",
    ]


def headline_lines(comp: pd.DataFrame, regs: list[Regime], head: str, pngs: list[str], meta: dict, family: int) -> list[str]:
    rows = []
    for r in regs:
        for _, c in comp[comp.point == r.point].iterrows():
            rows.append([r.label, f"`{c.agent}`", fmt(c["diff"], c.half), _rel(c["diff"], c.gap), _p(c.holm), f"{c.mde:.3f}",
                         verdict(c), *(fmt(c[m], c[m + "_half"]) for m in USER_FACING)])  # fmt: skip
    figure = ["![paired difference vs bc per regime](regimes-heatmap.png)", ""] if "regimes-heatmap.png" in pngs else []
    return [
        f"## Where debiasing pays: paired difference vs `bc` in {head}",
        "",
        *figure,
        f"Interactive version with hover values: [regimes.html](regimes.html). Colour: mean over seeds of (method - `bc`) in "
        f"{head} averaged over the last {meta['window']} rounds, paired by seed (same world, same requests); `*` marks a "
        f"Holm-adjusted p < 0.05 over the page's {family} tests (every debiasing method x regime on {head}, and the per-axis "
        "trends below).",
        "",
        f"Δ = method - `bc`, mean ± 95% t half-width over {meta['n_seeds']} seeds; *Δ / gap* divides by the same regime's "
        f"`oracle` - `random` gap in {head}; *MDE*: the smallest true Δ this many seeds detect with 80% power "
        "in a single two-sided 5% test "
        f"(under Holm's correction over {family} tests the first is tested at 5%/{family}, so a difference somewhat above the "
        "MDE can still be a tie). *Verdict*: "
        'pays / hurts when Holm p < 0.05, else tie ("within MDE" when |Δ| is below it). The user-facing outcomes (logged '
        "CTR and finish rate of the exposed slates, slate utility) are paired the same way but not tested: a recall gain users "
        "never see shows up here as a Δ CTR near 0.",
        "",
        table(["regime", "method", f"Δ {head}", "Δ / gap", "Holm p", "MDE", "verdict", "Δ CTR", "Δ finish rate", "Δ slate utility"], rows),
    ]


def levels_lines(avg: pd.DataFrame, regs: list[Regime], agents: list[str], head: str) -> list[str]:
    out = ["## Levels, references included", "",
           "Time-averaged levels per agent (mean ± 95% t half-width over seeds), so each difference above can be read against "
           "the `oracle` ceiling, the `random` floor and the `popular` heuristic.", ""]  # fmt: skip
    for metric in (head, *USER_FACING):
        rows = [[r.label, *(fmt_plain(*level(avg, r.point, a, metric)) for a in agents)] for r in regs]
        out += [f"**{metric}**", "", table(["regime", *(f"`{a}`" for a in agents)], rows)]
    return out


def diagnostics_lines(avg: pd.DataFrame, regs: list[Regime]) -> list[str]:
    """The propensity methods' own sanity: the share of clipped weights and the weight tail."""
    spec = [("ipw", "fit_prop_logcorr"), ("ipw", "fit_clipped_share"), ("uma2", "fit_clip_share_a"), ("uma2", "fit_clip_share_b"),
            ("ipw", "fit_weight_p99"), ("uma2", "fit_weight_p99"), ("ipw", "fit_weight_max"), ("uma2", "fit_weight_max")]  # fmt: skip
    have = [(a, m) for a, m in spec if len(avg[(avg.agent == a) & (avg.metric == m)])]
    if not have:
        return []
    rows = [[r.label, *(fmt_plain(*level(avg, r.point, a, m), digits=2) for a, m in have)] for r in regs]
    worst = max((level(avg, r.point, a, m)[0] for r in regs for a, m in have if "clip" in m), default=math.nan)
    state = ("no method clips most of its weights anywhere, so none is reported as not working"
             if np.isfinite(worst) and worst < 0.5
             else "a method that clips most weights is not working there: read its rows as such")  # fmt: skip
    return ["## Sanity of the propensity methods", "",
            f"Per regime, the share of clipped inverse-propensity weights and the weight tail (time-averaged). Largest clip "
            f"share: {worst:.2f}; {state}. `ipw` prop_logcorr: the correlation of its propensity model's log q with the logged "
            f"log exposure propensity (1: the model recovers the logging policy). `clrec` has no explicit weights (its "
            "debiasing is implicit in the in-batch negatives).", "",
            table(["regime", *(f"`{a}` {m.removeprefix('fit_')}" for a, m in have)], rows)]  # fmt: skip


def summary_lines(comp: pd.DataFrame, regs: list[Regime], methods: list[str]) -> list[str]:
    names = {r.point: r.label for r in regs}
    out = ["## Reading", ""]
    for agent in methods:
        c = comp[comp.agent == agent]
        pays = [names[p] for p in c[(c.holm < 0.05) & (c["diff"] > 0)].point]
        hurts = [names[p] for p in c[(c.holm < 0.05) & (c["diff"] < 0)].point]
        best = c.loc[c["diff"].idxmax()] if len(c) else None
        crit = int((c["diff"] > 2 * c.bc_sd).sum())
        parts = [f"pays in {len(pays)} of {len(c)} regimes" + (f" ({'; '.join(pays)})" if pays else "")]
        parts.append(f"beats `bc` by more than 2 seed sd of `bc` (the algorithms.md criterion) in {crit}")
        if hurts:
            parts.append(f"hurts in {len(hurts)} ({'; '.join(hurts)})")
        if best is not None:
            parts.append(
                f"largest mean Δ {best['diff']:+.3f} at {names[int(best.point)]} ({_rel(best['diff'], best.gap)} of the oracle-random gap)"
            )
        out.append(f"- `{agent}`: " + ", ".join(parts) + ".")
    return out + [""]


def not_reproduced_lines(comp: pd.DataFrame, methods: list[str], avg: pd.DataFrame) -> list[str]:
    """The claims that did not reproduce in any regime, stated plainly."""
    out = ["## What did not reproduce", ""]
    for agent in methods:
        c = comp[comp.agent == agent]
        if ((c.holm < 0.05) & (c["diff"] > 0)).any():
            continue
        crit = int((c["diff"] > 2 * c.bc_sd).sum())
        sd_clause = (
            "none exceeds two seed sd of `bc` (the algorithms.md criterion)"
            if crit == 0
            else (f"{crit} exceed two seed sd of `bc`, the algorithms.md criterion, without surviving Holm")
        )
        out.append(f"- `{agent}` does not beat `bc` in any of the {len(c)} regimes (mean Δ from {c['diff'].min():+.3f} to "
                   f"{c['diff'].max():+.3f}; no gain survives Holm, and {sd_clause}).")  # fmt: skip
    if len(out) == 2:
        out.append("- Every method beats `bc` in at least one regime.")
    corr = avg[(avg.agent == "ipw") & (avg.metric == "fit_prop_logcorr")].groupby("point").value.mean()
    if any(line.startswith("- `ipw`") for line in out) and len(corr):
        out.append(f"- `ipw`'s propensity model recovers the logging policy only in part: the correlation of its log q with the "
                   f"logged log propensity is {corr.min():.2f} to {corr.max():.2f} across regimes, so its weights can undo "
                   "only part of the exposure bias in the log (`ipw-oracle`, with the logged propensities, would separate "
                   "the estimator from the weighting).")  # fmt: skip
    out += ["", "Most likely reasons, in order: the loop is short and the time average sits in a transient; the catalogue "
            "is small (25-100 x K_r), so less of it stays hidden from the biased log than in the papers' worlds; "
            "the methods run at registered defaults, "
            "untuned; and the power is low (see the MDE column). The limits below apply to every verdict on this page.", ""]  # fmt: skip
    return out


LIMITS = [
    "## What this page cannot say, and the simulator's own limits",
    "",
    "- One axis at a time: whether, say, strong conformity and a large catalogue together make debiasing pay more than "
    "either alone is not measured (that needs the factorial `[grid]` of the same four fields: 81 points).",
    "- Short loops in small worlds: a handful of rounds, and a catalogue of 25-100 x K_r, far below the 10^5-10^8 items "
    "of the papers; gains that need many rounds of "
    "compounding (CLRec's long-horizon claim: 100 rounds in `docs/results/clrec.md`) cannot appear here.",
    "- Defaults, not tuned: a method whose gain needs a tuned temperature, clip or learning rate is measured at its registered "
    "defaults (`cascadesim tune` gives each the same budget; not run for this page).",
    "- The ranker is a noisy oracle, so exposure selection is relevance-driven plus noise; with a learned ranker trained on "
    "the same biased log (the `deepfm` default) the bias compounds at two stages and debiasing retrieval alone may pay "
    "differently. `damcar`, whose method distils the ranker, would be favoured by a noisy-oracle ranker and is not run here "
    "(it also costs about 3x a `bc` cell).",
    "- A difference vs `bc` is the whole method against `bc`, not its debiasing term alone: `uma2` also widens the negatives "
    "to spaces B and C (UMA²'s Table 1 finding is that this widening pays by itself; `docs/results/uma2.md` separates "
    "`ss-abc-fixed` from `uma2`), and `ipw` and `clrec` share the CLRec sequence encoder trained on clicks only (so `ipw` "
    "vs `clrec` compares two losses on one encoder), where `bc` is the DSSM two-tower trained with BCE on exposures. "
    "The regime pattern of each column is the finding; attributing it to the "
    "propensity weighting needs those ablations in the same grid (add them to `agents` in the spec).",
    "- The user model's biases are the simulator's: conformity is a popularity term in the click propensity, position bias "
    "a power-law examination curve. Real logs mix biases these two knobs do not span.",
    "",
]


# --- inputs, metadata and main -------------------------------------------------------------------------------------


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (
        " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/results") else ""
    )


def read_sweep(sweep: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """The merged table (merging the finished parts when the sweep has not written it yet), its manifest and cells."""
    manifest = json.loads((sweep / "sweep.json").read_text())
    results = sweep / "results.parquet"
    if results.exists():
        frame = pd.read_parquet(results)
    else:  # a sweep still running: merge what it has, with the sweep's own code
        from scenarios.sweep import load_spec
        from scenarios.sweep.merge import merge_results

        spec = load_spec(ROOT / "experiments" / f"{manifest['name']}.toml")
        frame = merge_results(spec.cells(manifest["threads"]), spec.fields, sweep)
    parts = sorted((sweep / "parts").glob("*.parquet"))
    walls = pd.DataFrame({"mtime": [p.stat().st_mtime for p in parts], "wall_s": [_part_wall(p) for p in parts]})
    return frame, manifest, walls


def _part_wall(path: Path) -> float:
    from scenarios.sweep.cells import read_part

    return float(read_part(path)[1].get("wall_s", math.nan))


def sweep_meta(args: argparse.Namespace, manifest: dict, walls: pd.DataFrame, frame: pd.DataFrame) -> dict:
    """What the page header states, measured from the sweep directory (wall time from the parts' timestamps)."""
    import torch

    from scenarios.sweep import load_spec

    spec_path = Path(args.spec)
    spec = load_spec(spec_path)
    sc = spec.scenarios[0]
    wall_min = (walls.mtime.max() - (walls.mtime - walls.wall_s).min()) / 60 if len(walls) else math.nan
    seeds = sorted(int(s) for s in frame.seed.unique())
    rounds = int(frame["round"].max()) + 1
    cell_min = float(walls.wall_s.sum() / 60)
    return {
        "command": f"python -m scenarios.cli sweep {spec_path.relative_to(ROOT) if spec_path.is_absolute() else spec_path} "
        f"--workers {args.workers} --out {args.sweep}",
        "spec_file": spec_path.name, "spec": manifest["spec"], "threads": manifest["threads"], "workers": args.workers,
        "commit": args.sweep_commit or git_commit(), "cells": len(walls), "wall_min": wall_min, "cell_min": cell_min,
        "machine": f"{platform.platform()}, torch {torch.__version__}, {args.machine_note}", "note": args.note,
        "n_seeds": len(seeds), "seeds": seeds, "rounds": rounds, "window": args.window,
        "full_hours": full_hours(spec, wall_min),
        "base_scenario": {"n_users": sc.world.n_users, "n_items": sc.world.n_items, "k_retrieve": sc.cascade.k_retrieve,
                          "slate_size": sc.cascade.slate_size, "requests_per_round": sc.timeline.requests_per_round,
                          "ranker_noise": sc.cascade.ranker_noise},
    }  # fmt: skip


def full_hours(spec, wall_min: float) -> float:
    """Wall hours of ``regimes-full.toml`` at this run's pace: linear in cells x loop-rounds x requests x mean catalogue."""
    from scenarios.sweep import load_spec

    full = load_spec(ROOT / "experiments" / "regimes-full.toml")

    def work(s) -> float:
        sc = s.scenarios[0]
        items = sum(x.world.n_items for x in s.scenarios) / len(s.scenarios)
        return len(s.cells(1)) * (sc.timeline.rounds + 1) * sc.timeline.requests_per_round * items

    return wall_min * work(full) / work(spec) / 60


def complete_seeds(results: pd.DataFrame) -> pd.DataFrame:
    """Only the seeds that every (grid point, agent) finished: a sweep cut short leaves its last seed partial."""
    cells = results.groupby("seed").cell.nunique()
    full = cells[cells == cells.max()].index
    return results[results.seed.isin(full)]


def trend(frame: pd.DataFrame, head: str, window: int) -> str:
    """Whether ``bc`` at the base point is still moving over the averaged window (a transient, not a steady state)."""
    sub = frame[(frame.point == 0) & (frame.agent == BASELINE) & (frame.metric == head)]
    by_round = sub.groupby("round").value.mean()
    last = int(by_round.index.max())
    first = max(int(by_round.index.min()), last - window + 1)
    a, b = float(by_round.loc[first]), float(by_round.loc[last])
    moving = abs(b - a) > 0.1 * max(abs(a), 1e-12)
    state = "still moving, so the time average is over a transient, not a steady state" if moving else "roughly flat there"
    return f"`bc`'s {head} at the base regime goes from {a:.3f} (round {first}) to {b:.3f} (round {last}) over the averaged window, {state}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep", nargs="?", help="the sweep directory (runs/regimes)")
    ap.add_argument("--from-parquet", help="regenerate the page from the stored docs/results/regimes.parquet (+ .json)")
    ap.add_argument("--spec", default=str(ROOT / "experiments" / "regimes.toml"), help="the sweep's spec file")
    ap.add_argument("--window", type=int, default=3, help="rounds averaged at the end of each loop")
    ap.add_argument("--workers", type=int, default=2, help="the --workers the sweep ran with (stated on the page)")
    ap.add_argument("--sweep-commit", default=None, help="the commit the sweep ran at (default: the current one)")
    ap.add_argument("--out-dir", default=str(OUT_DIR))
    ap.add_argument("--note", default="", help="how the sweep was run, if not in one invocation (stated on the page)")
    ap.add_argument("--machine-note", default="2 cores shared with other jobs", help="what else ran on the machine (stated on the page)")
    args = ap.parse_args(argv)
    if bool(args.sweep) == bool(args.from_parquet):
        ap.error("give a sweep directory or --from-parquet, not both")
    if args.window < 1:
        ap.error("--window: must be >= 1")
    return args


def build(frame: pd.DataFrame, meta: dict, out_dir: Path, regen: str | None) -> str:
    """The page text (and its figures in ``out_dir``) from the slim frame and the metadata."""
    fields = [f for f in AXES if f in frame.columns]
    points = frame[["point", *fields]].drop_duplicates().set_index("point").sort_index()
    meta["points"] = {int(p): {f: (int(v) if f == "world.n_items" else float(v)) for f, v in row.items()} for p, row in points.iterrows()}
    regs = regimes(frame, fields, points.loc[0].to_dict())
    head = headline_metric(frame)
    avg = time_average(frame, meta["window"])
    present = list(frame.agent.unique())
    methods = [a for a in present if a not in REFERENCES]
    agents = [a for a in REFERENCES if a in present] + methods
    comp = comparisons(avg, methods, [r.point for r in regs], head)
    trends = axis_trends(avg, regs, points.loc[0].to_dict(), methods, head)
    comp, trends = joint_holm(comp, trends)
    family = int(np.isfinite(comp.p).sum() + np.isfinite(trends.p).sum())
    meta["trend"] = trend(frame, head, meta["window"])
    base_values = points.loc[0].to_dict()
    k_r = int(meta["base_scenario"]["k_retrieve"])
    figs = {"regimes-heatmap": heatmap(comp, regs, base_values, methods, head, k_r),
            "regimes-rounds": round_figure(frame, 0, methods, head)}  # fmt: skip
    pngs = write_figures(figs, out_dir, "regimes.html")
    rounds_fig = ["![per-round paired difference at the base regime](regimes-rounds.png)", ""] if "regimes-rounds.png" in pngs else []
    lines = [*header(meta, regen), *CLAIM, *power_lines(meta, comp, regs), *setup_lines(meta, regs),
             *headline_lines(comp, regs, head, pngs, meta, family), *summary_lines(comp, regs, methods),
             *trend_lines(trends, head, family), *levels_lines(avg, regs, agents, head),
             "## Per round, base regime", "", *rounds_fig,
             f"Per-round paired Δ {head} vs `bc` at the base regime, mean and 95% band over seeds "
             "(also in [regimes.html](regimes.html)).", "",
             *diagnostics_lines(avg, regs), *not_reproduced_lines(comp, methods, avg), *LIMITS]  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet, meta_path = out_dir / "regimes.parquet", out_dir / "regimes.json"
    regen = None
    if args.sweep:
        results, manifest, walls = read_sweep(Path(args.sweep))
        fields = [f for f in manifest["fields"] if f in AXES]
        results = complete_seeds(results)
        meta = sweep_meta(args, manifest, walls, results)
        slim(results, fields).to_parquet(parquet, index=False)
        meta_path.write_text(json.dumps(meta, indent=1, default=str) + "\n")
    else:
        parquet, meta_path = Path(args.from_parquet), Path(args.from_parquet).with_suffix(".json")
        regen = "python experiments/regimes_page.py --from-parquet " + shlex.quote(str(args.from_parquet))
    meta = json.loads(meta_path.read_text())
    meta["page_commit"] = git_commit()
    meta["page_command"] = "python experiments/regimes_page.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    frame = pd.read_parquet(parquet)  # the page's numbers come from the file that sits beside it
    (out_dir / "regimes.md").write_text(build(frame, meta, out_dir, regen))
    print(f"wrote {out_dir / 'regimes.md'} ({len(frame)} rows from {parquet})")


if __name__ == "__main__":
    main()
