"""The GPU checks of issue 18, in one short script for a lent GPU machine (each step a subprocess with its own limit).

    python benchmarks/gpu_suite.py --out DIR [--steps info agents agreement bench floor phases full]

Steps (results as JSON lines in DIR/gpu_suite.jsonl, each step's output in DIR/<step>.log):

* ``info``: torch, CUDA and the device's name.
* ``agents``: every registered agent (and the oracle) through one round of the tiny test scenario on CUDA.
* ``agreement``: ``tests/test_cuda_agreement.py`` (the same world on both devices; metrics within a paired t bound).
* ``bench``: ``cascadesim bench --device cuda`` at 10k and 100k (one serving batch next to the NumPy floor on the host;
  at 1M items the host floor alone needs 8 GB per block and minutes, so the GPU floor below is the reference there).
* ``floor``: the exact blocked top-k floor on the GPU: ``n`` queries against ``n`` items, top ``K_r`` by dot
  product in blocks, for n = 10k, 100k, 1M (the arithmetic every round must do at least once per request).
* ``phases``: ``benchmarks/round_phases.py --device cuda`` at 10k and 100k (per phase; the floors are NumPy on the host).
* ``full``: ``benchmarks/full_round.py --device cuda`` at 1M users x 1M items, 1M requests (round wall, bc samples/s).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("GPU_SUITE_DEVICE", "cuda")  # "cpu" only for a dry run of the script here
LIMITS = {"info": 30, "agents": 100, "agreement": 60, "bench": 60, "floor": 60, "phases": 70, "full": 200}


def step_info() -> dict:
    import torch

    return {"torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0), "cpus": os.cpu_count()}


def step_agents() -> dict:
    import traceback

    from scenarios.experiment import agent_catalogue, make_experiment, run_experiment
    from tests.conftest import tiny_scenario

    out = {}
    for name in agent_catalogue():
        start = time.perf_counter()
        try:
            df = run_experiment(make_experiment(tiny_scenario(), [name], 1, rounds=1, device=DEVICE), None)
            rec = float(df[df.metric == "true_recall@50"].value.iloc[-1])
            out[name] = f"ok {time.perf_counter() - start:.1f} s, true_recall@50 {rec:.3f}"
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            out[name] = "FAIL " + "".join(traceback.format_exception_only(exc)).strip()[:300]
            traceback.print_exc()
        print(name, out[name], flush=True)
    return out


def step_agreement() -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda_agreement.py"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(res.stdout[-4000:], res.stderr[-2000:])
    return {"rc": res.returncode, "summary": res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""}


def step_bench() -> dict:
    from simulator.bench import run_bench

    out = {}
    for users, items, requests, repeats in ((10_000, 10_000, 10_000, 5), (100_000, 100_000, 10_000, 3)):
        table = run_bench(users, items, requests, repeats, DEVICE)
        print(table.to_string(), flush=True)
        out[f"{users}x{items}"] = {k: str(v) for k, v in table["value"].items()}
    return out


def blocked_topk_seconds(n: int, dim: int, k: int, block: int = 16_384) -> float:
    """Seconds for the exact top-``k`` of ``n`` queries over ``n`` items on the GPU (float32 dot products)."""
    import torch

    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(n, dim, device="cuda", generator=gen)
    items = torch.randn(n, dim, device="cuda", generator=gen)
    ids = torch.empty(n, k, dtype=torch.int64, device="cuda")
    for _rep in range(2):  # the first pass warms the kernels
        torch.cuda.synchronize()
        start = time.perf_counter()
        for a in range(0, n, block):
            ids[a : a + block] = (q[a : a + block] @ items.T).topk(k, dim=1).indices
        torch.cuda.synchronize()
    return time.perf_counter() - start


def step_floor() -> dict:
    import torch

    from simulator.config import scenario_from_dict

    sc = scenario_from_dict({"name": "floor"})
    dim, k = sc.training.embedding_dim, sc.cascade.k_retrieve
    out = {}
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for n in (10_000, 100_000, 1_000_000):
            out[f"n={n} dim={dim} k={k} tf32={tf32}"] = sec = blocked_topk_seconds(n, dim, k)
            print(f"blocked top-{k}, {n} x {n}, dim {dim}, tf32 {tf32}: {sec:.3f} s", flush=True)
    return out


def _script(args: list[str]) -> dict:
    """Run a benchmark script with its output going straight to this step's log (kept when the step times out)."""
    return {"rc": subprocess.run([sys.executable, *args], cwd=ROOT).returncode}


def step_phases() -> dict:
    sizes = os.environ.get("GPU_SUITE_SIZES", "10000 100000").split()
    return _script(["benchmarks/round_phases.py", "--device", DEVICE, "--sizes", *sizes, "--rounds", "3"])


def step_full() -> dict:
    n = "1000000"
    return _script(["benchmarks/full_round.py", "--device", DEVICE, "--users", n, "--items", n, "--requests", n])


STEPS = {"info": step_info, "agents": step_agents, "agreement": step_agreement, "bench": step_bench,
         "floor": step_floor, "phases": step_phases, "full": step_full}  # fmt: skip


def drive(out: Path, steps: list[str]) -> None:
    """Each step in its own process under its limit; one JSON line per step, whatever happens."""
    out.mkdir(parents=True, exist_ok=True)
    for name in steps:
        start = time.perf_counter()
        log = out / f"{name}.log"
        with log.open("w") as fh:
            try:
                res = subprocess.run([sys.executable, __file__, "--one", name], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                     timeout=LIMITS[name], env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
                status = "ok" if res.returncode == 0 else f"exit {res.returncode}"
            except subprocess.TimeoutExpired:
                status = f"timeout after {LIMITS[name]} s"
        lines = log.read_text().splitlines()
        result = next((json.loads(x[7:]) for x in reversed(lines) if x.startswith("RESULT ")), None)
        record = {"step": name, "status": status, "wall_s": round(time.perf_counter() - start, 1), "result": result}
        with (out / "gpu_suite.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(json.dumps(record)[:3000], flush=True)
        if result is None:
            print("\n".join(lines[-25:]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("gpu-suite"))
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    ap.add_argument("--one", choices=list(STEPS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        sys.path.insert(0, str(ROOT))
        print("RESULT " + json.dumps(STEPS[args.one]()), flush=True)
    else:
        drive(args.out, args.steps)


if __name__ == "__main__":
    main()
