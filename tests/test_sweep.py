"""Sweeps: cells equal run_experiment, parallel (pool, Ray) equals serial, resume after SIGKILL, failures, bad specs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import TINY

from scenarios.cli import main
from scenarios.experiment import make_experiment, run_experiment
from scenarios.sweep import PoolRunner, SerialRunner, load_spec, run_sweep
from scenarios.sweep.cells import part_path
from scenarios.sweep.toml_out import dumps
from simulator.config import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
SPEC = """
agents = ["random", {name = "bc-g5", agent = "bc", gamma = 5.0}]
[sweep]
scenario = "tiny.toml"
seeds = [0, 3]
threads = 1
[base]
timeline.rounds = 2
[grid]
world.conformity_mean = [0.0, 0.3]
"""


def write_spec(folder: Path, text: str = SPEC) -> Path:
    (folder / "tiny.toml").write_text(dumps(TINY))
    path = folder / "spec.toml"
    path.write_text(text)
    return path


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in frame.columns if c not in ("value", "cell")]
    return frame.drop(columns=["cell"], errors="ignore").sort_values(keys).reset_index(drop=True)


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The reference: every cell of SPEC run one after another in this process."""
    folder = tmp_path_factory.mktemp("serial")
    result = run_sweep(load_spec(write_spec(folder)), folder / "out", runner=SerialRunner())
    assert not result.failed and len(result.outcomes) == 8
    return canonical(result.results)


def test_spec_expands_the_grid_and_keys_depend_on_config_only(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path))
    cells = spec.cells(threads=1)
    assert spec.fields == ["world.conformity_mean"] and len(cells) == 2 * 2 * 2
    assert {c.scenario["world"]["conformity_mean"] for c in cells} == {0.0, 0.3}
    bc = [c for c in cells if c.label == "bc-g5"]
    assert all(c.scenario["agents"] == {"bc": {"gamma": 5.0}} for c in bc)
    assert len({c.key for c in cells}) == 8
    assert cells[0].key == spec.cells(threads=1)[0].key != spec.cells(threads=2)[0].key  # results depend on threads


def test_sweep_cells_equal_run_experiment_of_each_agent_and_seed(tmp_path: Path) -> None:
    spec_text = SPEC.replace('{name = "bc-g5", agent = "bc", gamma = 5.0}', '"bc"')
    spec_text = spec_text.replace("[grid]\nworld.conformity_mean = [0.0, 0.3]", "")
    result = run_sweep(load_spec(write_spec(tmp_path, spec_text)), tmp_path / "out", runner=SerialRunner())
    sc = load_spec(tmp_path / "spec.toml").scenarios[0]
    exp = make_experiment(sc, ["random", "bc"], seeds=4)
    reference = run_experiment(type(exp)(exp.scenario, exp.agents, (0, 3), exp.device))
    pd.testing.assert_frame_equal(canonical(result.results), canonical(reference), check_exact=True)


def kill_one_worker(runner: PoolRunner, done: threading.Event) -> None:
    """SIGKILL one pool worker once it is up (mid-cell or idle, the pool breaks either way)."""
    while not done.is_set():
        pool = runner._pool
        procs = list(getattr(pool, "_processes", {}) or {}) if pool is not None else []
        if procs:
            time.sleep(2.0)
            os.kill(procs[0], signal.SIGKILL)
            return
        time.sleep(0.05)


def test_pool_of_two_equals_serial_even_when_a_worker_is_killed(serial: pd.DataFrame, tmp_path: Path) -> None:
    runner, done = PoolRunner(workers=2, threads=1), threading.Event()
    killer = threading.Thread(target=kill_one_worker, args=(runner, done))
    killer.start()
    try:
        result = run_sweep(load_spec(write_spec(tmp_path)), tmp_path / "out", workers=2, runner=runner)
    finally:
        done.set()
        killer.join()
        runner.close()
    assert not result.failed and runner.broken_passes >= 1  # the kill broke the pool and the lost cells ran again
    pd.testing.assert_frame_equal(canonical(result.results), serial, check_exact=True)


@pytest.mark.slow  # ~40 s: starts a Ray instance
def test_ray_equals_serial(serial: pd.DataFrame, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from scenarios.sweep import RayRunner

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(load_spec(write_spec(tmp_path)), tmp_path / "out", runner=RayRunner(None, threads=1))
    finally:
        ray.shutdown()
    assert not result.failed
    pd.testing.assert_frame_equal(canonical(result.results), serial, check_exact=True)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scenarios.cli", *args]


@pytest.mark.slow  # ~60 s: two CLI sweeps in subprocesses
def test_resume_after_sigkill_equals_the_uninterrupted_sweep(serial: pd.DataFrame, tmp_path: Path) -> None:
    spec, out = write_spec(tmp_path), tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cli("sweep", str(spec), "--out", str(out), "--workers", "2"), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / "parts").exists() or len(list((out / "parts").glob("*.parquet"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-sweep
    proc.wait()
    assert not (out / "results.parquet").exists()
    res = subprocess.run(cli("sweep", str(spec), "--out", str(out), "--workers", "2", "--resume"), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "reused" in res.stdout and "0 failed" in res.stdout
    pd.testing.assert_frame_equal(canonical(pd.read_parquet(out / "results.parquet")), serial, check_exact=True)


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    text = SPEC.replace("gamma = 5.0}", "gamma = 5.0}, {name = \"bad\", agent = \"bc\", lr = -1.0}").replace("seeds = [0, 3]", "seeds = 1")
    spec, out = write_spec(tmp_path, text), tmp_path / "out"
    res = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(out)])
    assert res.exit_code == 1
    summary = [line for line in res.output.splitlines() if line.startswith("sweep:")]
    assert len(summary) == 1 and "6 cells, 4 run, 0 reused, 2 failed" in summary[0] and "lr" in summary[0]
    tracebacks = list((out / "failed").glob("*.txt"))
    assert len(tracebacks) == 2 and all("Traceback" in p.read_text() for p in tracebacks)
    results = pd.read_parquet(out / "results.parquet")
    assert set(results.agent) == {"random", "bc-g5"}
    board = pd.read_parquet(out / "leaderboard.parquet")  # the offline protocols across the agents of each grid point
    assert set(board.metric) >= {"leaderboard_tau_holdout", "leaderboard_top1_holdout"}
    assert set(board["world.conformity_mean"]) == set(results["world.conformity_mean"]) and (board.n_agents == 2).all()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('"random"', '"nope"'), "agents.nope: unknown agent 'nope'"),
        (("gamma = 5.0", "gama = 5.0"), "agents.bc-g5.gama: unknown option of bc"),
        (("world.conformity_mean", "world.conformity"), "grid.world.conformity: not a scenario field"),
        (("[0.0, 0.3]", "[0.0, 3.0]"), "world.conformity_mean"),
        (("seeds = [0, 3]", "seeds = 0"), "sweep.seeds: must be"),
        (("threads = 1", "threads = 0"), "sweep.threads: must be an integer >= 1"),
        (("[base]", "[bsae]"), "bsae: unknown table"),
        (('"tiny.toml"', '"missing.toml"'), "scenario: no such file"),
        (("[grid]", "[grid"), "spec: spec.toml is not valid TOML"),
    ],
)
def test_bad_spec_gives_one_line_and_exit_2(edit: tuple[str, str], message: str, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC.replace(*edit))
    res = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_existing_out_needs_resume_and_workers_must_be_positive(tmp_path: Path) -> None:
    spec, out = write_spec(tmp_path), tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("")
    res = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(out)])
    assert res.exit_code == 2 and "pass --resume" in res.output
    res = CliRunner().invoke(main, ["sweep", str(spec), "--out", str(tmp_path / "o2"), "--workers", "0"])
    assert res.exit_code == 2 and "--workers: must be >= 1" in res.output
    with pytest.raises(ConfigError, match="holds no sweep"):
        run_sweep(load_spec(spec), tmp_path / "o3", resume=True)
    assert not part_path(tmp_path / "o3", "x").exists()
