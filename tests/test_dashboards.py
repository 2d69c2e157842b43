"""Dashboards without a browser: figure data equals metrics.parquet, colours, report file, CLI, app callback, layering."""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from click.testing import CliRunner

from dashboards import cli
from dashboards.app import VIEWS, make_app, render
from dashboards.data import Dataset, read_run, read_runs, seed_stats, t_quantile, to_wide
from dashboards.distributions import decile_figure, lorenz_figure
from dashboards.figures import MissingData, agent_colors, bias_figure, concentration_figure, drift_figure, recall_figure
from dashboards.report import VENDOR, build_sections, plotly_bundle, render_html, write_report
from dashboards.scores import score_figure
from dashboards.tables import summary_table
from simulator.checkpoint import RunDirError
from tests.dashboard_fixtures import make_run_dir

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ("oracle", "random", "popular")


@pytest.fixture(scope="module")
def run3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("run3"), AGENTS, seeds=3, rounds=12)


@pytest.fixture(scope="module")
def ds3(run3: Path) -> Dataset:
    return Dataset.from_runs(read_runs([run3]))


def raw(run: Path) -> pd.DataFrame:
    """metrics.parquet read directly, the reference every figure is compared against, rounds numbered from 1 as displayed."""
    frame = pd.read_parquet(run / "metrics.parquet")
    return frame.assign(round=frame["round"] + 1)


def seed_mean(frame: pd.DataFrame, agent: str, metric: str, rnd: int) -> float:
    sel = frame[(frame.agent == agent) & (frame.metric == metric) & (frame["round"] == rnd)]
    return float(sel["value"].mean())


def traces(fig: go.Figure, role: str = "mean", **meta: object) -> list:
    return [t for t in fig.data if t.meta and t.meta.get("role") == role and all(t.meta.get(k) == v for k, v in meta.items())]


def test_t_quantile_matches_tables() -> None:
    for dof, want in [(1, 12.7062047362), (2, 4.30265272975), (4, 2.7764451052), (9, 2.26215716280), (30, 2.04227245630)]:
        assert t_quantile(dof) == pytest.approx(want, abs=1e-8)
    for dof in (3, 57, 200):  # the density integrated from 0 to the quantile (Simpson) is 0.475
        q, n = t_quantile(dof), 20_000
        c = math.exp(math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2)) / math.sqrt(dof * math.pi)
        f = [c * (1 + (q * i / n) ** 2 / dof) ** (-(dof + 1) / 2) for i in range(n + 1)]
        area = q / n / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))
        assert area == pytest.approx(0.475, abs=1e-10)


def test_seed_stats_is_a_t_interval(run3: Path) -> None:
    frame = raw(run3)
    stats = seed_stats(read_run(run3).metrics, ["exposure_gini"])
    row = stats[(stats.agent == "random") & (stats["round"] == 5)].iloc[0]
    vals = frame[(frame.agent == "random") & (frame.metric == "exposure_gini") & (frame["round"] == 5)]["value"].to_numpy()
    half = t_quantile(2) * vals.std(ddof=1) / math.sqrt(3)
    assert row["n"] == 3 and row["mean"] == pytest.approx(vals.mean(), abs=1e-15)
    assert (row["lo"], row["hi"]) == pytest.approx((vals.mean() - half, vals.mean() + half), abs=1e-14)


def test_one_seed_has_no_band_and_exact_values(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "one", AGENTS, seeds=1, rounds=5)
    fig = recall_figure(Dataset.from_runs(read_runs([run])), 100)
    assert not traces(fig, role="band")
    frame = raw(run)
    for t in traces(fig):
        want = frame[(frame.agent == t.meta["agent"]) & (frame.metric == t.meta["metric"])].sort_values("round")["value"]
        assert list(t.y) == list(want)  # exact: one seed, nothing averaged


def test_recall_figure_equals_parquet(run3: Path, ds3: Dataset) -> None:
    fig = recall_figure(ds3, 100)
    frame = raw(run3)
    for agent in AGENTS:
        for metric in ("true_recall@100", "offline_holdout_recall@100"):
            (line,) = traces(fig, agent=agent, metric=metric)  # one line per agent and metric
            assert line.line.dash == ("solid" if metric.startswith("true") else "dash")
            assert list(line.x) == list(range(1, 13))  # rounds numbered from 1
            for rnd in (1, 5, 12):
                assert line.y[list(line.x).index(rnd)] == pytest.approx(seed_mean(frame, agent, metric, rnd), abs=1e-12)
            (band,) = traces(fig, role="band", agent=agent, metric=metric)
            stats = seed_stats(ds3.metrics, [metric])
            hi = stats[(stats.agent == agent)].sort_values("round")["hi"].to_numpy()
            assert np.allclose(band.y[: len(hi)], hi)


def test_line_figures_have_one_trace_per_agent(run3: Path, ds3: Dataset) -> None:
    frame = raw(run3)
    for fig, metrics in [(bias_figure(ds3, 10), ["bias_holdout_recall@10"]),
                         (concentration_figure(ds3), ["exposure_gini", "exposure_top1_share"]),
                         (drift_figure(ds3), ["homogenisation", "preference_drift"])]:
        for metric in metrics:
            lines = traces(fig, metric=metric)
            assert sorted(t.meta["agent"] for t in lines) == sorted(AGENTS)
            for t in lines:
                assert t.y[7] == pytest.approx(seed_mean(frame, t.meta["agent"], metric, int(t.x[7])), abs=1e-12)


def test_top_share_deciles_scores_equal_parquet(run3: Path, ds3: Dataset) -> None:
    frame = raw(run3)
    curves = lorenz_figure(ds3, [1, 12])
    assert len(traces(curves)) == len(AGENTS) * 2
    for t in traces(curves):  # the Lorenz curve read from the top: q = 1 - p holds 1 - L(p); q = 1% is exposure_top1_share
        agent, rnd = t.meta["agent"], t.meta["round"]
        assert list(t.x) == pytest.approx([0.01, *[round(0.1 * i, 1) for i in range(1, 10)]])
        assert t.y[0] == pytest.approx(seed_mean(frame, agent, "exposure_top1_share", rnd), abs=1e-12)
        assert t.y[3] == pytest.approx(1 - seed_mean(frame, agent, "exposure_lorenz@0.7", rnd), abs=1e-12)
        assert all(lo <= y <= hi for y, (lo, hi, _) in zip(t.y, t.customdata, strict=False))
    assert curves.layout.xaxis.type == "log"
    heat = decile_figure(ds3)
    assert sorted(t.meta["agent"] for t in traces(heat, role="heatmap")) == sorted(AGENTS)
    for t in traces(heat, role="heatmap"):
        assert t.z[9][4] == pytest.approx(seed_mean(frame, t.meta["agent"], "exposure_share_decile@10", int(t.x[4])), abs=1e-12)
    scores = score_figure(ds3, round=7, seed=1)
    one = frame[(frame.seed == 1) & (frame["round"] == 7)]
    for t in traces(scores, role="pos") + traces(scores, role="neg"):
        got = one[one.agent == t.meta["agent"]].set_index("metric")["value"]
        width = (got["score_hist_hi"] - got["score_hist_lo"]) / 20
        assert t.x[3] == pytest.approx(got["score_hist_lo"] + 3.5 * width) and t.width[0] == pytest.approx(width)
        assert list(t.y) == [got[f"score_hist_{t.meta['role']}@{b}"] for b in range(20)]


def test_summary_table_shows_last_round_intervals(run3: Path, ds3: Dataset) -> None:
    fig = summary_table(ds3, 100)
    cells = fig.data[0].cells.values
    names = fig.data[0].meta["metrics"]
    frame = raw(run3)
    row = list(cells[1]).index("popular")
    col = 4 + names.index("exposure_gini")
    mean = float(cells[col][row].split("<br>[")[0])
    assert mean == pytest.approx(seed_mean(frame, "popular", "exposure_gini", 12), rel=5e-3)  # 3 significant digits
    assert list(cells[2]) == ["12"] * 3  # the last round, numbered from 1
    assert re.fullmatch(r"\S+<br>\[\S+, \S+\]", cells[col][row])


def test_colours_are_consistent_across_figures(ds3: Dataset) -> None:
    colors = agent_colors(ds3.palette)
    assert len(set(colors.values())) == len(AGENTS)
    seen: dict[str, set[str]] = {a: set() for a in AGENTS}
    for fig in (recall_figure(ds3, 100), bias_figure(ds3, 100), concentration_figure(ds3), drift_figure(ds3), lorenz_figure(ds3)):
        for t in traces(fig):
            seen[t.meta["agent"]].add(t.line.color)
    for t in traces(score_figure(ds3), role="pos"):
        seen[t.meta["agent"]].add(t.marker.line.color)
    assert all(s == {colors[a]} for a, s in seen.items()), seen
    sub = ds3.subset(agents=["random"])  # a subset keeps each agent's colour
    assert {t.line.color for t in traces(recall_figure(sub, 100))} == {colors["random"]}


def test_missing_distributions_are_notes(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "old", AGENTS, seeds=2, rounds=4, distributions=False)
    ds = Dataset.from_runs(read_runs([run]))
    for build in (lorenz_figure, decile_figure, score_figure):
        with pytest.raises(MissingData):
            build(ds)
    notes = {s.id for s in build_sections(ds) if s.figure is None}
    # the AUC is computed from the score histograms; the synthetic run has no leaderboard.parquet
    assert notes == {"fig-lorenz", "fig-deciles", "fig-scores", "fig-auc", "fig-leaderboard"}
    assert render_html(read_runs([run])).count('<p class="note">Not shown') == 5


def test_several_runs_side_by_side(tmp_path: Path) -> None:
    a = make_run_dir(tmp_path / "a", AGENTS, seeds=2, rounds=6)
    b = make_run_dir(tmp_path / "b", ("random", "bc"), seeds=3, rounds=4, rng_seed=1)
    runs = read_runs([a, b])
    assert [r.label for r in runs] == ["synthetic (a)", "synthetic (b)"]
    ds = Dataset.from_runs(runs)
    fig = recall_figure(ds, 100)
    assert len(traces(fig, metric="true_recall@100", run="synthetic (a)")) == 3
    assert len(traces(fig, metric="true_recall@100", run="synthetic (b)")) == 2
    assert fig.layout.annotations[0].text == "synthetic (a)"
    colors = agent_colors(ds.palette)
    assert {t.line.color for t in traces(fig, agent="random")} == {colors["random"]}


def test_read_errors_are_one_line(tmp_path: Path, run3: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    cases = [tmp_path / "nope", bad]
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "manifest.json").write_text("{}")
    (tmp_path / "corrupt" / "metrics.parquet").write_bytes(b"not parquet")
    cases.append(tmp_path / "corrupt")
    cols = make_run_dir(tmp_path / "cols", AGENTS, seeds=1, rounds=2)
    raw(cols).rename(columns={"value": "v"}).to_parquet(cols / "metrics.parquet")
    cases.append(cols)
    for case in cases:
        with pytest.raises(RunDirError) as err:
            read_run(case)
        assert "\n" not in str(err.value) and str(case) in str(err.value)


def test_report_is_self_contained_and_small(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "big", AGENTS, seeds=3, rounds=100, description="Popularity <trap> & friends")
    out = write_report([run], tmp_path / "r" / "report.html")
    text = out.read_text()
    assert out.stat().st_size < 10 * 2**20
    assert not re.search(r"<script[^>]+src=", text) and not re.search(r"<link[^>]+href=[\"']https?:", text)
    assert text.count("data-plotly-bundle=") == 1 and "Plotly.newPlot" in text
    assert "Popularity &lt;trap&gt; &amp; friends" in text and "manifest.json" in text and '&quot;seeds&quot;' in text
    specs = json.loads(re.search(r'id="cascadesim-figures">(.*?)</script>', text, re.S).group(1).replace("<\\/", "</"))
    assert set(specs) == {"fig-recall", "fig-bias", "fig-offline", "fig-concentration", "fig-lorenz", "fig-deciles", "fig-drift", "fig-auc",
                          "fig-scores"}  # no leaderboard.parquet in the synthetic run
    frame = raw(run)
    line = next(t for t in specs["fig-recall"]["data"]
                if t["meta"].items() >= {"run": "synthetic", "agent": "popular", "metric": "true_recall@10", "role": "mean"}.items())
    # the default K is the largest below K_r = 100; rounds from 1
    assert line["x"][42] == 43 and line["y"][42] == pytest.approx(seed_mean(frame, "popular", "true_recall@10", 43), abs=1e-12)
    assert 'id="summary-table"' in text and text.count('data-agent="') == 3
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # atomic: no temporary file left


def test_plotly_bundle_choice() -> None:
    from plotly.offline import get_plotlyjs_version

    name, js = plotly_bundle([go.Figure(go.Scatter(x=[1], y=[1])), go.Figure(go.Heatmap(z=[[1]])), go.Figure(go.Bar(x=[1], y=[1]))])
    version = get_plotlyjs_version()
    if (VENDOR / f"plotly-cartesian-{version}.min.js").is_file():
        assert name == "cartesian" and f"plotly.js (cartesian - minified) v{version}" in js[:300]
    else:  # plotly was upgraded past the vendored bundle: the full bundle, correct but slower (see dashboards/vendor/README.md)
        assert name == "full"
    assert plotly_bundle([go.Figure(go.Table())])[0] == "full"


def test_cli_report_and_errors(run3: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli.report, [str(run3)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"report: {run3 / 'report.html'}" and (run3 / "report.html").exists()
    res = CliRunner().invoke(cli.report, [str(run3), str(run3), "--out", str(tmp_path / "two.html")])
    assert res.exit_code == 0 and (tmp_path / "two.html").exists()
    res = CliRunner().invoke(cli.report, [str(tmp_path / "missing")])
    assert isinstance(res.exception, RunDirError) and "\n" not in str(res.exception)
    res = CliRunner().invoke(cli.dashboard, [str(tmp_path / "missing")])
    assert isinstance(res.exception, RunDirError)
    assert CliRunner().invoke(cli.report, []).exit_code == 2


def test_app_callback_follows_the_controls(run3: Path, ds3: Dataset) -> None:
    app = make_app([run3])
    assert app.layout is not None
    fig, note = render(ds3, "recall", ["synthetic"], ["random"], k=100)
    assert note == "" and {t.meta["agent"] for t in traces(fig)} == {"random"}
    fig, _ = render(ds3, "metric", None, ["oracle", "popular"], metric="coverage", rounds=[2, 5])
    assert {t.meta["agent"] for t in traces(fig)} == {"oracle", "popular"} and all(list(t.x) == [2, 3, 4, 5] for t in traces(fig))
    for view in VIEWS:
        fig, note = render(ds3, view, None, None, metric="coverage", k=10, rounds=[0, 11], seed=2)
        assert note == "" and len(fig.data) > 0, view
    fig, note = render(ds3, "recall", None, [])
    assert note.startswith("Nothing to draw") and not fig.data


def test_wide_helper(run3: Path) -> None:
    wide = to_wide(read_run(run3).metrics, ["exposure_gini", "coverage"])
    frame = raw(run3)
    assert len(wide) == 3 * 3 * 12
    row = wide[(wide.agent == "oracle") & (wide.seed == 2) & (wide["round"] == 3)].iloc[0]
    want = frame[(frame.agent == "oracle") & (frame.seed == 2) & (frame["round"] == 3) & (frame.metric == "coverage")]["value"].item()
    assert row["coverage"] == want


def test_dashboards_import_only_allowed_simulator_modules() -> None:
    allowed = ("simulator.checkpoint", "simulator.config", "simulator.log.schema", "simulator.metrics.definitions")
    for path in (ROOT / "dashboards").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                assert top not in ("agents", "scenarios"), f"{path}: imports {name}"
                assert top != "simulator" or name in allowed, f"{path}: imports {name}"


def test_images_without_kaleido_is_one_line(run3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "kaleido", None)  # import kaleido -> ImportError
    res = CliRunner().invoke(cli.report, [str(run3), "--out", str(tmp_path / "r.html"), "--images", str(tmp_path / "img")])
    assert res.exit_code == 2 and "--images: static export needs kaleido" in res.output
    assert (tmp_path / "r.html").exists()  # the HTML report is written all the same


@pytest.mark.slow
def test_static_export_with_kaleido(run3: Path, tmp_path: Path) -> None:
    pytest.importorskip("kaleido", reason="static export needs kaleido (pip install kaleido)")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("static export needs a Chrome/Chromium (apt-get install chromium)")
    from dashboards.report import export_images

    paths = export_images([run3], tmp_path / "img", "svg")
    assert {p.stem for p in paths} >= {"recall", "lorenz", "deciles", "scores", "summary"}
    assert all(p.read_text().lstrip().startswith("<svg") for p in paths)


def test_missing_values_are_gaps_not_errors(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "nan", AGENTS, seeds=3, rounds=6)
    frame = pd.read_parquet(run / "metrics.parquet")
    gap = (frame.metric == "offline_holdout_recall@100") & (frame.agent == "random")
    frame.loc[gap & (frame["round"] == 2), "value"] = np.nan  # every seed: a gap (round 3 as displayed)
    frame.loc[gap & (frame["round"] == 4) & (frame.seed == 0), "value"] = np.nan  # one seed: mean of the others
    frame.to_parquet(run / "metrics.parquet")
    frame = raw(run)
    fig = recall_figure(Dataset.from_runs(read_runs([run])), 100)
    (line,) = traces(fig, agent="random", metric="offline_holdout_recall@100")
    assert line.y[2] is None
    assert line.y[4] == pytest.approx(seed_mean(frame, "random", "offline_holdout_recall@100", 5)) and line.customdata[4][2] == 2
    assert "NaN" not in render_html(read_runs([run])).split("</head>")[1]
