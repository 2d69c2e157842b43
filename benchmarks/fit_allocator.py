"""One agent fit under the 1 MiB mmap pin and under ``heap_reuse``, in one process (time, kernel time, faults, peak RSS).

    OMP_NUM_THREADS=1 python benchmarks/fit_allocator.py [--size 100000] [--agent bc]

Builds the issue-18 world of ``size`` users x items (the pin applies from ``LARGE_CATALOGUE`` items), then fits the
agent on the warm-start window twice: first inside :func:`simulator.memory.heap_reuse`, then pinned. The peak RSS of
each fit is ``VmHWM`` after a ``/proc/self/clear_refs`` reset (Linux).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages, not an installed copy

import torch  # noqa: E402

from benchmarks.round_phases import round_scenario  # noqa: E402
from scenarios.experiment import agent_factory  # noqa: E402
from simulator import memory  # noqa: E402
from simulator.round import training_view  # noqa: E402
from simulator.timeline import warm_started_loop  # noqa: E402


def _peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def timed_fit(fit, reuse: bool) -> str:
    """One fit; a line with its wall, user and kernel seconds, minor faults and peak RSS."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with memory.heap_reuse() if reuse else nullcontext():
        fit()
    wall, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    return (f"{'heap_reuse' if reuse else 'pinned':10s}  wall {wall:7.2f} s  user {r1.ru_utime - r0.ru_utime:7.2f} s  "
            f"kernel {r1.ru_stime - r0.ru_stime:6.2f} s  minor faults {r1.ru_minflt - r0.ru_minflt:>11,}  peak RSS {_peak_gib():.2f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--agent", default="bc")
    args = ap.parse_args()
    if args.size < memory.LARGE_CATALOGUE:
        ap.exit(2, f"error: --size: must be >= {memory.LARGE_CATALOGUE} (below it the pin is not applied), got {args.size}\n")
    torch.set_num_threads(1)
    sc = round_scenario(args.size)
    loop = warm_started_loop(sc, 0, "cpu")
    learner = agent_factory(args.agent, sc, 0, torch.device("cpu"))(loop)
    view = training_view(loop, -1)
    print(f"{args.size} users x {args.size} items, agent {args.agent}, one fit on the warm-start window; pinned: {memory._pinned}")
    for reuse in (True, False):
        print(timed_fit(lambda: learner.fit(view), reuse))


if __name__ == "__main__":
    main()
