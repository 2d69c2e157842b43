"""The CLRec page (issue 5, rerun through sweeps for issue 16 item 4), generated from two sweeps and a tune.

CLRec vs sampled softmax + logQ over a long closed loop (paper Tables 1-3, Figure 3; ``experiments/clrec.toml``), and
Multi-CLRec vs CLRec across the weekday -> weekend shift (paper Table 4; ``experiments/clrec-weekend.toml``)::

    python experiments/clrec.py runs/clrec-long runs/clrec-weekend --tune runs/clrec-tune
    python experiments/clrec.py --from-parquet docs/results/clrec.parquet      # regenerate the page only
    python experiments/clrec.py runs/clrec-weekend --reuse-long docs/results/clrec.parquet  # a new weekend sweep only

Keeps the page's metrics in ``docs/results/clrec.parquet`` (its metadata in ``clrec.json``) and reads every number of
``docs/results/clrec.md`` back from that file. Statistics: every agent of a seed shares its world and requests (common
random numbers), so comparisons are paired differences of per-seed summaries (the mean over the last rounds; for Table 4
the mean over the weekday- and weekend-test days), 95% t-intervals, two-sided paired t-tests Holm-adjusted across every
comparison of the page, and the minimal detectable effect at 80% power.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from clrec_text import page_text  # noqa: E402
from offline_evaluation_page import holm, interval, mde  # noqa: E402
from regimes_page import complete_seeds, git_commit, paired_p  # noqa: E402

REFERENCES = ("oracle", "random", "popular", "bc")
CLREC, SSM, MULTI = "clrec-queue", "sampled-softmax-logq", "multi-clrec"
LONG_METRICS = (
    "aggregate_diversity", "popularity_index", "exposure_gini", "exposure_top1_share", "true_recall@50",
    "onpolicy_replay_hitrate@50", "unbiased_hitrate@50", "logged_ctr", "logged_finish_rate", "slate_utility",
)  # fmt: skip
WEEK_METRICS = ("onpolicy_replay_hitrate@50", "unbiased_hitrate@50", "true_recall@50", "logged_ctr", "logged_finish_rate", "slate_utility")
DIAGNOSTICS = ("fit_click_impression_tv", "mean_exposed_popularity", "fit_selection_share_max", "fit_routing_entropy", "fit_intents_used")
WEEKDAY_TEST, WEEKEND_TEST = (3, 4), (5,)
"""Day of the week of the test rounds (round r is day r mod 7; days 5 and 6 are the weekend)."""
BURN_IN = 7
"""Week 0 is burn-in for Table 4."""
KEEP = ("part", "scenario", "agent", "seed", "round", "metric", "value")
OUT_DIR = ROOT / "docs" / "results"


class PageError(Exception):
    """Bad input: reported as one line ``error: <field>: <what is allowed>`` and exit status 2."""


@dataclass(frozen=True)
class Comparison:
    """One paired test of the page: ``a - b`` (``b`` None: ``a`` against 0) of one summary statistic."""

    part: str
    stat: str
    metric: str
    a: str
    b: str | None


COMPARISONS = (
    *(Comparison("long", "last", m, CLREC, SSM) for m in LONG_METRICS),
    Comparison("long", "last", "true_recall@50", SSM, "bc"),
    Comparison("long", "last", "true_recall@50", CLREC, "bc"),
    *(Comparison("weekend", s, "onpolicy_replay_hitrate@50", MULTI, CLREC) for s in ("weekday", "weekend", "change")),
    *(Comparison("weekend", s, "unbiased_hitrate@50", MULTI, CLREC) for s in ("weekend", "change")),
    Comparison("weekend", "weekend", "logged_ctr", MULTI, CLREC),
    Comparison("weekend", "change", "onpolicy_replay_hitrate@50", CLREC, None),
    Comparison("weekend", "change", "onpolicy_replay_hitrate@50", MULTI, None),
)


# --- reading the sweeps --------------------------------------------------------------------------------------------


def read_sweep_dir(path: Path, part: str, required: tuple[str, ...]) -> tuple[pd.DataFrame, dict]:
    """A finished sweep directory's merged table (complete seeds only) and what the header states about it."""
    if not path.is_dir():
        raise PageError(f"{part}: no such sweep directory {str(path)!r}")
    if not (path / "results.parquet").is_file() or not (path / "sweep.json").is_file():
        raise PageError(f"{part}: {str(path)!r} has no results.parquet and sweep.json (run the sweep to the end first)")
    frame = complete_seeds(pd.read_parquet(path / "results.parquet"))
    manifest = json.loads((path / "sweep.json").read_text())
    missing = [m for m in required if m not in set(frame.metric)]
    if missing:
        raise PageError(f"{part}: metric {missing[0]!r} missing from {path / 'results.parquet'}; the page needs {', '.join(required)}")
    for agent in (CLREC, SSM) if part == "long" else (CLREC, MULTI):
        if agent not in set(frame.agent):
            raise PageError(f"{part}: agent {agent!r} missing from {path / 'results.parquet'}")
    parts = sorted((path / "parts").glob("*.parquet")) if (path / "parts").is_dir() else []
    walls = [_part_wall(p) for p in parts]
    mtimes = [p.stat().st_mtime for p in parts]
    first = min((m - w for m, w in zip(mtimes, walls, strict=True)), default=math.nan)
    spec = manifest.get("spec", {})
    meta = {
        "dir": str(path), "name": manifest.get("name", part), "threads": manifest.get("threads"),
        "scenario": spec.get("sweep", {}).get("scenario"), "base": spec.get("base", {}), "cells": len(parts),
        "wall_min": (max(mtimes) - first) / 60 if parts else math.nan, "cell_min": float(np.nansum(walls)) / 60,
        "seeds": sorted(int(s) for s in frame.seed.unique()), "rounds": int(frame["round"].max()) + 1,
        "agents": sorted(frame.agent.unique()),
    }  # fmt: skip
    keep = frame[frame.metric.isin([*required, *DIAGNOSTICS]) | frame.metric.str.startswith("exposure_share_decile@")].copy()
    keep["part"] = part
    return keep[list(KEEP)], meta


def _part_wall(path: Path) -> float:
    from scenarios.sweep.cells import read_part

    return float(read_part(path)[1].get("wall_s", math.nan))


def read_stored_long(parquet: Path) -> tuple[pd.DataFrame, dict, dict | None]:
    """The long part, its metadata and the tune's from a stored page (``clrec.parquet`` + ``clrec.json``)."""
    meta_path = parquet.with_suffix(".json")
    if not parquet.is_file() or not meta_path.is_file():
        raise PageError(f"--reuse-long: {str(parquet)!r} and its .json must both exist")
    frame, meta = pd.read_parquet(parquet), json.loads(meta_path.read_text())
    long = frame[frame.part == "long"]
    if long.empty or "long" not in meta:
        raise PageError(f"--reuse-long: {str(parquet)!r} holds no long part")
    return long[list(KEEP)].reset_index(drop=True), meta["long"], meta.get("tune")


def read_tune(path: Path | None) -> dict | None:
    """The tune directory's budget, space, validation seeds and best values (tune.json), plus its cell wall time."""
    if path is None:
        return None
    if not (path / "tune.json").is_file():
        raise PageError(f"tune: no tune.json in {str(path)!r} (run `cascadesim tune` to the end first)")
    record = json.loads((path / "tune.json").read_text())
    parts = sorted((path / "parts").glob("*.parquet")) if (path / "parts").is_dir() else []
    record["cells"], record["cell_min"] = len(parts), float(np.nansum([_part_wall(p) for p in parts])) / 60
    record["dir"] = str(path)
    return record


# --- per-seed summaries and comparisons ----------------------------------------------------------------------------


def summaries(frame: pd.DataFrame, window: int) -> pd.DataFrame:
    """Per (part, agent, seed, stat, metric): ``last`` = mean over the last ``window`` rounds (long part);
    ``weekday`` / ``weekend`` = mean over the weekday- / weekend-test days of weeks 1.. and ``change`` = weekend - weekday."""
    keys = ["part", "agent", "seed", "metric"]
    out = []
    long = frame[frame.part == "long"]
    if len(long):
        top = int(long["round"].max())
        last = long[long["round"] > top - window].groupby(keys).value.mean().reset_index()
        out.append(last.assign(stat="last"))
    week = frame[(frame.part == "weekend") & (frame["round"] >= BURN_IN)]
    if len(week):
        day = week["round"] % 7
        wd = week[day.isin(WEEKDAY_TEST)].groupby(keys).value.mean()
        we = week[day.isin(WEEKEND_TEST)].groupby(keys).value.mean()
        change = (we - wd).dropna()
        for stat, s in (("weekday", wd), ("weekend", we), ("change", change)):
            out.append(s.reset_index().assign(stat=stat))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=[*keys, "value", "stat"])


def values(summ: pd.DataFrame, part: str, stat: str, metric: str, agent: str) -> pd.Series:
    """One agent's per-seed summary, indexed by seed."""
    sub = summ[(summ.part == part) & (summ.stat == stat) & (summ.metric == metric) & (summ.agent == agent)]
    return sub.set_index("seed").value.sort_index()


def paired_diff(summ: pd.DataFrame, c: Comparison) -> pd.Series:
    """``a - b`` per seed (seeds where both ran), or ``a`` itself when ``b`` is None."""
    a = values(summ, c.part, c.stat, c.metric, c.a)
    if c.b is None:
        return a
    both = pd.concat([a, values(summ, c.part, c.stat, c.metric, c.b)], axis=1).dropna()
    return both.iloc[:, 0] - both.iloc[:, 1]


def seeds_needed(diff: float, sd: float, cap: int = 10_000) -> float:
    """The smallest number of seeds whose MDE (80% power, two-sided 5%) is at most ``|diff|``; NaN when none <= cap."""
    if not (np.isfinite(diff) and np.isfinite(sd)) or diff == 0:
        return math.nan
    n = 2
    while n <= cap and mde(sd, n) > abs(diff):
        n = n + 1 if n < 64 else int(n * 1.1) + 1
    return float(n) if n <= cap else math.nan


def compare(summ: pd.DataFrame, comparisons: tuple[Comparison, ...] = COMPARISONS) -> pd.DataFrame:
    """One row per comparison: mean paired difference, 95% half-width, sd, p, Holm p, MDE, seeds needed, oracle-random gap."""
    rows = []
    for c in comparisons:
        d = paired_diff(summ, c).to_numpy()
        mean, half, sd = interval(d.tolist())
        gap = values(summ, c.part, c.stat, c.metric, "oracle").mean() - values(summ, c.part, c.stat, c.metric, "random").mean()
        rows.append({**c.__dict__, "n": len(d), "diff": mean, "half": half, "sd": sd, "p": paired_p(d.tolist()),
                     "mde": mde(sd, len(d)), "need": seeds_needed(mean, sd), "gap": gap})  # fmt: skip
    out = pd.DataFrame(rows)
    adjusted = holm(dict(enumerate(out.p)))
    return out.assign(holm=[adjusted[i] for i in range(len(out))])


def ratio(summ: pd.DataFrame, metric: str = "aggregate_diversity") -> tuple[float, float]:
    """Mean and 95% half-width over seeds of CLRec / sampled softmax + logQ (the paper's "over 2x" of Table 1)."""
    a, b = values(summ, "long", "last", metric, CLREC), values(summ, "long", "last", metric, SSM)
    both = pd.concat([a, b], axis=1).dropna()
    return interval((both.iloc[:, 0] / both.iloc[:, 1]).tolist())[:2]


# --- cost of the full design -----------------------------------------------------------------------------------------

_SPEC_FILES = {"long": "clrec", "weekend": "clrec-weekend", "long-full": "clrec-full", "weekend-full": "clrec-weekend-full",
               "tune": "clrec-tune", "tune-reduced": "clrec-tune-reduced"}  # fmt: skip
SPECS = {k: ROOT / "experiments" / f"{v}.toml" for k, v in _SPEC_FILES.items()}


def spec_scenario(path: Path):
    """The base scenario of a sweep or tune spec (without its agents_from, which may not exist yet)."""
    import tomllib

    from scenarios.presets import load_scenario
    from scenarios.sweep.spec import apply_overrides, flatten

    raw = tomllib.loads(path.read_text())
    head = raw.get("sweep", raw.get("tune", {}))
    return apply_overrides(load_scenario(head.get("scenario", "default")), flatten(raw.get("base", {})), "base")


def spec_work(path: Path) -> tuple[int, float]:
    """(cells, work) of a spec: work = cells x (rounds + 1) x requests per round x catalogue (the warm start is a round)."""
    import tomllib

    raw = tomllib.loads(path.read_text())
    sc = spec_scenario(path)
    if "tune" in raw:
        t = raw["tune"]
        cells = int(t.get("trials", 20)) * len(raw.get("agents", {})) * len(t.get("validation_seeds", [1000, 1001]))
    else:
        seeds = raw["sweep"].get("seeds", 1)
        cells = len(raw["agents"]) * (seeds if isinstance(seeds, int) else len(seeds))
    return cells, cells * (sc.timeline.rounds + 1) * sc.timeline.requests_per_round * sc.world.n_items


def full_cost(long_meta: dict, week_meta: dict, tune: dict | None) -> dict:
    """Core-hours of the full design at this run's pace: each reduced run's cell-minutes scaled by the work ratio."""
    pairs = [(long_meta["cell_min"], "long", "long-full"), (week_meta["cell_min"], "weekend", "weekend-full")]
    if tune:
        pairs.append((tune["cell_min"], "tune-reduced", "tune"))
    minutes, cells = 0.0, {}
    for spent, small, big in pairs:
        (_, w_small), (n_big, w_big) = spec_work(SPECS[small]), spec_work(SPECS[big])
        minutes += spent * w_big / w_small
        cells[big] = n_big
    return {"core_hours": minutes / 60, "cells": cells["long-full"] + cells["weekend-full"], "trial_cells": cells.get("tune", 0)}


# --- main ------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("long", nargs="?", help="the long-horizon sweep directory (experiments/clrec.toml)")
    ap.add_argument("weekend", nargs="?", help="the weekday -> weekend sweep directory (experiments/clrec-weekend.toml)")
    ap.add_argument("--tune", default=None, help="the tune directory whose best.toml the sweeps loaded (budget and space)")
    ap.add_argument("--from-parquet", help="regenerate the page from the stored docs/results/clrec.parquet (+ .json)")
    ap.add_argument("--reuse-long", help="a stored page parquet (+ .json): reuse its long part and tune; give the weekend sweep only")
    ap.add_argument("--window", type=int, default=10, help="rounds averaged at the end of the long loop")
    ap.add_argument("--workers", type=int, default=1, help="the --workers the sweeps ran with (stated on the page)")
    ap.add_argument("--sweep-commit", default=None, help="the commit the sweeps ran at (default: the current one)")
    ap.add_argument("--out-dir", default=str(OUT_DIR))
    ap.add_argument("--note", default="", help="how the sweeps were run, if not as stated (added to the header)")
    ap.add_argument("--machine-note", default="2 cores shared with other jobs", help="what else ran on the machine")
    args = ap.parse_args(argv)
    if args.reuse_long:
        if args.from_parquet or not args.long or args.weekend or args.tune:
            ap.exit(2, "error: --reuse-long: give the weekend sweep directory only (no long directory, --tune or --from-parquet)\n")
        args.long, args.weekend = None, args.long
    elif bool(args.long and args.weekend) == bool(args.from_parquet) or bool(args.long) != bool(args.weekend):
        ap.exit(2, "error: arguments: give the two sweep directories (long, weekend) or --from-parquet, not both\n")
    if args.window < 1:
        ap.exit(2, "error: --window: must be >= 1\n")
    return args


def collect(args: argparse.Namespace) -> tuple[pd.DataFrame, dict]:
    """The page's slim frame and its metadata, from the two sweeps and the tune (nothing written yet)."""
    import torch

    if args.reuse_long:
        long, long_meta, stored_tune = read_stored_long(Path(args.reuse_long))
    else:
        long, long_meta = read_sweep_dir(Path(args.long), "long", LONG_METRICS)
    week, week_meta = read_sweep_dir(Path(args.weekend), "weekend", WEEK_METRICS)
    if long_meta["rounds"] <= args.window:
        raise PageError(f"--window: must be < the long sweep's {long_meta['rounds']} rounds, got {args.window}")
    if week_meta["rounds"] < BURN_IN + max(WEEKEND_TEST) + 1:
        raise PageError(f"weekend: needs at least {BURN_IN + max(WEEKEND_TEST) + 1} rounds (week 0 is burn-in), got {week_meta['rounds']}")
    tune = stored_tune if args.reuse_long else read_tune(Path(args.tune) if args.tune else None)
    meta = {
        "long": long_meta, "weekend": week_meta, "tune": tune, "full_cost": full_cost(long_meta, week_meta, tune),
        "items_long": spec_scenario(SPECS["long"]).world.n_items, "items_weekend": spec_scenario(SPECS["weekend"]).world.n_items,
        "window": args.window, "workers": args.workers, "commit": args.sweep_commit or git_commit(), "note": args.note,
        "machine": f"{platform.platform()}, torch {torch.__version__}, {args.machine_note}",
    }  # fmt: skip
    return pd.concat([long, week], ignore_index=True), meta


def write_outputs(frame: pd.DataFrame, meta: dict, out_dir: Path, page_command: str) -> str:
    """Parquet and json first (into a temporary directory), the page built from the re-read parquet, then all three moved."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        parquet, meta_path = Path(tmp) / "clrec.parquet", Path(tmp) / "clrec.json"
        frame.to_parquet(parquet, index=False)
        meta_path.write_text(json.dumps(meta, indent=1, default=str) + "\n")
        text = build(pd.read_parquet(parquet), json.loads(meta_path.read_text()), out_dir, page_command, None)
        (Path(tmp) / "clrec.md").write_text(text)
        for name in ("clrec.parquet", "clrec.json", "clrec.md"):
            (Path(tmp) / name).replace(out_dir / name)
    return text


def build(frame: pd.DataFrame, meta: dict, out_dir: Path, page_command: str, regen: str | None) -> str:
    """The page text (and its figures in ``out_dir``) from the slim frame."""
    summ = summaries(frame, int(meta["window"]))
    comp = compare(summ)
    meta = {**meta, "page_command": page_command, "page_commit": git_commit()}
    return page_text(frame, summ, comp, ratio(summ), meta, out_dir, regen)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python experiments/clrec.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    out_dir = Path(args.out_dir)
    try:
        if args.from_parquet:
            src = Path(args.from_parquet)
            if not src.is_file() or not src.with_suffix(".json").is_file():
                raise PageError(f"--from-parquet: {str(src)!r} and its .json must both exist")
            frame, meta = pd.read_parquet(src), json.loads(src.with_suffix(".json").read_text())
            out_dir.mkdir(parents=True, exist_ok=True)  # the figures are written while the page is built
            text = build(frame, meta, out_dir, command, command)
            (out_dir / "clrec.md").write_text(text)
        else:
            frame, meta = collect(args)
            write_outputs(frame, meta, out_dir, command)
    except PageError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {out_dir / 'clrec.md'}")


if __name__ == "__main__":
    main()
