"""Test helper: the ``cascadesim`` command line in a process forked from a server that has imported it already.

A fresh ``python -m ...`` spends ~3 s importing torch, pandas and the packages before the run starts; the
kill/resume checks start ~130 such processes. Here each one is a fork of a ``forkserver`` that imported
:mod:`tests.kill_driver` (so torch and the CLI) once: the run itself is the same code in a process of its
own, killed, signalled and exiting as a command would (a SIGKILL is returncode -9, ``sys.exit(143)`` 143).

:class:`ForkedCLI` offers the part of :class:`subprocess.Popen` the tests use.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["tests.kill_driver"])


def _child(args: list[str], env: dict[str, str], stdout: str, stderr: str) -> None:
    os.environ.update(env)
    for fd, path in ((1, stdout), (2, stderr)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    from tests.kill_driver import run  # noqa: PLC0415 (already imported by the server: free)

    run(args)
    sys.exit(0)


class ForkedCLI:
    """One ``cascadesim`` command (``args`` after the program name) with ``env`` set, started at once."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self._dir = tempfile.TemporaryDirectory(prefix="forked-cli-")
        self._out, self._err = (str(Path(self._dir.name) / name) for name in ("stdout", "stderr"))
        self._proc = _CONTEXT.Process(target=_child, args=(args, {"OMP_NUM_THREADS": "1", **(env or {})}, self._out, self._err))
        self._proc.start()

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self._proc.exitcode

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def send_signal(self, sig: int) -> None:
        if self._proc.exitcode is None and self._proc.pid is not None:
            os.kill(self._proc.pid, sig)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end (killing on timeout, like ``subprocess.run``) and return what it printed."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        texts = tuple(Path(p).read_text() for p in (self._out, self._err))
        self._dir.cleanup()
        return texts


def warm_up() -> None:
    """Start the server and let it finish its imports now, so that timing a command afterwards times the run."""
    proc = _CONTEXT.Process(target=os.getpid)
    proc.start()
    proc.join()
