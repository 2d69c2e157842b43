"""Issue 17 items 0, 6, 7: --force, --resume and the lock cannot destroy data; checksums catch bad checkpoints."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

import scenarios.experiment as experiment
from scenarios import signals
from scenarios.experiment import make_experiment, run_experiment
from scenarios.rundir import RunDir
from simulator.checkpoint import RunDirError
from tests.conftest import tiny_scenario

pytestmark = pytest.mark.usefixtures("one_thread")


def _exp(agents: tuple[str, ...] = ("random",), rounds: int = 2):
    return make_experiment(tiny_scenario(), list(agents), 1, rounds)


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupted_run(out: Path, agents: tuple[str, ...], stop_after_ticks: int, rounds: int = 2) -> None:
    """A run stopped by a (simulated) SIGTERM after ``stop_after_ticks`` rounds."""
    ticks = []

    def progress(total: int):
        def tick() -> None:
            ticks.append(1)
            if len(ticks) == stop_after_ticks:
                signals._received.append(15)
        return tick

    try:
        with pytest.raises(signals.Interrupted):
            run_experiment(_exp(agents, rounds), out, progress=progress)
    finally:
        signals._received.clear()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("ref") / "run"
    return run_experiment(_exp(("random", "popular")), out)


def test_force_refuses_a_directory_that_is_not_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("1,2\n")
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)  # the issue's `--out . --force`
    with pytest.raises(RunDirError, match=r"--force: \. does not hold a cascadesim run"):
        run_experiment(_exp(), ".", force=True)
    assert _snapshot(tmp_path) == before


def test_force_keeps_the_old_run_until_the_new_one_has_a_committed_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    run_experiment(_exp(), out)
    before = _snapshot(out)
    real = experiment.run_round

    def fail_in_round(r: int):
        def patched(loop, rr: int) -> None:
            if rr == r:
                raise OSError(28, "No space left on device")
            real(loop, rr)
        return patched

    monkeypatch.setattr(experiment, "run_round", fail_in_round(0))
    with pytest.raises(OSError):
        run_experiment(_exp(), out, force=True)
    assert _snapshot(out) == before  # nothing committed yet: the old run is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # and the half-made new one is gone
    monkeypatch.setattr(experiment, "run_round", fail_in_round(1))
    (out / "old-only.txt").write_text("belongs to the old run")
    with pytest.raises(OSError):
        run_experiment(_exp(), out, force=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checkpoints"]["random__seed0"]["round"] == 0 and not (out / "old-only.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    monkeypatch.setattr(experiment, "run_round", real)
    pd.testing.assert_frame_equal(run_experiment(_exp(), out, resume=True), run_experiment(_exp(), None))


def test_force_on_an_empty_or_missing_directory_just_runs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "missing" / "deeper"):
        run_experiment(_exp(rounds=1), out, force=True)
        assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_a_directory_in_use_is_refused_by_run_resume_and_force(tmp_path: Path) -> None:
    out = tmp_path / "run"
    exp = _exp()
    with RunDir.create(exp.manifest(), out, force=False):
        with pytest.raises(RunDirError, match="already exists"):
            run_experiment(exp, out)
        for kwargs in ({"force": True}, {"resume": True}):
            with pytest.raises(RunDirError, match="in use by another cascadesim run"):
                run_experiment(exp, out, **kwargs)
    run_experiment(exp, out, resume=True)  # the lock is released on exit


def test_checkpoint_copied_over_another_agents_is_refused_and_nothing_changes(tmp_path: Path, reference: pd.DataFrame) -> None:
    out = tmp_path / "run"
    _interrupted_run(out, ("random", "popular"), stop_after_ticks=3)  # random done, popular after round 0
    ckpt = out / "checkpoints"
    shutil.copyfile(ckpt / "random__seed0__r00001.pt", ckpt / "popular__seed0__r00000.pt")
    before = _snapshot(out)
    with pytest.raises(RunDirError, match=r"checkpoint: .*popular__seed0__r00000.pt is corrupt, truncated or replaced"):
        run_experiment(_exp(("random", "popular")), out, resume=True)
    assert _snapshot(out) == before


def test_truncated_checkpoint_is_refused_before_metrics_are_touched(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _interrupted_run(out, ("random", "popular"), stop_after_ticks=3)
    path = out / "checkpoints" / "popular__seed0__r00000.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = _snapshot(out)
    assert "metrics.parquet" in before
    with pytest.raises(RunDirError, match="SHA-256 differs"):
        run_experiment(_exp(("random", "popular")), out, resume=True)
    assert _snapshot(out) == before


def test_interrupted_run_resumes_identically_and_cleans_leftovers(tmp_path: Path, reference: pd.DataFrame) -> None:
    out = tmp_path / "run"
    _interrupted_run(out, ("random", "popular"), stop_after_ticks=1)
    (out / ".metrics.parquet.abc123.tmp").write_bytes(b"half a file")  # a killed atomic write
    (out / "checkpoints" / ".popular__seed0__r00000.pt.x.tmp").write_bytes(b"half")
    (out / "checkpoints" / "random__seed0__r00001.pt").write_bytes(b"written, never committed")
    resumed = run_experiment(_exp(("random", "popular")), out, resume=True)
    pd.testing.assert_frame_equal(resumed, reference)
    assert not list(out.rglob("*.tmp"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["popular__seed0__r00001.pt", "random__seed0__r00001.pt"]


def test_keep_checkpoints_all_last_none(tmp_path: Path) -> None:
    for keep, files in (("all", 2), ("last", 1), ("none", 0)):
        out = tmp_path / keep
        run_experiment(_exp(), out, keep_checkpoints=keep)
        assert len(list((out / "checkpoints").glob("*.pt")) if (out / "checkpoints").exists() else []) == files
        assert json.loads((out / "manifest.json").read_text())["complete"] is True
        assert len(run_experiment(_exp(), out, resume=True)) > 0  # a finished run resumes to its results


def test_every_committed_write_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    from simulator.checkpoint import atomic_write_json

    atomic_write_json({"a": 1}, tmp_path / "x.json")
    assert len(synced) == 2  # the file before the rename, the directory after it
