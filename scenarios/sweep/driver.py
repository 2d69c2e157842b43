"""Run a sweep: prepare the directory, run the unfinished cells on a runner with progress, merge."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
from tqdm import tqdm

from scenarios.sweep.cells import FORMAT, Cell, Outcome, atomic_write, part_path, read_part
from scenarios.sweep.merge import cells_table, merge_leaderboard, merge_results, write_frame
from scenarios.sweep.pool import Runner, make_runner, usable_cores
from scenarios.sweep.spec import SweepSpec
from simulator.config import ConfigError


@dataclass(frozen=True)
class SweepResult:
    """The outcome of every cell (in spec order) and the merged long-form results."""

    outcomes: list[Outcome]
    results: pd.DataFrame
    out: Path

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def summary(self) -> str:
        """One line: how many cells finished, were reused, failed, and where the failures are."""
        counts = {s: sum(o.status == s for o in self.outcomes) for s in ("done", "cached", "failed")}
        line = f"sweep: {len(self.outcomes)} cells, {counts['done']} run, {counts['cached']} reused, {counts['failed']} failed"
        if self.failed:
            first = self.failed[0]
            line += f" (tracebacks in {self.out / 'failed'}; first: {first.name}: {first.error})"
        return line


class Progress:
    """One bar over cells (ETA from the measured cost of the cells run so far); one line per cell when stdout is no TTY."""

    def __init__(self, total: int, reused: int, metric: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.lines = not self.stream.isatty()
        self.metric, self.total, self.count, self.reused = metric, total, reused, reused
        self.start = time.monotonic()
        self.bar = tqdm(
            total=total, initial=reused, unit="cell", desc="cells", file=sys.stderr, dynamic_ncols=True, disable=self.lines or None
        )
        if reused and self.lines:
            print(f"[{reused}/{total}] cells already finished, reused", file=self.stream, flush=True)

    def __call__(self, outcome: Outcome) -> None:
        self.count += 1
        self.bar.update(1)
        if not self.lines:
            if outcome.status == "failed":
                self.bar.write(f"failed: {outcome.name}: {outcome.error}", file=sys.stderr)
            return
        if outcome.status == "failed":
            what = f"FAILED after {outcome.wall_s:.1f} s: {outcome.error}"
        else:
            value = "n/a" if outcome.headline is None else f"{outcome.headline:.4f}"
            what = f"{outcome.wall_s:.1f} s, {self.metric}={value} (last round)"
        per_cell = (time.monotonic() - self.start) / (self.count - self.reused)  # measured, parallelism included
        left = f", eta {tqdm.format_interval(per_cell * (self.total - self.count))}"
        print(f"[{self.count}/{self.total}] {outcome.name}: {what}{left}", file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()


def choose_threads(spec: SweepSpec, workers: int, threads: int | None, manifest: dict[str, Any] | None) -> int:
    """CLI value, else the resumed sweep's, else the spec's, else cores // workers (never oversubscribe)."""
    for value in (threads, (manifest or {}).get("threads"), spec.threads):
        if value is not None:
            if int(value) < 1:
                raise ConfigError(f"--threads: must be >= 1, got {value}")
            return int(value)
    return max(1, usable_cores() // max(1, workers))


def prepare_dir(out: Path, resume: bool, manifest_name: str = "sweep.json") -> dict[str, Any] | None:
    """The previous manifest on ``--resume``; a one-line error if the directory does not fit the request."""
    manifest = out / manifest_name
    if resume:
        if not manifest.is_file():
            raise ConfigError(f"--resume: {out} holds no {manifest.stem} ({manifest_name} missing)")
        from simulator.checkpoint import read_json

        return dict(read_json(manifest, "sweep"))
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out: {out} already exists and is not empty; pass --resume to continue it or choose a new --out")
    return None


def write_manifest(spec: SweepSpec, cells: list[Cell], threads: int, out: Path) -> None:
    import json

    from scenarios.experiment import package_versions

    data = {
        "name": spec.name,
        "spec": spec.raw,
        "fields": spec.fields,
        "threads": threads,
        "metric": spec.metric,
        "format": FORMAT,
        "cells": [{"cell": c.key, "agent": c.label, "seed": c.seed, "point": c.point} for c in cells],
        "versions": package_versions(),
    }
    atomic_write(out / "sweep.json", lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True, default=str)))


def unique(cells: list[Cell]) -> list[Cell]:
    """Cells with the same key (e.g. two labels for one config) run once."""
    seen: dict[str, Cell] = {}
    for cell in cells:
        seen.setdefault(cell.key, cell)
    return list(seen.values())


def run_cells(cells: list[Cell], out: Path, metric: str, runner: Runner, on_done: Callable[[Outcome], None]) -> dict[str, Outcome]:
    """Reuse the finished cells, run the others on ``runner``; outcomes by key."""
    todo, outcomes = [], {}
    for cell in unique(cells):
        part = part_path(out, cell.key)
        if part.exists():
            frame, meta = read_part(part)
            from scenarios.sweep.cells import headline

            outcomes[cell.key] = Outcome(cell.key, cell.name, "cached", float(meta.get("wall_s", 0.0)), headline(frame, metric))
        else:
            todo.append(cell)
    for outcome in runner.run(todo, str(out), metric, on_done):
        outcomes[outcome.key] = outcome
    return outcomes


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    workers: int = 1,
    ray: str | None = None,
    resume: bool = False,
    threads: int | None = None,
    runner: Runner | None = None,
) -> SweepResult:
    """Run every cell of ``spec`` into ``out`` and merge them into ``out/results.parquet``."""
    out = Path(out)
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    manifest = prepare_dir(out, resume)
    threads = choose_threads(spec, workers, threads, manifest)
    cells = spec.cells(threads)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(spec, cells, threads, out)
    cached = sum(part_path(out, c.key).exists() for c in unique(cells))
    progress = Progress(len(unique(cells)), cached, spec.metric)
    own = runner is None
    runner = runner or make_runner(workers, threads, ray)
    try:
        by_key = run_cells(cells, out, spec.metric, runner, progress)
    finally:
        progress.close()
        if own:
            runner.close()
    results = merge_results(cells, spec.fields, out)
    write_frame(results, out / "results.parquet")
    write_frame(merge_leaderboard(results, spec.fields, _headline_k(spec)), out / "leaderboard.parquet")
    write_frame(cells_table(cells, by_key, spec.fields), out / "cells.parquet")
    outcomes = [by_key[c.key] for c in cells]
    return SweepResult(outcomes, results, out)


def _headline_k(spec: SweepSpec) -> int:
    """The K the leaderboard compares recalls at: the smallest headline K over the grid's scenarios."""
    from scenarios.experiment import headline_k

    return min(headline_k(sc) for sc in spec.scenarios)
