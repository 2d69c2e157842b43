"""Test helper: the ``cascadesim`` command line, killed by SIGKILL inside its N-th atomic write.

``KILL_IN_WRITE=N:mid`` leaves half a temporary file of the N-th write on disk and dies before the rename;
``KILL_IN_WRITE=N:after`` dies right after the N-th write is in place (before whatever would follow it).
Run as ``python -m tests.kill_driver run ...`` from the repository root, or through :mod:`tests.forked_cli`.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import simulator.checkpoint as checkpoint
from scenarios.cli import main


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(n: int, phase: str) -> None:
    real, count = checkpoint._atomic, [0]

    def patched(path: Any, write: Any) -> None:
        count[0] += 1
        if count[0] != n:
            return real(path, write)
        if phase == "mid":
            def half(tmp: str) -> None:
                write(tmp)
                data = Path(tmp).read_bytes()
                Path(tmp).write_bytes(data[: len(data) // 2])
                _die()
            return real(path, half)
        real(path, write)
        _die()

    checkpoint._atomic = patched


def run(argv: list[str] | None = None) -> None:
    """The command line (``argv``, else ``sys.argv``), with the kill of ``KILL_IN_WRITE`` installed if set."""
    spec = os.environ.get("KILL_IN_WRITE")
    if spec:
        n, phase = spec.split(":")
        _install(int(n), phase)
    main(argv)


if __name__ == "__main__":
    run()
