"""The benchmark scripts still run end to end on tiny sizes (they are not timed here: a script broken by a refactor
used to stay unnoticed until someone needed its figures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}


def _run(*args: str) -> str:
    res = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_soak_runs_and_reports_the_rss_curve(tmp_path: Path) -> None:
    out = _run("benchmarks/soak.py", "--rounds", "4", "--out", str(tmp_path / "s.csv"), "--checkpoint-dir", str(tmp_path))
    assert "RSS growth" in out and (tmp_path / "s.csv").read_text().count("\n") == 5  # header + 4 rounds
    assert (tmp_path / "soak.pt").exists()


def test_full_round_prints_phases_and_samples_per_second() -> None:
    out = _run("benchmarks/full_round.py", "--users", "400", "--items", "400", "--requests", "300")
    assert "round 0 (serve, metrics, dynamics, retrain)" in out and "samples/s" in out


@pytest.mark.parametrize("bad", [["--rounds", "1"], ["--sizes", "50"], ["--requests", "0"]])
def test_round_phases_refuses_bad_arguments_in_one_line(bad: list[str]) -> None:
    res = subprocess.run([sys.executable, "benchmarks/round_phases.py", *bad], cwd=ROOT, capture_output=True, text=True, env=ONE_THREAD)
    assert res.returncode == 2 and res.stderr.strip().startswith(f"error: {bad[0]}:") and "Traceback" not in res.stderr


def test_gpu_suite_dry_run_on_the_cpu(tmp_path: Path) -> None:
    """The GPU suite's driver: a step's RESULT line lands in the JSONL even when run on the CPU."""
    env = {**ONE_THREAD, "GPU_SUITE_DEVICE": "cpu"}
    res = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", "--out", str(tmp_path), "--steps", "agreement"],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    line = (tmp_path / "gpu_suite.jsonl").read_text().strip()
    assert '"step": "agreement"' in line and '"rc": 0' in line  # the CUDA cases skip, the bound's own test passes


def test_round_phases_runs_with_the_ranker_asked_for(tmp_path: Path) -> None:
    """``--ranker noisy-oracle`` (the T-RECS side by side's equal-work column): no ranker fit in the phases."""
    out = tmp_path / "rp.json"
    _run("benchmarks/round_phases.py", "--sizes", "200", "--rounds", "2", "--ranker", "noisy-oracle", "--json", str(out))
    res = json.loads(out.read_text())["results"][0]
    assert res["ranker"] == "noisy-oracle" and res["phases"]["ranker fit"] < 0.05 * res["per_round_s"]
    assert res["phases"]["agent fit"] > 0
    assert res["checkpoint_mib"] > 0 and res["checkpoint_s"] > 0  # the loop after the rounds pickles (no timing patch left on it)
