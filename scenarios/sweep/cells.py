"""Sweep cells: one (scenario, agent config, seed) closed loop, keyed by a hash of its resolved config.

:func:`run_cell` is the only function that executes a cell; the serial runner, the
process pool and Ray all call it. It is idempotent: a cell whose part file exists
is not run again, and the part file is written atomically (temporary name, then
``os.replace``), so a killed worker leaves either no part or a whole one.

Sweep directory::

    sweep.json            the spec, the cells (key, label, seed, grid point) and the torch threads per cell
    parts/<key>.parquet   one finished cell: run_experiment's long-form metrics (wall time in the metadata)
    failed/<key>.txt      the traceback of a failed cell (removed when a rerun succeeds)
    results.parquet       every part merged, with the grid's fields as columns
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT = 1


@dataclass(frozen=True, eq=False)
class Cell:
    """One closed loop of a sweep; everything that determines its results is in :attr:`key`."""

    scenario: dict[str, Any]
    agent: str
    label: str
    seed: int
    device: str
    threads: int
    point: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        """The fully resolved config (the label and grid point are presentation, not config)."""
        return {
            "scenario": self.scenario,
            "agent": self.agent,
            "seed": self.seed,
            "device": self.device,
            "threads": self.threads,
            "format": FORMAT,
        }

    @property
    def key(self) -> str:
        blob = json.dumps(self.config(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    @property
    def name(self) -> str:
        point = " ".join(f"{k}={v}" for k, v in self.point.items())
        return f"{self.label} seed={self.seed}" + (f" {point}" if point else "")


@dataclass(frozen=True)
class Outcome:
    """What became of a cell: ``done`` (ran now), ``cached`` (part already there) or ``failed``."""

    key: str
    name: str
    status: str
    wall_s: float
    headline: float | None = None
    error: str = ""


def part_path(out: str | Path, key: str) -> Path:
    return Path(out) / "parts" / f"{key}.parquet"


def failed_path(out: str | Path, key: str) -> Path:
    return Path(out) / "failed" / f"{key}.txt"


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Write through a temporary file in the same folder and move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pin_threads(threads: int) -> None:
    """Pin torch's intra-op threads (the env vars were set before torch was imported, see pool.worker_env)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def compute(cell: Cell) -> pd.DataFrame:
    """The cell's metrics, exactly as ``run_experiment`` gives them for this one agent and seed."""
    from scenarios.experiment import Experiment, resolve_device, run_experiment
    from simulator.config import scenario_from_dict

    sc = scenario_from_dict(cell.scenario)
    return run_experiment(Experiment(sc, (cell.agent,), (cell.seed,), resolve_device(cell.device)))


def headline(frame: pd.DataFrame, metric: str) -> float | None:
    """``metric`` in the last round (mean over its rows), or None if the cell does not report it."""
    rows = frame[frame.metric == metric]
    if rows.empty:
        return None
    return float(rows[rows["round"] == rows["round"].max()].value.mean())


def write_part(frame: pd.DataFrame, cell: Cell, out: str | Path, wall_s: float) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {**(table.schema.metadata or {}), b"cascadesim.cell": json.dumps({**cell.config(), "wall_s": wall_s}).encode()}
    atomic_write(part_path(out, cell.key), lambda tmp: pq.write_table(table.replace_schema_metadata(meta), tmp))


def read_part(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A part's metrics and its cell metadata (config and wall time)."""
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"cascadesim.cell", b"{}"))
    return table.to_pandas(), meta


def record_failure(cell: Cell, out: str | Path) -> str:
    """Write the traceback file of a failed cell; returns the error's one-line summary."""
    text = traceback.format_exc()
    header = f"cell {cell.key}: {cell.name}\nconfig: {json.dumps(cell.config(), sort_keys=True)}\n\n"
    atomic_write(failed_path(out, cell.key), lambda tmp: Path(tmp).write_text(header + text))
    return text.strip().splitlines()[-1]


def run_cell(cell: Cell, out: str, metric: str) -> Outcome:
    """Run one cell into ``out/parts`` unless its part exists; a failure is recorded, never raised."""
    part = part_path(out, cell.key)
    if part.exists():
        frame, meta = read_part(part)
        return Outcome(cell.key, cell.name, "cached", float(meta.get("wall_s", 0.0)), headline(frame, metric))
    pin_threads(cell.threads)
    start = time.perf_counter()
    try:
        frame = compute(cell)
    except Exception:  # noqa: BLE001 - any failure of a cell is recorded and the sweep goes on
        return Outcome(cell.key, cell.name, "failed", time.perf_counter() - start, error=record_failure(cell, out))
    wall = time.perf_counter() - start
    write_part(frame, cell, out, wall)
    failed_path(out, cell.key).unlink(missing_ok=True)
    return Outcome(cell.key, cell.name, "done", wall, headline(frame, metric))
