"""Sweep throughput on this machine: cells per hour with 1 and 2 workers (pool vs Ray local cluster),
and the slowdown of one run when another runs beside it, with torch's default threads and pinned.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/sweep_throughput.py [--cells 4] [--rounds 2] [--agent bc]

Every cell is the tests' tiny world (300 users x 400 items) with one agent for ``--rounds`` rounds.
Each runner first runs one warm-up cell (pool/Ray start-up and imports are not counted), then ``--cells``
cells on fresh seeds. Numbers depend on whatever else the machine is running: say so when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import TINY  # noqa: E402

from scenarios.sweep.cells import Cell  # noqa: E402
from scenarios.sweep.pool import PoolRunner, Runner, SerialRunner, usable_cores  # noqa: E402
from simulator.config import scenario_from_dict  # noqa: E402


def cells(agent: str, rounds: int, seeds: range, threads: int) -> list[Cell]:
    sc = scenario_from_dict({**TINY, "timeline": {**TINY["timeline"], "rounds": rounds}})
    return [Cell(sc.model_dump(mode="json"), agent, agent, s, "cpu", threads) for s in seeds]


def cells_per_hour(runner: Runner, agent: str, rounds: int, n: int, threads: int, workers: int) -> float:
    """Cells per hour over ``n`` cells after one warm-up cell per worker on the same runner."""
    with tempfile.TemporaryDirectory() as out:
        runner.run(cells(agent, rounds, range(1000, 1000 + workers), threads), out, "true_recall@50", lambda o: None)
        start = time.perf_counter()
        outcomes = runner.run(cells(agent, rounds, range(n), threads), out, "true_recall@50", lambda o: None)
        wall = time.perf_counter() - start
    assert all(o.status == "done" for o in outcomes), [o.error for o in outcomes]
    return 3600.0 * n / wall


def ray_runner(workers: int, threads: int) -> Runner:
    import ray

    from scenarios.sweep.pool import RayRunner

    ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
    return RayRunner(None, threads=threads)


def throughput_rows(agent: str, rounds: int, n: int) -> list[tuple[str, int, int, float]]:
    """(runner, workers, torch threads per cell, cells per hour); threads = cores // workers as the sweep sets them."""
    cores = usable_cores()
    rows = [("this process (serial)", 1, cores, cells_per_hour(SerialRunner(), agent, rounds, n, cores, 1))]
    for workers in (1, 2):
        threads = max(1, cores // workers)
        pool = PoolRunner(workers, threads)
        try:
            rows.append(("process pool", workers, threads, cells_per_hour(pool, agent, rounds, n, threads, workers)))
        finally:
            pool.close()
    try:
        import ray
    except ImportError:
        return rows
    for workers in (1, 2):
        threads = max(1, cores // workers)
        try:
            rate = cells_per_hour(ray_runner(workers, threads), agent, rounds, n, threads, workers)
            rows.append(("Ray local cluster", workers, threads, rate))
        finally:
            ray.shutdown()
    return rows


def one_run_seconds(agent: str, rounds: int, threads: int | None, side_by_side: int) -> float:
    """Mean wall seconds of one cell when ``side_by_side`` copies run at once (separate processes, started together)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(var, None)
        if threads is not None:
            env[var] = str(threads)
    code = (f"import sys, time, tempfile; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
            "import torch\nfrom benchmarks.sweep_throughput import cells\nfrom scenarios.sweep.cells import run_cell\n"
            f"cell = cells({agent!r}, {rounds}, range(7, 8), {threads or usable_cores()})[0]\n"
            "start = time.perf_counter(); o = run_cell(cell, tempfile.mkdtemp(), 'true_recall@50')\n"
            "print(time.perf_counter() - start, torch.get_num_threads(), o.status)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(side_by_side)]
    times = [float(p.communicate(timeout=900)[0].split()[0]) for p in procs]
    return sum(times) / len(times)


def slowdown_rows(agent: str, rounds: int) -> list[tuple[str, float, float]]:
    rows = []
    for label, threads in ((f"torch default ({usable_cores()} threads)", None), ("pinned (cores // 2 = 1 thread)", 1)):
        alone = one_run_seconds(agent, rounds, threads, 1)
        beside = one_run_seconds(agent, rounds, threads, 2)
        rows.append((label, alone, beside))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--agent", default="bc")
    args = parser.parse_args()
    print(f"machine: {usable_cores()} usable cores; cell: tiny world, agent {args.agent}, {args.rounds} rounds; {args.cells} cells per row")
    print(f"\n{'runner':<24}{'workers':>8}{'threads':>8}{'cells/hour':>12}")
    for name, workers, threads, rate in throughput_rows(args.agent, args.rounds, args.cells):
        print(f"{name:<24}{workers:>8}{threads:>8}{rate:>12.0f}")
    print(f"\n{'one run, threads':<34}{'alone s':>9}{'beside another s':>18}{'slowdown':>10}")
    for label, alone, beside in slowdown_rows(args.agent, args.rounds):
        print(f"{label:<34}{alone:>9.2f}{beside:>18.2f}{beside / alone:>9.2f}x")
    print(json.dumps({"note": "the machine may be shared: numbers move with its load"}))


if __name__ == "__main__":
    main()
