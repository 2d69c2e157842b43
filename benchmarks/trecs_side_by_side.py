"""T-RECS 0.2.1 next to a cascadesim round, same sizes, same run, one thread each.

    python benchmarks/trecs_side_by_side.py --trecs-python /tmp/trecs-venv/bin/python [--sizes 1000 10000] [--rounds 3]

T-RECS needs its own environment (it pins old NumPy / pandas)::

    python3 -m venv /tmp/trecs-venv
    /tmp/trecs-venv/bin/pip install --no-deps trecs==0.2.1
    /tmp/trecs-venv/bin/pip install "numpy<2" scipy networkx tqdm "pandas<2" lenskit==0.14.4

For each size ``n`` both programs simulate ``n`` users x ``n`` items: T-RECS's ``ImplicitMF`` (every user gets a
slate of 10 per step, ALS retrained between steps) and ``ContentFiltering``; cascadesim's bc round with ``n``
requests (retrieval, DeepFM ranking, user model, log, truth metrics, offline evaluation, dynamics, two fits), and the
same round with the ``noisy-oracle`` ranker (``cascadesim_bc_noranker_s``): no learned ranking stage to score and
refit, the closest cascadesim comes to T-RECS's work (T-RECS has no ranking stage; ours still does the truth
metrics, the offline evaluation and the log that T-RECS does not).
Per step / round: ``(wall of R steps - wall of 1 step) / (R - 1)``. T-RECS runs in a subprocess with
``--trecs-python``; this file is also that subprocess's script (``--child``).
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

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def trecs_step_seconds(model: str, n: int, rounds: int) -> float:
    """Per-step wall of T-RECS ``model`` at ``n`` users x ``n`` items (runs inside the T-RECS environment)."""
    import warnings  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415 (the child's NumPy, not ours)

    warnings.filterwarnings("ignore")
    from trecs.models import ContentFiltering, ImplicitMF  # noqa: PLC0415

    def build(size: int):  # noqa: ANN202
        np.random.seed(0)
        if model == "mf":
            return ImplicitMF(num_users=size, num_items=size, num_latent_factors=16, num_items_per_iter=10, seed=0)
        return ContentFiltering(num_users=size, num_items=size, num_attributes=16, num_items_per_iter=10, seed=0)

    walls = []
    for size, steps in ((50, 2), (n, 1), (n, rounds)):  # the first run compiles lenskit's numba kernels
        sim = build(size)
        t = time.perf_counter()
        kwargs = {} if model == "mf" else {"disable_tqdm": True}  # ImplicitMF.run has no disable_tqdm
        sim.run(timesteps=steps, train_between_steps=True, **kwargs)
        walls.append(time.perf_counter() - t)
    return (walls[2] - walls[1]) / (rounds - 1)


def ours_round_seconds(n: int, rounds: int, ranker: str | None = None) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch  # noqa: PLC0415

    from benchmarks.round_phases import run_size  # noqa: PLC0415

    torch.set_num_threads(1)
    return float(run_size(n, rounds, "bc", ranker=ranker)["per_round_s"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trecs-python", default="/tmp/trecs-venv/bin/python")
    ap.add_argument("--models", nargs="+", default=["mf", "content"])
    ap.add_argument("--repeats", type=int, default=1, help="run both programs back to back this many times (read the fastest)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(trecs_step_seconds(args.child, args.sizes[0], args.rounds)))
        return
    if not Path(args.trecs_python).exists():
        ap.exit(2, f"error: --trecs-python: {args.trecs_python} does not exist (see this file's docstring to install T-RECS)\n")
    if args.repeats < 1:
        ap.exit(2, "error: --repeats: must be >= 1\n")
    rows = []
    for n in args.sizes:
        for rep in range(args.repeats):  # back to back, so that each repeat's ratios share the machine's load
            rows.append(side_by_side(n, args.rounds, args.trecs_python, args.models) | {"repeat": rep})
            print(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))


def side_by_side(n: int, rounds: int, trecs_python: str, models: list[str]) -> dict[str, float | int]:
    """One measurement of both programs at size ``n``, with ours / T-RECS MF ratios."""
    row: dict[str, float | int] = {"size": n, "cascadesim_bc_s": ours_round_seconds(n, rounds),
                                   "cascadesim_bc_noranker_s": ours_round_seconds(n, rounds, "noisy-oracle")}  # fmt: skip
    for model in models:  # T-RECS writes trecs.log into its working directory: run it in the temp directory
        out = subprocess.run([trecs_python, __file__, "--child", model, "--sizes", str(n), "--rounds", str(rounds)],
                             capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, check=True,
                             cwd=tempfile.gettempdir())  # fmt: skip
        row[f"trecs_{model}_s"] = json.loads(out.stdout.strip().splitlines()[-1])
    if "trecs_mf_s" in row:
        row["ours_over_trecs_mf"] = row["cascadesim_bc_s"] / row["trecs_mf_s"]
        row["noranker_over_trecs_mf"] = row["cascadesim_bc_noranker_s"] / row["trecs_mf_s"]
    return row


if __name__ == "__main__":
    main()
