"""The page of ``experiments/usd_study.py`` and its §14(f) sanity check (every number from the metrics or measured here).

Kept apart from the runner so that the page can be reworked while the loops run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from offline_evaluation_page import fmt, fmt_plain, holm, mde, paired_p, t_quantile, table

REFERENCES = ("oracle", "random", "popular", "bc")
USD_AGENTS = ("usd", "usd-no-sampler", "usd-no-exposure-debias", "usd-no-click-debias")
HEADLINE = ("true_recall@20", "true_ndcg@20", "slate_utility", "logged_ctr", "logged_finish_rate")
COMPARISONS = (
    ("usd", "bc", "USD vs BC (the method)"),
    ("usd", "usd-no-sampler", "the sampler (USD vs USD without it)"),
    ("usd", "usd-no-exposure-debias", "the exposure debias w⁻ = a"),
    ("usd", "usd-no-click-debias", "the click debias w⁺ = c"),
)
DIAGNOSTICS = (
    "fit_theta_a",
    "fit_kept_negative_share",
    "fit_w_neg_p50",
    "fit_w_pos_p50",
    "fit_w_pos_p90",
    "fit_attention_loss",
    "fit_validity_loss",
)
SANITY = {
    "unattended_share": "unattended share", "filter_precision": "filter precision", "filter_recall": "filter recall",
    "attention_auc": "attention AUC", "portal_click_share": "portal-click share", "validity_auc": "validity AUC",
    "label_auc": "weak-label AUC",
}  # fmt: skip
LAST = 3  # rounds averaged for the time-averaged figures
CLAIM = (
    "Large-scale homepage recommendations face critical challenges from pseudo-negative samples caused by exposure bias, "
    "where non-clicks may indicate inattention rather than disinterest. [...] overlooking the critical impact of "
    "pseudo-positive samples - such as homepage clicks merely to visit marketing portals. [...] (1) a user intent-aware "
    "negative sampling module to filter invalid exposure samples, and (2) an intent-driven dual-debiasing module that "
    "jointly corrects exposure bias and click bias. Extensive online experiments on Taobao demonstrate the efficacy of our "
    "framework, achieving significant improvements in user click-through rates (UCTR) by 35.4% and 14.5% in two variants of "
    "the marketing block on the Taobao homepage, Baiyibutie and Taobaomiaosha."
)


# --- §14(f) sanity on the preset's warm-start log (the oracle is read here, never by an agent) -----------------------------


def _kendall(scores: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean over rows (those with a valid pair) of Kendall's tau-a between ``scores`` and ``truth`` ``[B, M]`` on the ``valid`` entries."""
    ds = torch.sign(scores.unsqueeze(2) - scores.unsqueeze(1))
    dt = torch.sign(truth.unsqueeze(2) - truth.unsqueeze(1))
    pair = valid.unsqueeze(2) & valid.unsqueeze(1)
    pair &= torch.ones_like(pair[0]).triu(1).unsqueeze(0)
    n = pair.sum((1, 2))
    has = n > 0  # a row without a valid pair has no tau
    return float(((ds * dt * pair).sum((1, 2))[has] / n[has]).mean())


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    ranks = torch.empty(len(scores), dtype=torch.float64)
    ranks[scores.argsort()] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    pos = labels.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1))


def sanity_seed(sc, seed: int, n_users: int = 200, n_items: int = 100) -> dict[str, float]:
    """One seed: USD's filter and validity head against the oracle, and Kendall tau vs true relevance for BC and USD's family."""
    from agents.usd import keep_negatives
    from agents.usd_heads import attention_data, validity_data
    from scenarios.experiment import agent_factory, warm_started_loop
    from simulator.round import training_view
    from simulator.types import MOTIVE_PORTAL
    from simulator.world.relevance import true_relevance

    cpu = torch.device("cpu")
    loop = warm_started_loop(sc, seed, cpu)
    view = training_view(loop, -1)
    rounds = loop.log.rounds()
    truth_req = pd.concat([loop.truth.frame("truth_requests", r) for r in rounds]).set_index("request_id")
    truth_imp = pd.concat([loop.truth.frame("truth_impressions", r) for r in rounds]).set_index(["request_id", "position"])
    fitted = {}
    for name in ("bc", *USD_AGENTS):
        agent = agent_factory(name, sc, seed, cpu)(loop)
        for _ in range(sc.training.pretrain_fits):  # as the loop pretrains on the warm-start log
            agent.fit(view)
        fitted[name] = agent
    usd, imp = fitted["usd"], view.impressions
    out: dict[str, float] = {}
    attended = torch.tensor(truth_req.loc[view.requests.request_id[imp.row].numpy()].attended.to_numpy())
    a = usd.attention.predict(attention_data(view, usd.config.dwell_threshold, cpu).x)
    negative = ~imp.clicked.bool()
    keep, _ = keep_negatives(a, negative, usd.config.keep_percentile)
    kept, att = keep[negative], attended[negative]
    out.update(
        unattended_share=1 - float(att.float().mean()), filter_precision=float((kept & att).sum() / kept.sum()),
        filter_recall=float((kept & att).sum() / att.sum()), attention_auc=_auc(a[negative], att),
    )  # fmt: skip
    val = validity_data(view, cpu)
    keys = list(zip(view.requests.request_id[imp.row[val.rows]].tolist(), imp.position[val.rows].tolist(), strict=True))
    genuine = torch.tensor(truth_imp.loc[keys].motive.to_numpy() != MOTIVE_PORTAL)
    c = usd.validity.predict(val.x)
    out.update(
        portal_click_share=1 - float(genuine.float().mean()), validity_auc=_auc(c, genuine), label_auc=_auc(val.y + 1e-6 * c, genuine)
    )
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(view.requests), generator=gen)[:n_users]
    req = view.requests.select(rows)
    live = view.catalogue.live_ids()
    items = live[torch.rand(len(rows), len(live), generator=gen).argsort(1)[:, :n_items]]
    truth = true_relevance(loop.world, sc, req.user_id, items)
    shown = torch.zeros(view.n_users, view.n_items, dtype=torch.bool)
    shown[view.requests.user_id[imp.row], imp.item_id] = True
    valid = ~shown[req.user_id.unsqueeze(1), items]  # unexposed pairs only (§0.4)
    for name, agent in fitted.items():
        agent.index(view.catalogue)
        out[f"tau_{name}"] = _kendall(agent.score(req, items), truth, valid)
    return out


def sanity(scenario: dict | None, seeds: Sequence[int]) -> dict[str, list[float]]:
    """:func:`sanity_seed` for every seed: metric -> one value per seed."""
    from scenarios.presets import load_scenario
    from simulator.config import scenario_from_dict

    sc = scenario_from_dict(scenario) if scenario else load_scenario("homepage")
    per = [sanity_seed(sc, s) for s in seeds]
    return {k: [p[k] for p in per] for k in per[0]}


# --- statistics ---------------------------------------------------------------------------------------------------------


def last_mean(metrics: pd.DataFrame, names: Sequence[str], last: int = LAST) -> pd.DataFrame:
    """Per (agent, seed, metric): the mean over the last ``last`` rounds."""
    top = int(metrics["round"].max())
    sub = metrics[metrics.metric.isin(names) & (metrics["round"] > top - last)]
    return sub.groupby(["agent", "seed", "metric"])["value"].mean().reset_index()


def ci(values: Sequence[float]) -> tuple[float, float, float]:
    xs = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(xs) < 2:
        return (float(xs[0]) if len(xs) else math.nan), math.nan, math.nan
    sd = float(xs.std(ddof=1))
    return float(xs.mean()), t_quantile(0.975, len(xs) - 1) * sd / math.sqrt(len(xs)), sd


def paired(avg: pd.DataFrame, metric: str, a: str, b: str) -> np.ndarray:
    """Per-seed differences ``a - b`` on ``metric`` (seeds present for both)."""
    sub = avg[avg.metric == metric].pivot_table(index="seed", columns="agent", values="value")
    if a not in sub or b not in sub:
        return np.array([])
    return (sub[a] - sub[b]).dropna().to_numpy()


def verdict_rows(avg: pd.DataFrame) -> tuple[list[list[str]], dict[str, str]]:
    """The paired comparisons (Holm over the whole family) and a word per (comparison, metric)."""
    raw, stats = {}, {}
    for a, b, _ in COMPARISONS:
        for m in HEADLINE:
            d = paired(avg, m, a, b)
            key = f"{a}|{b}|{m}"
            raw[key], stats[key] = paired_p(d), (*ci(d), len(d))
    adj = holm(raw)
    gap = {m: _gap(avg, m) for m in HEADLINE}
    rows, words = [], {}
    for a, b, label in COMPARISONS:
        for m in HEADLINE:
            key = f"{a}|{b}|{m}"
            mean, half, sd, n = stats[key]
            p = adj[key]
            words[key] = _word(mean, p)
            rel = mean / gap[m] if np.isfinite(gap[m]) and gap[m] != 0 else math.nan
            rows.append([label, f"`{m}`", fmt(mean, half, 4), _num(p, ".3f"), _num(rel, "+.2f"), _num(mde(sd, n), ".4f"), words[key]])
    return rows, words


def _word(mean: float, p: float) -> str:
    if not np.isfinite(mean):
        return "no data"
    return "tie" if not np.isfinite(p) or p >= 0.05 else ("win" if mean > 0 else "loss")


def _num(x: float, spec: str) -> str:
    return format(x, spec) if np.isfinite(x) else "–"


def _gap(avg: pd.DataFrame, metric: str) -> float:
    """Mean oracle minus random on ``metric`` (the effect-size scale)."""
    d = paired(avg, metric, "oracle", "random")
    return float(d.mean()) if len(d) else math.nan


def seeds_needed(sd: float, delta: float) -> float:
    """Seeds for 80% power at two-sided 5% to detect a paired difference ``delta`` (normal approximation)."""
    if not (np.isfinite(sd) and np.isfinite(delta)) or delta == 0:
        return math.nan
    return math.ceil(((1.96 + 0.8416) * sd / abs(delta)) ** 2)


# --- the page -------------------------------------------------------------------------------------------------------------


def _agents(metrics: pd.DataFrame) -> list[str]:
    present = set(metrics.agent)
    return [a for a in (*REFERENCES, *USD_AGENTS) if a in present]


def header(metrics: pd.DataFrame, metas: list[dict], command: str) -> list[str]:
    sc = next((m["scenario"] for m in metas if "scenario" in m), {})
    world, cascade, tl, tr = sc.get("world", {}), sc.get("cascade", {}), sc.get("timeline", {}), sc.get("training", {})
    seeds, rounds = int(metrics.seed.nunique()), int(metrics["round"].max()) + 1
    runs = [f"  - `{m.get('command', '?')}` at commit {m.get('commit', '?')}: {m.get('wall_min', math.nan):.1f} min wall" for m in metas]
    machine = next((m["machine"] for m in metas if "machine" in m), "unknown")
    return [
        "# USD (intent-aware negative sampling + intent-driven dual debiasing) on the `homepage` preset (issue 13)",
        "",
        f"*Generated by `experiments/usd_study.py`; do not edit by hand.* This page: `{command}`, from the metrics of",
        *runs,
        f"- Machine: {machine}; the loops ran as {len(metas)} concurrent processes on a 2-core machine shared with other jobs "
        "(wall times inflated). Tuning budget: **none**; every agent runs at its registered defaults (USD's are "
        "algorithms.md §14's DEFAULTs and our own; the paper publishes none).",
        f"- Scenario `homepage` ({world.get('n_users')} users x {world.get('n_items')} items, {world.get('n_categories')} categories, "
        f"K_r = {cascade.get('k_retrieve')}, slate {cascade.get('slate_size')}, {tl.get('requests_per_round')} requests/round, "
        f"training window {tr.get('window_rounds')} rounds): sessions, entry-dependent attention (≈40% of exposures unattended), "
        "portal clicks seen only through a noisy engagement signal, the mini-app and weekend features on "
        "(`scenarios/data/homepage.toml`, `docs/world-features.md`).",
        power_line(seeds, rounds, int(world.get("n_items", 0)), int(cascade.get("k_retrieve", 1))),
        "",
    ]


def power_line(seeds: int, rounds: int, n_items: int, k_r: int) -> str:
    from scenarios.presets import load_scenario

    preset_rounds = load_scenario("homepage").timeline.rounds
    scale = (10 / max(seeds, 1)) * (20 / max(rounds, 1))
    return (
        f"- **Below the power standard** (`/work/shared/studies.md` §3): {seeds} seeds and {rounds} rounds (0..{rounds - 1}; the "
        f"preset has {preset_rounds}) where the standard asks for 10-20 seeds and >= 20 rounds; the catalogue is {n_items} items = "
        f"{n_items // max(k_r, 1)} x K_r (standard: 100 x K_r). CPU was scarce (2 cores shared by 6 jobs). Every figure is a "
        f"mean ± 95% t half-width over seeds; 'time-averaged' is the mean of the last {LAST} rounds per seed. The MDE column "
        "and the power section say what full power would need. Scale out with the same script: `--seeds 10 --rounds 20` "
        f"(about {scale:.0f} x this run's CPU; one process per agent group or seed)."
    )


def claim_section() -> list[str]:
    return [
        "## The claim",
        "",
        "seeds/003 (abstract of arXiv 2507.06503; only the abstract is known, see algorithms.md §14):",
        "",
        f"> {CLAIM}",
        "",
        "What runs here is **our reading** (algorithms.md §14(b)-(c), `agents/usd.py`): an attention head `a` on observable "
        "proxies (entry, scroll depth, other slots' dwell; weak label: a click in the session or dwell >= δ) filters unclicked "
        "exposures with `a < θ_a` (30th percentile) and replaces them by random B/C negatives of the same request; a "
        "click-validity head `c` (weak label: post-click engagement > 0) weights the clicks, `a` weights the kept negatives. "
        "The paper's metric, UCTR (share of users who click) on two marketing blocks, has no counterpart here; the closest "
        "user-facing outcome is `logged_ctr` (clicks per exposure), shown beside true recall, NDCG and the slate's true "
        "relevance (`slate_utility`). Note that `logged_ctr` counts portal clicks too, which USD deliberately learns less from.",
        "",
    ]


def verdict_section(avg: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    rows, words = verdict_rows(avg)
    head = ["comparison", "metric", "paired diff (time-avg)", "Holm p", "effect / (oracle − random)", "MDE 80%", "verdict"]
    return [
        "## Verdict: paired differences, time-averaged",
        "",
        f"Differences are per seed (common random numbers: the same world and warm start for every agent of a seed), averaged "
        f"over the last {LAST} rounds; p from the paired t-test, Holm-adjusted over all {len(rows)} rows; a *win* / *loss* needs "
        "Holm p < 0.05. The MDE is the paired difference this number of seeds detects with 80% power.",
        "",
        table(head, rows),
    ], words


def levels_section(avg: pd.DataFrame, present: list[str]) -> list[str]:
    names = [*HEADLINE, "true_recall@50", "aggregate_diversity", "mean_exposed_popularity"]
    rows = []
    for agent in present:
        cells = []
        for m in names:
            v = avg[(avg.agent == agent) & (avg.metric == m)]["value"].tolist()
            mean, half, _ = ci(v)
            cells.append(fmt_plain(mean, half, 1 if m in ("aggregate_diversity", "mean_exposed_popularity") else 4))
        rows.append([f"`{agent}`", *cells])
    return [f"## Levels, time-averaged (last {LAST} rounds), with the references", "", table(["agent", *names], rows)]


def curve_section(metrics: pd.DataFrame, present: list[str], metric: str = "true_recall@20") -> list[str]:
    rounds = sorted(int(r) for r in metrics["round"].unique())
    rows = []
    for agent in present:
        sub = metrics[(metrics.agent == agent) & (metrics.metric == metric)]
        rows.append([f"`{agent}`", *(fmt_plain(*ci(sub[sub["round"] == r]["value"].tolist())[:2], 3) for r in rounds)])
    return [f"## `{metric}` per round (mean ± 95% half-width over seeds)", "", table(["agent", *map(str, rounds)], rows)]


def diagnostics_section(metrics: pd.DataFrame) -> list[str]:
    rounds = sorted(int(r) for r in metrics["round"].unique())
    sub = metrics[(metrics.agent == "usd") & metrics.metric.isin(DIAGNOSTICS)]
    rows = [
        [str(r), *(fmt_plain(*ci(sub[(sub["round"] == r) & (sub.metric == m)]["value"].tolist())[:2], 3) for m in DIAGNOSTICS)]
        for r in rounds
    ]
    return [
        "## USD's own diagnostics per round (`usd`, from `fit`)",
        "",
        "θ_a: the attention threshold; kept_negative_share: unclicked exposures kept as negatives (the rest replaced); "
        "w_neg / w_pos: the applied weights `a` / `c` (p50, p90); the heads' BCE on their weak labels.",
        "",
        table(["round", *(m.removeprefix("fit_") for m in DIAGNOSTICS)], rows),
    ]


def sanity_section(checks: dict[str, list[float]]) -> list[str]:
    def cell(key: str) -> str:
        return fmt_plain(*ci(checks.get(key, []))[:2], 3)

    taus = [k for k in checks if k.startswith("tau_")]
    diff = np.asarray(checks.get("tau_usd", [])) - np.asarray(checks.get("tau_bc", []))
    mean, half, _ = ci(diff.tolist())
    return [
        "## §14(f) sanity on this preset (each seed's warm-start log; the oracle read by the study only)",
        "",
        "USD and BC are fitted as the loop pretrains them (3 fits on the warm-start log); the filter keeps an unclicked "
        "exposure when `a >= θ_a`. Precision = P(attended | kept), recall = P(kept | attended), over unclicked exposures, "
        "against `truth_requests.attended`; the validity AUC ranks genuine (non-portal) clicks above portal clicks "
        "(`truth_impressions.motive`), next to the AUC of the raw weak label itself; Kendall's tau-a between the model's "
        "score and the true relevance is over 200 requests x 100 random live items, unexposed pairs only.",
        "",
        table(list(SANITY.values()), [[cell(k) for k in SANITY]]),
        table([k.removeprefix("tau_") for k in taus], [[cell(k) for k in taus]]),
        f"Paired tau(usd) − tau(bc): {fmt(mean, half, 4)}.",
        "",
    ]


def power_section(avg: pd.DataFrame, metric: str = "true_recall@20") -> list[str]:
    out = [
        "## Power: what this run can and cannot detect",
        "",
        f"Seeds needed (80% power, two-sided 5%, one comparison; normal approximation, paired sd as observed here) to detect "
        f"the observed difference, and a 10% relative gain over BC's level of `{metric}`:",
        "",
    ]
    bc = ci(avg[(avg.agent == "bc") & (avg.metric == metric)]["value"].tolist())[0]
    for a, b, label in COMPARISONS:
        d = paired(avg, metric, a, b)
        mean, _, sd = ci(d.tolist())
        out.append(
            f"- {label}: paired sd {_num(sd, '.4f')} over {len(d)} seeds, MDE now {_num(mde(sd, len(d)), '.4f')}; the observed "
            f"{_num(mean, '+.4f')} needs about {_num(seeds_needed(sd, mean), '.0f')} seeds, a gain of {_num(0.1 * bc, '.4f')} "
            f"(10% of BC's {_num(bc, '.4f')}) about {_num(seeds_needed(sd, 0.1 * bc), '.0f')}."
        )
    return [*out, ""]


def exposure_line(avg: pd.DataFrame) -> str:
    """USD vs BC on how concentrated the exposures are (the bias a popularity-prone learner shows)."""
    parts = []
    for m in ("aggregate_diversity", "mean_exposed_popularity"):
        d = paired(avg, m, "usd", "bc")
        mean, half, _ = ci(d.tolist())
        parts.append(f"`{m}` {fmt(mean, half, 1)} ({_word(mean, paired_p(d.tolist()))}, unadjusted)")
    return "- Exposure concentration, USD − BC (time-averaged, paired): " + "; ".join(parts) + "."


def _tau_lines(checks: dict[str, list[float]]) -> list[str]:
    """§14(f)'s other two checks on the warm-start fits: USD's Kendall tau vs BC's, and each ablation vs USD."""
    out = []
    for a, b, label in COMPARISONS:
        d = np.asarray(checks.get(f"tau_{a}", [])) - np.asarray(checks.get(f"tau_{b}", []))
        if len(d) == 0:
            continue
        mean, half, _ = ci(d.tolist())
        p = paired_p(d.tolist())
        word = _word(mean, p)
        out.append(
            f"- Kendall tau vs true relevance (warm-start fits), {label}: {fmt(mean, half, 4)} (p {_num(p, '.3f')}, unadjusted): {word}."
        )
    return out


def _label_note(head_auc: float, label_auc: float) -> str:
    if not label_auc > head_auc:
        return ""
    return (
        " The head ranks clicks *worse* than its own weak label: in our reading `c` never sees the click's own engagement "
        "(it is the label, §14(f)), so it weights by context (entry, promoted item, the item's engaged share) and gives up "
        "the per-click signal; a hard `w⁺ = 1[engagement > 0]` would separate better on this preset."
    )


def findings(words: dict[str, str], checks: dict[str, list[float]], avg: pd.DataFrame) -> list[str]:
    def tally(a: str, b: str) -> str:
        ws = [words.get(f"{a}|{b}|{m}", "no data") for m in HEADLINE]
        return ", ".join(f"`{m}` {w}" for m, w in zip(HEADLINE, ws, strict=True))

    prec, rec = ci(checks.get("filter_precision", []))[0], ci(checks.get("filter_recall", []))[0]
    vauc, lauc = ci(checks.get("validity_auc", []))[0], ci(checks.get("label_auc", []))[0]
    works = "work" if min(prec, rec) > 0.7 and vauc > 0.7 else "do NOT all work"
    tau = _tau_lines(checks)
    return [
        "## Findings (worded from the verdicts above and the sanity table)",
        "",
        f"- The mechanisms USD relies on {works} on this preset: the attention filter reaches precision {prec:.2f} and recall "
        f"{rec:.2f} against the oracle attended flag (§14(f) asks > 0.7), and the validity head ranks genuine clicks above "
        f"portal clicks with AUC {vauc:.2f} (its weak label alone: {lauc:.2f}).{_label_note(vauc, lauc)}",
        *tau,
        f"- USD vs BC: {tally('usd', 'bc')}.",
        exposure_line(avg),
        *(f"- Ablation, {label}: {tally(a, b)} (a *win* means removing the term hurts)." for a, b, label in COMPARISONS[1:]),
        "- The paper's +35.4% / +14.5% UCTR is an online A/B result on Taobao's marketing blocks against an undisclosed "
        "production baseline; nothing here measures UCTR, and a tie here at this power is not evidence against the claim, "
        "only the absence of a detectable effect of the size given in the MDE column.",
        "",
        "## Limits and what did not reproduce",
        "",
        "- Only the abstract is known: the heads, weak labels, threshold and weights are algorithms.md §14's proposed "
        "reading, not the paper's method; the paper's architecture, features and hyperparameters are unknown.",
        "- The simulator's attention is per request (a block is attended or not) with position-based examination inside it; "
        "real homepage inattention is richer (per slot, per block, scroll-driven). Portal clicks land on promoted items "
        "independently of relevance; the platform ranker, trained on clicks, keeps learning from them whatever the "
        "retrieval agent does, so USD's click debias can act only on the retrieval stage here.",
        "- The evaluation is on the main feed's true relevance (the mini-app shift is not part of the metrics; `docs/world-features.md`).",
        "",
    ]


def page(metrics: pd.DataFrame, metas: list[dict], checks: dict[str, list[float]], command: str) -> str:
    """The whole page as Markdown."""
    present = _agents(metrics)
    avg = last_mean(metrics, sorted(set(metrics.metric)))
    verdict, words = verdict_section(avg)
    out = [*header(metrics, metas, command), *claim_section(), *verdict, *levels_section(avg, present)]
    out += [
        *curve_section(metrics, present),
        *diagnostics_section(metrics),
        *sanity_section(checks),
        *power_section(avg),
        *findings(words, checks, avg),
    ]
    return "\n".join(out) + "\n"
