"""The generated DAMCAR results page: sanity diagnostics first, then the closed-loop verdict (issue 13 items 3-4).

Called by experiments/damcar.py; every number comes from the long metrics (the parquet beside the page)
and, for the sensitivity section, from ``damcar-sensitivity.parquet`` (one ``cell`` column per variant).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.offline_evaluation_page import holm, mde, paired_p
from scenarios.study import interval

REFERENCES = ("oracle", "random", "popular", "bc")
HEADLINE = "true_recall@100"
OUTCOMES = ("true_recall@100", "true_recall@200", "ranked_true_ndcg@10", "logged_ctr", "logged_finish_rate", "slate_utility")
ADA_DIAG = (
    "fit_domain_accuracy", "fit_domain_accuracy_early", "fit_domain_loss", "fit_feature_gap", "fit_probe_features",
    "fit_input_gap", "fit_probe_input", "fit_pseudo_label_target", "fit_target_pairs", "fit_target_share",
)  # fmt: skip
PCS = tuple(f"fit_pc{k}_{s}_{t}" for k in (1, 2) for s in ("source", "target") for t in ("mean", "sd"))
TEACHER_DIAG = ("fit_teacher_mean", "fit_teacher_loss", "fit_pseudo_positive_rate")
CLAIM = (
    '"(i) Compared with the base method BC, DAMCAR gains significant improvements in both retrieval and ranking '
    'metrics. [...] (ii) DAMCAR outperforms all debiasing baselines on two datasets and under different settings of K." '
    "(seeds/000_3c1446d7a49e696e.txt, §5.2, Tables 2-3)"
)
ACTS_ACCURACY, ACTS_LOSS = 0.9, 0.3  # an adversary that acts: accuracy below 0.9 and L_dom above 0.3 (confusion: 2 ln 2)


def per_seed(metrics: pd.DataFrame, name: str, rounds: Sequence[int]) -> pd.DataFrame:
    """``[agent x seed]`` mean of ``name`` over ``rounds``."""
    sub = metrics[(metrics.metric == name) & metrics["round"].isin(list(rounds))]
    return sub.groupby(["agent", "seed"]).value.mean().unstack("seed")


def cell(values: Sequence[float], digits: int = 4) -> str:
    """``mean ± half`` of the 95% t-interval over seeds (``–`` when empty)."""
    xs = [v for v in values if np.isfinite(v)]
    if not xs:
        return "–"
    mean, half = interval(xs)
    return f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if np.isfinite(half) else "")


def table(metrics: pd.DataFrame, names: Sequence[str], agents: Sequence[str], rounds: Sequence[int], digits: int = 4) -> str:
    """Markdown table: one row per agent, one column per metric, each ``mean ± half`` over seeds of the ``rounds`` mean."""
    present = [n for n in names if n in set(metrics.metric)]
    frames = {n: per_seed(metrics, n, rounds) for n in present}
    lines = ["| agent | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for a in agents:
        row = [cell(frames[n].loc[a].tolist(), digits) if a in frames[n].index else "–" for n in present]
        lines.append(f"| {a} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def curve(metrics: pd.DataFrame, name: str, agents: Sequence[str], rounds: Sequence[int]) -> str:
    """Markdown table of ``name`` per round (the curve with its 95% band as ``±``)."""
    lines = ["| agent | " + " | ".join(f"round {r}" for r in rounds) + " |", "|---" * (len(rounds) + 1) + "|"]
    for a in agents:
        vals = [per_seed(metrics, name, [r]) for r in rounds]
        lines.append(f"| {a} | " + " | ".join(cell(v.loc[a].tolist(), 3) if a in v.index else "–" for v in vals) + " |")
    return "\n".join(lines)


def comparisons(metrics: pd.DataFrame, pairs: Sequence[tuple[str, str]], rounds: Sequence[int]) -> pd.DataFrame:
    """Paired differences of the headline metric (time-averaged over ``rounds``) with Holm-adjusted p-values and the MDE."""
    frame = per_seed(metrics, HEADLINE, rounds)
    gap = float((frame.loc["oracle"] - frame.loc["random"]).mean()) if {"oracle", "random"} <= set(frame.index) else math.nan
    rows = []
    for a, b in pairs:
        if a not in frame.index or b not in frame.index:
            continue
        diff = (frame.loc[a] - frame.loc[b]).dropna().to_numpy()
        mean, half = interval(diff.tolist())
        sd = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
        rows.append({"pair": f"{a} − {b}", "diff": mean, "half": half, "p": paired_p(diff.tolist()), "mde": mde(sd, len(diff)),
                     "effect": mean / gap if gap else math.nan})  # fmt: skip
    out = pd.DataFrame(rows)
    if len(out):
        adjusted = holm(dict(zip(out.pair, out.p, strict=True)))
        out["p_holm"] = [adjusted[k] for k in out.pair]
    return out


def verdict(row: pd.Series) -> str:
    """Plain words for one comparison: Holm-significant, significant only before the correction, or not detectable."""
    if np.isfinite(row.p_holm) and row.p_holm < 0.05:
        return "better (Holm)" if row["diff"] > 0 else "worse (Holm)"
    if np.isfinite(row.half) and abs(row["diff"]) > row.half:
        return f"{'higher' if row['diff'] > 0 else 'lower'} before the Holm correction only (p = {row.p:.3f})"
    return f"no detectable difference (MDE {row.mde:.3f})" if np.isfinite(row.mde) else "no detectable difference"


def chance(row: pd.Series) -> str:
    """Whether an agent is at chance level against random: its interval holds 0 and the gap is below the MDE."""
    at_chance = np.isfinite(row.half) and abs(row["diff"]) <= row.half and abs(row["diff"]) < row.mde
    return " — at chance level" if at_chance else ""


def comparison_table(comp: pd.DataFrame) -> str:
    head = "| comparison | paired diff ± 95% | Holm p | MDE (80% power) | effect / (oracle − random) | verdict |"
    lines = [head, "|---|---|---|---|---|---|"]
    for _, r in comp.iterrows():
        p = f"{r.p_holm:.3f}" if np.isfinite(r.p_holm) else "–"
        lines.append(f"| {r.pair} | {r['diff']:+.4f} ± {r.half:.4f} | {p} | {r.mde:.4f} | {r.effect:+.2f} | {verdict(r)} |")
    return "\n".join(lines)


def adversary_status(metrics: pd.DataFrame, agent: str) -> str:
    """Whether ``agent``'s adversary acted, from its per-fit domain accuracy and loss over every round."""
    rounds = sorted(metrics["round"].unique())
    acc = per_seed(metrics, "fit_domain_accuracy", rounds)
    loss = per_seed(metrics, "fit_domain_loss", rounds)
    if agent not in acc.index:
        return f"`{agent}`: not run."
    a, lo = float(acc.loc[agent].mean()), float(loss.loc[agent].mean()) if agent in loss.index else math.nan
    acts = a < ACTS_ACCURACY and (not np.isfinite(lo) or lo > ACTS_LOSS)
    word = "the adversary acts" if acts else "the adversary does NOT act (alignment failed: report as not working)"
    return f"`{agent}`: mean training domain accuracy {a:.3f}, mean L_dom {lo:.3f} over all rounds and seeds: {word}."


def alignment_svg(metrics: pd.DataFrame, agents: Sequence[str], round_idx: int, path: Path) -> None:
    """Source (blue) and target (orange) features of each seed on their first two principal axes: mean ± 1 sd ellipses."""
    w, h, pad = 300, 260, 30
    panels = []
    for k, a in enumerate(agents):
        sub = metrics[(metrics.agent == a) & (metrics["round"] == round_idx) & metrics.metric.str.startswith("fit_pc")]
        wide = sub.pivot_table(index="seed", columns="metric", values="value")
        if wide.empty:
            continue
        means = wide[[c for c in wide.columns if c.endswith("_mean")]].to_numpy()
        sds = wide[[c for c in wide.columns if c.endswith("_sd")]].to_numpy()
        span = max(1e-6, float(np.nanmax(np.abs(means)) + np.nanmax(sds)))
        sx, sy = (w - 2 * pad) / (2 * span), (h - 2 * pad) / (2 * span)
        x0, y0 = k * w + w / 2, h / 2
        shapes = [f'<text x="{k * w + 8}" y="16" font-size="12">{a} (round {round_idx}; ±{span:.2f})</text>',
                  f'<line x1="{k * w + pad}" y1="{y0}" x2="{k * w + w - pad}" y2="{y0}" stroke="#ccc"/>',
                  f'<line x1="{x0}" y1="{pad}" x2="{x0}" y2="{h - pad}" stroke="#ccc"/>']  # fmt: skip
        for _, r in wide.iterrows():
            for side, colour in (("source", "#1f77b4"), ("target", "#ff7f0e")):
                cx, cy = x0 + r[f"fit_pc1_{side}_mean"] * sx, y0 - r[f"fit_pc2_{side}_mean"] * sy
                rx, ry = max(1.0, r[f"fit_pc1_{side}_sd"] * sx), max(1.0, r[f"fit_pc2_{side}_sd"] * sy)
                style = f'fill="{colour}" fill-opacity="0.15" stroke="{colour}"'
                shapes.append(f'<ellipse cx="{cx:.1f}" cy="{cy:.1f}" rx="{rx:.1f}" ry="{ry:.1f}" {style}/>')
        panels += shapes
    body = "\n".join(panels)
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * len(agents)}" height="{h}" font-family="sans-serif">'
    path.write_text(f"{head}\n{body}\n</svg>\n")


SENS_COLUMNS = (
    "fit_target_pairs", "fit_target_share", "fit_domain_accuracy", "fit_pseudo_label_target", "true_rel_target",
    "true_rel_uniform", "pseudo_label_truth_spearman", "true_recall@100",
)  # fmt: skip


def sensitivity_table(sens: pd.DataFrame) -> str:
    """One row per cell (walk x label path): each column ``mean ± half`` over seeds, and true recall paired against the default."""
    if not len(sens):
        return "(not run)"
    cells = list(dict.fromkeys(sens.cell))
    wide = sens.pivot_table(index=["cell", "seed"], columns="metric", values="value")
    lines = ["| cell | " + " | ".join(SENS_COLUMNS) + " | true_recall@100 − default (paired) |", "|---" * (len(SENS_COLUMNS) + 2) + "|"]
    base = wide.loc[cells[0]]["true_recall@100"]
    for c in cells:
        sub = wide.loc[c]
        row = [cell(sub[n].tolist(), 3) if n in sub else "–" for n in SENS_COLUMNS]
        diff = "–"
        if c != cells[0]:
            mean, half = interval((sub["true_recall@100"] - base).dropna().tolist())
            diff = f"{mean:+.4f} ± {half:.4f}"
        lines.append(f"| {c} | " + " | ".join(row) + f" | {diff} |")
    return "\n".join(lines)


def write_page(metrics: pd.DataFrame, timings: pd.DataFrame, sens: pd.DataFrame, page: Path, command: str, meta: dict) -> None:
    """Write the page (and its SVG figure beside it)."""
    known = ("oracle", "random", "popular", "bc", "kd", "kd-platform", "tl", "ar", "muda", "muda-t", "damcar", "damcar-linear-psi")
    agents = [a for a in known if a in set(metrics.agent)] + sorted(set(metrics.agent) - set(known))
    rounds = sorted(int(r) for r in metrics["round"].unique())
    last = rounds[-3:]
    seeds = sorted(metrics.seed.unique())
    damcars = [a for a in agents if a.startswith("damcar")]
    svg = page.with_name(page.stem + "-alignment.svg")
    alignment_svg(metrics, damcars, rounds[-1], svg)
    pairs = [(a, "random") for a in agents if a not in ("random", "oracle")] + [(a, "bc") for a in agents if a not in REFERENCES]
    pairs += [("damcar", b) for b in ("kd", "muda", "muda-t", "tl", "ar", "damcar-linear-psi") if b in agents]
    comp = comparisons(metrics, pairs, last)
    finish = per_seed(metrics, "logged_finish_rate", rounds)
    finish_bc = float(finish.loc["bc"].mean()) if "bc" in finish.index else float(np.nanmean(finish.to_numpy()))
    lines = [
        f"# DAMCAR and its baselines in the closed loop ({meta['scenario']})",
        "",
        "<!-- generated file: do not edit by hand -->",
        f"Generated by `{command}` at commit `{meta['commit']}` (wall time of the runs: {meta['wall']}; "
        "6 concurrent jobs shared the 2 cores). Tuning budget: none; every method runs at its stated defaults (algorithms.md §2-§5).",
        "",
        *([f"- Runs: {meta['provenance']}"] if meta.get("provenance") else []),
        f"- Scenario: `{meta['scenario']}` (platform ranker: {meta['ranker']}); {meta['scale']}",
        f"- Seeds: {len(seeds)} ({', '.join(map(str, seeds))}); rounds {rounds[0]}..{rounds[-1]} after the warm start; "
        f"time averages over rounds {last[0]}..{last[-1]}; ± is the half-width of the 95% t-interval over seeds.",
        f"- Machine: {meta['machine']}; torch {meta['torch']}; one thread per run.",
        "- Agents train on `finished` (the paper's label). The distillation teacher of KD, MUDA, MUDA-T and DAMCAR is, since "
        "issue 13, each agent's own DeepFM trained on `finished` over the same window (`teacher_source = own`); `kd-platform` "
        "keeps the platform's DeepFM, which is trained on clicks. DAMCAR's walk is §5(c)'s DEFAULT, 50 walks x 25 hops.",
        "",
        "## The claim",
        "",
        f"> {CLAIM}",
        "",
        "## Is DAMCAR working? (read before the verdict)",
        "",
        "A method whose own sanity diagnostics fail is reported as not working, not as losing (studies.md §4). "
        f"Criterion for an adversary that acts: mean training domain accuracy below {ACTS_ACCURACY} and mean `L_dom` above "
        f"{ACTS_LOSS} (a winning classifier drives `L_dom` to 0; full confusion is 2 ln 2 = 1.39).",
        "",
        *[f"- {adversary_status(metrics, a)}" for a in damcars],
        "",
        "`damcar` is the repaired agent (domain head with one hidden layer of 64 and a bias); `damcar-linear-psi` is the paper's "
        "single linear head without bias, the configuration the previous page ran. Diagnostics per fit, averaged over every round "
        "(`probe_*`: held-out accuracy of a fresh linear probe on the frozen inputs / on the features the adversary sees after the "
        "fit; `*_gap`: mean over dimensions of |Δ mean| / pooled sd between source and target; `target_share` = |S_sam| / |S_T|):",
        "",
        table(metrics, ADA_DIAG, damcars, rounds, 3),
        "",
        "Per round, the adversary's training accuracy:",
        "",
        curve(metrics, "fit_domain_accuracy", damcars, rounds),
        "",
        f"Source (blue, `g(z^s)`) and target (orange, `z^t`) features after the last fit, on their first two principal axes, "
        f"one ellipse (mean ± 1 sd) per seed: ![alignment]({svg.name})",
        "",
        table(metrics, PCS, damcars, [rounds[-1]], 2),
        "",
        "### The distillation teachers",
        "",
        f"Mean teacher score on the training pairs and the own teacher's BCE (the finish rate of BC's slates is "
        f"{finish_bc:.4f}; the platform teacher predicts clicks):",
        "",
        table(metrics, TEACHER_DIAG, [a for a in agents if a not in REFERENCES], rounds, 4),
        "",
        "## Outcomes (time-averaged over the last rounds)",
        "",
        table(metrics, OUTCOMES, agents, last, 4),
        "",
        f"`{HEADLINE}` per round:",
        "",
        curve(metrics, HEADLINE, agents, rounds),
        "",
        "## Paired comparisons",
        "",
        f"`{HEADLINE}` time-averaged over rounds {last[0]}..{last[-1]}, paired by seed (common random numbers), Holm-corrected "
        "over every comparison of this table; effect relative to the oracle − random gap; MDE = the smallest paired difference "
        f"this number of seeds detects with 80% power (two-sided 5%).",
        "",
        comparison_table(comp),
        "",
        "## Sensitivity: walk length and label path (DAMCAR only, offline)",
        "",
        "Generated by `python experiments/damcar_sensitivity.py --seeds 3 --fits 3` (`damcar-sensitivity.parquet`): per seed, "
        "the world after its warm start gives one training view, and a fresh DAMCAR per cell is fitted on it 3 times (the "
        "preset pretrains twice). Not the closed loop (2 shared cores could not afford it). Walk `code` = H walks x R hops "
        "(§5(c) DEFAULT), `paper` = H hops in all restarting every R; label path `paper` labels S_sam through Φ(z), `code` "
        "through Φ(g(z)). `true_rel_target` / `true_rel_uniform`: mean true relevance of S_sam and of uniform never-exposed "
        "pairs with the same per-user counts (the paper's claim that the walk finds a richer target domain); "
        "`pseudo_label_truth_spearman`: rank correlation of ŷ^t with the true relevance on S_sam; `true_recall@100`: the "
        "retriever after the fits, on each user's latest request.",
        "",
        sensitivity_table(sens),
        "",
    ]
    lines += power_and_findings(metrics, comp, len(seeds), meta, sens)
    lines += timing_lines(timings, agents)
    page.write_text("\n".join(lines))


def timing_lines(timings: pd.DataFrame, agents: Sequence[str]) -> list[str]:
    """Mean agent fit seconds per round and the ratio to BC's."""
    if not len(timings):
        return []
    fit = timings[timings.phase == "agent_fit"].groupby("agent").seconds.mean()
    bc = float(fit.get("bc", math.nan))
    out = ["## Training time per round", "", "| agent | mean fit (s) | ratio to BC |", "|---|---|---|"]
    out += [f"| {a} | {fit[a]:.2f} | {fit[a] / bc:.2f} |" for a in agents if a in fit.index]
    return [*out, "", "(Measured while other jobs shared the cores: ratios are more meaningful than seconds.)", ""]


def _find(comp: pd.DataFrame, pair: str) -> pd.Series | None:
    hit = comp[comp.pair == pair] if len(comp) else comp
    return hit.iloc[0] if len(hit) else None


def walk_sentence(sens: pd.DataFrame) -> str:
    """The target-domain sizes of the two walk readings, from the sensitivity runs."""
    pairs = sens[sens.metric == "fit_target_pairs"].groupby("cell").value.mean() if len(sens) else pd.Series(dtype=float)
    code = [c for c in pairs.index if c.startswith("walk code R25 H50")]
    paper = [c for c in pairs.index if c.startswith("walk paper R25 H50")]
    if not code or not paper:
        return ""
    return (f" On the warm-start logs the §5(c) walk (50 x 25) selects {pairs[code[0]]:.0f} pairs, the 50-hop reading "
            f"{pairs[paper[0]]:.0f}: the longer walk does not enlarge the target domain.")  # fmt: skip


def power_and_findings(metrics: pd.DataFrame, comp: pd.DataFrame, n_seeds: int, meta: dict, sens: pd.DataFrame) -> list[str]:
    """The power statement, the generated findings and what did not reproduce."""
    rounds = sorted(metrics["round"].unique())
    frame = per_seed(metrics, HEADLINE, rounds[-3:])
    gap = float((frame.loc["oracle"] - frame.loc["random"]).mean()) if {"oracle", "random"} <= set(frame.index) else math.nan
    median_mde = float(np.nanmedian(comp.mde)) if len(comp) else math.nan
    out = [
        "## Power",
        "",
        f"{n_seeds} seeds x {len(rounds)} rounds, against studies.md's standard of at least 10 seeds and 20 rounds: "
        f"{'the seed count meets it' if n_seeds >= 10 else 'too few seeds'}, "
        f"{'the horizon meets it' if len(rounds) >= 20 else 'the horizon is too short for the loop to matter'}. "
        f"The median minimal detectable paired difference on `{HEADLINE}` is {median_mde:.4f}, "
        f"{median_mde / gap:.0%} of the oracle − random gap ({gap:.4f}); smaller true differences read as 'no detectable "
        "difference', which is not evidence of equality. The catalogue (1,500 items) is 15 x K_r, not the 100 x K_r the "
        "standard asks for retrieval claims. What ran is listed under Runs above; for the standard's horizon run "
        f"`{meta['scale_out']}` (about {meta['scale_factor']:.0f}x this page's compute; `cascadesim sweep --workers N` spreads "
        "the same cells over processes).",
        "",
        "## Findings (generated from the tables above)",
        "",
    ]
    for agent in ("kd", "kd-platform", "muda-t", "muda", "damcar", "damcar-linear-psi"):
        row = _find(comp, f"{agent} − random")
        if row is not None:
            out.append(f"- {agent} vs random (`{HEADLINE}`): {row['diff']:+.4f} ± {row.half:.4f}, {verdict(row)}{chance(row)}.")
    for a, b in (("damcar", "bc"), ("kd", "bc"), ("muda", "bc"), ("damcar", "kd"), ("damcar", "muda"), ("damcar", "damcar-linear-psi")):
        row = _find(comp, f"{a} − {b}")
        if row is not None:
            out.append(f"- {a} vs {b}: {row['diff']:+.4f} ± {row.half:.4f}, {verdict(row)}.")
    out += [
        "",
        "## What did not reproduce, and the likely reasons",
        "",
        "- The paper's claim (DAMCAR beats BC and every debiasing baseline) is judged above only where DAMCAR's adversary acts; "
        "with the paper's linear domain head it does not (see the diagnostics), so `damcar-linear-psi` is not a test of the "
        "method.",
        "- The target domain stays small (`fit_target_share`): on this sparse exposure graph (few engaged items per user "
        "per window) the first hop of every walk lands on one of the user's own engaged items, so they collect ~H visits and few "
        f"never-exposed items reach that mean (paper Eq. 3).{walk_sentence(sens)} WeChat/TikTok users have far denser histories.",
        "- Even with the adversary acting, a fresh linear probe still tells the source and target features apart "
        "(`fit_probe_features`), so the alignment is partial; the asymmetric paths (`g` on the source only) are part of the reason.",
        f"- KD and MUDA-T learn only from the teacher (KD: label replacement; MUDA-T: the target domain alone), a DeepFM fitted "
        f"on a window of two rounds with a finish rate near {float(per_seed(metrics, 'logged_finish_rate', rounds).mean().mean()):.2f}; "
        "its ranking of never-exposed items is weak, and MUDA-T's thresholded labels throw away what calibration it has. "
        "Compare `kd` (own teacher, trained on finishes) with `kd-platform` (the click-trained platform ranker).",
        "",
    ]
    return out
