"""USD (algorithms.md §14, our reading) in the closed loop on the ``homepage`` preset, with its ablations (issue 13).

Runs the reference agents and USD with its three ablations for a few seeds, then writes ``docs/results/usd.md``
(generated) from the long-form metrics, copied beside it as ``docs/results/usd.parquet``::

    # the loops (one directory per agent group may run in its own process; every (agent, seed) loop is
    # deterministic and starts from its seed's shared warm start, so the split changes no number)
    python experiments/usd_study.py --agents oracle,random,popular,bc --seeds 3 --rounds 6 --out runs/results-usd/refs
    python experiments/usd_study.py --agents usd,usd-no-sampler,usd-no-exposure-debias,usd-no-click-debias \\
        --seeds 3 --rounds 6 --out runs/results-usd/usd
    # §14(f)'s sanity check on each seed's warm-start log (may run beside the loops)
    python experiments/usd_study.py --seeds 3 --out runs/results-usd/refs --sanity-json runs/results-usd/sanity.json
    # the page, from the run directories (or from the copied parquet)
    python experiments/usd_study.py --from-run runs/results-usd/refs runs/results-usd/usd --sanity-json runs/results-usd/sanity.json

The page also measures §14(f)'s sanity check on the preset itself: the attention filter's precision / recall
against the oracle attended flag and the click-validity head's AUC against the oracle motive, for USD fitted on
each seed's warm-start log (the oracle fields are read here, by the study, never by the agent).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import agents  # noqa: E402,F401  (registers the agents)
from scenarios.study import load_study, mean_fit_seconds, run_study  # noqa: E402
from simulator.checkpoint import read_metrics  # noqa: E402

SCENARIO = "homepage"
USD_AGENTS = ("usd", "usd-no-sampler", "usd-no-exposure-debias", "usd-no-click-debias")
AGENTS = ("oracle", "random", "popular", "bc", *USD_AGENTS)
PAGE = ROOT / "docs" / "results" / "usd.md"


def commit() -> str:
    """The short commit of the working tree (``+dirty`` when it has uncommitted changes to tracked files)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(args: argparse.Namespace, command: str) -> None:
    """Run (or resume) the loops of ``args.agents`` into ``args.out`` and record the wall time and machine."""
    started = time.perf_counter()
    res = run_study(SCENARIO, args.agents.split(","), seeds=args.seeds, out=args.out, rounds=args.rounds)
    meta = {
        "command": command,
        "commit": commit(),
        "wall_min": (time.perf_counter() - started) / 60,
        "machine": f"{platform.platform()}, torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s)",
        "fit_seconds": mean_fit_seconds(res.timings, args.agents.split(",")) if len(res.timings) else {},
        "scenario": json.loads((Path(args.out) / "manifest.json").read_text())["scenario"],
    }
    (Path(args.out) / "usd_study.json").write_text(json.dumps(meta, indent=1))
    print(f"ran {args.agents} into {args.out} in {meta['wall_min']:.1f} min")


def load(sources: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    """Merged long-form metrics and the run metadata of every source (run directory or copied parquet)."""
    frames, metas = [], []
    for src in map(Path, sources):
        if src.suffix == ".parquet":
            frames.append(read_metrics(src))
            meta_file = src.with_suffix(".json")
            metas += json.loads(meta_file.read_text())["runs"] if meta_file.exists() else []
        else:
            frames.append(load_study(src).metrics)
            meta_file = src / "usd_study.json"
            metas.append({**json.loads(meta_file.read_text()), "dir": str(src)} if meta_file.exists() else {"dir": str(src)})
    metrics = pd.concat(frames, ignore_index=True).drop_duplicates(["agent", "seed", "round", "metric"])
    return metrics, metas


def sanity_checks(path: str | None, scenario: dict | None, seeds: list[int]) -> dict[str, list[float]]:
    """§14(f)'s sanity values per seed: read from ``path`` when it holds these seeds, else computed (and written there)."""
    from usd_page import sanity

    stored = json.loads(Path(path).read_text()) if path and Path(path).exists() else {}
    if stored.get("sanity_seeds") == seeds:
        return stored["sanity"]
    started = time.perf_counter()
    checks = sanity(scenario, seeds)
    if path:
        Path(path).write_text(
            json.dumps({"sanity": checks, "sanity_seeds": seeds, "minutes": (time.perf_counter() - started) / 60}, indent=1)
        )
    return checks


def write_page(args: argparse.Namespace, command: str) -> None:
    """Regenerate the page from run directories or the copied parquet (copying the metrics beside the page)."""
    from usd_page import page  # imported late: the page can be reworked while the loops run

    metrics, metas = load(args.from_run)
    page_path = Path(args.page)
    side = page_path.with_suffix(".json")
    stored = json.loads(side.read_text()) if side.exists() else {}
    seeds = sorted(int(s) for s in metrics.seed.unique())
    checks = stored.get("sanity") if stored.get("sanity_seeds") == seeds and not args.redo_sanity else None
    if checks is None:
        scenario = next((m["scenario"] for m in metas if "scenario" in m), None)
        checks = sanity_checks(args.sanity_json, scenario, seeds)
    if not all(str(s).endswith(".parquet") for s in args.from_run):
        metrics.to_parquet(page_path.with_suffix(".parquet"))
        side.write_text(json.dumps({"runs": metas, "sanity": checks, "sanity_seeds": seeds, "page_command": command}, indent=1))
    page_path.write_text(page(metrics, metas, checks, command))
    print(f"wrote {page_path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--agents", default=",".join(AGENTS), help="comma-separated agents to run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=None, help="override timeline.rounds (the preset has 14)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "results-usd" / "all"))
    parser.add_argument("--from-run", nargs="+", default=None, help="run directories (or the copied .parquet) -> the page")
    parser.add_argument("--page", default=str(PAGE))
    parser.add_argument("--redo-sanity", action="store_true", help="recompute the sanity check even if stored beside the page")
    parser.add_argument("--sanity-json", default=None, help="the sanity values per seed: read if they match, else computed and written")
    args = parser.parse_args(argv)
    command = "python experiments/usd_study.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.from_run:
        write_page(args, command)
    elif args.sanity_json:  # the sanity check alone, for seeds 0..seeds-1 (it may run beside the loops)
        manifest = Path(args.out) / "manifest.json"
        scenario = json.loads(manifest.read_text())["scenario"] if manifest.exists() else None
        sanity_checks(args.sanity_json, scenario, list(range(args.seeds)))
    else:
        run(args, command)


if __name__ == "__main__":
    main()
