"""What a run says while it runs: a header line, then a bar (on a terminal) or one line per finished round.

On a terminal, a tqdm bar on stderr names the (agent, seed) being run. Without one (a batch log, a pipe),
each finished round prints one line on stdout, rounds numbered as users count them (1..N), with the headline
metric and an ETA from the measured seconds per round, so a long run is never silent.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def header(exp: Any, out: Path, threads: int, workers: int = 1) -> str:
    """One line: scenario, sizes, agents x seeds x rounds, processes and threads, output directory."""
    sc = exp.scenario
    sizes = f"{sc.world.n_users:,} users x {sc.world.n_items:,} items, {sc.timeline.requests_per_round:,} requests/round"
    loops = f"{len(exp.agents)} agent(s) [{','.join(exp.agents)}] x {len(exp.seeds)} seed(s) x {sc.timeline.rounds} round(s)"
    procs = f"{workers} processes x {threads} torch thread(s)" if workers > 1 else f"{threads} torch thread(s)"
    return f"{sc.name}: {sizes}; {loops}; {procs}; -> {out}"


class RunProgress:
    """The ``progress`` factory of :func:`scenarios.experiment.run_experiment`, with the loop/round hooks it calls."""

    def __init__(self, headline: str, tty: bool | None = None, out: TextIO | None = None) -> None:
        self.headline, self.out = headline, out or sys.stdout
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.total, self.done, self.started, self.current = 0, 0, time.monotonic(), ""
        self.bar: tqdm | None = None

    def __call__(self, total: int) -> Callable[[], None]:
        """Start; returns the tick (a bound method: the run finds the ``loop``/``round_done`` hooks through it)."""
        self.total, self.started = total, time.monotonic()
        if self.tty:
            self.bar = tqdm(total=total, desc="rounds", unit="round", file=sys.stderr, dynamic_ncols=True)
        return self.tick

    def loop(self, agent: str, seed: int) -> None:
        """A loop starts (or resumes)."""
        self.current = f"{agent} seed {seed}"
        if self.bar is not None:
            self.bar.set_description(self.current)

    def round_done(self, agent: str, seed: int, r: int, rounds: int, rows: list[dict[str, Any]]) -> None:
        """Round ``r`` (0-based) of ``(agent, seed)`` is committed; without a terminal, say so in one line."""
        if self.tty:
            return
        value = next((row["value"] for row in reversed(rows) if row["round"] == r and row["metric"] == self.headline), float("nan"))
        elapsed = time.monotonic() - self.started
        eta = elapsed / max(self.done, 1) * (self.total - self.done)
        print(
            f"round {r + 1}/{rounds}  {agent} seed {seed}  {self.headline} {value:.4f}  [{self.done}/{self.total} loop-rounds, "
            f"{_duration(elapsed)} elapsed, ETA {_duration(eta)}]",
            file=self.out,
            flush=True,
        )

    def tick(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.done == self.total:
                self.bar.close()


def choose_threads(requested: int | None, workers: int = 1) -> int:
    """Torch intra-op threads per process: ``--threads``, else ``CASCADESIM_THREADS``, else ``OMP_NUM_THREADS``,
    else the cores shared out over the ``workers`` processes (at least 1), so that they do not oversubscribe them.

    The count is fixed for a run rather than derived from the load, because it can change results in the last bits.
    """
    for value in (requested, os.environ.get("CASCADESIM_THREADS"), os.environ.get("OMP_NUM_THREADS")):
        if value not in (None, ""):
            return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


def busy_note(threads: int, workers: int = 1) -> str | None:
    """A hint when other work already keeps the cores busy (concurrent runs oversubscribe them)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if threads > 1 and load + threads * workers > cores + 0.5:
        return (
            f"note: {cores} core(s) with load {load:.1f}: {threads} threads will oversubscribe them; "
            "--threads 1 (or CASCADESIM_THREADS=1) per concurrent run"
        )
    return None
