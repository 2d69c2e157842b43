"""Dashboard building blocks by hand-computed cases: metric catalogue, clipped intervals, Welch difference, binned AUC,
top-share curves, provenance and progress, the headline K, CSV export, and what the report page says."""

from __future__ import annotations

import io
import math
import re
import urllib.parse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboards.catalog import definition, group_of, grouped, is_internal, metric_range, sorted_metrics
from dashboards.data import Dataset, default_k, read_run, read_runs
from dashboards.derived import binned_auc
from dashboards.distributions import decile_figure, top_share_rows
from dashboards.export import figure_frame
from dashboards.figures import recall_figure
from dashboards.report import PLOT_CONFIG, render_html
from dashboards.runinfo import agent_progress, duration_text, provenance, seeds_caption
from dashboards.stats import diff_stats, seed_sds, seed_stats, t_quantile
from simulator.metrics.definitions import METRICS
from tests.dashboard_fixtures import make_run_dir

AGENTS = ("oracle", "random", "popular")


def long(rows: list[tuple[str, str, int, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["run", "agent", "seed", "round", "metric", "value"])


def test_catalogue_groups_defines_and_sorts() -> None:
    for name in METRICS:  # every metric the runner documents has a group of its own
        assert group_of(name.replace("<name>", "loss").replace("@K", "@10").replace("@p", "@0.5")) != "other", name
    assert sorted_metrics(["true_recall@100", "true_recall@50", "true_recall@200", "true_recall@10"]) == [
        "true_recall@10", "true_recall@50", "true_recall@100", "true_recall@200"]
    assert definition("true_recall@50") == METRICS["true_recall@K"] and definition("fit_loss") == METRICS["fit_<name>"]
    assert definition("exposure_lorenz@0.3") == METRICS["exposure_lorenz@p"] and definition("no_such_metric") == ""
    names = ["exposure_lorenz@0.1", "score_hist_pos@3", "exposure_share_decile@10", "score_hist_lo", "coverage", "offline_holdout_recall@20"]
    assert [n for _, _, ms in grouped(names) for n in ms] == ["offline_holdout_recall@20", "coverage"]  # internals hidden
    assert all(is_internal(n) for n in names[:4])
    assert metric_range("true_recall@50") == (0.0, 1.0) and metric_range("bias_holdout_recall@10") == (-1.0, 1.0)
    assert metric_range("homogenisation") == (0.0, 1.0) and metric_range("score_gap_unexposed") is None


def test_bands_are_clipped_to_the_metric_range() -> None:
    rows = [("r", "a", s, 1, m, v) for m, vals in {"offline_holdout_recall@100": (0.98, 1.0), "score_gap_unexposed": (0.98, 1.0)}.items()
            for s, v in enumerate(vals)]
    stats = seed_stats(long(rows)).set_index("metric")
    half = t_quantile(1) * math.sqrt(2e-4) / math.sqrt(2)  # sd of (0.98, 1.0) = sqrt(2e-4)
    assert stats.at["offline_holdout_recall@100", "lo"] == pytest.approx(0.99 - half) and stats.at["offline_holdout_recall@100", "hi"] == 1.0
    assert stats.at["score_gap_unexposed", "hi"] == pytest.approx(0.99 + half)  # unbounded: not clipped
    low = seed_stats(long([("r", "a", s, 1, "exposure_gini", v) for s, v in enumerate((0.0, 0.05, 0.01))]))
    assert low["lo"].iloc[0] == 0.0 and low["hi"].iloc[0] < 1.0


def test_difference_of_two_runs_is_welch() -> None:
    a = [("A", "x", s, 1, "score_gap_unexposed", v) for s, v in enumerate((1.0, 2.0, 3.0))]
    b = [("B", "x", s, 1, "score_gap_unexposed", v) for s, v in enumerate((2.0, 4.0))]
    frame = long(a + b)
    diff = diff_stats(seed_stats(frame), seed_sds(frame), "A", "B").iloc[0]
    va, vb = 1.0 / 3, 2.0 / 2  # sample variances 1 and 2 over n = 3 and 2
    dof = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 1)  # 1.68 -> 1
    half = t_quantile(math.floor(dof)) * math.sqrt(va + vb)
    assert diff["run"] == "A − B" and diff["mean"] == pytest.approx(-1.0) and diff["n"] == 2
    assert (diff["lo"], diff["hi"]) == pytest.approx((-1.0 - half, -1.0 + half))
    bounded = long([(r, "x", s, 1, "coverage", v) for r, vals in (("A", (0.9, 1.0)), ("B", (0.0, 0.1))) for s, v in enumerate(vals)])
    d = diff_stats(seed_stats(bounded), seed_sds(bounded), "A", "B").iloc[0]
    assert d["mean"] == pytest.approx(0.9) and d["hi"] == 1.0  # a difference of shares stays within [-1, 1]


def test_binned_auc_by_hand_and_against_exact_auc() -> None:
    cases = {((0, 0, 1), (1, 0, 0)): 1.0, ((0.5, 0.5), (0.5, 0.5)): 0.5, ((0.5, 0.5), (1.0, 0.0)): 0.75, ((1, 0), (0, 1)): 0.0}
    for (pos, neg), want in cases.items():
        assert binned_auc(np.array([pos], float), np.array([neg], float))[0] == pytest.approx(want)
    rng = np.random.default_rng(7)
    p, n = rng.normal(0.6, 1.0, 400), rng.normal(0.0, 1.5, 500)
    exact = float((p[:, None] > n[None, :]).mean())
    edges = np.linspace(min(p.min(), n.min()), max(p.max(), n.max()), 21)
    hp, hn = np.histogram(p, edges)[0] / len(p), np.histogram(n, edges)[0] / len(n)
    got = binned_auc(hp[None], hn[None])[0]
    assert abs(got - exact) <= 0.5 * float((hp * hn).sum()) + 1e-12  # only pairs sharing a bin are uncertain


def test_derived_auc_rows_in_a_run(tmp_path: Path) -> None:
    run = read_run(make_run_dir(tmp_path / "r", AGENTS, seeds=2, rounds=3))
    auc = run.metrics[run.metrics["metric"] == "score_auc_unexposed"]
    assert len(auc) == len(AGENTS) * 2 * 3 and auc["value"].between(0, 1).all()
    one = run.metrics[(run.metrics["agent"] == "random") & (run.metrics["seed"] == 1) & (run.metrics["round"] == 2)].set_index("metric")
    pos = np.array([[one.at[f"score_hist_pos@{b}", "value"] for b in range(20)]])
    neg = np.array([[one.at[f"score_hist_neg@{b}", "value"] for b in range(20)]])
    assert one.at["score_auc_unexposed", "value"] == pytest.approx(binned_auc(pos, neg)[0])


def test_top_share_rows_read_the_lorenz_curve_from_the_top() -> None:
    rows = long([("r", "a", 0, 1, "exposure_lorenz@0.9", 0.2), ("r", "a", 0, 1, "exposure_lorenz@0.5", 0.05),
                 ("r", "a", 0, 1, "exposure_top1_share", 0.4), ("r", "a", 0, 1, "coverage", 0.3)])
    top = top_share_rows(rows).set_index("metric")["value"]
    assert top.to_dict() == pytest.approx({"exposure_top_share@0.1": 0.8, "exposure_top_share@0.5": 0.95, "exposure_top_share@0.01": 0.4})


def test_provenance_progress_and_captions(tmp_path: Path) -> None:
    extra = {"command": ["cascadesim", "run", "--agents", "a b"], "git_commit": "0123abc", "started": "2026-11-30T18:00:00Z",
             "finished": 1_780_000_000, "wall_seconds": 267.4}
    facts = provenance(read_run(make_run_dir(tmp_path / "p", AGENTS, seeds=1, rounds=2, extra=extra)))
    assert facts == {"started": "2026-11-30 18:00:00 UTC", "finished": "2026-05-28 20:26:40 UTC", "wall time": "4 min 27 s",
                     "command": "cascadesim run --agents 'a b'", "git commit": "0123abc"}
    bare = provenance(read_run(make_run_dir(tmp_path / "b", AGENTS, seeds=1, rounds=2)))
    assert set(bare.values()) == {"not recorded"}
    assert duration_text(3725) == "1 h 2 min 5 s" and duration_text(12.34) == "12.3 s" and duration_text(None) == "not recorded"
    run = read_run(make_run_dir(tmp_path / "g", AGENTS, seeds=3, rounds=4, done={"popular": 0, "oracle": 6}))
    assert agent_progress(run) == {"oracle": "1 of 3 seeds finished, seed 1 at round 2 of 4", "random": "",
                                   "popular": "no finished round yet"}
    assert run.agents == ["oracle", "random"]
    assert seeds_caption([1, 1]).startswith("1 seed: no intervals") and "1 seed: no intervals" in seeds_caption([1, 3])
    assert "mean over 3 seeds; bands: 95%" in seeds_caption([3, 3]) and "hover shows the 95%" in seeds_caption([3, 3], bands=False)


def test_headline_k_is_below_k_retrieve(tmp_path: Path) -> None:
    names = [f"{m}@{k}" for m in ("true_recall", "offline_holdout_recall") for k in (10, 50, 100)]
    assert default_k(names, 100) == 50 and default_k(names, 51) == 50 and default_k(names, None) == 100 and default_k(names, 5) == 100
    text = render_html(read_runs([make_run_dir(tmp_path / "k", AGENTS, seeds=2, rounds=3, ks=(20, 50, 100), k_retrieve=100)]))
    assert "True vs offline (hold-out) recall@50 over rounds" in text and "largest recall cut-off below" in text
    text = render_html(read_runs([tmp_path / "k"]), k=100)
    assert "Caution: K = 100 ≥ K_r = 100" in text


def test_csv_export_holds_the_numbers_drawn(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "c", AGENTS, seeds=3, rounds=5)
    ds = Dataset.from_runs(read_runs([run]))
    frame = figure_frame(recall_figure(ds, 10))
    assert list(frame.columns[:5]) == ["run", "agent", "metric", "round", "role"] and len(frame) == 3 * 2 * 5
    raw = pd.read_parquet(run / "metrics.parquet")
    want = raw[(raw.agent == "popular") & (raw.metric == "offline_holdout_recall@10") & (raw["round"] == 4)]["value"].mean()
    row = frame[(frame.agent == "popular") & (frame.metric == "offline_holdout_recall@10") & (frame["round"] == 5)].iloc[0]
    assert row["mean"] == pytest.approx(want, abs=1e-15) and row["seeds"] == 3 and row["lo"] < row["mean"] < row["hi"]
    heat = figure_frame(decile_figure(ds))
    assert len(heat) == 3 * 10 * 5 and set(heat.columns) >= {"agent", "round", "decile", "share_of_exposures", "seeds"}
    page = render_html(read_runs([run]))
    uri = re.search(r'download="recall.csv" href="data:text/csv;charset=utf-8,([^"]*)"', page).group(1)
    csv = pd.read_csv(io.StringIO(urllib.parse.unquote(uri.replace("&amp;", "&"))))
    pd.testing.assert_frame_equal(csv, frame.astype({"seeds": "int64"}), check_dtype=False)


def test_report_page_says_what_a_reader_needs(tmp_path: Path) -> None:
    one = render_html(read_runs([make_run_dir(tmp_path / "one", AGENTS, seeds=1, rounds=3)]))
    assert one.count("1 seed: no intervals") >= 5 and '"showSendToCloud": false' in one and '"displaylogo": false' in one
    assert PLOT_CONFIG["modeBarButtonsToRemove"] == ["sendDataToCloud", "editInChartStudio", "lasso2d", "select2d"]
    anchors = re.findall(r'<nav class="toc".*?</nav>', one, re.S)[0]
    for target in re.findall(r'href="#([^"]+)"', anchors):
        assert f'id="{target}"' in one, target
    assert one.count('class="csv"') == 10  # every figure drawn and the summary table (no leaderboard in synthetic runs)
    partial = render_html(read_runs([make_run_dir(tmp_path / "part", AGENTS, seeds=2, rounds=3, done={"popular": 0})]))
    assert 'id="pending"' in partial and "popular (no finished round yet)" in partial
    ds = Dataset.from_runs(read_runs([tmp_path / "part"]))
    assert ds.agents == ("oracle", "random") and len([t for t in decile_figure(ds).data if t.type == "heatmap"]) == 2


def test_leaderboard_stats_average_rounds_within_seeds_then_seeds() -> None:
    from dashboards.leaderboard import leaderboard_stats
    from dashboards.stats import t_quantile

    board = pd.DataFrame({
        "run": "r", "metric": "leaderboard_tau_holdout", "seed": [0, 0, 1, 1, 2, 2], "round": [1, 2] * 3,
        "value": [1.0, 0.0, 0.5, 0.5, -1.0, 1.0],
    })  # fmt: skip
    row = leaderboard_stats(board).iloc[0]
    per_seed = [0.5, 0.5, 0.0]
    half = t_quantile(2) * float(pd.Series(per_seed).std(ddof=1)) / 3**0.5
    assert row["mean"] == pytest.approx(1 / 3) and row["n"] == 3
    assert row["lo"] == pytest.approx(max(-1.0, 1 / 3 - half)) and row["hi"] == pytest.approx(min(1.0, 1 / 3 + half))
