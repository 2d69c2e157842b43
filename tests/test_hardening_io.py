"""Issue 17 item 2: a full disk or an I/O error is one line, and the run directory resumes from it."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import simulator.checkpoint as checkpoint
from scenarios.cli import main
from scenarios.experiment import make_experiment, run_experiment
from tests.test_resume_kill import _toml

pytestmark = pytest.mark.usefixtures("one_thread")
AGENTS = "random,popular"


@pytest.fixture
def keep_signal_handlers():
    """The command line installs SIGINT/SIGTERM handlers; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    try:
        main(list(args), prog_name="cascadesim")
        code = 0
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    return code, capsys.readouterr().err


def _run_args(scenario: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--scenario", str(scenario), "--agents", AGENTS, "--rounds", "2", "--out", str(out), "--save-logs", *extra]


def _expected(scenario: Path) -> pd.DataFrame:
    return run_experiment(make_experiment(str(scenario), AGENTS.split(","), 1, 2), None)


@pytest.mark.usefixtures("keep_signal_handlers")
def test_io_error_in_a_write_is_one_line_and_the_run_resumes(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = _toml(tmp_path / "tiny.toml")
    out = tmp_path / "run"
    real, calls = checkpoint._atomic, []

    def failing(path, write):  # the 9th write (inside round 1's logs): the disk fills up half-way through it
        calls.append(path)
        if len(calls) == 9:
            return real(path, lambda tmp: (write(tmp), (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))[0])
        return real(path, write)

    monkeypatch.setattr(checkpoint, "_atomic", failing)
    code, err = _cli(capsys, *_run_args(scenario, out))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: disk: No space left on device writing ") and "--resume" in err
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(checkpoint, "_atomic", real)
    code, err = _cli(capsys, *_run_args(scenario, out, "--resume"))
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), _expected(scenario))


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True).returncode == 0


@pytest.mark.usefixtures("keep_signal_handlers")
def test_a_really_full_disk_then_more_space_resumes(tmp_path: Path, capsys) -> None:
    """A 6 MiB tmpfs holds the first checkpoints but not the run; grown to 64 MiB, --resume finishes it."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "6m"):
        pytest.skip("needs root and tmpfs mounts")
    try:
        scenario = _toml(tmp_path / "tiny.toml")
        out = disk / "run"
        code, err = _cli(capsys, *_run_args(scenario, out))
        assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        code, err = _cli(capsys, *_run_args(scenario, out, "--resume"))
        assert code == 0, err
        pd.testing.assert_frame_equal(pd.read_parquet(out / "metrics.parquet"), _expected(scenario))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
