"""Tuning: equal TPE budgets on validation seeds, reproducible, the best configs loadable by run and sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import TINY

from scenarios.cli import main
from scenarios.sweep import SerialRunner, load_spec
from scenarios.sweep.cells import part_path, read_part
from scenarios.sweep.toml_out import dumps
from simulator.config import load_scenario_file

pytest.importorskip("optuna")
from scenarios.tune import load_tune_spec, run_tune  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SPEC = """
[tune]
scenario = "tiny.toml"
trials = 3
validation_seeds = [100, 101]
test_seeds = 3
metric = "true_recall@50"
last_rounds = 2
threads = 1

[base]
timeline.rounds = 2

[agents.bc]
fixed = {label = "clicked"}
space.gamma = {low = 1.0, high = 30.0, log = true}
space.hidden = {choices = [[32], [64, 32]]}
"""


def write(folder: Path, text: str = SPEC) -> Path:
    (folder / "tiny.toml").write_text(dumps(TINY))
    (folder / "tune.toml").write_text(text)
    return folder / "tune.toml"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tune")
    run_tune(load_tune_spec(write(folder)), folder / "out", runner=SerialRunner())
    return folder


def test_best_is_the_trial_with_the_highest_validation_mean(tuned: Path) -> None:
    out = tuned / "out"
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 3 and trials.value.notna().all()
    best = trials.loc[trials.value.idxmax()]
    means = []  # the objective by hand: true_recall@50 over both rounds (last_rounds = 2) and both validation seeds
    for key in best.cells.split(","):
        frame, meta = read_part(part_path(out, key))
        assert meta["seed"] in (100, 101)
        means.append(frame[frame.metric == "true_recall@50"].value.mean())
    assert best.value == pytest.approx(sum(means) / 2, abs=1e-12)
    sc = load_scenario_file(out / "best.toml")  # a scenario file: cascadesim run --scenario best.toml
    assert sc.agents["bc"] == {"label": "clicked", **json.loads(best.params)}
    text = (out / "best.toml").read_text()
    assert "budget 3 TPE trials per agent" in text and "gamma: float [1.0, 30.0] log" in text and "[100, 101]" in text
    record = json.loads((out / "tune.json").read_text())
    assert record["budget_trials_per_agent"] == 3 and record["test_seeds"] == [0, 1, 2]


def test_rerun_proposes_the_same_trials_and_reuses_every_cell(tuned: Path) -> None:
    first = pd.read_parquet(tuned / "out" / "trials.parquet")
    res = CliRunner().invoke(main, ["tune", str(tuned / "tune.toml"), "--out", str(tuned / "out"), "--resume"])
    assert res.exit_code == 0, res.output
    again = pd.read_parquet(tuned / "out" / "trials.parquet")
    pd.testing.assert_frame_equal(first, again)
    assert "[6/6] cells already finished" not in res.output  # cached cells are not rerun, nor counted as new lines
    assert not any(line.startswith("[") and " s, " in line for line in res.output.splitlines())


def test_sweep_loads_the_best_configs(tuned: Path) -> None:
    spec = tuned / "sweep.toml"
    spec.write_text('agents = ["bc"]\n[sweep]\nscenario = "tiny.toml"\nagents_from = "out/best.toml"\n')
    cells = load_spec(spec).cells(threads=1)
    best = load_scenario_file(tuned / "out" / "best.toml").agents["bc"]
    assert cells[0].scenario["agents"] == {"bc": best}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("test_seeds = 3", "test_seeds = [100, 7]"), "tune.validation_seeds: must be disjoint from tune.test_seeds"),
        (("low = 1.0, high = 30.0", "low = 30.0, high = 1.0"), "agents.bc.space.gamma: needs numbers low < high"),
        (("space.gamma", "space.gama"), "agents.bc.gama: unknown option of bc"),
        (("trials = 3", "trials = 0"), "tune.trials: must be an integer >= 1"),
        (("last_rounds = 2", "last_rounds = 9"), "tune.last_rounds: must be <= timeline.rounds (2)"),
        (("threads = 1", "thread = 1"), "tune: unknown option(s) ['thread']"),
    ],
)
def test_bad_tune_spec_gives_one_line_and_exit_2(edit: tuple[str, str], message: str, tmp_path: Path) -> None:
    spec = write(tmp_path, SPEC.replace(*edit))
    res = CliRunner().invoke(main, ["tune", str(spec), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
