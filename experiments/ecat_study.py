"""ECAT in the closed loop: transfer from the entire space into the mini-app of the ``homepage`` preset (issue 13).

Runs ``ecat``, its target-only baseline and the references (oracle, random, popular, bc) on ``homepage``
(30% mini-app traffic with a per-category preference shift, the platform ranker refitted on both domains),
then writes the generated page ``docs/results/ecat.md`` and copies the long-form metrics beside it
(``ecat.parquet``, ``ecat-timings.parquet``). The agents can run as several run directories in parallel
(``--out`` once per part); the page merges them.

    .venv/bin/python experiments/ecat_study.py --seeds 3 --rounds 6 --agents ecat,bc,oracle --out runs/ecat-a
    .venv/bin/python experiments/ecat_study.py --from-run runs/ecat-a --from-run runs/ecat-b
    .venv/bin/python experiments/ecat_study.py --from-parquet
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scenarios.presets import load_scenario  # noqa: E402
from scenarios.study import interval, interval_table, load_study, mean_fit_seconds, run_study  # noqa: E402

SCENARIO = "homepage"
AGENTS = ("oracle", "random", "popular", "bc", "ecat-target-only", "ecat", "ecat-no-da", "ecat-no-kd", "ecat-ranker")
MINI = ("mini_app_true_recall@20", "mini_app_true_recall@50", "mini_app_true_ndcg@20", "mini_app_retrieval_slate_utility")
MAIN = ("true_recall@20", "true_recall@50", "true_ndcg@20", "retrieval_slate_utility")
USERS = ("logged_ctr", "logged_finish_rate", "slate_utility", "exposure_gini")
DIAG = ("fit_graph_kept_share", "fit_da_kept_share", "fit_disc_accuracy", "fit_omega_p50", "fit_omega_p90", "fit_gate_mean", "fit_kd_loss")
HEADLINE = "mini_app_true_recall@20"
COMPARISONS = (("ecat", "bc"), ("ecat", "ecat-target-only"), ("ecat-target-only", "bc"), ("ecat", "ecat-no-da"), ("ecat", "ecat-no-kd"))
CLAIM = (
    '"we propose a Entire space Continual and Adaptive Transfer learning framework called ECAT ... ECAT enables full '
    "utilization of the entire space samples and representations under the supervision of the target task, while avoiding "
    "negative migration. Comprehensive experiments on real-world industrial datasets from Taobao show that ECAT advances "
    'state-of-the-art performance on offline metrics, and brings +13.6% CVR and +8.6% orders for Baiyibutie" '
    "(seeds/003_2e7219c6e9b85f59.txt, second abstract, arXiv 2407.02542; only the abstract is public)"
)


def averaged(metrics: pd.DataFrame, last: int) -> pd.DataFrame:
    """The metrics averaged over the last ``last`` rounds of each (agent, seed), as one pseudo-round ``-1``."""
    top = sorted(metrics["round"].unique())[-last:]
    at = metrics[metrics["round"].isin(top)]
    out = at.groupby(["agent", "seed", "metric"], as_index=False)["value"].mean()
    return out.assign(round=-1)


def paired(metrics: pd.DataFrame, name: str, rnd: int, a: str, b: str) -> tuple[float, float, float, int]:
    """``(mean a−b, 95% half-width, two-sided paired-t p, n seeds)`` of metric ``name`` at round ``rnd``."""
    at = metrics[(metrics["round"] == rnd) & (metrics["metric"] == name)]
    diff = (at[at.agent == a].set_index("seed")["value"] - at[at.agent == b].set_index("seed")["value"]).dropna()
    mean, half = interval(diff.tolist())
    p = float(stats.ttest_1samp(diff, 0.0).pvalue) if len(diff) > 1 and diff.std() > 0 else math.nan
    return mean, half, p, len(diff)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (NaN stays NaN)."""
    idx = sorted((i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i])
    out, running = [math.nan] * len(pvalues), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - rank) * pvalues[i]))
        out[i] = running
    return out


def mde(metrics: pd.DataFrame, name: str, rnd: int, a: str, b: str, n: int | None = None) -> float:
    """Minimal detectable paired difference at 80% power, two-sided 5%: ``(t_.975 + t_.80)·sd/√n`` (sd observed)."""
    at = metrics[(metrics["round"] == rnd) & (metrics["metric"] == name)]
    diff = (at[at.agent == a].set_index("seed")["value"] - at[at.agent == b].set_index("seed")["value"]).dropna()
    n = n or len(diff)
    if len(diff) < 2:
        return math.nan
    return float((stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * diff.std() / math.sqrt(n))


def comparison_lines(metrics: pd.DataFrame, rnd: int, agents: list[str]) -> list[str]:
    """The paired comparisons of the headline metric with Holm-adjusted p and effect relative to oracle − random."""
    rows = [(a, b, *paired(metrics, HEADLINE, rnd, a, b)) for a, b in COMPARISONS if a in agents and b in agents]
    adj = holm([r[4] for r in rows])
    span = paired(metrics, HEADLINE, rnd, "oracle", "random")[0] if {"oracle", "random"} <= set(agents) else math.nan
    lines = ["| comparison | mean difference ± 95% | paired-t p | Holm p | / (oracle − random) | MDE (80%) at these seeds | n |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (a, b, mean, half, p, n), p_adj in zip(rows, adj, strict=True):
        rel = mean / span if span and not math.isnan(span) else math.nan
        need = mde(metrics, HEADLINE, rnd, a, b)
        lines.append(f"| {a} − {b} | {mean:+.4f} ± {half:.4f} | {p:.3f} | {p_adj:.3f} | {rel:+.2f} | {need:.4f} | {n} |")
    return lines


def verdict(metrics: pd.DataFrame, rnd: int, a: str, b: str) -> str:
    """``wins / ties / loses`` of ``a`` against ``b`` on the headline metric (95% paired interval)."""
    mean, half, _, _ = paired(metrics, HEADLINE, rnd, a, b)
    if math.isnan(mean):
        return "not run"
    word = "ties with" if math.isnan(half) or abs(mean) <= half else ("beats" if mean > 0 else "loses to")
    return f"{word} `{b}` ({mean:+.4f} ± {half:.4f})"


def tables(metrics: pd.DataFrame, avg: pd.DataFrame, agents: list[str], last: int, window: int) -> list[str]:
    """The metric tables: last round and the mean of the last ``window`` rounds."""
    out: list[str] = []
    for title, names in (
        ("Mini-app (the target domain): truth metrics", MINI),
        ("Main feed: truth metrics (ECAT serves it with its entire-space model)", MAIN),
        ("User-facing outcomes (both domains) and exposure concentration", USERS),
        ("ECAT's training diagnostics (fit_*)", DIAG),
    ):
        present = [n for n in names if n in set(metrics.metric)]
        if not present:
            continue
        out += [f"## {title}", "", f"**Mean of the last {window} rounds**", "", interval_table(avg, present, -1, agents, digits=4)]
        out += [f"**Round {last} (last)**", "", interval_table(metrics, present, last, agents, digits=4)]
    return out


def write_page(metrics: pd.DataFrame, timings: pd.DataFrame, page: Path, command: str, meta: dict) -> None:
    """The generated results page."""
    agents = [a for a in AGENTS if a in set(metrics.agent)] + sorted(set(metrics.agent) - set(AGENTS))
    rounds = sorted(metrics["round"].unique())
    last, window = int(rounds[-1]), min(3, len(rounds))
    seeds = sorted(metrics.seed.unique())
    avg = averaged(metrics, window)
    fit = mean_fit_seconds(timings, agents) if len(timings) else {}
    need = mde(avg, HEADLINE, -1, "ecat", "bc")
    lines = [
        f"# ECAT in the closed loop: entire-space transfer into the mini-app ({meta['scenario']})", "",
        "<!-- generated file: do not edit by hand -->",
        f"Generated by `{command}` at commit `{meta['commit']}` (wall time of the runs: {meta['wall']}). The run directories "
        "come from the same script without `--from-run`, in two parts side by side: `--seeds 3 --rounds 6 --agents "
        "ecat,bc,oracle --out runs/ecat-study-a` and `--seeds 3 --rounds 6 --agents ecat-target-only,popular,random --out "
        "runs/ecat-study-b`.", "",
        f"- Machine: {meta['machine']}; torch {meta['torch']}; one thread per run. Tuning budget: none; every agent at its "
        "registered defaults (ECAT: ν 0.5, β 0.1, graph radius 2, ω clipped to [0, 5], dropped below 0.2, gate k 5).",
        f"- Scenario: `{meta['scenario']}`, {meta['scale']} Rounds {rounds[0]}..{last} after the warm start (the preset has "
        f"{meta['preset_rounds']}); seeds {', '.join(map(str, seeds))}. Figures: mean ± half-width of the 95% t-interval over seeds.",
        "", "## The claim", "", f"> {CLAIM}", "",
        "The closed-loop question: does ECAT's mini-app model, fed by the coarse-to-fine source selection and gated "
        "distillation from the entire-space model, recall the mini-app users' true top-K better than a model trained on the "
        "mini-app alone (`ecat-target-only`) and than one pooled model for both domains (`bc`)? The paper's CVR/orders are "
        "online A/B numbers; the simulator's mini-app has a conversion label but the agents here train on clicks, so the "
        "verdict is on retrieval against the truth, not on CVR.", "",
        "## Power: below the standard", "",
        f"This page ran {len(seeds)} seeds x {len(rounds)} rounds because the machine is 2 cores shared by 6 workers and the "
        "study had a 30-minute budget; docs/shared/studies.md asks for at least 10 seeds and 20 rounds. At these seeds the "
        f"minimal detectable paired difference (80% power, two-sided 5%) of `{HEADLINE}` (mean of the last {window} rounds), "
        f"ecat − bc, is {need:.4f}; with the same spread, 10 seeds would detect {mde(avg, HEADLINE, -1, 'ecat', 'bc', 10):.4f}. "
        "Full power: `.venv/bin/python experiments/ecat_study.py --seeds 10 --rounds 20` (about "
        f"{meta['full_hours']:.0f} core-hours, scaled from this run's core time), or the same agents through `cascadesim sweep`.", "",
        "## Paired comparisons on the headline metric", "",
        f"`{HEADLINE}`, mean of the last {window} rounds per seed, paired over seeds (common random numbers); Holm "
        "correction across the rows of this table; the effect is also given relative to the oracle − random gap (the "
        "oracle is the main-feed oracle, which does not know the mini-app shift).", "",
        *comparison_lines(avg, -1, agents), "",
        f"Verdict (mean of the last {window} rounds): `ecat` {verdict(avg, -1, 'ecat', 'bc')}; `ecat` "
        f"{verdict(avg, -1, 'ecat', 'ecat-target-only')}. Last round: `ecat` {verdict(metrics, last, 'ecat', 'bc')}; "
        f"`ecat` {verdict(metrics, last, 'ecat', 'ecat-target-only')}.", "",
        *tables(metrics, avg, agents, last, window),
        "## Fit time per round", "", "| agent | mean agent fit (s) |", "|---|---|",
        *[f"| {a} | {fit.get(a, math.nan):.2f} |" for a in agents], "", *NOTES,
    ]  # fmt: skip
    page.write_text("\n".join(lines) + "\n")


NOTES = [
    "## How ECAT is built here (our reading) and its sanity check",
    "",
    "- Only the abstract is public. `agents/ecat.py`: an entire-space two-tower (BC on both domains, warm-started each "
    "round: the continual part) serves the main feed and is the default teacher; the target two-tower serves the mini-app "
    "and minimises `mean_T BCE + ν·mean_S ω·BCE + β·L_KD` (algorithms.md §15). Source selection: graph stage (user or item "
    "within 2 hops of a mini-app positive on the positive-interaction graph), then a domain classifier on "
    "`[ĝ, a·ĝ, a]` (`a` = the entire-space model's agreement with the label, every sample scored as if in the mini-app) "
    "giving `ω = D/(1−D)`. KD: gated (`π = σ(−k(ℓ_teacher − ℓ_student))`) distance between normalised, projected student "
    "and teacher tower outputs on the mini-app rows. `ecat-ranker` distils from the platform ranker's snapshot instead "
    "(`FrozenRanker.representations`: its summed request / item field embeddings).",
    "- In `homepage` the mini-app is drawn per request, so every user is a mini-app user and the graph stage keeps "
    "(almost) every source sample (`fit_graph_kept_share`); the selection is the DA stage's.",
    "- §15's two-domain sanity check (tests/test_ecat.py, 100 users x 80 items, 4 categories, 9,000 main-feed and 360 "
    "mini-app exposures, three refits; the mini-app reverses the preference for half of the categories, or for all):",
    "  - half the categories flipped (seeds 1 / 2 / 3): ω separates the kept half from the flipped half with AUC "
    "0.715 / 0.757 / 0.608 (§15 asks > 0.7: met on 2 of 3 seeds); the gate is lower on the flipped half on seeds 1 and 3, "
    "not 2; held-out AUC of ECAT minus target-only training: −0.014 / −0.025 / +0.065, minus its no-DA ablation: "
    '−0.049 / −0.016 / +0.051. §15\'s "ECAT must beat target-only training" is **not** met;',
    "  - every category flipped (seeds 1 / 2 / 3): D reaches 0.89 / 0.83 / 0.90 accuracy and keeps 31% / 25% / 23% of the "
    "source; ECAT beats its no-DA ablation (0.777 vs 0.746, 0.766 vs 0.562, 0.862 vs 0.541) but loses to target-only "
    "training on 2 of 3 seeds (0.777 vs 0.888, 0.766 vs 0.898, 0.862 vs 0.843). §15's \"must not lose to it when the source "
    'is fully shuffled" is **not** met: the source that survives the selection still pulls the wrong way.',
    "  - The tests pin seed 1 (tests/test_ecat.py, marked slow); these rows come from the same code, run for seeds 1-3 "
    "with ecat, ecat-target-only and ecat-no-da.",
    "",
    "## What did not reproduce, and why we think so",
    "",
    '- The abstract\'s claim, that ECAT uses the entire space "while avoiding negative migration", is not shown here: on '
    "`homepage` ECAT ties with both `bc` and `ecat-target-only` at 3 seeds (and leans below target-only), and in the toy "
    "world it loses to target-only training when the source preferences are reversed. Most likely reasons, in order: "
    "(1) our reading of both stages is a guess from two sentences; (2) the DA stage here is weak on `homepage` (D's "
    "accuracy ~0.7, 72-76% of the source kept, ω median ~0.95) because the mini-app's shift is a per-category offset "
    "that the entire-space model's agreement with a click only partly reveals; (3) the graph stage does nothing in a "
    "world whose mini-app is drawn per request (every user is a mini-app user); (4) the gate stays near 0.5 (its inputs "
    "are two losses of similar size), so KD is neither opened where it helps nor closed where it hurts; (5) 3 seeds x 6 "
    "rounds cannot detect differences below ~0.1 (ecat − bc) of `mini_app_true_recall@20`.",
    "",
    "## Limits of this page",
    "",
    "- Truth metrics for the mini-app (`mini_app_*`, simulator/metrics/mini_app.py) ask every agent for mini-app requests "
    "of the evaluation panel and grade them by the shifted relevance those requests respond to; before this page the truth "
    "metrics graded every agent as main-feed requests only. The oracle row is the main-feed oracle: it does not know the shift.",
    "- Agents train on clicks; the paper's target task is conversion (CVR). The log's `converted` label is not used.",
    "- homepage switches every issue-13 feature on (attention, portal clicks, sessions, weekend), so the mini-app transfer "
    "is measured with those biases present for every agent alike.",
]


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load(args: argparse.Namespace, page: Path) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Metrics, timings and run seconds: from the parquet, from finished run directories, or by running."""
    data, timing_file = page.with_suffix(".parquet"), page.with_name(page.stem + "-timings.parquet")
    if args.from_parquet:
        saved = json.loads(page.with_suffix(".json").read_text())
        args.command = saved.get("command", "not recorded")
        return pd.read_parquet(data), pd.read_parquet(timing_file), saved["seconds"]
    runs = args.from_run
    seconds = 0.0
    if not runs:
        started = time.perf_counter()
        run_study(SCENARIO, [a for a in args.agents.split(",") if a], args.seeds, args.out, rounds=args.rounds)
        seconds = time.perf_counter() - started
        runs = [args.out]
    results = [load_study(r) for r in runs]
    for r in runs:
        wall = Path(r) / "part_wall.json"
        seconds = max(seconds, json.loads(wall.read_text())["seconds"]) if wall.exists() else seconds
    metrics = pd.concat([r.metrics for r in results], ignore_index=True)
    timings = pd.concat([r.timings for r in results], ignore_index=True)
    metrics.to_parquet(data, index=False)
    timings.to_parquet(timing_file, index=False)
    page.with_suffix(".json").write_text(json.dumps({"seconds": seconds, "command": args.command}))
    return metrics, timings, seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=6, help="rounds after the warm start (the preset has 14)")
    ap.add_argument("--agents", default="oracle,random,popular,bc,ecat-target-only,ecat", help="comma-separated agent names")
    ap.add_argument("--out", default=str(ROOT / "runs" / "results-ecat"), help="run directory")
    ap.add_argument("--from-run", action="append", default=[], help="finished run directory (repeatable; merged)")
    ap.add_argument("--from-parquet", action="store_true", help="regenerate from docs/results/ecat.parquet")
    ap.add_argument("--page", default=str(ROOT / "docs" / "results" / "ecat.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    page = Path(args.page)
    page.parent.mkdir(parents=True, exist_ok=True)
    base = ".venv/bin/python experiments/ecat_study.py"
    args.command = f"{base} " + " ".join(f"--from-run {r}" for r in args.from_run) if args.from_run else (
        f"{base} --seeds {args.seeds} --rounds {args.rounds} --agents {args.agents}")  # fmt: skip
    metrics, timings, seconds = load(args, page)
    sc = load_scenario(SCENARIO)
    w, t = sc.world, sc.timeline
    n_seeds, n_rounds = metrics.seed.nunique(), metrics["round"].nunique()
    parts = max(1, len(args.from_run))  # the parts ran side by side, one core each
    meta = {
        "scenario": SCENARIO, "commit": git_commit(), "torch": torch.__version__, "preset_rounds": t.rounds,
        "machine": f"{platform.platform()}, {os.cpu_count()} CPU cores visible, shared by 6 concurrent workers",
        "wall": f"{seconds / 60:.1f} min (parts run in parallel)",
        "scale": f"{w.n_users:,} users x {w.n_items:,} items, {t.requests_per_round:,} requests/round ({w.mini_app_share:.0%} "
        f"mini-app), K_r = {sc.cascade.k_retrieve}, slate {sc.cascade.slate_size}, {sc.training.window_rounds}-round window.",
        "full_hours": parts * seconds / 3600 * (10 / n_seeds) * (20 / n_rounds),  # measured core time, scaled
    }  # fmt: skip
    write_page(metrics, timings, page, args.command, meta)
    print(f"wrote {page}")


if __name__ == "__main__":
    main()
