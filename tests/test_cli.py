"""The command line: listing, a tiny run, resume/force rules and one-line errors with no partial output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TINY

CLI = [sys.executable, "-m", "scenarios.cli"]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture
def tiny_toml(tmp_path: Path) -> Path:
    lines = [f'name = "{TINY["name"]}"']
    for section, values in TINY.items():
        if isinstance(values, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / "tiny.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_list_shows_scenarios_agents_and_metric_definitions() -> None:
    out = _cli("list")
    assert out.returncode == 0, out.stderr
    for name in ("default", "popularity-trap", "heavy-ssb", "bc", "oracle", "random", "popular", "true_recall@K", "exposure_gini", "offline_holdout_recall@K", "bias_ope_<estimator>_<target>"):
        assert name in out.stdout
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("  ")}
    assert lines["true_recall@K"].endswith("[higher is better]") and lines["exposure_gini"].endswith("[lower is better]")
    assert lines["bias_holdout_<metric>@K"].endswith("[closer to 0 is better]")


def test_run_writes_manifest_and_long_metrics_and_prints_a_summary(tiny_toml: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    res = _cli("run", "--scenario", str(tiny_toml), "--agents", "random,oracle", "--rounds", "2", "--out", str(out_dir))
    assert res.returncode == 0, res.stderr
    for col in ("true_recall@20", "offline_holdout_recall@20", "exposure_gini", "exposure_top1_share"):  # K: the largest below K_r
        assert col in res.stdout
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["agents"] == ["random", "oracle"] and manifest["seeds"] == [0]
    assert manifest["scenario"]["timeline"]["rounds"] == 2 and "torch" in manifest["versions"]
    frame = pd.read_parquet(out_dir / "metrics.parquet")
    assert list(frame.columns) == ["scenario", "agent", "seed", "round", "metric", "value"]
    assert set(frame["round"]) == {0, 1} and set(frame.agent) == {"random", "oracle"}
    # an existing run is never overwritten without --force, and --resume of a finished run changes nothing
    again = _cli("run", "--scenario", str(tiny_toml), "--agents", "random,oracle", "--rounds", "2", "--out", str(out_dir))
    assert again.returncode == 2 and "already exists" in again.stderr and again.stderr.count("\n") == 1
    resumed = _cli("run", "--scenario", str(tiny_toml), "--agents", "random,oracle", "--rounds", "2", "--out", str(out_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(frame, pd.read_parquet(out_dir / "metrics.parquet"))
    other = _cli("run", "--scenario", str(tiny_toml), "--agents", "random", "--rounds", "2", "--out", str(out_dir), "--resume")
    assert other.returncode == 2 and "different agents" in other.stderr


BAD_ARGS = [
    (["--agents", "random,nope"], "agents: unknown agent 'nope'"),
    (["--agents", ""], "agents: give at least one agent name"),
    (["--seeds", "0"], "seeds: must be in [1, 10000]"),
    (["--rounds", "0"], "rounds: must be >= 1"),
    (["--device", "tpu"], "device: must be cpu or cuda"),
    (["--scenario", "nope"], "scenario: unknown preset 'nope'"),
    (["--seeds", "many"], "'--seeds'"),
    (["--resume", "--force"], "--resume and --force"),
]


@pytest.mark.parametrize(("args", "message"), BAD_ARGS)
def test_bad_arguments_give_one_line_and_no_run_directory(args: list[str], message: str, tmp_path: Path) -> None:
    out_dir = tmp_path / "never"
    res = _cli("run", "--out", str(out_dir), *args)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert message in res.stderr, res.stderr
    assert not out_dir.exists()


def test_invalid_scenario_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[cascade]\nslate_size = 500\n")
    out_dir = tmp_path / "never"
    res = _cli("run", "--scenario", str(bad), "--out", str(out_dir))
    assert res.returncode == 2 and res.stderr.startswith("error: cascade.slate_size: must be <= cascade.k_retrieve")
    assert not out_dir.exists()


def test_corrupt_checkpoint_is_a_clear_error(tiny_toml: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    assert _cli("run", "--scenario", str(tiny_toml), "--agents", "random", "--rounds", "1", "--out", str(out_dir)).returncode == 0
    manifest = json.loads((out_dir / "manifest.json").read_text())
    manifest["complete"] = False  # an interrupted run, so that resume reads its checkpoint
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    (out_dir / "checkpoints" / "random__seed0__r00000.pt").write_bytes(b"garbage")
    res = _cli("run", "--scenario", str(tiny_toml), "--agents", "random", "--rounds", "1", "--out", str(out_dir), "--resume")
    assert res.returncode == 2 and "checkpoint:" in res.stderr and "corrupt" in res.stderr and res.stderr.count("\n") == 1


def test_load_run_reads_results_and_rejects_corrupt_ones(tiny_toml: Path, tmp_path: Path) -> None:
    from scenarios.experiment import load_run
    from simulator.checkpoint import RunDirError

    out_dir = tmp_path / "run"
    assert _cli("run", "--scenario", str(tiny_toml), "--agents", "random", "--rounds", "1", "--out", str(out_dir)).returncode == 0
    manifest, metrics = load_run(out_dir)
    assert manifest["agents"] == ["random"] and len(metrics) > 0
    (out_dir / "metrics.parquet").write_bytes(b"not parquet")
    with pytest.raises(RunDirError, match="metrics: .* is missing or corrupt"):
        load_run(out_dir)
    with pytest.raises(RunDirError, match="manifest"):
        load_run(tmp_path / "nothing")
