"""Issue 17 item 4: a run killed at any moment resumes to the same results, bit for bit.

SIGKILL lands at random times (inside rounds, checkpoint writes and report writing) and, deterministically,
inside the N-th atomic write (half a temporary file, or just after a file is in place but before what
follows it). SIGTERM and Ctrl-C stop at the next committed round with one line and exit 143 / 130.
A few trials run by default; ``-m slow`` runs 50 random kills.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from scenarios.experiment import make_experiment, run_experiment
from tests.conftest import TINY
from tests.forked_cli import ForkedCLI, warm_up

AGENTS, ROUNDS = "random,bc", 2
ROOT = Path(__file__).resolve().parents[1]


def _toml(path: Path) -> Path:
    lines = [f'name = "{TINY["name"]}"']
    for section, values in TINY.items():
        if isinstance(values, dict):
            lines += [f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _args(scenario: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--scenario", str(scenario), "--agents", AGENTS, "--rounds", str(ROUNDS), "--out", str(out), *extra]


def _start(args: list[str], env: dict[str, str] | None = None) -> ForkedCLI:
    """The command in a process of its own (forked from a server that imported the CLI once; one torch thread)."""
    return ForkedCLI(args, env)


def _finish(scenario: Path, out: Path) -> subprocess.CompletedProcess:
    """What a user does after a crash: --resume where a run was committed, else start it again."""
    extra = ("--resume",) if (out / "manifest.json").exists() else ()
    proc = _start(_args(scenario, out, *extra))
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, float]:
    """The scenario file, the uninterrupted results and how long an uninterrupted command takes."""
    folder = tmp_path_factory.mktemp("kill")
    scenario = _toml(folder / "tiny.toml")
    warm_up()  # the server's imports are not part of how long a command takes
    started = time.monotonic()
    done = _finish(scenario, folder / "reference")
    assert done.returncode == 0, done.stderr
    took = time.monotonic() - started
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the command runs (OMP_NUM_THREADS=1): torch's CPU results depend on the thread count
    try:
        expected = run_experiment(make_experiment(str(scenario), AGENTS.split(","), 1, ROUNDS), None)
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "reference" / "metrics.parquet"), expected)
    return scenario, expected, took


def _assert_resumes_identically(scenario: Path, out: Path, expected: pd.DataFrame) -> None:
    done = _finish(scenario, out)
    assert done.returncode == 0, done.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), expected)
    assert not list(out.rglob("*.tmp")) and (out / "report.html").is_file()


SLOW = pytest.mark.slow


@pytest.mark.parametrize("spec", ["2:after", "3:mid", pytest.param("2:mid", marks=SLOW), pytest.param("5:after", marks=SLOW)])
def test_killed_inside_a_write_resumes_identically(spec: str, setup, tmp_path: Path) -> None:
    """Writes 2, 3 are round 0's checkpoint and manifest commit of the first loop; 5 its round 1 manifest.

    2:after leaves a checkpoint the manifest does not name, 3:mid half a manifest in a temporary file,
    5:after a committed round 1 whose round 0 checkpoint was not yet removed.
    """
    scenario, expected, _ = setup
    out = tmp_path / "run"
    proc = _start(_args(scenario, out), {"KILL_IN_WRITE": spec})
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    _assert_resumes_identically(scenario, out, expected)


def _random_kill_trial(scenario: Path, expected: pd.DataFrame, took: float, out: Path, rng: random.Random) -> None:
    proc = _start(_args(scenario, out))
    try:
        proc.wait(timeout=rng.uniform(0.5, took))
    except subprocess.TimeoutExpired:
        proc.kill()
    proc.communicate(timeout=60)
    _assert_resumes_identically(scenario, out, expected)


def test_killed_at_a_random_moment_resumes_identically(setup, tmp_path: Path) -> None:
    scenario, expected, took = setup
    _random_kill_trial(scenario, expected, took, tmp_path / "run", random.Random(17))


@pytest.mark.slow
def test_fifty_random_kills_resume_identically(setup, tmp_path: Path) -> None:
    scenario, expected, took = setup
    rng = random.Random(1717)
    for trial in range(50):
        _random_kill_trial(scenario, expected, took, tmp_path / f"run{trial}", rng)


def _wait_for_first_commit(out: Path, proc: ForkedCLI) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads((out / "manifest.json").read_text())["checkpoints"]:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError("the run committed no round")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_stop_at_a_committed_round_with_one_line(sig: int, code: int, setup, tmp_path: Path) -> None:
    scenario, expected, _ = setup
    out = tmp_path / "run"
    proc = _start(_args(scenario, out))
    _wait_for_first_commit(out, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code, stderr
    assert stderr.startswith(f"error: interrupted ({signal.Signals(sig).name})") and stderr.count("\n") == 1, stderr
    assert not list(out.rglob("*.tmp"))
    _assert_resumes_identically(scenario, out, expected)


def test_a_run_in_progress_is_not_joined_or_replaced(setup, tmp_path: Path) -> None:
    """Two runs into one --out, or --force during a run: the second refuses; the first ends untouched."""
    from scenarios.experiment import make_experiment, run_experiment
    from simulator.checkpoint import RunDirError

    scenario, expected, _ = setup
    out = tmp_path / "run"
    proc = _start(_args(scenario, out))
    _wait_for_first_commit(out, proc)
    exp = make_experiment(str(scenario), AGENTS.split(","), 1, ROUNDS)
    with pytest.raises(RunDirError, match="already exists"):
        run_experiment(exp, out)
    for kwargs in ({"force": True}, {"resume": True}):
        with pytest.raises(RunDirError, match="in use by another cascadesim run"):
            run_experiment(exp, out, **kwargs)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), expected)
