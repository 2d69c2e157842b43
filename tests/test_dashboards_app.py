"""The Dash app without a browser: URL state, the metric picker, re-reading a run in progress, overlay and difference."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from dashboards.app import VIEWS, caption, make_app, render
from dashboards.app_state import Choices, LiveRuns, decode, encode, metric_options
from dashboards.data import Dataset, read_runs
from dashboards.export import figure_frame
from dashboards.figures import COMPARE_MODES
from dashboards.stats import seed_stats
from simulator.metrics.definitions import METRICS
from tests.dashboard_fixtures import make_run_dir

AGENTS = ("oracle", "random", "popular")


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("two")
    a = make_run_dir(root / "a", AGENTS, seeds=3, rounds=6, ks=(10, 20, 50, 100, 200))
    b = make_run_dir(root / "b", AGENTS, seeds=2, rounds=4, ks=(10, 20, 50, 100, 200), scenario="other", rng_seed=5)
    return Dataset.from_runs(read_runs([a, b]))


def choices(ds: Dataset) -> Choices:
    return Choices.of(ds, list(VIEWS), list(COMPARE_MODES))


def test_url_round_trip_and_fallbacks(two: Dataset) -> None:
    ch = choices(two)
    state = {"view": "metric", "metric": "true_recall@20", "runs": ["other"], "agents": ["oracle", "random"], "k": 50, "seed": 1,
             "rounds": [2, 5], "compare": "overlay"}
    search = encode(state)
    assert "metric=true_recall@20" in search and "runs=other" in search and "rounds=2-5" in search
    assert decode(search, ch) == state
    assert decode(encode({**state, "agents": []}), ch)["agents"] == []  # no agent chosen is a state too
    bad = decode("?view=nope&metric=exposure_lorenz@0.5x&k=7&seed=x&rounds=0-99&compare=sideways&runs=zzz&agents=random", ch)
    d = ch.defaults()
    assert bad["view"] == d["view"] and bad["k"] == d["k"] == 50 and bad["seed"] == 0 and bad["compare"] == "side"
    assert bad["rounds"] == [1, 6] and bad["runs"] == d["runs"] and bad["agents"] == ["random"] and bad["metric"] == "exposure_gini"
    assert decode("", ch) == d and d["k"] == 50  # the default K is below K_r = 100


def test_metric_picker_is_grouped_named_defined(two: Dataset) -> None:
    options = metric_options(sorted(two.names))
    heads = [o for o in options if o.get("disabled")]
    assert [o["value"] for o in heads][:3] == ["group:truth", "group:offline", "group:exposure"]
    values = [o["value"] for o in options if not o.get("disabled")]
    assert not [v for v in values if v.startswith(("exposure_lorenz", "score_hist", "exposure_share_decile", "exposure_top_share"))]
    recall = [v for v in values if v.startswith("true_recall@")]
    assert recall == ["true_recall@10", "true_recall@20", "true_recall@50", "true_recall@100", "true_recall@200"]
    first = next(o for o in options if o["value"] == "true_recall@10")
    assert METRICS["true_recall@K"] in first["search"] and "score_auc_unexposed" in values


def test_live_runs_pick_up_new_rounds(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "live", AGENTS, seeds=2, rounds=8, done={a: 3 for a in AGENTS})
    live = LiveRuns([run])
    assert max(live.ds.rounds) == 3 and not live.refresh()
    full = make_run_dir(tmp_path / "full", AGENTS, seeds=2, rounds=8)
    frame = pd.read_parquet(full / "metrics.parquet")
    frame[frame["round"] < 6].to_parquet(run / "metrics.parquet")
    stat = os.stat(run / "metrics.parquet")
    os.utime(run / "metrics.parquet", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later write, whatever the clock's grain
    assert live.refresh() and max(live.ds.rounds) == 6 and not live.refresh()


def test_overlay_and_difference(two: Dataset) -> None:
    fig, note = render(two, "metric", None, ["oracle"], metric="exposure_gini", compare="overlay")
    lines = [t for t in fig.data if t.meta and t.meta.get("role") == "mean"]
    assert note == "" and {t.meta["run"] for t in lines} == {"synthetic", "other"} and {t.xaxis for t in lines} == {"x"}
    assert len({t.line.dash for t in lines}) == 2  # runs told apart by dash
    fig, note = render(two, "metric", None, ["oracle", "random"], metric="exposure_gini", compare="diff")
    frame = figure_frame(fig)
    stats = seed_stats(two.metrics, ["exposure_gini"]).set_index(["run", "agent", "round"])["mean"]
    row = frame[(frame.agent == "random") & (frame["round"] == 3)].iloc[0]
    assert row["run"] == "synthetic − other" and set(frame["round"]) == {1, 2, 3, 4}  # the rounds both runs have
    assert row["mean"] == pytest.approx(stats[("synthetic", "random", 3)] - stats[("other", "random", 3)], abs=1e-15)
    _, note = render(two, "metric", ["other"], None, metric="exposure_gini", compare="diff")
    assert note.startswith("Difference: choose two runs")
    assert "Overlay and difference apply" in caption(two, "deciles", 50, "overlay", None)


def test_captions_and_every_view(two: Dataset, tmp_path: Path) -> None:
    for view in VIEWS:
        for compare in COMPARE_MODES:
            fig, note = render(two, view, None, None, metric="coverage", k=10, rounds=[1, 4], seed=1, compare=compare)
            assert note == "" and len(fig.data) > 0, (view, compare)
    one = Dataset.from_runs(read_runs([make_run_dir(tmp_path / "one", AGENTS, seeds=1, rounds=3)]))
    assert caption(one, "recall", 10, "side", None).endswith("1 seed: no intervals. Lines are that seed's values; run 3 or more "
                                                            "seeds for 95% bands.")
    assert make_app([tmp_path / "one"]).layout is not None


def test_a_page_load_shows_the_runs_as_they_are_now(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "p", AGENTS, seeds=1, rounds=4, done={"popular": 0})
    app = make_app([run])
    assert "popular (no finished round yet)" in str(app.layout().children)
    make_run_dir(tmp_path / "p", AGENTS, seeds=1, rounds=4)  # the run finished meanwhile
    stat = os.stat(run / "metrics.parquet")
    os.utime(run / "metrics.parquet", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert "Not finished" not in str(app.layout().children)
