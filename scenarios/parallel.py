"""The (agent, seed) loops of an experiment in parallel processes, committed by the parent as in a serial run.

Workers come from the sweep engine's pool (:func:`scenarios.sweep.pool.pinned_pool`: spawned, each pinned
to ``threads`` torch threads). A worker runs :func:`scenarios.experiment.run_loop` exactly as the serial path
does, but writes its checkpoints (and ``--save-logs`` / ``--save-truth`` files) into a private staging folder
beside the run directory and reports each round through a queue. The parent alone touches the run directory:
it moves a round's files in, commits the checkpoint in the manifest (:meth:`RunDir.register`) and drives the
progress display, so the manifest stays the single commit point and ``--resume`` / ``--force`` keep their
guarantees. Each worker builds the warm start of a seed once and reuses it for that seed's next loops.

A loop's results do not depend on which process ran it: the metrics equal the serial run's bit for bit at
the same torch thread count (tested).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from typing import Any

import pandas as pd

from scenarios import signals
from scenarios.rundir import RunDir, _lock, checkpoint_name, scenario_hash
from scenarios.sweep.pool import environ, pinned_pool, worker_env

Frames = tuple[pd.DataFrame, pd.DataFrame]  # a loop's metrics and fit timings
OnLoop = Callable[[int, str, Frames], None]
_REFERENCES = ("random", "popular", "oracle")  # cheap agents: scheduled after the learners of their seed
_SEED_START: dict[tuple[str, int, str], Any] = {}  # this worker's warm start of its current seed


class _Relay:
    """The worker's progress ``tick``: every call becomes a message to the parent (its hooks included)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def tick(self) -> None:
        self.queue.put(("tick",))

    def loop(self, agent: str, seed: int) -> None:
        self.queue.put(("loop", agent, seed))

    def round_done(self, agent: str, seed: int, r: int, rounds: int, rows: list[dict[str, Any]]) -> None:
        self.queue.put(("round_done", agent, seed, r, rounds, [row for row in rows if row["round"] == r]))


class _StagedRun:
    """What :func:`run_loop` sees of the run directory in a worker: its checkpoint, and a staging ``path``."""

    def __init__(self, path: Path, found: tuple[Path, int] | None, queue: Any) -> None:
        self.path, self.found, self.queue = path, found, queue
        self.reported: set[str] = set()

    def checkpoint(self, agent: str, seed: int) -> tuple[Path, int] | None:
        return self.found

    def commit(self, save: Any, agent: str, seed: int, r: int) -> None:
        """Save the checkpoint into the staging folder; the parent moves this round's files in and commits."""
        save(str(self.path / "checkpoints" / checkpoint_name(agent, seed, r)))
        files = sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file() and not p.name.endswith(".tmp"))
        new = [f for f in files if f not in self.reported]
        self.reported.update(new)
        self.queue.put(("commit", agent, seed, r, str(self.path), new))


def _seed_start(exp: Any, seed: int) -> Any:
    """The seed's warm start, built once per worker and seed (a worker moves through the seeds in order)."""
    from scenarios.experiment import SeedStart

    key = (scenario_hash(exp.scenario.model_dump(mode="json")), seed, str(exp.device))
    if key not in _SEED_START:
        _SEED_START.clear()
        _SEED_START[key] = SeedStart(exp.scenario, seed, exp.device)
    return _SEED_START[key]


def _install_signals() -> None:
    """Ctrl-C / SIGTERM stop a worker's loop at its next committed round (installed once per process)."""
    if signal.getsignal(signal.SIGTERM) is not signals._handler:
        signals.install()


def loop_task(exp: Any, agent: str, seed: int, found: tuple[Path, int] | None, stage: str | None, queue: Any) -> Frames | None:
    """Run one loop in a worker; None when it was asked to stop (everything up to its last round is committed)."""
    from scenarios.experiment import loop_frame, loop_timings, run_loop

    _install_signals()
    run = None
    if stage is not None:
        run = _StagedRun(Path(stage) / f"{agent}__seed{seed}", found, queue)  # one folder per loop
    try:
        loop = run_loop(exp, agent, seed, run, _seed_start(exp, seed), _Relay(queue).tick)  # type: ignore[arg-type]
    except signals.Interrupted:
        return None
    return loop_frame(loop, exp.scenario.name, agent, seed), loop_timings(loop, agent, seed)


def task_order(exp: Any) -> list[tuple[int, str]]:
    """Seed by seed; within a seed the learners first (the longest loops start early, the short ones fill in)."""
    agents = sorted(exp.agents, key=lambda a: a in _REFERENCES)
    return [(seed, agent) for seed in exp.seeds for agent in agents]


@contextmanager
def _staging(run: RunDir | None) -> Iterator[str | None]:
    """A locked folder beside the run directory for the workers' files (removed at the end, or by the next run)."""
    if run is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix=f".{run.final.name}.new-stage-", dir=run.final.parent))
    fd = _lock(folder)
    try:
        yield str(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def _handle(message: tuple[Any, ...], run: RunDir | None, tick: Callable[[], None]) -> None:
    """One worker message: progress, or a round to move into the run directory and commit."""
    from scenarios.experiment import _notify

    kind, *args = message
    if kind == "tick":
        tick()
    elif kind == "commit" and run is not None:
        agent, seed, r, stage, files = args
        for rel in files:
            target = run.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(stage) / rel, target)
        run.register(agent, seed, r)
    elif kind in ("loop", "round_done"):
        _notify(tick, kind, *args)


def _drain(queue: Any, run: RunDir | None, tick: Callable[[], None], wait_s: float) -> None:
    """Handle every queued message; wait up to ``wait_s`` for the first."""
    try:
        message = queue.get(timeout=wait_s) if wait_s > 0 else queue.get_nowait()
        while True:
            _handle(message, run, tick)
            message = queue.get_nowait()
    except Empty:
        return


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """SIGTERM each worker: it stops after its current round (the parent still commits what arrives)."""
    for proc in list(getattr(pool, "_processes", {}).values()):  # the executor keeps no public list of its processes
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, TypeError):
            pass


def run_parallel(exp: Any, run: RunDir | None, tick: Callable[[], None], workers: int, threads: int, on_loop: OnLoop) -> None:
    """Run every (agent, seed) loop of ``exp`` on ``workers`` processes of ``threads`` torch threads each.

    ``on_loop(seed, agent, frames)`` is called in this process as each loop finishes. Raises
    :class:`scenarios.signals.Interrupted` after a stop request, once the workers' last rounds are committed.
    """
    with multiprocessing.get_context("spawn").Manager() as manager, _staging(run) as stage:
        queue = manager.Queue()
        pool = pinned_pool(workers, threads)
        try:
            with environ(worker_env(threads)):  # the pool spawns its workers on submit
                futures = {pool.submit(loop_task, exp, a, s, _found(run, a, s), stage, queue): (s, a) for s, a in task_order(exp)}
            _collect(futures, queue, run, tick, on_loop)
        except BaseException:
            _stop_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)
            _drain(queue, run, tick, 0)
            raise
        pool.shutdown(wait=True)


def _found(run: RunDir | None, agent: str, seed: int) -> tuple[Path, int] | None:
    return run.checkpoint(agent, seed) if run is not None else None


def _collect(
    futures: dict[Future[Frames | None], tuple[int, str]], queue: Any, run: RunDir | None, tick: Callable[[], None], on_loop: OnLoop
) -> None:
    """Relay the workers' messages until every loop is done; a failed loop raises its error here."""
    todo = set(futures)
    while todo:
        _drain(queue, run, tick, 0.2)
        for fut in [f for f in todo if f.done()]:
            todo.discard(fut)
            frames = fut.result()
            _drain(queue, run, tick, 0)  # the loop's last round is committed before its results count
            if frames is None:  # the worker itself was asked to stop
                raise signals.Interrupted(signal.SIGTERM)
            on_loop(*futures[fut], frames)
        signals.stop_point()
