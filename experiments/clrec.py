"""CLRec's long-horizon popularity study and Table 4, in the closed loop (issue 5).

Two studies, one page (``docs/results/clrec.md``, generated; long-form metrics copied to
``docs/results/clrec.parquet``)::

    .venv/bin/python experiments/clrec.py [--seeds 3] [--out runs/results-clrec] [--from-run DIR_OR_PARQUET]

1. **Long horizon** (``clrec-testbed``): every agent of :data:`AGENTS` for the preset's
   rounds. The CLRec paper's Table 1 (aggregate diversity), Table 3 (popularity index) and
   Figure 3 (exposure by popularity) compare CLRec with sampled softmax + logQ online; here the
   same comparison runs for many rounds of a closed loop with the truth known, next to
   true_recall@50 and HitRate@50 (logged, and the unbiased / "true" one) for all agents and BC.
2. **Weekday -> weekend** (``weekend-shift``; the paper's Table 4): the training window is 3
   days, so the model serving on day 5 (Saturday) was trained on weekday clicks only (days 2-4),
   as were the models serving on days 3 and 4 (trained on days 0-2 and 1-3). HitRate@50 "test on
   weekdays" = the mean over days 3-4, "test on weekends" = day 5, both from week 1 on (week 0
   is burn-in). :data:`WEEKEND_AGENTS` lists the agents; part B's ``multi-clrec`` is among them.

``--from-run`` regenerates the page from a finished run directory (holding ``long/`` and
``weekend/``) or from the copied ``.parquet``, without rerunning anything.
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import agents  # noqa: E402  (registers the agents)
from scenarios.experiment import add_popularity_index  # noqa: E402
from scenarios.presets import load_scenario  # noqa: E402
from scenarios.study import compare, format_interval, interval, interval_table, load_study, mean_fit_seconds, run_study  # noqa: E402
from simulator.checkpoint import read_metrics  # noqa: E402

LONG_SCENARIO, WEEKEND_SCENARIO = "clrec-testbed", "weekend-shift"
AGENTS = [
    "bc", "sampled-softmax-logq", "sampled-softmax", "clrec", "clrec-queue", "clrec-cached",
    "multi-clrec", "ipw", "ipw-oracle",
]  # fmt: skip
"""The long-horizon agents (a module-level list: part B's agents are appended here)."""
WEEKEND_AGENTS = ["bc", "sampled-softmax-logq", "clrec-queue", "multi-clrec"]
"""The Table-4 agents (``clrec-queue`` is the paper's production CLRec)."""
CLREC, BASELINE = "clrec-queue", "sampled-softmax-logq"
MATTHEW = ["aggregate_diversity", "popularity_index", "exposure_gini", "exposure_top1_share"]
ACCURACY = ["true_recall@50", "onpolicy_replay_hitrate@50", "unbiased_hitrate@50", "onpolicy_replay_hitrate@5", "unbiased_hitrate@5"]
"""@50 as the issue asks; @5 (the slate size) too, because HitRate@50 saturates over ~1,000 live items."""
WINDOW = 20
"""Rounds averaged (per seed) for the end-of-run figures next to the single last round."""
WEEKDAY_TEST, WEEKEND_TEST = (3, 4), (5,)
"""Day-of-week of the test rounds (round r is day r mod 7; days 5, 6 are the weekend)."""
HR = ["onpolicy_replay_hitrate@50", "unbiased_hitrate@50", "onpolicy_replay_hitrate@5", "unbiased_hitrate@5"]
PARTB_DIAG = [
    "fit_routing_entropy", "fit_routing_item_entropy", "fit_selection_share_max", "fit_intents_used",
    "fit_weight_p50", "fit_weight_p99", "fit_weight_max", "fit_clipped_share", "fit_prop_logcorr",
]  # fmt: skip
"""Fit diagnostics of ``multi-clrec`` (routing health, §11(f)) and the IPW family (weight quantiles, §16.1)."""


def registered(names: list[str]) -> list[str]:
    known = set(agents.list_agents())
    return [n for n in names if n in known]


# --- derived frames -----------------------------------------------------------------------------


def window_mean(metrics: pd.DataFrame, names: list[str], first: int, last: int, label: int) -> pd.DataFrame:
    """Per (agent, seed, metric) mean over rounds ``first..last``, stored under ``round = label``."""
    part = metrics[metrics["metric"].isin(names) & metrics["round"].between(first, last)]
    out = part.groupby(["scenario", "agent", "seed", "metric"], as_index=False)["value"].mean()
    out["round"] = label
    return out


def weekday_weekend(metrics: pd.DataFrame, names: list[str], burn_in: int = 7) -> pd.DataFrame:
    """Per (agent, seed): each metric's mean on weekday-test rounds (round label 1), weekend-test
    rounds (label 2) and their difference weekend − weekday (label 3)."""
    m = metrics[metrics["metric"].isin(names) & (metrics["round"] >= burn_in)].copy()
    m["day"] = m["round"] % 7
    frames = []
    for label, days in ((1, WEEKDAY_TEST), (2, WEEKEND_TEST)):
        part = m[m["day"].isin(days)].groupby(["scenario", "agent", "seed", "metric"], as_index=False)["value"].mean()
        part["round"] = label
        frames.append(part)
    both = pd.concat(frames, ignore_index=True)
    if both.empty:
        return both
    wide = both.pivot_table(index=["scenario", "agent", "seed", "metric"], columns="round", values="value")
    wide = wide.reindex(columns=[1, 2]).reset_index()
    drop = wide[["scenario", "agent", "seed", "metric"]].copy()
    drop["value"] = wide[2] - wide[1]
    drop["round"] = 3
    return pd.concat([both, drop], ignore_index=True)


# --- page ----------------------------------------------------------------------------------------


def round_checkpoints(first: int, last: int, n: int = 5) -> list[int]:
    if last - first < n:
        return list(range(first, last + 1))
    return sorted({first + round(i * (last - first) / (n - 1)) for i in range(n)})


def over_rounds_table(metrics: pd.DataFrame, name: str, rounds: list[int], agents_: list[str], digits: int) -> str:
    head = f"| agent | " + " | ".join(f"round {r}" for r in rounds) + " |\n|---|" + "---|" * len(rounds) + "\n"
    rows = []
    for a in agents_:
        cells = []
        for r in rounds:
            vals = metrics[(metrics.agent == a) & (metrics.metric == name) & (metrics["round"] == r)]["value"].tolist()
            cells.append(format_interval(*interval(vals), digits=digits))
        rows.append(f"| {a} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def verdict(
    metrics: pd.DataFrame, name: str, rnd: int, agent: str, base: str, higher: str = "higher", lower: str = "lower"
) -> tuple[str, str]:
    """``(word, text)``: ``higher`` / ``lower`` / ``no clear difference`` from the paired 95% interval."""
    word, diff, half = compare(metrics, name, rnd, agent, base)
    if math.isnan(diff):
        return "no data", f"`{name}`: no data"
    said = {"wins": higher, "loses": lower, "ties": "no clear difference"}[word]
    band = f"{diff:+.4g} ± {half:.2g}" if not math.isnan(half) else f"{diff:+.4g}, one seed"
    if word == "ties":
        return said, f"`{name}`: no clear difference between `{agent}` and `{base}` ({band})"
    return said, f"`{name}`: `{agent}` {said} than `{base}` ({band})"


def long_section(metrics: pd.DataFrame, timings: pd.DataFrame | None) -> tuple[list[str], list[str]]:
    """The long-horizon tables and their findings."""
    present = [a for a in registered(AGENTS) if a in set(metrics.agent)] or sorted(set(metrics.agent))
    first, last = int(metrics["round"].min()), int(metrics["round"].max())
    lo = max(first, last - WINDOW + 1)
    diag = ["fit_click_impression_tv", "fit_masked_share", "fit_queue_distinct_share", "fit_loss"]
    win = window_mean(metrics, MATTHEW + ACCURACY + diag + [f"exposure_share_decile@{d}" for d in range(1, 11)], lo, last, -1)
    both = pd.concat([metrics, win], ignore_index=True)
    checkpoints = round_checkpoints(first, last)
    out = ["## 1. The Matthew effect over a long closed loop (paper Table 1, Table 3, Figure 3)", ""]
    out += [
        f"Scenario `{LONG_SCENARIO}`, rounds {first}..{last}. Each cell: mean ± 95% t half-width over seeds. "
        f"*Aggregate diversity* here counts the distinct items **exposed** in the round (after the ranker), "
        f"*popularity index* is the mean observed click count of the exposed items divided by its maximum over "
        f"the agents of the same seed and round (CLRec's definition with the study's agents as A'), "
        f"the Gini and top-1% share are over the round's exposure counts of the live items.",
        "",
    ]
    digits = {"aggregate_diversity": 1, "popularity_index": 3, "exposure_gini": 3, "exposure_top1_share": 3}
    for name in MATTHEW:
        out += [f"### `{name}`", "", over_rounds_table(metrics, name, checkpoints, present, digits[name])]
        out += [f"Mean of the last {last - lo + 1} rounds ({lo}..{last}):", "", interval_table(win, [name], -1, present, digits[name])]
    deciles = [f"exposure_share_decile@{d}" for d in range(1, 11)]
    if set(deciles) <= set(metrics.metric):
        out += [
            "### Exposure share by popularity decile (Figure 3's question: where do the impressions go?)", "",
            f"Share of the round's exposures going to each decile of live items by observed clicks at the round's start "
            f"(10 = most popular), mean of rounds {lo}..{last}.", "",
            interval_table(win, deciles, -1, [a for a in present if a in (CLREC, BASELINE, "clrec", "bc", "multi-clrec")], 3),
        ]
    out += ["## 2. Accuracy: true recall and HitRate@50 for every agent", ""]
    out += [
        "`true_recall@50`: overlap of the agent's top-50 with the true top-50 (true relevance, request's intent). "
        "`onpolicy_replay_hitrate@50`: share of the round's clicked requests with a clicked item in the agent's top-50 (the "
        "paper's offline HR@50, on held-out logged clicks). `unbiased_hitrate@50`: the expected hit rate if the user "
        "examined the whole catalogue attentively (the \"true\" HitRate).", "",
        f"First round ({first}):", "", interval_table(metrics, ACCURACY, first, present, 3),
        f"Last round ({last}):", "", interval_table(metrics, ACCURACY, last, present, 3),
        f"Mean of rounds {lo}..{last}:", "", interval_table(win, ACCURACY, -1, present, 3),
    ]
    have = [d for d in diag if d in set(metrics.metric)]
    if have:
        out += [
            f"Fit diagnostics, mean of rounds {lo}..{last} (`fit_click_impression_tv`: total variation between the window's "
            "click and impression item distributions, i.e. how far CLRec's `q ≈ p_data` is off; `fit_masked_share`: "
            "negative slots dropped as accidental hits; `fit_queue_distinct_share`: distinct ids / queue length):", "",
            interval_table(win, have, -1, present, 3),
        ]
    partb, pb_names = [a for a in ("multi-clrec", "ipw", "ipw-oracle") if a in present], [d for d in PARTB_DIAG if d in set(metrics.metric)]
    if partb and pb_names:
        out += [
            f"Diagnostics of `multi-clrec` and the IPW family, mean of rounds {lo}..{last} (`fit_routing_entropy`: entropy "
            "of the mean routing of the live items, max log H; `fit_routing_item_entropy`: mean per-item routing entropy, "
            "low = polarised; `fit_selection_share_max`: share of the window's requests whose selected intent is the most "
            "common one, 1 = the selector collapsed; `fit_weight_*`: clipped IPW weights over the fit divided by their "
            "mean; `fit_prop_logcorr`: correlation of the learned log q(y|x) with the logged log exposure propensity):", "",
            interval_table(window_mean(metrics, pb_names, lo, last, -1), pb_names, -1, partb, 3),
        ]
    if timings is not None and len(timings):
        secs = mean_fit_seconds(timings, present)
        out += ["Mean wall seconds per agent fit (same run, same machine): " + ", ".join(f"`{a}` {s:.2f}" for a, s in secs.items()), ""]
    # findings
    find = []
    if CLREC in present and BASELINE in present:
        words = {}
        for rnd, where in ((last, f"in the last round ({last})"), (-1, f"over rounds {lo}..{last}")):
            lines = []
            for name in MATTHEW:
                w, text = verdict(both, name, rnd, CLREC, BASELINE)
                words[(name, rnd)] = w
                lines.append(text)
            find.append(f"- CLRec (`{CLREC}`) vs sampled softmax with logQ (`{BASELINE}`) {where}: " + "; ".join(lines) + ".")
        reduced = [
            words[("aggregate_diversity", -1)] == "higher", words[("popularity_index", -1)] == "lower",
            words[("exposure_gini", -1)] == "lower", words[("exposure_top1_share", -1)] == "lower",
        ]
        opposite = [
            words[("aggregate_diversity", -1)] == "lower", words[("popularity_index", -1)] == "higher",
            words[("exposure_gini", -1)] == "higher", words[("exposure_top1_share", -1)] == "higher",
        ]
        if all(reduced):
            holds = "**holds**: all four concentration measures favour CLRec"
        elif sum(reduced) > 0 and not any(opposite):
            holds = f"**partly holds**: {sum(reduced)} of 4 concentration measures favour CLRec, none favours the baseline"
        elif any(opposite) and not any(reduced):
            holds = f"**does not hold**: {sum(opposite)} of 4 concentration measures favour the baseline, none favours CLRec"
        elif any(opposite):
            holds = f"**is mixed**: {sum(reduced)} measure(s) favour CLRec, {sum(opposite)} the baseline"
        else:
            holds = "**is not detected**: no concentration measure differs beyond the seed noise"
        find.append(f"- Does CLRec's reduction of the Matthew effect hold over a long closed loop? Over rounds {lo}..{last} it {holds}.")
        for base in (BASELINE, "bc"):
            if base in present:
                parts = [verdict(both, name, -1, CLREC, base)[1] for name in ACCURACY]
                find.append(f"- What it does to accuracy, over rounds {lo}..{last}: " + "; ".join(parts) + ".")
        for base in ("bc",):
            for other in present:
                if other not in (base, CLREC):
                    w, text = verdict(both, "true_recall@50", -1, other, base)
                    find.append(f"  - {text}")
    return out, find


def weekend_section(metrics: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Table 4 in the closed loop: HitRate@50 trained on weekdays, tested on weekdays vs weekends."""
    if metrics is None or metrics.empty:
        return ["## 3. Weekday -> weekend shift (paper Table 4)", "", "Not run.", ""], []
    present = [a for a in registered(WEEKEND_AGENTS) if a in set(metrics.agent)] or sorted(set(metrics.agent))
    last = int(metrics["round"].max())
    ww = weekday_weekend(metrics, HR, burn_in=7 if last >= 12 else 0)
    weeks = (last + 1) // 7
    out = [
        "## 3. Weekday -> weekend shift (paper Table 4)", "",
        f"Scenario `{WEEKEND_SCENARIO}`, rounds 0..{last} ({weeks} weeks; week 0 is burn-in). The window is 3 days, so the "
        f"models serving on days {', '.join(map(str, WEEKDAY_TEST))} (\"test on weekdays\") and day "
        f"{', '.join(map(str, WEEKEND_TEST))} (\"test on weekends\") were all trained on weekday clicks only. "
        "Per seed, each figure is the mean over those days of weeks 1.. ; then mean ± 95% interval over seeds. "
        "The \"drop\" is weekend − weekday (paper: CLRec 17.18% -> 17.16%, Multi-CLRec 17.25% -> 17.68%).", "",
    ]
    for name in HR:
        head = "| agent | test on weekdays | test on weekends | weekend − weekday |\n|---|---|---|---|\n"
        rows = []
        for a in present:
            cells = []
            for label in (1, 2, 3):
                vals = ww[(ww.agent == a) & (ww.metric == name) & (ww["round"] == label)]["value"].tolist()
                cells.append(format_interval(*interval(vals), digits=4))
            rows.append(f"| {a} | " + " | ".join(cells) + " |")
        out += [f"### `{name}`", "", head + "\n".join(rows) + "\n"]
    find = []
    for name in HR:
        moves = []
        for a in present:
            mean, half = interval(ww[(ww.agent == a) & (ww.metric == name) & (ww["round"] == 3)]["value"].tolist())
            if math.isnan(mean):
                continue
            word = "no clear change" if math.isnan(half) or abs(mean) <= half else ("rises" if mean > 0 else "drops")
            moves.append(f"`{a}` {word} ({mean:+.4f} ± {half:.4f})")
        find.append(f"- Weekday -> weekend, `{name}` (weekend − weekday, per seed then over seeds): " + "; ".join(moves) + ".")
    if "multi-clrec" in present and CLREC in present:
        for name in HR:
            for label, what in ((2, "on weekends"), (3, "weekend − weekday change")):
                _, text = verdict(ww, name, label, "multi-clrec", CLREC)
                find.append(f"- Table 4, {what}: {text}.")
    elif CLREC in present:
        find.append("- Table 4: `multi-clrec` is not registered/run yet; only the single-queue figures above are available.")
    return out, find


def page(
    long_m: pd.DataFrame, week_m: pd.DataFrame | None, timings: pd.DataFrame | None, command: str, wall: str, seeds: int, machine: str,
    sources: list[str] | None = None, note: str = "",
) -> str:
    sc_long, sc_week = load_scenario(LONG_SCENARIO), load_scenario(WEEKEND_SCENARIO)
    long_rounds = int(long_m["round"].max()) + 1
    week_rounds = int(week_m["round"].max()) + 1 if week_m is not None and len(week_m) else 0

    def scale(sc, rounds: int) -> str:
        w, c, t = sc.world, sc.cascade, sc.timeline
        return (
            f"{w.n_users} users x {w.n_items} items ({w.n_categories} categories), +{sc.dynamics.new_items_per_round} items/round"
            f"{f' (mean lifetime {sc.dynamics.item_lifetime_rounds:g} rounds)' if sc.dynamics.item_lifetime_rounds else ''}, "
            f"K_r = {c.k_retrieve}, slate {c.slate_size}, ranker `{c.ranker}`, stochastic serving {c.stochastic}, "
            f"~{t.requests_per_round} requests/round, {rounds} rounds, window {sc.training.window_rounds} rounds"
        )

    out = [
        "# CLRec vs sampled softmax over a long closed loop, and the weekday -> weekend shift (issue 5)", "",
        "*Generated* by `experiments/clrec.py`; do not edit by hand. Regenerate with:", "",
        f"    {command}", "",
        f"- Seeds: {seeds}. Machine: {machine}; torch {torch.__version__}. Wall time: {wall}.",
        *([
            f"- Run directories: {', '.join(sources)}. The data of `.venv/bin/python experiments/clrec.py --seeds 3` "
            "may be produced in several processes (`--only long --long-dir long-a --agents ...`, one directory per "
            "agent group or seed, `--only weekend`): every (agent, seed) loop is deterministic and starts from its "
            "seed's shared warm start, so the split changes no number; the popularity index is recomputed over all "
            "agents of a seed and round when the directories are merged."
        ] if sources and len(sources) > 2 else []),
        f"- Long horizon: `{LONG_SCENARIO}`: {scale(sc_long, long_rounds)}.",
        f"- Weekend shift: `{WEEKEND_SCENARIO}`: {scale(sc_week, week_rounds)}." if week_rounds else "- Weekend shift: not run.",
        f"- Scale honesty: these worlds are tiny ({sc_long.world.n_items} and {sc_week.world.n_items} items, not the paper's "
        f"100M), so K = 50 is {50 / sc_long.world.n_items:.0%} / {50 / sc_week.world.n_items:.0%} of the catalogue and "
        "HitRate@50 is near 1 for every agent (hence HitRate@5 next to it); the comparison between agents is the point, "
        "not the absolute level.",
        *([f"- {note}"] if note else []),
        "- Encoders: every agent except `bc` and the IPW family's propensity model uses the single-queue CLRec sequence "
        "encoder (`agents/backbone/sequence.py`: time-bucket and backward positional embeddings over the click history, "
        "simplified multi-head attention, weighted head aggregation, cosine / ρ with ρ = 0.07) and is trained on clicks "
        "only; `bc` is the DSSM two-tower trained with BCE on exposures.", "",
    ]
    long_out, long_find = long_section(long_m, timings)
    week_out, week_find = weekend_section(week_m if week_m is not None else pd.DataFrame())
    out += long_out + week_out
    out += ["## Findings (generated from the paired comparisons above)", ""] + long_find + week_find + [""]
    out += [
        "## Notes", "",
        "- Paired comparisons: differences per seed (common random numbers: every agent of a seed starts from the same "
        "world and warm start), 95% t-interval; \"no clear difference\" when it contains 0.",
        "- CLRec's own assumption is `q(y) ≈ p_data(y)` (the click distribution stands in for the exposure "
        "distribution); each agent logs `fit_click_impression_tv`, the total variation between the window's click and "
        "impression item distributions, as the size of that approximation.",
        "- Queue order: the paper enqueues the batch first and scores against the whole queue (with |Q| = B this is "
        "exactly in-batch); algorithms.md §10(c) defaults to the official code's order. The paper wins: the agents use "
        "the paper's order (`enqueue_first = true`); accidental hits are masked (spec default, a switch).",
        "",
    ]
    return "\n".join(out)


def merge_runs(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate run directories' metrics; the popularity index is recomputed over all agents of a
    scenario, seed and round (the long study may be split over several run directories)."""
    allm = pd.concat(frames, ignore_index=True)
    allm = allm[allm.metric != "popularity_index"]
    return add_popularity_index(allm)


def add_wall(run_dir: Path, seconds: float) -> float:
    """Accumulate the wall seconds spent running a study into ``run_dir/wall_seconds.txt``; return the total."""
    f = run_dir / "wall_seconds.txt"
    total = (float(f.read_text()) if f.exists() else 0.0) + seconds
    f.write_text(f"{total:.1f}\n")
    return total


def read_wall(run_dir: Path) -> str:
    parts = []
    for sub in sorted(run_dir.iterdir()) if run_dir.is_dir() else []:
        f = sub / "wall_seconds.txt"
        if f.exists():
            parts.append(f"{sub.name} {float(f.read_text()) / 60:.1f} min")
    return ", ".join(parts) if parts else "unknown"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="runs/results-clrec")
    ap.add_argument("--rounds", type=int, default=None, help="long-horizon rounds (default: the preset's)")
    ap.add_argument("--weekend-rounds", type=int, default=None, help="weekend-shift rounds (default: the preset's)")
    ap.add_argument("--agents", default=None, help="comma-separated long-horizon agents (default: AGENTS)")
    ap.add_argument("--weekend-agents", default=None, help="comma-separated Table-4 agents (default: WEEKEND_AGENTS)")
    ap.add_argument("--skip-weekend", action="store_true")
    ap.add_argument("--only", choices=["long", "weekend"], default=None, help="run one of the two studies only (no page)")
    ap.add_argument("--long-dir", default="long", help="sub-directory of --out for the long study (e.g. long-a, long-b for agent groups)")
    ap.add_argument("--from-run", default=None, help="a run directory (with long/ and weekend/) or the copied .parquet")
    ap.add_argument("--note", default="", help="a sentence added to the page header (e.g. how the machine was shared)")
    ap.add_argument("--page", default="docs/results/clrec", help="page path without suffix (.md and .parquet are written)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    command = ".venv/bin/python experiments/clrec.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    started = time.perf_counter()
    timings = None
    if args.from_run:
        src = Path(args.from_run)
        if src.suffix == ".parquet":
            allm = read_metrics(src)
        else:
            parts = [load_study(d) for d in sorted(src.iterdir()) if (d / "metrics.parquet").exists()]
            allm = merge_runs([p.metrics for p in parts])
            long_t = [p.timings for p in parts if p.run_dir.name.startswith("long")]
            timings = pd.concat(long_t, ignore_index=True) if long_t else None
        wall = f"{read_wall(src)} (regenerated from the stored metrics)" if src.is_dir() else "(regenerated from the stored metrics)"
    else:
        out = Path(args.out)
        long_agents = registered(args.agents.split(",") if args.agents else AGENTS)
        week_agents = registered(args.weekend_agents.split(",") if args.weekend_agents else WEEKEND_AGENTS)
        if args.only in (None, "long"):
            t0 = time.perf_counter()
            res = run_study(LONG_SCENARIO, long_agents, args.seeds, out / args.long_dir, rounds=args.rounds)
            add_wall(out / args.long_dir, time.perf_counter() - t0)
            timings = res.timings
        if args.only in (None, "weekend") and not args.skip_weekend:
            t0 = time.perf_counter()
            run_study(WEEKEND_SCENARIO, week_agents, args.seeds, out / "weekend", rounds=args.weekend_rounds)
            add_wall(out / "weekend", time.perf_counter() - t0)
        if args.only is not None:
            print(f"{args.only}: done in {time.perf_counter() - started:.0f} s")
            return
        parts = [load_study(d) for d in sorted(out.iterdir()) if (d / "metrics.parquet").exists()]
        allm = merge_runs([p.metrics for p in parts])
        long_t = [p.timings for p in parts if p.run_dir.name.startswith("long")]
        timings = pd.concat(long_t, ignore_index=True) if long_t else timings
        wall = f"{read_wall(out)} (accumulated over invocations; the two studies may have run concurrently)"
    long_m = allm[allm.scenario == LONG_SCENARIO]
    week_m = allm[allm.scenario == WEEKEND_SCENARIO]
    seeds = int(allm["seed"].nunique())
    machine = f"{platform.platform()}, {platform.processor() or platform.machine()}, torch threads 1"
    run_root = Path(args.from_run) if args.from_run else Path(args.out)
    sources = sorted(d.name for d in run_root.iterdir() if (d / "metrics.parquet").exists()) if run_root.is_dir() else None
    text = page(long_m, week_m if len(week_m) else None, timings, command, wall, seeds, machine, sources, args.note)
    page_path = Path(args.page)
    page_path.parent.mkdir(parents=True, exist_ok=True)
    page_path.with_suffix(".md").write_text(text)
    if not args.from_run or Path(args.from_run).suffix != ".parquet":
        allm.to_parquet(page_path.with_suffix(".parquet"), index=False)
    print(f"wrote {page_path.with_suffix('.md')} ({wall})")


if __name__ == "__main__":
    main()
