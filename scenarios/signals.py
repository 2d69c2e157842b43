"""SIGINT and SIGTERM stop a run at the next safe point (a committed round), not in the middle of a write.

The first signal sets a flag that :func:`stop_point` turns into :class:`Interrupted`
at the next round boundary; a second SIGINT interrupts at once (Python's default).
The command line exits ``128 + signal``: 130 for Ctrl-C (SIGINT), 143 for SIGTERM.
"""

from __future__ import annotations

import signal
from types import FrameType

_received: list[int] = []


class Interrupted(RuntimeError):
    """A run stopped at a safe point because the process was asked to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _handler(signum: int, frame: FrameType | None) -> None:
    if _received and signum == signal.SIGINT:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now
    _received.append(signum)


def install() -> None:
    """Route SIGINT and SIGTERM to the safe-point flag (main thread only; the command line calls it)."""
    _received.clear()
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def stop_point() -> None:
    """Raise :class:`Interrupted` if a stop was requested; called where everything done so far is committed."""
    if _received:
        raise Interrupted(_received[0])
