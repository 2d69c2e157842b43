"""Where cells run: in this process, in a local process pool, or on Ray; all three call :func:`run_cell`.

The pool uses the ``spawn`` start method (never ``fork`` after torch has run)
and pins each worker to ``threads`` torch threads: the OpenMP/MKL variables are
in the environment the worker starts with, before it imports torch, and the
worker's initializer calls ``torch.set_num_threads``. A worker killed mid-cell
breaks the pool; the pool is rebuilt and every unfinished cell is submitted
again (finished ones are found on disk), up to ``retries`` times.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from scenarios.sweep.cells import Cell, Outcome, failed_path, pin_threads, run_cell

OnDone = Callable[[Outcome], None]
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class Runner(Protocol):
    """Runs a batch of cells and reports each outcome as it arrives."""

    def run(self, cells: list[Cell], out: str, metric: str, on_done: OnDone) -> list[Outcome]: ...

    def close(self) -> None: ...


def worker_env(threads: int) -> dict[str, str]:
    """The thread variables a worker must start with (read by OpenMP/MKL when torch loads)."""
    return dict.fromkeys(_THREAD_VARS, str(threads))


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (spawned children inherit them), then restore."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class SerialRunner:
    """Cells one after another in this process (the reference the parallel runners must equal)."""

    def run(self, cells: list[Cell], out: str, metric: str, on_done: OnDone) -> list[Outcome]:
        import torch

        before = torch.get_num_threads()
        outcomes = []
        try:
            for cell in cells:
                outcomes.append(run_cell(cell, out, metric))
                on_done(outcomes[-1])
        finally:
            pin_threads(before)
        return outcomes

    def close(self) -> None:
        pass


def _init_worker(threads: int) -> None:
    pin_threads(threads)


def pinned_pool(workers: int, threads: int) -> ProcessPoolExecutor:
    """``workers`` spawned processes pinned to ``threads`` torch threads; submit inside ``environ(worker_env(threads))``."""
    with environ(worker_env(threads)):
        return ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _init_worker, (threads,))


class PoolRunner:
    """A local pool of ``workers`` spawned processes, each pinned to ``threads`` torch threads."""

    def __init__(self, workers: int, threads: int, retries: int = 3) -> None:
        self.workers, self.threads, self.retries = workers, threads, retries
        self._pool: ProcessPoolExecutor | None = None
        self.broken_passes = 0  # how often a dead worker broke the pool (its cells were resubmitted)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = pinned_pool(self.workers, self.threads)
        return self._pool

    def run(self, cells: list[Cell], out: str, metric: str, on_done: OnDone) -> list[Outcome]:
        results: dict[str, Outcome] = {}
        pending, attempt = list(cells), 0
        while pending:
            broken = self._one_pass(pending, out, metric, on_done, results)
            if broken and attempt >= self.retries:
                for cell in broken:
                    results[cell.key] = _lost(cell, out, attempt + 1)
                    on_done(results[cell.key])
                broken = []
            pending, attempt = broken, attempt + 1
        return [results[c.key] for c in cells]

    def _one_pass(self, cells: list[Cell], out: str, metric: str, on_done: OnDone, results: dict[str, Outcome]) -> list[Cell]:
        """Submit ``cells``; returns those lost to a dead worker (the pool is then rebuilt on the next pass)."""
        pool = self._executor()
        with environ(worker_env(self.threads)):  # workers are spawned lazily, on submit
            futures: dict[Future[Outcome], Cell] = {pool.submit(run_cell, c, out, metric): c for c in cells}
        lost: list[Cell] = []
        todo = set(futures)
        while todo:
            done, todo = wait(todo, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    outcome = fut.result()
                except BrokenProcessPool:
                    lost.append(futures[fut])
                    continue
                results[outcome.key] = outcome
                on_done(outcome)
        if lost:
            self.broken_passes += 1
            self.close()
        return lost

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _lost(cell: Cell, out: str, attempts: int, detail: str = "") -> Outcome:
    """A cell whose worker died ``attempts`` times (e.g. killed for memory) is recorded as failed."""
    message = f"worker process died {attempts} times while running this cell (killed, or out of memory?) {detail}".strip()
    path = failed_path(out, cell.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"cell {cell.key}: {cell.name}\n{message}\n")
    return Outcome(cell.key, cell.name, "failed", 0.0, error=message)


def source_root() -> str:
    """The folder this package is imported from, so that Ray workers import the same code."""
    import scenarios

    return str(Path(scenarios.__file__).resolve().parents[1])


class RayRunner:
    """Ray core tasks (``max_retries`` reruns a cell whose worker died); ``address`` is ``auto``, ``local`` or ``ray://...``."""

    def __init__(self, address: str | None, threads: int, workers: int | None = None, retries: int = 3) -> None:
        import ray

        if not ray.is_initialized():
            if address == "local":
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        env = {**worker_env(threads), "PYTHONPATH": os.pathsep.join(filter(None, [source_root(), os.environ.get("PYTHONPATH")]))}
        self._task = ray.remote(run_cell).options(num_cpus=threads, max_retries=retries, runtime_env={"env_vars": env})
        self._ray: Any = ray
        self.retries = retries

    def run(self, cells: list[Cell], out: str, metric: str, on_done: OnDone) -> list[Outcome]:
        refs = {self._task.remote(c, str(Path(out).resolve()), metric): c for c in cells}
        results: dict[str, Outcome] = {}
        todo = list(refs)
        while todo:
            done, todo = self._ray.wait(todo, num_returns=1)
            for ref in done:
                cell = refs[ref]
                try:
                    outcome = self._ray.get(ref)
                except Exception as err:  # noqa: BLE001 - a task Ray gave up on (worker died past its retries)
                    outcome = _lost(cell, out, self.retries + 1, f"ray: {type(err).__name__}")
                results[cell.key] = outcome
                on_done(outcome)
        return [results[c.key] for c in cells]

    def close(self) -> None:
        pass


def make_runner(workers: int, threads: int, ray_address: str | None = None) -> Runner:
    """Ray when an address is given, else a process pool for ``workers`` > 1, else this process."""
    if ray_address is not None:
        return RayRunner(ray_address, threads, workers)
    return PoolRunner(workers, threads) if workers > 1 else SerialRunner()
