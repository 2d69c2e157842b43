"""Offline evaluation held against the truth: how biased and noisy each protocol is, and when it flips the leaderboard (issue 12, item 5).

Runs reference and debiasing agents on four presets (``default``, ``popularity-trap``, ``heavy-ssb``,
``stochastic-serving``) and on a sweep of ``cascade.exploration_share`` on ``default``; every round, every
agent's freshly trained candidate is evaluated offline (hold-out, shared log, off-policy estimators) next to its
truth on the same requests (``simulator/metrics/offline.py``). Writes ``docs/results/offline-evaluation.md``
(generated), the long-form metrics beside it (``offline-evaluation.parquet``), the leaderboard agreement
(``offline-evaluation-leaderboard.parquet``) and the run's meta data (``offline-evaluation.json``)::

    .venv/bin/python experiments/offline_evaluation.py                       # the full design (10 seeds, 20 rounds)
    .venv/bin/python experiments/offline_evaluation.py --seeds 10 --rounds 6 --scale 0.25   # a reduced run
    .venv/bin/python experiments/offline_evaluation.py --from-run runs/offline-evaluation   # regenerate the page

``--scale`` shrinks each world (users, items, creators, requests, panel, shared log, new items per round)
and K_r and the K values with it, so that the catalogue-to-K_r ratio stays that of the preset.
``--from-run`` takes the run directory (one sub-directory per configuration) or the copied ``.parquet``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import agents  # noqa: E402,F401  (registers the agents)
from scenarios.experiment import headline_k  # noqa: E402
from scenarios.presets import load_scenario  # noqa: E402
from scenarios.study import run_study  # noqa: E402
from simulator.config import ConfigError, Scenario, scenario_from_dict  # noqa: E402

PRESETS = ("default", "popularity-trap", "heavy-ssb", "stochastic-serving")
AGENTS = ("oracle", "random", "popular", "bc", "clrec")
SWEEP_PRESET, SHARES = "default", (0.0, 0.05, 0.2)
PAGE = ROOT / "docs" / "results" / "offline-evaluation.md"
KEEP = ("bias_", "offline_", "true_", "ope_", "onpolicy_replay_", "unbiased_recall", "slate_utility", "logged_ctr", "logged_finish_rate",
        "exposure_gini")  # fmt: skip
"""Metric-name prefixes copied beside the page (the run directory keeps every metric)."""


@dataclass(frozen=True)
class Config:
    """One scenario of the study: a preset, or a point of the exploration sweep."""

    label: str
    scenario: Scenario
    share: float | None  # the exploration share of a sweep point (None: a preset as shipped)


def scaled(sc: Scenario, scale: float) -> Scenario:
    """``sc`` with its world, traffic, panel, shared log, K_r and K values multiplied by ``scale`` (1: unchanged)."""
    if scale == 1.0:
        return sc
    w, c, m = sc.world, sc.cascade, sc.metrics

    def by(x: float, low: int) -> int:
        return max(low, round(x * scale))

    k_r = max(2 * c.slate_size, by(c.k_retrieve, 1))
    return sc.with_overrides(
        world={"n_users": by(w.n_users, 50), "n_items": by(w.n_items, 10 * k_r), "n_creators": by(w.n_creators, 5)},
        timeline={"requests_per_round": by(sc.timeline.requests_per_round, 100)},
        cascade={"k_retrieve": k_r},
        metrics={
            "panel_size": by(m.panel_size, 50),
            "homogenisation_users": by(m.homogenisation_users, 20),
            "k_values": tuple(sorted({by(k, 1) for k in m.k_values})),
        },  # fmt: skip
        evaluation={"shared_log_requests": by(sc.evaluation.shared_log_requests, 100)},
        dynamics={"new_items_per_round": by(sc.dynamics.new_items_per_round, 0)},
    )


def configs(presets: list[str], shares: list[float], rounds: int, scale: float) -> list[Config]:
    """The presets as shipped, then the sweep points not already among them (share 0 on ``default`` is the preset)."""
    out: list[Config] = []
    for name in presets:
        out.append(Config(name, scaled(load_scenario(name), scale).with_overrides(timeline={"rounds": rounds}), None))
    base = scaled(load_scenario(SWEEP_PRESET), scale).with_overrides(timeline={"rounds": rounds})
    for share in shares:
        if share == base.cascade.exploration_share and SWEEP_PRESET in presets:
            continue
        label = f"{SWEEP_PRESET}+explore{share:g}"
        out.append(Config(label, base.with_overrides(name=label, cascade={"exploration_share": share}), share))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply world sizes, traffic, K_r and K (e.g. 0.25)")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--shares", default=",".join(f"{s:g}" for s in SHARES), help=f"exploration shares swept on {SWEEP_PRESET}")
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--jobs", type=int, default=1, help="configurations run at once, in separate processes")
    parser.add_argument("--window", type=int, default=None, help="last rounds averaged per seed (default 5, or the run's)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "offline-evaluation"))
    parser.add_argument("--from-run", default=None, help="a finished run directory or the copied .parquet")
    parser.add_argument("--page", default=str(PAGE))
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> None:
    """One-line errors for bad flags, before anything runs."""
    if not 2 <= args.seeds <= 10_000:
        raise ConfigError(f"seeds: must be in [2, 10000] (intervals need two), got {args.seeds}")
    if args.rounds < 1:
        raise ConfigError(f"rounds: must be >= 1, got {args.rounds}")
    if not 0 < args.scale <= 1:
        raise ConfigError(f"scale: must be in (0, 1], got {args.scale}")
    if not 1 <= args.jobs <= 64:
        raise ConfigError(f"jobs: must be in [1, 64], got {args.jobs}")
    if args.window is not None and args.window < 1:
        raise ConfigError(f"window: must be >= 1, got {args.window}")
    if len([a for a in args.agents.split(",") if a]) < 3:
        raise ConfigError("agents: give at least three agents (a leaderboard of two says little)")


def run_one(cfg: Config, agent_names: list[str], seeds: int, out: Path) -> float:
    """Run (or resume) one configuration into ``out/<label>``; returns its wall seconds."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    run_study(cfg.scenario, agent_names, seeds=seeds, out=out / cfg.label)
    wall = time.perf_counter() - started
    print(f"{cfg.label}: {wall / 60:.1f} min", file=sys.stderr, flush=True)
    return wall


def run_all(cfgs: list[Config], agent_names: list[str], seeds: int, out: Path, jobs: int) -> dict[str, float]:
    """Every configuration, ``jobs`` at a time (separate processes); returns the wall seconds of each."""
    if jobs == 1:
        return {cfg.label: run_one(cfg, agent_names, seeds, out) for cfg in cfgs}
    with ProcessPoolExecutor(max_workers=jobs) as pool:  # longest first (stochastic serving, then exploration), so the pool ends together
        longest = sorted(
            cfgs, key=lambda c: -(2.0 if c.scenario.cascade.stochastic else 1.6 if c.scenario.cascade.exploration_share else 1)
        )
        futures = {cfg.label: pool.submit(run_one, cfg, agent_names, seeds, out) for cfg in longest}
        return {label: fut.result() for label, fut in futures.items()}


def collect(out: Path, labels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict]]:
    """Long-form metrics (kept prefixes), leaderboard rows and each configuration's scenario, from the run directory."""
    frames, boards, scenarios = [], [], {}
    for label in labels:
        run = out / label
        if not (run / "metrics.parquet").exists():
            continue  # a configuration the run did not reach (the page says so)
        metrics = pd.read_parquet(run / "metrics.parquet")
        frames.append(metrics[metrics.metric.str.startswith(KEEP)].assign(scenario=label))
        boards.append(pd.read_parquet(run / "leaderboard.parquet").assign(scenario=label))
        scenarios[label] = json.loads((run / "manifest.json").read_text())["scenario"]
    return pd.concat(frames, ignore_index=True), pd.concat(boards, ignore_index=True), scenarios


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        status = ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/results"]  # not this page's own files
        dirty = subprocess.run(status, cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python experiments/offline_evaluation.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    try:
        check(args)
        page_path = Path(args.page)
        if args.from_run and args.from_run.endswith(".parquet"):
            src = Path(args.from_run)
            metrics = pd.read_parquet(src)
            board = pd.read_parquet(src.with_name(src.stem + "-leaderboard.parquet"))
            meta = json.loads(src.with_suffix(".json").read_text())
        else:
            out = Path(args.from_run or args.out)
            presets, shares = [p for p in args.presets.split(",") if p], [float(s) for s in args.shares.split(",") if s]
            cfgs = configs(presets, shares, args.rounds, args.scale)
            meta_file = out / "offline_evaluation_meta.json"
            if args.from_run:
                meta = json.loads(meta_file.read_text())
            else:
                meta = {
                    "command": command, "commit": commit(), "wall_s": None, "wall_per_config_s": {},
                    "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
                    f"{torch.get_num_threads()} intra-op thread(s), 2 cores shared with other jobs",
                    "seeds": args.seeds, "rounds": args.rounds, "jobs": args.jobs, "scale": args.scale, "window": args.window or 5,
                    "agents": [a for a in args.agents.split(",") if a],
                    "labels": [c.label for c in cfgs], "shares": {c.label: c.share for c in cfgs},
                }  # fmt: skip
                out.mkdir(parents=True, exist_ok=True)
                meta_file.write_text(json.dumps(meta, indent=1))  # written first, so a cut-short run can still be paged
                started = time.perf_counter()
                meta["wall_per_config_s"] = run_all(cfgs, meta["agents"], args.seeds, out, args.jobs)
                meta["wall_s"] = time.perf_counter() - started
                meta_file.write_text(json.dumps(meta, indent=1))
            metrics, board, meta["scenarios"] = collect(out, meta["labels"])
            if args.from_run:
                meta["page_commit"] = commit()
            meta["headline_k"] = {label: headline_k(scenario_from_dict(s)) for label, s in meta["scenarios"].items()}
        if args.window is not None:
            meta["window"] = args.window
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except FileNotFoundError as err:
        print(f"error: from-run: no finished run there (missing {err.filename})", file=sys.stderr)
        raise SystemExit(2) from None
    regen = command if args.from_run else None
    if page_path.resolve() == PAGE.resolve() and not str(args.from_run or "").endswith(".parquet"):
        metrics.to_parquet(page_path.with_suffix(".parquet"), index=False)
        board.to_parquet(page_path.with_name(page_path.stem + "-leaderboard.parquet"), index=False)
        page_path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    page_path.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "experiments"))
    from offline_evaluation_page import page  # imported late: the page can be reworked while a long run goes on

    page_path.write_text(page(metrics, board, meta, regen))
    print(f"wrote {page_path}")


if __name__ == "__main__":
    main()
