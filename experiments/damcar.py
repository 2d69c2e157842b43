"""DAMCAR and its baselines in the closed loop: the paper's Tables 2-3 re-asked over rounds, DAMCAR's diagnostics first.

Runs the references (oracle, random, popular, BC), KD (own teacher and the platform's), MUDA, MUDA-T, DAMCAR
and DAMCAR with the paper's linear domain head on the ``damcar-testbed`` preset (DSSM retrieval; DeepFM
ranking, or DCN with ``--ranker dcn``) for several seeds, then writes the generated results page
``docs/results/damcar.md`` (:mod:`experiments.damcar_page`) and copies the long-form metrics and fit timings
next to it (``.parquet`` / ``-timings.parquet``), so the page can be regenerated without rerunning
(``--from-run DIR`` or ``--from-parquet``). ``--sensitivity CELL=RUN_DIR`` adds finished DAMCAR-only runs
(made with ``--agents damcar --set damcar.walk_mode=paper`` etc.) to the sensitivity table
(``damcar-sensitivity.parquet``).

    .venv/bin/python experiments/damcar.py [--seeds 3] [--out runs/results-damcar] [--ranker deepfm|dcn]
    .venv/bin/python experiments/damcar.py --from-run runs/results-damcar --sensitivity "walk paper=runs/sens-walk-paper"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.damcar_page import write_page  # noqa: E402
from scenarios.experiment import make_experiment, run_experiment  # noqa: E402
from scenarios.presets import load_scenario  # noqa: E402
from scenarios.study import load_study, run_study  # noqa: E402

AGENTS = ("random", "popular", "oracle", "bc", "kd", "kd-platform", "muda", "muda-t", "damcar", "damcar-linear-psi")


def scenario_for(ranker: str, settings: list[str]):
    """The preset, with the DCN ranker for ``--ranker dcn`` and ``--set agent.field=value`` agent overrides."""
    sc = load_scenario("damcar-testbed")
    if ranker == "dcn":
        sc = sc.with_overrides(name="damcar-testbed-dcn", cascade={"ranker": "dcn"})
    if settings:
        agents = {name: dict(values) for name, values in sc.agents.items()}
        for item in settings:
            key, _, raw = item.partition("=")
            agent, _, field = key.rpartition(".")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            agents.setdefault(agent, {})[field] = value
        sc = sc.with_overrides(name=f"{sc.name}-set", agents=agents)
    return sc


def run_seeds(sc, names: list[str], seeds: list[int], out: Path, rounds: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study of ``seeds`` only (the same experiment as :func:`run_study` restricted to those seeds)."""
    exp = dataclasses.replace(make_experiment(sc, names, seeds=max(seeds) + 1, rounds=rounds), seeds=tuple(seeds))
    metrics = run_experiment(exp, out, resume=(out / "manifest.json").exists())
    timings_file = out / "timings.parquet"
    return metrics, pd.read_parquet(timings_file) if timings_file.exists() else pd.DataFrame()


def commit() -> str:
    """The short commit of the working tree (``unknown`` outside git)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def merged_runs(dirs: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Metrics and timings of run directories holding disjoint seeds (each seed from the first directory that
    finished it: every agent through the last round), and their summed wall time."""
    metrics, timings, seconds, seen = [], [], 0.0, set()
    for d in dirs:
        res = load_study(d)
        m = res.metrics
        last = m["round"].max()
        done = {int(s) for s, g in m[m["round"] == last].groupby("seed") if g.agent.nunique() == m.agent.nunique()}
        keep = sorted(done - seen)
        seen |= set(keep)
        metrics.append(m[m.seed.isin(keep)])
        timings.append(res.timings[res.timings.seed.isin(keep)])
        wall_file = Path(d) / "study_wall.json"
        seconds += json.loads(wall_file.read_text())["seconds"] if wall_file.exists() else float("nan")
    wall = f"{seconds / 60:.1f} min of processes on one core each" + (f" ({len(dirs)} run directories)" if len(dirs) > 1 else "")
    return pd.concat(metrics, ignore_index=True), pd.concat(timings, ignore_index=True), wall


def sensitivity_frame(items: list[str], path: Path, from_parquet: bool) -> pd.DataFrame:
    """The DAMCAR sensitivity runs as one long frame with a ``cell`` column (saved to / read from ``path``)."""
    if from_parquet or not items:  # the saved frame (written by this script or by experiments/damcar_sensitivity.py)
        return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=["cell", "agent", "seed", "round", "metric", "value"])
    frames = []
    for item in items:
        name, _, run_dir = item.partition("=")
        frames.append(load_study(run_dir).metrics.assign(cell=name))
    frame = pd.concat(frames, ignore_index=True)
    frame.to_parquet(path, index=False)
    return frame


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None, help="run directory (default runs/results-damcar[-dcn])")
    ap.add_argument("--ranker", choices=("deepfm", "dcn"), default="deepfm")
    ap.add_argument("--rounds", type=int, default=None, help="override the preset's rounds (pilots)")
    ap.add_argument("--agents", default=",".join(AGENTS), help="comma-separated agent names")
    ap.add_argument(
        "--from-run", action="append", default=[], help="regenerate the page from finished run directories (repeat: seeds merged)"
    )
    ap.add_argument("--from-parquet", action="store_true", help="regenerate the page from docs/results/damcar*.parquet")
    ap.add_argument("--set", action="append", default=[], metavar="AGENT.FIELD=VALUE", help="agent config override (sensitivity runs)")
    ap.add_argument("--stem", default=None, help="name of the page and run directory (default damcar[-dcn])")
    ap.add_argument("--page", default=None, help="output page (default docs/results/<stem>.md)")
    ap.add_argument("--seed-list", default="", help="run exactly these comma-separated seeds (instead of 0..seeds-1)")
    ap.add_argument("--provenance", default="", help="how the merged run directories were made (printed on the page)")
    ap.add_argument("--sensitivity", action="append", default=[], metavar="CELL=RUN_DIR",
                    help="a finished DAMCAR-only run (e.g. --set damcar.walk_mode=paper) for the sensitivity table")  # fmt: skip
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    stem = args.stem or ("damcar" if args.ranker == "deepfm" else "damcar-dcn")
    page = Path(args.page) if args.page else ROOT / "docs" / "results" / f"{stem}.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    data, timing_file = page.with_suffix(".parquet"), page.with_name(page.stem + "-timings.parquet")
    sc = scenario_for(args.ranker, args.set)
    out = Path(args.out or ROOT / "runs" / f"results-{stem}")
    wall_file = out / "study_wall.json"
    if args.from_parquet:
        metrics, timings = pd.read_parquet(data), pd.read_parquet(timing_file)
        wall = json.loads(data.with_suffix(".json").read_text())["wall"] if data.with_suffix(".json").exists() else "not recorded"
    elif args.from_run:
        metrics, timings, wall = merged_runs(args.from_run)
    else:
        started = time.perf_counter()
        names = [a for a in args.agents.split(",") if a]
        if args.seed_list:  # these seeds only (e.g. one process per seed); merge the directories with --from-run
            metrics, timings = run_seeds(sc, names, [int(x) for x in args.seed_list.split(",")], out, args.rounds)
        else:
            res = run_study(sc, names, args.seeds, out, rounds=args.rounds)
            metrics, timings = res.metrics, res.timings
        seconds = time.perf_counter() - started
        previous = json.loads(wall_file.read_text())["seconds"] if wall_file.exists() else 0.0
        total = previous + seconds
        wall = f"{total / 60:.1f} min on one core" + (" (summed over resumed invocations)" if previous else "")
        wall_file.write_text(json.dumps({"seconds": total, "wall": wall}))
    sens_file = page.with_name(page.stem + "-sensitivity.parquet")
    sens = sensitivity_frame(args.sensitivity, sens_file, args.from_parquet)
    if not args.from_parquet:
        metrics.to_parquet(data, index=False)
        timings.to_parquet(timing_file, index=False)
        data.with_suffix(".json").write_text(json.dumps({"wall": wall}))
    w, t = sc.world, sc.timeline
    meta = {
        "scenario": sc.name,
        "ranker": sc.cascade.ranker.upper(),
        "k_retrieve": sc.cascade.k_retrieve,
        "wall": wall,
        "torch": torch.__version__,
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores visible",
        "commit": commit(),
        "provenance": args.provenance,
        "scale_out": "python experiments/damcar.py --seeds 10 --rounds 20",
        "scale_factor": (10 / max(1, metrics.seed.nunique())) * (20 / max(1, metrics["round"].nunique())),
        "scale": f"{w.n_users:,} users x {w.n_items:,} items, {t.requests_per_round:,} requests/round, K_r = {sc.cascade.k_retrieve}, "
        f"slate {sc.cascade.slate_size}, {sc.training.window_rounds}-round window, {sc.training.epochs} epoch(s) per fit.",
    }
    ran = [a for a in AGENTS if a in set(metrics.agent)] + sorted(set(metrics.agent) - set(AGENTS))
    cmd = ".venv/bin/python experiments/damcar.py" + ("" if args.ranker == "deepfm" else " --ranker dcn")
    cmd += f" --seeds {metrics.seed.nunique()}" + (f" --rounds {args.rounds}" if args.rounds else "")
    cmd += f" --agents {','.join(ran)}" if ran != list(AGENTS) else ""
    cmd += "".join(f" --set {item}" for item in args.set) + (f" --stem {args.stem}" if args.stem else "")
    cmd += "".join(f" --sensitivity {item}" for item in args.sensitivity)
    if args.from_run:  # the page of merged runs: its own command; the runs are described by --provenance
        cmd = ".venv/bin/python experiments/damcar.py" + "".join(f" --from-run {d}" for d in args.from_run)
    write_page(metrics, timings, sens, page, cmd, meta)
    print(f"wrote {page.relative_to(ROOT) if page.is_relative_to(ROOT) else page}")


if __name__ == "__main__":
    main()
