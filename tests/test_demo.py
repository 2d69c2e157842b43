"""Issue 14 item 1: the demo (`make demo`, the default preset) and the table a run ends with."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from scenarios.contrast import contrast_table, heading, label, legend, widest_gap
from scenarios.experiment import headline_k, summary_metrics
from scenarios.presets import load_scenario
from tests.test_cli import tiny_toml  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def _frame(rows: list[tuple[str, int, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([("s", *row) for row in rows], columns=["scenario", "agent", "seed", "round", "metric", "value"])


def test_the_default_preset_is_the_demo_in_its_description() -> None:
    sc = load_scenario("default")
    k = headline_k(sc)
    assert k < sc.cascade.k_retrieve  # at K >= K_r a replay of the serving model says nothing
    assert sc.evaluation.holdout_share > 0 and sc.evaluation.shared_log  # the offline protocols run
    w, t = sc.world, sc.timeline
    sizes = (f"{w.n_users:,} users x {w.n_items:,} items", f"{t.requests_per_round:,} requests per round", f"{t.rounds} daily rounds")
    for text in sizes:
        assert text in " ".join(sc.description.split()), text
    assert summary_metrics(sc)[:4] == [
        f"true_recall@{k}",
        f"onpolicy_replay_recall@{k}",
        f"offline_holdout_recall@{k}",
        f"true_holdout_recall@{k}",
    ]


def test_make_demo_runs_three_seeds_in_two_processes() -> None:
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe is not None
    assert re.search(r"cascadesim run --seeds 3 --workers 2 ", recipe.group(1)), recipe.group(1)


def test_the_table_gives_mean_and_t_interval_over_seeds_in_the_last_round() -> None:
    rows = [("popular", s, r, "true_recall@5", v + r) for s, v in enumerate((0.1, 0.2, 0.3)) for r in (0, 1)]
    rows += [("popular", s, 1, "onpolicy_replay_recall@5", 0.9) for s in range(3)]
    rows += [("oracle", 0, 1, "true_recall@5", 1.0)]
    table = contrast_table(_frame(rows), ["true_recall@5", "onpolicy_replay_recall@5", "exposure_gini"])
    # round 1: 1.1, 1.2, 1.3 -> mean 1.2, sd 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3) = 4.303 * 0.05774 = 0.248
    assert table.loc["popular", "true recall@5"] == "1.200 ± 0.248"
    assert table.loc["popular", "logged replay@5"] == "0.900 ± 0.000"
    assert table.loc["oracle", "true recall@5"] == "1.000" and table.loc["oracle", "logged replay@5"] == "–"
    assert list(table.index) == ["popular", "oracle"] and "exposure Gini" not in table.columns


def test_heading_counts_rounds_from_one_and_says_when_there_is_no_interval() -> None:
    assert heading("default", 9, 10, 3) == "default: after round 10 of 10, mean ± 95% interval over 3 seeds"
    assert heading("default", 0, 4, 1) == "default: after round 1 of 4, 1 seed: no intervals"


def test_widest_gap_names_the_agent_whose_logs_overstate_most() -> None:
    rows = [("popular", 0, 0, "true_recall@5", 0.1), ("popular", 0, 0, "onpolicy_replay_recall@5", 0.95)]
    rows += [("bc", 0, 0, "true_recall@5", 0.3), ("bc", 0, 0, "onpolicy_replay_recall@5", 0.8)]
    text = widest_gap(_frame(rows), "true_recall@5", "onpolicy_replay_recall@5")
    assert text == "widest gap: popular's logs say logged replay@5 0.950; the truth is true recall@5 0.100"
    assert widest_gap(_frame(rows[:1]), "true_recall@5", "onpolicy_replay_recall@5") is None
    assert label("offline_holdout_recall@50") == "hold-out@50"
    assert "hold-out@50 = offline_holdout_recall@50" in " ".join(legend(["offline_holdout_recall@50"]).split())


def test_a_run_on_two_workers_prints_the_contrast_with_intervals(tiny_toml: Path, tmp_path: Path) -> None:  # noqa: F811
    args = ["run", "--scenario", str(tiny_toml), "--agents", "random,popular", "--seeds", "2", "--rounds", "1", "--workers", "2"]
    res = subprocess.run(
        [sys.executable, "-m", "scenarios.cli", *args, "--threads", "1", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert "2 agent(s) [random,popular] x 2 seed(s) x 1 round(s); 2 processes x 1 torch thread(s)" in res.stdout
    assert "tiny: after round 1 of 1, mean ± 95% interval over 2 seeds" in res.stdout
    table = res.stdout.split("mean ± 95% interval over 2 seeds\n")[1].splitlines()
    assert table[0].split()[:4] == ["true", "recall@20", "logged", "replay@20"] and "±" in table[2]
    assert "widest gap: " in res.stdout and "true recall@20 = true_recall@20" in " ".join(res.stdout.split())
