"""The DAMCAR results page (issue 16 item 4), generated from a sweep of ``experiments/damcar.toml`` and its tuning run.

Reads the sweep directory's merged long-form table and the tune directory's ``tune.json`` / ``trials.parquet``, keeps
the metrics the page uses in ``docs/results/damcar.parquet`` (its metadata in ``damcar.json``), re-reads the page's
numbers from that file and writes ``docs/results/damcar.md`` with its figures (``damcar-rounds.svg``,
``damcar-alignment.svg``)::

    python experiments/damcar_page.py runs/damcar --tune runs/damcar-tune      # after the tune and the sweep
    python experiments/damcar_page.py --from-parquet docs/results/damcar.parquet   # regenerate the page only

Statistics: every cell of a seed shares its world and request stream (common random numbers), so methods are compared
by paired differences of the per-seed time averages over the last rounds: 95% t-intervals, two-sided paired t-tests
Holm-adjusted across every test of the page, the minimal detectable effect at 80% power and the seeds the observed
effect would need. Bad input is one line ``error: <what>: <why>`` and exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from damcar_page_text import page_text  # noqa: E402

OUT_DIR = ROOT / "docs" / "results"
REFERENCES = ("oracle", "random", "popular", "bc")
USER_FACING = ("logged_ctr", "logged_finish_rate", "slate_utility")
DIAGNOSTICS = (
    "fit_domain_accuracy", "fit_domain_accuracy_early", "fit_domain_loss", "fit_feature_gap", "fit_probe_features",
    "fit_input_gap", "fit_probe_input", "fit_pseudo_label_target", "fit_target_pairs", "fit_target_share",
    "fit_teacher_mean", "fit_teacher_loss", "fit_pseudo_positive_rate",
    *(f"fit_pc{k}_{s}_{t}" for k in (1, 2) for s in ("source", "target") for t in ("mean", "sd")),
)  # fmt: skip
KEEP = ("agent", "seed", "round", "metric", "value")


class PageError(Exception):
    """Bad input: reported as one line ``error: ...`` and exit status 2."""


# --- inputs --------------------------------------------------------------------------------------------------------


def page_metrics(head: str, k_values: list[int], rank_k: int) -> list[str]:
    """Every metric the page reads: the recalls at each K, the ranking NDCG, the user-facing outcomes, the diagnostics."""
    return [head, *(f"true_recall@{k}" for k in k_values if f"true_recall@{k}" != head), f"ranked_true_ndcg@{rank_k}",
            *USER_FACING, *DIAGNOSTICS]  # fmt: skip


def read_sweep(sweep: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame, dict]:
    """The merged results, the manifest, the per-cell wall times and the resolved scenario of the sweep's cells."""
    if not sweep.is_dir():
        raise PageError(f"sweep: no such directory {str(sweep)!r}")
    for name in ("sweep.json", "results.parquet", "cells.parquet"):
        if not (sweep / name).is_file():
            raise PageError(f"sweep: {sweep / name} is missing (run the sweep to the end first)")
    manifest = json.loads((sweep / "sweep.json").read_text())
    results = pd.read_parquet(sweep / "results.parquet")
    cells = pd.read_parquet(sweep / "cells.parquet")
    parts = sorted((sweep / "parts").glob("*.parquet"))
    if not parts or results.empty:
        raise PageError(f"sweep: {sweep} holds no finished cell")
    from scenarios.sweep.cells import read_part

    scenario = read_part(parts[0])[1]["scenario"]
    mtimes = [p.stat().st_mtime for p in parts]
    walls = [float(read_part(p)[1].get("wall_s", math.nan)) for p in parts]
    cells = cells.assign(span_s=max(mtimes) - min(m - w for m, w in zip(mtimes, walls, strict=True)))
    return results, manifest, cells, scenario


def read_tune(tune: Path | None) -> dict:
    """``tune.json`` plus each agent's trial objectives from ``trials.parquet`` (empty when no tune directory is given)."""
    if tune is None:
        return {}
    if not (tune / "tune.json").is_file() or not (tune / "trials.parquet").is_file():
        raise PageError(f"tune: {tune} holds no finished tuning run (tune.json and trials.parquet)")
    record = json.loads((tune / "tune.json").read_text())
    trials = pd.read_parquet(tune / "trials.parquet")
    record["trial_values"] = {
        a: [None if pd.isna(v) else float(v) for v in g.sort_values("trial").value] for a, g in trials.groupby("agent")
    }
    return record


def complete_seeds(results: pd.DataFrame) -> pd.DataFrame:
    """Only the seeds every agent finished through the last round (a sweep cut short leaves its last seed partial)."""
    last = results["round"].max()
    done = results[results["round"] == last].groupby("seed").agent.nunique()
    return results[results.seed.isin(done[done == results.agent.nunique()].index)]


def slim(results: pd.DataFrame, head: str, k_values: list[int], rank_k: int) -> pd.DataFrame:
    """The rows the page reads (keeps the parquet small); the headline and the references must be there."""
    names = page_metrics(head, k_values, rank_k)
    missing = [m for m in (head, *USER_FACING) if m not in set(results.metric)]
    if missing:
        raise PageError(f"results: metric {missing[0]!r} is missing from the sweep's table")
    absent = [a for a in ("oracle", "random", "bc", "damcar") if a not in set(results.agent)]
    if absent:
        raise PageError(f"results: agent {absent[0]!r} is missing; the page needs oracle, random, bc and damcar")
    keep = results[results.metric.isin(names)][list(KEEP)]
    return keep.sort_values(list(KEEP[:4])).reset_index(drop=True)


# --- metadata ------------------------------------------------------------------------------------------------------


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/results")
    return (git("rev-parse", "--short", "HEAD") or "unknown") + (" (with uncommitted changes)" if dirty else "")


def world_of(scenario: dict) -> dict:
    """The numbers of the resolved scenario the page states."""
    w, c, t, m, tr = (scenario[k] for k in ("world", "cascade", "timeline", "metrics", "training"))
    return {"name": scenario.get("name", "?"), "n_users": w["n_users"], "n_items": w["n_items"], "k_retrieve": c["k_retrieve"],
            "slate_size": c["slate_size"], "ranker": c["ranker"], "requests_per_round": t["requests_per_round"], "rounds": t["rounds"],
            "k_values": list(m["k_values"]), "rank_k": min(m["rank_k_values"]), "window_rounds": tr["window_rounds"],
            "epochs": tr["epochs"]}  # fmt: skip


def cost_meta(cells: pd.DataFrame, world: dict, full: dict) -> dict:
    """Measured cell costs and the estimated cost of the full design (linear in rounds x requests x catalogue per cell)."""
    done = cells[cells.status.isin(["done", "cached"])]
    per_agent = done.groupby("agent").wall_s.mean().to_dict()
    cell_min = float(done.wall_s.sum() / 60)
    scale = ((full["rounds"] + 1) * full["requests_per_round"] * full["n_items"]) / (
        (world["rounds"] + 1) * world["requests_per_round"] * world["n_items"]
    )
    full_cells = full["seeds"] * len(per_agent)
    sweep_h = float(np.mean(list(per_agent.values()))) * full_cells * scale / 3600
    tune_h = float(np.mean([v for a, v in per_agent.items() if a not in REFERENCES or a == "bc"])) * full["tune_cells"] * scale / 3600
    return {"cell_min": cell_min, "wall_min": float(done.span_s.max() / 60) if len(done) else math.nan, "cells": len(done),
            "agent_cell_s": per_agent, "scale": scale, "full_sweep_core_h": sweep_h, "full_tune_core_h": tune_h}  # fmt: skip


def full_design(spec: Path, tune_spec: Path) -> dict:
    """Seeds, rounds, world and tuning budget of the full-power specs (read as TOML: their tuned file need not exist)."""
    import tomllib

    from scenarios.tune import load_tune_spec

    raw = tomllib.loads(spec.read_text())
    base = raw.get("base", {})
    seeds = raw["sweep"]["seeds"]
    tune = load_tune_spec(tune_spec)
    return {"spec": str(spec.relative_to(ROOT)), "tune_spec": str(tune_spec.relative_to(ROOT)),
            "seeds": seeds if isinstance(seeds, int) else len(seeds), "rounds": base["timeline.rounds"],
            "requests_per_round": base["timeline.requests_per_round"], "n_items": base["world.n_items"],
            "n_users": base["world.n_users"], "k_retrieve": base["cascade.k_retrieve"], "trials": tune.trials,
            "validation_seeds": len(tune.validation_seeds), "tune_agents": len(tune.agents),
            "tune_cells": tune.trials * len(tune.validation_seeds) * len(tune.agents)}  # fmt: skip


def sweep_meta(args: argparse.Namespace, manifest: dict, cells: pd.DataFrame, scenario: dict, tune: dict, seeds: list[int]) -> dict:
    import torch

    world = world_of(scenario)
    full = full_design(Path(args.full_spec), Path(args.full_tune_spec))
    spec = manifest["spec"]
    tune_cmd = f"python -m scenarios.cli tune {args.tune_spec} --workers 1 --out {args.tune}" if args.tune else None
    return {
        "sweep_command": f"python -m scenarios.cli sweep {args.spec} --workers {args.workers} --out {args.sweep}",
        "tune_command": tune_cmd, "spec_file": args.spec, "tune_spec_file": args.tune_spec, "headline": manifest["metric"],
        "commit": args.sweep_commit or git_commit(), "threads": manifest["threads"], "workers": args.workers, "note": args.note,
        "machine": f"{platform.platform()}, torch {torch.__version__}, {args.machine_note}",
        "scenario": spec["sweep"]["scenario"], "world": world, "seeds": seeds, "window": args.window,
        "tune": {k: v for k, v in tune.items() if k != "test_seeds"}, "full": full, "cost": cost_meta(cells, world, full),
    }  # fmt: skip


# --- main ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep", nargs="?", help="the sweep directory (runs/damcar)")
    ap.add_argument("--tune", default=None, help="the tune directory whose best.toml the sweep used (runs/damcar-tune)")
    ap.add_argument("--from-parquet", help="regenerate the page from the stored docs/results/damcar.parquet (+ .json)")
    ap.add_argument("--spec", default="experiments/damcar.toml", help="the sweep's spec (stated on the page)")
    ap.add_argument("--tune-spec", default="experiments/damcar-tune-reduced.toml", help="the tune's spec (stated on the page)")
    ap.add_argument("--full-spec", default=str(ROOT / "experiments" / "damcar-full.toml"))
    ap.add_argument("--full-tune-spec", default=str(ROOT / "experiments" / "damcar-tune.toml"))
    ap.add_argument("--window", type=int, default=5, help="rounds averaged at the end of each loop")
    ap.add_argument("--workers", type=int, default=1, help="the --workers the sweep ran with (stated on the page)")
    ap.add_argument("--out-dir", default=str(OUT_DIR))
    ap.add_argument("--sweep-commit", default=None, help="the commit the tune and sweep ran at (default: the current one)")
    ap.add_argument("--note", default="", help="how the runs were made, if not in one invocation (stated on the page)")
    ap.add_argument("--machine-note", default="2 cores shared with 3 other jobs", help="what else ran on the machine")
    args = ap.parse_args(argv)
    if bool(args.sweep) == bool(args.from_parquet):
        raise PageError("arguments: give a sweep directory or --from-parquet, not both")
    if args.window < 1:
        raise PageError(f"--window: must be >= 1, got {args.window}")
    return args


def prepare(args: argparse.Namespace) -> tuple[pd.DataFrame, dict]:
    """The slim frame and metadata, validated before anything is written."""
    if args.from_parquet:
        parquet = Path(args.from_parquet)
        if not parquet.is_file() or not parquet.with_suffix(".json").is_file():
            raise PageError(f"--from-parquet: {parquet} or its .json is missing")
        return pd.read_parquet(parquet), json.loads(parquet.with_suffix(".json").read_text())
    results, manifest, cells, scenario = read_sweep(Path(args.sweep))
    tune = read_tune(Path(args.tune) if args.tune else None)
    results = complete_seeds(results)
    world = world_of(scenario)
    frame = slim(results, manifest["metric"], world["k_values"], world["rank_k"])
    if int(frame["round"].max()) + 1 < args.window:
        raise PageError(f"--window: {args.window} is longer than the {int(frame['round'].max()) + 1} rounds of the sweep")
    return frame, sweep_meta(args, manifest, cells, scenario, tune, sorted(int(s) for s in frame.seed.unique()))


def write_outputs(frame: pd.DataFrame, meta: dict, out_dir: Path, regen: str | None) -> Path:
    """Parquet and json first, then the page built from the parquet as read back; nothing is left behind on failure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet, meta_path, page = out_dir / "damcar.parquet", out_dir / "damcar.json", out_dir / "damcar.md"
    tmp_parquet, tmp_meta = parquet.with_suffix(".parquet.tmp"), meta_path.with_suffix(".json.tmp")
    try:
        frame.to_parquet(tmp_parquet, index=False)
        tmp_meta.write_text(json.dumps(meta, indent=1, default=str) + "\n")
        text, figures = page_text(pd.read_parquet(tmp_parquet), json.loads(tmp_meta.read_text()), regen)
    except BaseException:
        tmp_parquet.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
        raise
    for name, svg in figures.items():
        (out_dir / name).write_text(svg)
    tmp_parquet.replace(parquet)
    tmp_meta.replace(meta_path)
    page.write_text(text)
    return page


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        frame, meta = prepare(args)
    except PageError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    meta["page_commit"] = git_commit()
    meta["page_command"] = "python experiments/damcar_page.py " + " ".join(shlex.quote(a) for a in argv)
    regen = meta["page_command"] if args.from_parquet else None
    try:
        page = write_outputs(frame, meta, Path(args.out_dir), regen)
    except PageError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {page} ({len(frame)} rows)")


if __name__ == "__main__":
    main()
