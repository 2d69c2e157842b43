"""Sweeps: a grid over scenario fields x agents (with config overrides) x seeds, run as idempotent cells.

Cells run in this process, on a local process pool or on Ray, always through
:func:`~scenarios.sweep.cells.run_cell`; see :mod:`scenarios.sweep.cells` for the directory layout.
"""

from scenarios.sweep.cells import Cell, Outcome, run_cell
from scenarios.sweep.driver import SweepResult, run_sweep
from scenarios.sweep.pool import PoolRunner, RayRunner, SerialRunner, make_runner
from scenarios.sweep.spec import SweepSpec, load_spec

__all__ = [
    "Cell",
    "Outcome",
    "PoolRunner",
    "RayRunner",
    "SerialRunner",
    "SweepResult",
    "SweepSpec",
    "load_spec",
    "make_runner",
    "run_cell",
    "run_sweep",
]
