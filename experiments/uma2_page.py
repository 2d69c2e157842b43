"""The UMA² page (issue 16 item 4): Table 1's claims in the closed loop, generated from a sweep of ``experiments/uma2.toml``.

Reads the sweep's merged long-form table and the tune directory (``tune.json``: budget, space, best values), keeps the
metrics the page uses in ``docs/results/uma2.parquet`` (the page's numbers are then read back from that file, with the
metadata in ``uma2.json``), and writes ``docs/results/uma2.md``::

    python experiments/uma2_page.py runs/uma2 [--tune runs/uma2-tune] [--spec experiments/uma2.toml]
    python experiments/uma2_page.py --from-parquet docs/results/uma2.parquet     # regenerate the page only

Statistics: every agent of a seed sees the same world and request stream (common random numbers), so each claim's
comparison is the paired difference of the per-seed time averages over the last rounds; 95% t-intervals, two-sided
paired t-tests Holm-adjusted across every comparison of the page, the MDE at 80% power and the seeds the observed
difference would need. Bad input is one line ``error: <what>: <why>`` and exit status 2, with no page written.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from offline_evaluation_page import fmt, fmt_plain, holm, interval, mde, table  # noqa: E402
from regimes_page import _part_wall, git_commit, paired_p, write_figures  # noqa: E402

REFERENCES = ("oracle", "random", "popular", "bc")
STUDY = ("ss-a", "ss-ab", "ss-abc-random", "ss-abc-fixed", "youtube-dnn", "youtube-dnn-softmax", "uma2", "uma2-dat", "uma2-oracle-p")
USER_FACING = ("logged_ctr", "logged_finish_rate", "slate_utility")
DIAGNOSTICS = ("fit_clip_share_a", "fit_clip_share_b", "fit_weight_p99", "fit_weight_max", "fit_p1_mean", "fit_p2_mean")
KEEP = ("agent", "seed", "round", "metric", "value")
OUT_DIR = ROOT / "docs" / "results"


@dataclass(frozen=True)
class Comparison:
    """One tested comparison: ``agent - base`` under one claim; ``paper`` is the relative lift the paper reports (or None)."""

    claim: str
    agent: str
    base: str
    paper: float | None = None


COMPARISONS = (
    Comparison("A", "ss-ab", "ss-a"),
    Comparison("A", "ss-abc-random", "ss-a"),
    Comparison("A", "ss-abc-fixed", "ss-a"),
    Comparison("A", "ss-abc-random", "ss-ab"),
    Comparison("A", "uma2", "ss-a", 0.947),  # obs. 1: UMA²_YTB in SS-ABC(fixed) over YouTube DNN in SS-A, Recall@200 +94.70%
    Comparison("B", "uma2", "youtube-dnn", 0.0084),  # obs. 4: over YouTube DNN in SS-ABC(random), Recall@200 +0.84%
    Comparison("B", "uma2", "ss-abc-random"),
    Comparison("B", "uma2", "ss-abc-fixed"),  # ablation 1: the same sampling with weights = 1
    Comparison("B", "uma2-dat", "ss-abc-fixed"),
    Comparison("S", "uma2-oracle-p", "uma2"),  # sanity 2 (algorithms.md §7(f))
    Comparison("S", "uma2-oracle-p", "ss-abc-fixed"),
    *(
        Comparison("C", a, "bc")
        for a in ("ss-ab", "ss-abc-random", "ss-abc-fixed", "youtube-dnn", "youtube-dnn-softmax", "uma2", "uma2-dat")
    ),
)


def fail(what: str) -> SystemExit:
    """The one-line error of bad input (exit status 2)."""
    print(f"error: {what}", file=sys.stderr)
    return SystemExit(2)


# --- data ----------------------------------------------------------------------------------------------------------


def ks(frame: pd.DataFrame) -> tuple[int, int]:
    """The two retrieval cut-offs of the page: K_r and 2 x K_r (the paper's @100 / @200 scaled), from true_recall@K."""
    have = sorted(int(m.split("@")[1]) for m in frame.metric.unique() if m.startswith("true_recall@"))
    if len(have) < 2:
        raise fail(f"results: true_recall@K needed at two K (the spec's metrics.k_values), found {have}")
    return have[-2], have[-1]


def page_metrics(k1: int, k2: int) -> list[str]:
    recall = [f"true_recall@{k1}", f"true_recall@{k2}", f"unbiased_recall@{k1}", f"unbiased_recall@{k2}", f"onpolicy_replay_recall@{k1}"]
    return [*recall, *USER_FACING, *DIAGNOSTICS]


def slim(results: pd.DataFrame) -> pd.DataFrame:
    """The rows the page reads (keeps the parquet small); the headline metrics must be there."""
    k1, k2 = ks(results)
    names = page_metrics(k1, k2)
    missing = [m for m in names[:5] + list(USER_FACING) if m not in set(results.metric)]
    if missing:
        raise fail(f"results: metric(s) {', '.join(missing)} missing from the sweep's table")
    keep = results[results.metric.isin(names)]
    return keep[list(KEEP)].sort_values(list(KEEP[:4])).reset_index(drop=True)


def complete_seeds(results: pd.DataFrame) -> pd.DataFrame:
    """Only the seeds that every agent finished (a sweep cut short leaves its last seeds partial)."""
    per = results.groupby("seed").agent.nunique()
    return results[results.seed.isin(per[per == per.max()].index)]


def time_average(frame: pd.DataFrame, window: int) -> pd.DataFrame:
    """Per (agent, seed, metric) the mean over the last ``window`` rounds."""
    top = int(frame["round"].max())
    return frame[frame["round"] > top - window].groupby(["agent", "seed", "metric"], sort=False).value.mean().reset_index()


def paired(avg: pd.DataFrame, agent: str, base: str, metric: str) -> np.ndarray:
    """``agent - base`` per seed (seeds where both ran)."""
    sub = avg[(avg.metric == metric) & avg.agent.isin([agent, base])]
    wide = sub.pivot_table(index="seed", columns="agent", values="value").dropna()
    if agent not in wide or base not in wide:
        return np.array([])
    return (wide[agent] - wide[base]).to_numpy()


def level(avg: pd.DataFrame, agent: str, metric: str) -> tuple[float, float]:
    return interval(avg[(avg.agent == agent) & (avg.metric == metric)].value.tolist())[:2]


# --- statistics ----------------------------------------------------------------------------------------------------


def seeds_needed(diff: float, sd: float) -> float:
    """The fewest paired seeds whose MDE (80% power, two-sided 5%) is at most ``|diff|``; inf beyond 10,000."""
    if not (np.isfinite(diff) and np.isfinite(sd)) or diff == 0:
        return math.nan
    start = ((1.959964 + 0.841621) * sd / abs(diff)) ** 2  # the normal approximation: the t-based answer is never below it
    if start > 10_000:
        return math.inf
    n = max(2, math.floor(start))
    while mde(sd, n) > abs(diff):
        n += 1
    return float(n)


def comparisons(avg: pd.DataFrame, k1: int, k2: int) -> pd.DataFrame:
    """One row per (comparison, tested metric) with Δ, its interval, p, Holm (over the whole page), MDE and seeds needed."""
    present = set(avg.agent)
    gap = {m: level(avg, "oracle", m)[0] - level(avg, "random", m)[0] for m in (f"true_recall@{k1}", f"true_recall@{k2}")}
    rows = []
    for c in [c for c in COMPARISONS if {c.agent, c.base} <= present]:
        for metric in gap:
            d = paired(avg, c.agent, c.base, metric)
            mean, half, sd = interval(d.tolist())
            base_level = level(avg, c.base, metric)[0]
            row = {"claim": c.claim, "agent": c.agent, "base": c.base, "metric": metric, "n": len(d), "diff": mean, "half": half,
                   "sd": sd, "p": paired_p(d.tolist()), "mde": mde(sd, len(d)), "need": seeds_needed(mean, sd), "gap": gap[metric],
                   "base_level": base_level, "paper": c.paper if c.paper is not None else math.nan}  # fmt: skip
            for m in USER_FACING:
                row[m], row[m + "_half"], _ = interval(paired(avg, c.agent, c.base, m).tolist())
            rows.append(row)
    out = pd.DataFrame(rows)
    adjusted = holm(dict(enumerate(out.p)))
    return out.assign(holm=[adjusted[i] for i in range(len(out))])


def verdict(row: pd.Series) -> str:
    """Per comparison: reproduced, reversed, excluded (the CI rules out the paper's lift), or undecided at this power."""
    if np.isfinite(row.holm) and row.holm < 0.05:
        return "reproduced" if row["diff"] > 0 else "reversed"
    if np.isfinite(row.paper) and np.isfinite(row.half) and row.base_level > 0:
        if (row["diff"] + row.half) / row.base_level < row.paper:
            return "not reproduced (CI excludes the paper's lift)"
    return "undecided at this power"


def pair_words(rows: pd.DataFrame) -> dict[str, str]:
    """Per comparison of a claim, its verdict on both K (named per K when they differ)."""
    out = {}
    for (agent, base), group in rows.groupby(["agent", "base"], sort=False):
        words = {r.metric.split("@")[1]: verdict(r) for _, r in group.iterrows()}
        same = len(set(words.values())) == 1
        out[f"`{agent}` - `{base}`"] = next(iter(words.values())) if same else ", ".join(f"{w} @{k}" for k, w in words.items())
    return out


def claim_verdict(rows: pd.DataFrame) -> str:
    """Reproduced when every comparison is; not reproduced when none is and some reverse or exclude the paper's lift;
    partly reproduced when some are and some are not; undecided otherwise. The comparisons are named by verdict."""
    words = pair_words(rows)
    good = [k for k, w in words.items() if w == "reproduced"]
    bad = [k for k, w in words.items() if w != "reproduced" and ("reversed" in w or "not reproduced" in w)]
    rest = [k for k in words if k not in good and k not in bad]
    if len(good) == len(words):
        head = "**reproduced**"
    elif good:
        head = "**partly reproduced**"
    elif bad:
        head = "**not reproduced**"
    else:
        head = "**undecided at this power**"
    parts = [f"{label}: " + "; ".join(f"{k} ({words[k]})" for k in keys) for label, keys in
             (("holds for", good), ("fails for", bad), ("undecided for", rest)) if keys]  # fmt: skip
    return head + " — " + " | ".join(parts)


def offline_inversion(avg: pd.DataFrame, k1: int) -> str:
    """Does the offline view (held-out logged clicks) order the study's agents as the truth does? Spearman over agents."""
    means = avg[avg.agent.isin(STUDY + ("bc",))].groupby(["metric", "agent"]).value.mean().unstack("metric")
    off, true = f"onpolicy_replay_recall@{k1}", f"true_recall@{k1}"
    if off not in means or true not in means or len(means) < 3:
        return ""
    rho = float(means[off].rank().corr(means[true].rank()))
    word = "agree" if rho > 0.5 else "disagree"
    return (f"The offline view and the truth {word} on the order: over the {len(means)} learned agents the rank correlation of "
            f"`{off}` with `{true}` is {rho:+.2f}; the offline view ranks `{means[off].idxmax()}` first, the truth "
            f"`{means[true].idxmax()}` (and `{means[true].idxmin()}` last). An offline Table 1 on this log would "
            "have read the comparisons differently.")  # fmt: skip


# --- page sections -------------------------------------------------------------------------------------------------


def _p(p: float) -> str:
    return "–" if not np.isfinite(p) else ("< 0.001" if p < 1e-3 else f"{p:.3f}")


def _rel(diff: float, ref: float) -> str:
    return f"{diff / ref:+.2f}" if np.isfinite(diff) and np.isfinite(ref) and ref > 0 else "–"


def _need(n: float) -> str:
    return "–" if not np.isfinite(n) and not n == math.inf else ("> 10,000" if n == math.inf else f"{int(n)}")


def header(meta: dict, regen: str | None) -> list[str]:
    tune = meta["tune"]
    return [
        "# UMA² and the negative-sampling strategies in the closed loop (issues 4 and 16)",
        "",
        "*Generated by `experiments/uma2_page.py`; do not edit by hand.* Every number below is read from "
        "[`uma2.parquet`](uma2.parquet) (metadata in [`uma2.json`](uma2.json)).",
        "",
        "Commands, in the order they ran:",
        "",
        f"    {tune['command']}",
        f"    {meta['command']}",
        f"    {regen or meta['page_command']}",
        "",
        f"- Commit: `{meta['commit']}` (sweep), `{meta['page_commit']}` (page). Machine: {meta['machine']}; {meta['threads']} torch "
        f"thread per cell, `--workers {meta['workers']}`. Wall time: tuning {tune['wall_min']:.0f} min ({tune['cells']} cells), sweep "
        f"{meta['wall_min']:.0f} min ({meta['cells']} cells, {meta['cell_min']:.0f} cell-minutes).",
        f"- Tuning budget: **{tune['trials']} optuna TPE trials per agent**, the same for every agent of the study, on validation "
        f"seed(s) {tune['validation_seeds']} (disjoint from the test seeds 0..{meta.get('planned_seeds', 10) - 1}), objective "
        f"`{tune['metric']}` averaged over the last {tune['last_rounds']} of {tune['rounds']} rounds. With so few trials TPE is "
        "still in its random start-up, so this is an equal random search per agent; the references are untuned "
        "(`oracle`, `random`, `popular` have nothing to tune). Search space and best values: [Tuning](#tuning).",
        "",
    ]


CLAIMS = [
    "## The claims (UMA², seed `001_84f12ef6cd570566.txt`, §4.2.1 and Table 1)",
    "",
    '- **A. Widening the negatives beyond space A pays** (observations 1-3): *"Compared with the implementation methods in '
    "SS-A strategy such as YouTube DNN or DAT, competitors implemented in other strategies consistently achieve extremely "
    "significant improvements, e.g., the proposed UMA2_YTB in SS-ABC(fixed) obtains the lift of HitRate@200, Precision@200, "
    'Recall@200 by 91.58%, 94.06%, 94.70%"*; *"The improvement obtained by the competitors in SS-AB strategy over competitors '
    'in SS-A strategy highlights the advantage of exploring negative samples in larger space"*; *"competitors implemented in '
    'SS-ABC(random) strategy [...] all achieve better performance than methods implemented in SS-A or SS-AB strategy"*.',
    "- **B. NSDN's inverse-propensity weights add to the widened sampling** (observation 4 and ablation 1): *\"compared with "
    "YouTube DNN in SS-ABC(random) strategy, UMA2_YTB obtains 0.83% HitRate@200, 0.92% Precision@200, 0.84%, Recall@200 "
    'improvement"*; *"UMA2_DAT (resp. UMA2_YTB) consistently achieves a superior performance over DAT (resp. YouTube DNN)"* '
    "with the number of negatives per space fixed (SS-ABC(fixed), weights 1: `ss-abc-fixed`).",
    "- **S. Sanity 2** (`/work/shared/algorithms.md` §7(f), not the paper's): *\"UMA^2 with learned `p` should land between "
    'SS-ABC(fixed) and UMA^2-oracle-p"*, i.e. `uma2-oracle-p` >= `uma2` >= `ss-abc-fixed`.',
    "- **C. The closed-loop question** (ours): does each method beat the biased baseline `bc` (BCE on exposures, "
    "algorithms.md §2; `ss-a` is the same method in GMM form) once its own recommendations feed its training log?",
    "",
    "The paper measures offline, on one Taobao log (262k items, @100/@200). Here every method serves its own traffic for "
    "{rounds} rounds and is scored against the simulator's true relevance; the offline view (the held-out logged clicks of "
    "each round) is shown beside it.",
    "",
]


def power_lines(meta: dict, comp: pd.DataFrame) -> list[str]:
    b = meta["scenario"]
    head = comp[comp.metric == meta["headline"]]
    mdes = head.mde[np.isfinite(head.mde)]
    rounds_note = "" if meta["rounds"] >= 20 else f" **Fewer than the 20 rounds of the standard: the budget allowed {meta['rounds']}.**"
    if meta["n_seeds"] < meta.get("planned_seeds", meta["n_seeds"]):
        rounds_note += (f" **Only {meta['n_seeds']} of the spec's {meta['planned_seeds']} seeds finished before the deadline**; "
                        "the same sweep command with `--resume` completes it, and the page command regenerates this page.")  # fmt: skip
    return [
        "## What ran, against the power standard (`/work/shared/studies.md` §3)",
        "",
        table(
            ["", "standard", "this page", "full design (`experiments/uma2-full.toml`)"],
            [
                ["seeds (paired)", ">= 10", str(meta["n_seeds"]), "10"],
                ["rounds after the warm start", ">= 20", str(meta["rounds"]), "20"],
                [
                    "catalogue / K_r",
                    ">= 100",
                    f"{b['n_items']} / {b['k_retrieve']} = {b['n_items'] // b['k_retrieve']}",
                    "5,000 / 50 = 100",
                ],
                ["users x requests per round", "", f"{b['n_users']} x {b['requests_per_round']}", "2,000 x 2,000"],
                [
                    "tuning",
                    "same budget per agent",
                    f"{meta['tune']['trials']} trials, {len(meta['tune']['validation_seeds'])} seed(s), {meta['tune']['rounds']} rounds",
                    "30 trials, 5 seeds, 20 rounds",
                ],
                ["time average", "last rounds", f"last {meta['window']} rounds", f"last {meta['window']} rounds"],
            ],
        ),  # fmt: skip
        f"The cut-offs are K = {meta['k1']} (= K_r) and {meta['k2']} (= 2 x K_r): the paper's @100/@200 scaled down with K_r, "
        f"so that the catalogue is {b['n_items'] // b['k_retrieve']} x K_r without growing the world beyond what 2 shared "
        f"cores run.{rounds_note} Minimal detectable effect (80% power, two-sided 5%, paired over {meta['n_seeds']} seeds) "
        f"on `{meta['headline']}`: {mdes.min():.4f} to {mdes.max():.4f} (median {mdes.median():.4f}) depending on the pair, "
        f"against an `oracle` - `random` gap of {head.gap.iloc[0]:.3f}. Differences below the MDE read as ties, which are "
        "not refutations; the *seeds needed* column gives the seeds at which the observed difference would be detected.",
        "",
        f"Estimated cost of the full design at this run's pace (a rough scaling, linear in cells x rounds x requests x "
        f"catalogue, from cell times inflated by the 2 cores being shared with other jobs): tuning about "
        f"{meta['full_tune_hours']:.0f} h and sweep about {meta['full_sweep_hours']:.0f} h of one core, so about "
        f"{(meta['full_tune_hours'] + meta['full_sweep_hours']) / 64:.0f} h on a 64-core Ray cluster. It scales out unchanged "
        "(every tuning trial and every sweep cell is an independent task; 10 agents x 30 trials x 5 seeds = 1,500 tuning "
        "cells, then 130 sweep cells):",
        "",
        "    cascadesim tune experiments/uma2-full-tune.toml --ray auto --out runs/uma2-full-tune",
        "    cascadesim sweep experiments/uma2-full.toml --ray auto --out runs/uma2-full      # --resume after a crash",
        "    python experiments/uma2_page.py runs/uma2-full --spec experiments/uma2-full.toml --tune runs/uma2-full-tune",
        "",
    ]


def setup_lines(meta: dict, agents: list[str]) -> list[str]:
    b = meta["scenario"]
    missing = [a for a in STUDY if a not in agents]
    return [
        "## Setup",
        "",
        f"Preset `uma2-testbed` with the overrides of [`experiments/{meta['spec_file']}`](../../experiments/{meta['spec_file']}): "
        f"{b['n_users']} users x {b['n_items']} items, K_r = {b['k_retrieve']} candidates, slate of {b['slate_size']}, "
        f"{b['requests_per_round']} requests per round, {meta['rounds']} rounds after the warm start. Serving is stochastic "
        "(Gumbel-top-k recall from the agent's top 2 x K_r, Gumbel-top-S exposure), so spaces A (exposed, unclicked), "
        "B (recalled, unexposed) and C (never recalled) exist per request and every exposure has a logged propensity. "
        f"The ranker is `noisy-oracle` (noise {b['ranker_noise']:g}): it isolates the retrieval stage, which is what "
        "Table 1 compares, and skips a per-round ranker fit (the earlier page used a learned DeepFM ranker).",
        "",
        "Agents: " + ", ".join(f"`{a}`" for a in agents) + ". UMA² family: 25 negatives per click for every strategy "
        "(A:B:C = 1:4:20 for SS-ABC(fixed) and UMA²; 5:20 for SS-AB; 25 uniform for SS-ABC(random) and YouTube-DNN). "
        "`ss-a` is `bc`'s method in GMM form. `uma2-oracle-p` weights by the logged true propensities (an evaluation device). "
        "The paper's DAT in SS-ABC(random) has no counterpart here, so `uma2-dat` is compared with `ss-abc-fixed`."
        + (f" Not run on this page (in the full design only): {', '.join(f'`{a}`' for a in missing)}." if missing else ""),
        "",
        "Metrics: `true_recall@K` is the overlap of the agent's top-K with the user's true top-K (the headline); "
        "`unbiased_recall@K` its expectation if the user examined the whole catalogue; `onpolicy_replay_recall@K` what an "
        "offline evaluation on the round's held-out logged clicks would see; CTR and finish rate of the exposed slates and the "
        "slate utility are what users experience.",
        "",
    ]


def tuning_lines(meta: dict) -> list[str]:
    tune = meta["tune"]
    rows = [[f"`{a}`", "; ".join(tune["space"][a]), json.dumps(tune["best"].get(a, {}).get("params", {}), sort_keys=True),
             fmt_plain(tune["best"].get(a, {}).get("value") or math.nan, math.nan, 4)] for a in tune["space"]]  # fmt: skip
    return ["## Tuning", "",
            f"`{tune['command']}` ({tune['trials']} trials per agent, sampler {tune['sampler']}). Objective on the validation "
            f"seed(s): `{tune['metric']}` averaged over the last {tune['last_rounds']} rounds. Ranges from "
            "`/work/shared/algorithms.md`: Adam lr 1e-3 in the paper and 1e-2 the simulator's default; `space_weights` = "
            "(λ_A, λ_B, λ_C) of Eq. 2 with λ_A, λ_B in {0.1, 0.5, 1} (§7(e)).", "",
            table(["agent", "search space", "best", "objective"], rows)]  # fmt: skip


def levels_lines(avg: pd.DataFrame, agents: list[str], metrics: list[str], window: int) -> list[str]:
    rows = [[f"`{a}`", *(fmt_plain(*level(avg, a, m), digits=4) for m in metrics)] for a in agents]
    return ["## Levels, references included", "",
            f"Mean over the last {window} rounds per seed, then mean ± 95% t half-width over seeds.", "",
            table(["agent", *metrics], rows)]  # fmt: skip


def comparison_lines(comp: pd.DataFrame, meta: dict) -> list[str]:
    rows = []
    for _, c in comp.iterrows():
        user = [fmt(c[m], c[m + "_half"], 4) for m in USER_FACING] if c.metric == meta["headline"] else ["", "", ""]
        rows.append([c.claim, f"`{c.agent}` - `{c.base}`", c.metric, fmt(c["diff"], c.half, 4), _rel(c["diff"], c.base_level),
                     _rel(c["diff"], c.gap), _p(c.holm), f"{c.mde:.4f}", _need(c.need), verdict(c), *user])  # fmt: skip
    return ["## Paired comparisons", "",
            f"Δ = agent - base, per seed over the last {meta['window']} rounds, mean ± 95% t half-width over "
            f"{meta['n_seeds']} seeds; *rel.* divides by the base's level (the paper reports relative lifts), *Δ / gap* by "
            f"the `oracle` - `random` gap. Holm across all {int(np.isfinite(comp.p).sum())} tests of the page (every comparison "
            "on both K). *Seeds needed*: paired seeds at which the observed Δ equals the MDE. Verdict: reproduced / reversed "
            "when Holm p < 0.05; *not reproduced (CI excludes the paper's lift)* where the paper gives a number and the upper "
            "end of the interval, relative to the base, is below it; else undecided at this power. The user-facing Δ "
            "(CTR, finish rate, slate utility) are paired the same way but not tested.", "",
            table(["claim", "comparison", "metric", "Δ", "rel.", "Δ / gap", "Holm p", "MDE", "seeds needed", "verdict",
                   "Δ CTR", "Δ finish rate", "Δ slate utility"], rows)]  # fmt: skip


def verdict_lines(comp: pd.DataFrame, meta: dict) -> list[str]:
    names = {"A": "A. Widening negatives beyond space A pays", "B": "B. NSDN's weights add to the widened sampling",
             "S": "S. uma2 between ss-abc-fixed and uma2-oracle-p", "C": "C. Beats `bc` in the closed loop"}  # fmt: skip
    out = ["## Verdicts", "", f"On `{meta['headline']}` and `true_recall@{meta['k2']}` together:", ""]
    for key, name in names.items():
        rows = comp[comp.claim == key]
        if rows.empty:
            continue
        out.append(f"- {name}: {claim_verdict(rows)}.")
    return out + [""]


def rounds_lines(frame: pd.DataFrame, agents: list[str], metric: str, pngs: list[str]) -> list[str]:
    """The per-round curve of the headline (figure with bands) and the per-round means as a table."""
    sub = frame[frame.metric == metric]
    means = sub.groupby(["round", "agent"]).value.mean().unstack("agent")
    rows = [[str(r), *(f"{means.loc[r, a]:.3f}" if a in means else "–" for a in agents)] for r in means.index]
    fig = ["![per-round headline, mean and 95% band over seeds](uma2-rounds.png)", ""] if "uma2-rounds.png" in pngs else []
    return ["## Per round", "", *fig,
            f"`{metric}` per round, mean over seeds (bands in the figure and in [uma2.html](uma2.html)).", "",
            table(["round", *(f"`{a}`" for a in agents)], rows)]  # fmt: skip


def round_figure(frame: pd.DataFrame, agents: list[str], metric: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    sub = frame[frame.metric == metric]
    for agent in [a for a in agents if a != "oracle"]:  # the oracle's 1.0 would flatten every other curve (it is in the table)
        stats = [(r, *interval(g.value.tolist())[:2]) for r, g in sub[sub.agent == agent].groupby("round")]
        if not stats:
            continue
        rounds, mean, half = (list(x) for x in zip(*stats, strict=True))
        half = [h if np.isfinite(h) else 0.0 for h in half]
        fig.add_trace(go.Scatter(x=rounds, y=mean, name=agent, mode="lines", error_y={"type": "data", "array": half, "visible": True}))
    fig.update_layout(title=f"{metric} per round (mean, 95% band over seeds; oracle = 1 omitted)", xaxis_title="round", yaxis_title=metric,
                      height=420, width=820, template="plotly_white")  # fmt: skip
    return fig


def diagnostics_lines(avg: pd.DataFrame) -> list[str]:
    """NSDN's own sanity (studies.md §4): the clip shares and the weight tail of the weighted agents."""
    weighted = [a for a in ("uma2", "uma2-dat", "uma2-oracle-p") if a in set(avg.agent)]
    have = [m for m in DIAGNOSTICS if m in set(avg.metric)]
    if not weighted or not have:
        return []
    rows = [[f"`{a}`", *(fmt_plain(*level(avg, a, m), digits=3) for m in have)] for a in weighted]
    clip = max((level(avg, a, m)[0] for a in weighted for m in have if "clip" in m), default=math.nan)
    state = ("no weighted agent clips most of its propensities, so none is reported as not working" if np.isfinite(clip) and clip < 0.5
             else "an agent clipping most of its propensities is not working: read its rows as such")  # fmt: skip
    return ["## Sanity of the propensity weights", "",
            f"Time-averaged per fit: the share of space-A / space-B propensities below the clip (p >= 0.05), the applied "
            f"weight tail, and the mean learned p1 (entire -> recall) and p2 (recall -> exposure). Largest clip share "
            f"{clip:.2f}: {state}.", "", table(["agent", *(m.removeprefix("fit_") for m in have)], rows)]  # fmt: skip


def transient(frame: pd.DataFrame, metric: str, window: int) -> str:
    """Whether ``bc``'s headline still moves over the averaged window (a transient rather than a steady state)."""
    by_round = frame[(frame.agent == "bc") & (frame.metric == metric)].groupby("round").value.mean()
    if by_round.empty:
        return ""
    last = int(by_round.index.max())
    first = max(int(by_round.index.min()), last - window + 1)
    a, b = float(by_round.loc[first]), float(by_round.loc[last])
    state = "still rising or falling, so the time average is over a transient" if abs(b - a) > 0.1 * max(abs(a), 1e-12) else "roughly flat"
    return f"- The loop is short: `bc`'s {metric} goes from {a:.3f} (round {first}) to {b:.3f} (round {last}) in the window, {state}."


def attribution(head: pd.DataFrame) -> list[str]:
    """Where UMA²'s gain over YouTube-DNN comes from: its sampling (ss-abc-fixed) or its weights (uma2 - ss-abc-fixed)."""
    rows = {(r.agent, r.base): r for _, r in head.iterrows()}
    over, weights = rows.get(("uma2", "youtube-dnn")), rows.get(("uma2", "ss-abc-fixed"))
    if over is None or weights is None or verdict(over) != "reproduced" or verdict(weights) != "reversed":
        return []
    return ["", f"- Attribution: `uma2` beats YouTube-DNN ({fmt(over['diff'], over.half, 4)}) because of its request-specific "
            f"sampling, not its weights: the same sampling unweighted (`ss-abc-fixed`) does better still, and NSDN's weights "
            f"cost {fmt(weights['diff'], weights.half, 4)}. Uniform negatives (`ss-abc-random`, `youtube-dnn`) are what "
            "loses here; negatives from the click's own request (spaces A and B) are what pays."]  # fmt: skip


def reading_lines(comp: pd.DataFrame, meta: dict) -> list[str]:
    """What did not reproduce, worded from the verdicts, and the most likely reasons."""
    head = comp[comp.metric == meta["headline"]]
    out = ["## What did not reproduce, and why it may not have", ""]
    for _, r in head.iterrows():
        v = verdict(r)
        if v != "reproduced":
            out.append(f"- `{r.agent}` over `{r.base}` (claim {r.claim}): {v}; Δ {fmt(r['diff'], r.half, 4)} "
                       f"({_rel(r['diff'], r.base_level)} relative; MDE {r.mde:.4f}; seeds needed {_need(r.need)}).")  # fmt: skip
    if len(out) == 2:
        out.append("- Every headline comparison reproduced.")
    out += attribution(head)
    return out + ["", *LIMITS]


LIMITS = [
    "Most likely reasons, and the limits of this page:",
    "",
    "- Scale. The paper's catalogue has 262k items and its SS-A baseline sees only exposed negatives of a production "
    "funnel; here 1,000 items and K_r = 10 keep the catalogue at 100 x K_r, but the exposed share of the catalogue per user "
    "is still far larger than in production, so space A is less unrepresentative and widening has less to fix.",
    "- The loop. The paper's gains are offline, on a log its methods did not produce; in the closed loop each method's own "
    "exposures become its next training data, which can erase or amplify an offline gain.",
    "- Tuning. A small, equal budget per agent (see the header) is not the paper's tuning; a method whose gain needs a "
    "narrow setting may be undertuned, and so may the baselines.",
    "- The ranker is a noisy oracle, so exposure is relevance-driven plus noise; with a learned ranker trained on the same "
    "biased log the bias compounds at two stages (the earlier version of this page used DeepFM).",
    "- The propensities: NSDN learns p1 and p2 from a log whose logging policy changes every round; `uma2-oracle-p` shows "
    "what exact propensities would give.",
    "- The user model's biases are the simulator's (position bias, conformity); real logs mix biases these do not span.",
    "",
]


# --- inputs, metadata and main -------------------------------------------------------------------------------------


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise fail(f"{what}: no {path.name} in {path.parent} (run the {what} first, or give its directory)")
    return json.loads(path.read_text())


def walls(directory: Path) -> tuple[float, float, int]:
    """(wall minutes from the first part's start to the last part's write, summed cell minutes, cells) of a sweep/tune dir."""
    parts = sorted((directory / "parts").glob("*.parquet"))
    if not parts:
        return math.nan, math.nan, 0
    frame = pd.DataFrame({"mtime": [p.stat().st_mtime for p in parts], "wall_s": [_part_wall(p) for p in parts]})
    return (frame.mtime.max() - (frame.mtime - frame.wall_s).min()) / 60, float(frame.wall_s.sum() / 60), len(parts)


def work(path: Path, tune: bool = False) -> float:
    """Cells x (rounds + 1) x requests x items of a sweep or tune spec, from its TOML (the relative cost of the design)."""
    import tomllib

    from scenarios.sweep.spec import base_scenario

    raw = tomllib.loads(path.read_text())
    if tune:
        sc = base_scenario({"sweep": {"scenario": raw["tune"]["scenario"]}, "base": raw.get("base", {})}, path.parent)
        cells = len(raw["agents"]) * raw["tune"]["trials"] * len(raw["tune"]["validation_seeds"])
    else:
        sc = base_scenario(raw, path.parent)
        seeds = raw["sweep"]["seeds"]
        cells = len(raw["agents"]) * (seeds if isinstance(seeds, int) else len(seeds))
    return cells * (sc.timeline.rounds + 1) * sc.timeline.requests_per_round * sc.world.n_items


def tune_meta(tune_dir: Path, spec_path: Path) -> dict:
    record = read_json(tune_dir / "tune.json", "tune")
    if not record.get("best"):
        raise fail(f"tune: {tune_dir / 'tune.json'} has no best values (the tune did not finish)")
    wall_min, cell_min, cells = walls(tune_dir)
    tune_spec = ROOT / "experiments" / ("uma2-full-tune.toml" if "full" in spec_path.name else "uma2-tune.toml")
    import tomllib

    rounds = tomllib.loads(tune_spec.read_text())["base"]["timeline.rounds"]
    trials = record["budget_trials_per_agent"]
    return {"command": f"python -m scenarios.cli tune {tune_spec.relative_to(ROOT)} --workers 1 --out {_rel_path(tune_dir)}",
            "trials": trials, "sampler": record["sampler"], "metric": record["metric"], "last_rounds": record["last_rounds"],
            "validation_seeds": record["validation_seeds"], "space": record["space"], "best": record["best"], "rounds": rounds,
            "wall_min": wall_min, "cell_min": cell_min, "cells": cells, "spec": str(tune_spec.relative_to(ROOT))}  # fmt: skip


def sweep_meta(args: argparse.Namespace, frame: pd.DataFrame) -> dict:
    import torch

    from scenarios.sweep.spec import base_scenario

    sweep, spec_path = Path(args.sweep), Path(args.spec)
    manifest = read_json(sweep / "sweep.json", "sweep")
    wall_min, cell_min, cells = walls(sweep)
    import tomllib

    raw = tomllib.loads(spec_path.read_text())
    sc = base_scenario(raw, spec_path.parent)
    seeds = raw["sweep"]["seeds"]
    planned = seeds if isinstance(seeds, int) else len(seeds)
    planned_cells = planned * len(raw["agents"])
    tune = tune_meta(Path(args.tune), spec_path)
    full_sweep, full_tune = ROOT / "experiments" / "uma2-full.toml", ROOT / "experiments" / "uma2-full-tune.toml"
    k1, k2 = ks(frame)
    return {
        "command": f"python -m scenarios.cli sweep {_rel_path(spec_path)} --workers {args.workers} --out {args.sweep}",
        "spec_file": spec_path.name, "threads": manifest["threads"], "workers": args.workers, "tune": tune,
        "commit": args.sweep_commit or git_commit(), "cells": cells, "wall_min": wall_min, "cell_min": cell_min,
        "machine": f"{platform.platform()}, torch {torch.__version__}, {args.machine_note}",
        "n_seeds": int(frame.seed.nunique()), "seeds": sorted(int(s) for s in frame.seed.unique()),
        "rounds": int(frame["round"].max()) + 1, "window": args.window, "k1": k1, "k2": k2, "headline": f"true_recall@{k1}",
        "planned_seeds": planned, "planned_cells": planned_cells,
        "full_sweep_hours": cell_min * planned_cells / max(cells, 1) * work(full_sweep) / work(spec_path) / 60,
        "full_tune_hours": tune["cell_min"] * work(full_tune, True) / work(ROOT / tune["spec"], True) / 60,
        "scenario": {"n_users": sc.world.n_users, "n_items": sc.world.n_items, "k_retrieve": sc.cascade.k_retrieve,
                     "slate_size": sc.cascade.slate_size, "requests_per_round": sc.timeline.requests_per_round,
                     "ranker_noise": sc.cascade.ranker_noise},
    }  # fmt: skip


def _rel_path(path: Path) -> str:
    return str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


def build(frame: pd.DataFrame, meta: dict, out_dir: Path, regen: str | None) -> str:
    """The page text (and its figure in ``out_dir``) from the slim frame and the metadata."""
    if meta["window"] > meta["rounds"]:
        raise fail(f"--window: must be <= the rounds of the sweep ({meta['rounds']}), got {meta['window']}")
    k1, k2 = meta["k1"], meta["k2"]
    avg = time_average(frame, meta["window"])
    present = set(frame.agent)
    agents = [a for a in (*REFERENCES, *STUDY) if a in present]
    comp = comparisons(avg, k1, k2)
    if comp.empty:
        raise fail(f"results: none of the page's comparisons has both agents (agents present: {', '.join(sorted(present))})")
    metrics = page_metrics(k1, k2)[:5] + list(USER_FACING)
    claims = [x.format(rounds=meta["rounds"]) for x in CLAIMS]
    lines = [*header(meta, regen), *claims, *verdict_lines(comp, meta), *power_lines(meta, comp), *setup_lines(meta, agents),
             *tuning_lines(meta), *levels_lines(avg, agents, metrics, meta["window"]), offline_inversion(avg, k1), "",
             *comparison_lines(comp, meta)]  # fmt: skip
    tail = [*diagnostics_lines(avg), *reading_lines(comp, meta)]
    tail.insert(len(tail) - len(LIMITS) + 2, transient(frame, meta["headline"], meta["window"]))
    fig = round_figure(frame, agents, meta["headline"])
    pngs = write_figures({"uma2-rounds": fig}, out_dir, "uma2.html")  # last: nothing after it can fail
    lines += [*rounds_lines(frame, agents, meta["headline"], pngs), *tail]
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep", nargs="?", help="the sweep directory (runs/uma2)")
    ap.add_argument("--from-parquet", help="regenerate the page from the stored docs/results/uma2.parquet (+ .json)")
    ap.add_argument("--spec", default=str(ROOT / "experiments" / "uma2.toml"), help="the sweep's spec file")
    ap.add_argument("--tune", default=str(ROOT / "runs" / "uma2-tune"), help="the tune directory (tune.json, parts/)")
    ap.add_argument("--window", type=int, default=None, help="rounds averaged at the end (default 3, as the tune objective)")
    ap.add_argument("--workers", type=int, default=1, help="the --workers the sweep ran with (stated on the page)")
    ap.add_argument("--sweep-commit", default=None, help="the commit the sweep ran at (default: the current one)")
    ap.add_argument("--out-dir", default=str(OUT_DIR))
    ap.add_argument("--machine-note", default="2 cores shared with other jobs", help="what else ran on the machine")
    args = ap.parse_args(argv)
    if bool(args.sweep) == bool(args.from_parquet):
        raise fail("arguments: give a sweep directory or --from-parquet, not both")
    if args.window is not None and args.window < 1:
        raise fail(f"--window: must be >= 1, got {args.window}")
    if args.sweep:
        args.window = args.window or 3
    if args.sweep and not Path(args.sweep).is_dir():
        raise fail(f"sweep: no such directory {args.sweep}")
    if args.sweep and not Path(args.spec).is_file():
        raise fail(f"--spec: no such file {args.spec}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    regen = None
    if args.sweep:
        results = sweep_results(Path(args.sweep), Path(args.spec))
        frame = slim(results)
        meta = sweep_meta(args, frame)
    else:
        src = Path(args.from_parquet)
        if not src.is_file() or not src.with_suffix(".json").is_file():
            raise fail(f"--from-parquet: need {src} and {src.with_suffix('.json')}")
        frame, meta = pd.read_parquet(src), json.loads(src.with_suffix(".json").read_text())
        meta["window"] = args.window or meta["window"]
        regen = "python experiments/uma2_page.py --from-parquet " + shlex.quote(str(args.from_parquet))
    meta["page_commit"] = git_commit()
    meta["page_command"] = "python experiments/uma2_page.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    write_outputs(frame, meta, out_dir, regen, from_parquet=not args.sweep)


def sweep_results(sweep: Path, spec: Path) -> pd.DataFrame:
    """The merged table, or (a sweep cut short) its finished parts merged by the sweep's own code; complete seeds only."""
    path = sweep / "results.parquet"
    if path.is_file():
        results = pd.read_parquet(path)
    elif (sweep / "parts").is_dir():
        from scenarios.sweep import load_spec
        from scenarios.sweep.merge import merge_results
        from simulator.config import ConfigError

        manifest = read_json(sweep / "sweep.json", "sweep")
        try:
            loaded = load_spec(spec)
        except ConfigError as err:
            raise fail(f"--spec: {err}") from None
        results = merge_results(loaded.cells(manifest["threads"]), loaded.fields, sweep)
    else:
        raise fail(f"sweep: no results.parquet and no parts/ in {sweep}")
    if results.empty:
        raise fail(f"sweep: {sweep} has no finished cells")
    return complete_seeds(results)


def write_outputs(frame: pd.DataFrame, meta: dict, out_dir: Path, regen: str | None, from_parquet: bool) -> None:
    """Parquet and json to temporary names, the page built from the re-read parquet, then all renamed: no partial page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet, meta_path, page = out_dir / "uma2.parquet", out_dir / "uma2.json", out_dir / "uma2.md"
    tmp_parquet, tmp_meta = out_dir / ".uma2.parquet.tmp", out_dir / ".uma2.json.tmp"
    try:
        frame.to_parquet(tmp_parquet, index=False)
        tmp_meta.write_text(json.dumps(meta, indent=1, default=str) + "\n")
        text = build(pd.read_parquet(tmp_parquet), meta, out_dir, regen)  # the page's numbers come from the file beside it
    except BaseException:
        tmp_parquet.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
        raise
    if from_parquet:
        tmp_parquet.unlink()
        tmp_meta.unlink()
    else:
        tmp_parquet.replace(parquet)
        tmp_meta.replace(meta_path)
    page.write_text(text)
    print(f"wrote {page} ({len(frame)} rows)")


if __name__ == "__main__":
    main()
