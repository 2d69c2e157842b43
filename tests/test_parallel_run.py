"""Issue 14 item 1: the loops of a run in parallel processes give the serial run's results, commits and files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from scenarios import signals
from scenarios.experiment import make_experiment, run_experiment
from scenarios.parallel import task_order
from scenarios.progress import choose_threads, header
from tests.conftest import tiny_scenario

pytestmark = pytest.mark.usefixtures("one_thread")  # the workers run on 1 thread: the serial reference too

AGENTS = ("random", "popular", "oracle")


def _exp(seeds: int = 2, **flags: bool):
    return make_experiment(tiny_scenario(), list(AGENTS), seeds, 2, **flags)


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    out = tmp_path_factory.mktemp("serial") / "run"
    return run_experiment(_exp(), out), out


def test_parallel_metrics_equal_the_serial_run_bit_for_bit(serial: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    ticks: list[int] = []
    out = tmp_path / "run"
    metrics = run_experiment(_exp(), out, progress=lambda total: lambda: ticks.append(total), workers=2, threads=1)
    pd.testing.assert_frame_equal(metrics, serial[0])
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), pd.read_parquet(serial[1] / "metrics.parquet"))
    assert len(ticks) == len(AGENTS) * 2 * 2  # one tick per (agent, seed, round), relayed from the workers
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and sorted(manifest["checkpoints"]) == sorted(f"{a}__seed{s}" for a in AGENTS for s in (0, 1))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == sorted(e["file"] for e in manifest["checkpoints"].values())
    assert {p.name for p in tmp_path.iterdir()} == {"run"}  # the staging folder is gone
    timings, reference = (pd.read_parquet(d / "timings.parquet").drop(columns="seconds") for d in (out, serial[1]))
    pd.testing.assert_frame_equal(timings, reference)  # the same fits, in the same order (seconds are the machine's)


def test_a_parallel_run_resumes_what_a_serial_run_left(serial: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    out, ticks = tmp_path / "run", []

    def progress(total: int):
        def tick() -> None:
            ticks.append(1)
            if len(ticks) == 3:  # random seed 0 done, popular seed 0 after its first round
                signals._received.append(15)

        return tick

    try:
        with pytest.raises(signals.Interrupted):
            run_experiment(_exp(), out, progress=progress)
    finally:
        signals._received.clear()
    resumed = run_experiment(_exp(), out, resume=True, workers=2, threads=1)
    pd.testing.assert_frame_equal(resumed, serial[0])


def test_parallel_force_replaces_a_run_and_moves_logs_and_truth_in(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_experiment(_exp(seeds=1), out)
    exp = _exp(seeds=1, save_logs=True, save_truth=True)
    metrics = run_experiment(exp, out, force=True, workers=2, threads=1)
    assert set(metrics.agent) == set(AGENTS) and json.loads((out / "manifest.json").read_text())["save_logs"]
    for agent in AGENTS:
        assert sorted(p.name for p in (out / "logs" / f"{agent}__seed0" / "impressions").iterdir()) == [
            "round=00000.parquet",
            "round=00001.parquet",
        ]
        assert (out / "truth" / f"{agent}__seed0").is_dir()
    assert {p.name for p in tmp_path.iterdir()} == {"run"}


def test_learners_are_scheduled_before_the_references_seed_by_seed() -> None:
    exp = make_experiment(tiny_scenario(), ["random", "bc", "oracle"], 2, 1)
    assert task_order(exp) == [(0, "bc"), (0, "random"), (0, "oracle"), (1, "bc"), (1, "random"), (1, "oracle")]


def test_threads_are_shared_out_over_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CASCADESIM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert (choose_threads(None, 1), choose_threads(None, 2), choose_threads(None, 3), choose_threads(4, 2)) == (2, 1, 1, 4)
    line = header(_exp(seeds=3), Path("runs/x"), 1, 2)
    assert "3 agent(s) [random,popular,oracle] x 3 seed(s) x 2 round(s); 2 processes x 1 torch thread(s)" in line
