"""The page of ``experiments/offline_evaluation.py``: every number read from the long-form metrics and leaderboard rows.

Kept apart from the runner so that ``--from-run`` and the tests of the page need no simulator run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

REFERENCES = ("oracle", "random", "popular", "bc")
ESTIMATORS = ("ips", "snips", "dr", "dm", "ips_pos")


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    lo, hi = -60.0, 60.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def t_cdf(x: float, df: int) -> float:
    """Student's t CDF by Simpson's rule (no SciPy in the environment), integrated in ``θ = atan(t / sqrt(df))``
    where the density is ``c cos(θ)^(df-1)`` on a bounded interval: exact to ~1e-9 for df >= 1 and any ``x``
    (integrating over ``t`` itself missed the peak for huge ``x`` and gave a CDF above 1, a negative p)."""
    if x < 0:
        return 1.0 - t_cdf(-x, df)
    grid = np.linspace(0.0, math.atan(x / math.sqrt(df)), 4001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(math.pi)
    dens = np.exp(log_c) * np.cos(grid) ** (df - 1)
    h = grid[1] - grid[0]
    area = h / 3 * (dens[0] + dens[-1] + 4 * dens[1:-1:2].sum() + 2 * dens[2:-1:2].sum())
    return min(1.0, 0.5 + float(area))


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, 95% t half-width, sd)`` over the finite values (NaNs where undefined)."""
    xs = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(xs) == 0:
        return math.nan, math.nan, math.nan
    if len(xs) == 1:
        return float(xs[0]), math.nan, math.nan
    sd = float(xs.std(ddof=1))
    return float(xs.mean()), t_quantile(0.975, len(xs) - 1) * sd / math.sqrt(len(xs)), sd


def paired_p(diff: Sequence[float]) -> float:
    """Two-sided p-value of the one-sample t-test of mean 0 on paired differences."""
    xs = np.asarray([d for d in diff if np.isfinite(d)], dtype=float)
    if len(xs) < 2:
        return math.nan
    sd = xs.std(ddof=1)
    if sd == 0:
        return math.nan  # a constant difference: the t-test is undefined (reported as "–")
    return 2 * (1 - t_cdf(abs(xs.mean()) / (sd / math.sqrt(len(xs))), len(xs) - 1))


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (step-down, monotone), NaNs left out of the family."""
    finite = sorted(((p, k) for k, p in pvalues.items() if np.isfinite(p)))
    out, running, m = {k: math.nan for k in pvalues}, 0.0, len(finite)
    for i, (p, key) in enumerate(finite):
        running = max(running, min(1.0, (m - i) * p))
        out[key] = running
    return out


def fmt(mean: float, half: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:+.{digits}f}" if not np.isfinite(half) else f"{mean:+.{digits}f} ± {half:.{digits}f}"


def fmt_plain(mean: float, half: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" if not np.isfinite(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


# --- what each protocol estimates and against which truth ------------------------------------------------------


def protocols(metrics: pd.DataFrame, k: int) -> dict[str, tuple[str, str]]:
    """Protocol -> (estimate metric, truth metric) at the headline K, for those the configuration has."""
    have = set(metrics.metric.unique())
    out = {
        "holdout": (f"offline_holdout_recall@{k}", f"true_holdout_recall@{k}"),
        "shared": (f"offline_shared_recall@{k}", f"true_shared_recall@{k}"),
        "onpolicy_replay": (f"onpolicy_replay_recall@{k}", f"unbiased_recall@{k}"),
    }
    out.update({f"ope_{e}": (f"ope_{e}_clicks", "true_clicks") for e in ESTIMATORS})
    return {p: pair for p, pair in out.items() if pair[0] in have and pair[1] in have}


def wide(metrics: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """``(agent, seed, round) x metric`` values of ``names``."""
    sub = metrics[metrics.metric.isin(names)]
    return sub.pivot_table(index=["agent", "seed", "round"], columns="metric", values="value", aggfunc="first")


def bias_frame(metrics: pd.DataFrame, k: int) -> pd.DataFrame:
    """Long ``agent, seed, round, protocol, estimate, truth, bias`` for every protocol of one configuration."""
    pairs = protocols(metrics, k)
    w = wide(metrics, sorted({m for pair in pairs.values() for m in pair}))
    rows = []
    for proto, (est, tru) in pairs.items():
        part = w[[est, tru]].dropna().rename(columns={est: "estimate", tru: "truth"}).reset_index()
        rows.append(part.assign(protocol=proto, bias=part.estimate - part.truth))
    empty = pd.DataFrame(columns=["agent", "seed", "round", "protocol", "estimate", "truth", "bias"])
    return pd.concat(rows, ignore_index=True) if rows else empty


def last_rounds(frame: pd.DataFrame, window: int) -> pd.DataFrame:
    top = int(frame["round"].max())
    return frame[frame["round"] > top - window]


def per_seed(frame: pd.DataFrame, window: int, keys: Sequence[str], col: str = "bias") -> pd.DataFrame:
    """Mean of ``col`` per ``keys + [seed]`` over the last ``window`` rounds (the time average each seed contributes)."""
    return last_rounds(frame, window).groupby([*keys, "seed"], sort=False)[col].mean().reset_index()


def noise(frame: pd.DataFrame, window: int, keys: Sequence[str], col: str = "bias") -> pd.Series:
    """Across-seed sd of the per-round ``col``, averaged over the last ``window`` rounds: the noise of one evaluation."""
    sds = last_rounds(frame, window).groupby([*keys, "round"], sort=False)[col].std(ddof=1)
    return sds.groupby(level=list(range(len(keys)))).mean()


def gap(frame: pd.DataFrame, window: int) -> pd.Series:
    """Per protocol, the time-averaged truth of ``oracle`` minus ``random`` (the yardstick of effect sizes)."""
    means = last_rounds(frame, window).groupby(["protocol", "agent"])["truth"].mean().unstack("agent")
    if "oracle" not in means or "random" not in means:
        return pd.Series(math.nan, index=means.index)
    return means["oracle"] - means["random"]


def swaps(frame: pd.DataFrame, window: int) -> dict[str, str]:
    """Per protocol, the pair of agents whose order it inverts most often (share of seed-rounds), over the last rounds."""
    out = {}
    for proto, grp in last_rounds(frame, window).groupby("protocol"):
        est = grp.pivot_table(index=["seed", "round"], columns="agent", values="estimate")
        tru = grp.pivot_table(index=["seed", "round"], columns="agent", values="truth")
        best, share = "", 0.0
        names = list(est.columns)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                both = est[[a, b]].notna().all(axis=1) & tru[[a, b]].notna().all(axis=1)
                flip = ((np.sign(est[a] - est[b]) * np.sign(tru[a] - tru[b])) < 0)[both]
                if len(flip) and flip.mean() > share:
                    best, share = f"{a}/{b}", float(flip.mean())
        out[proto] = f"{best} ({share:.0%})" if best else "none"
    return out


def ordered_agents(metrics: pd.DataFrame, meta: dict) -> list[str]:
    present = set(metrics.agent)
    rest = [a for a in meta.get("agents", sorted(present)) if a not in REFERENCES]
    return [a for a in (*REFERENCES, *rest) if a in present]


def _share(flags: pd.Series) -> str:
    return f"{flags.mean():.0%}" if len(flags) else "–"


def _num(x: float) -> str:
    return f"{x:.2f}" if np.isfinite(x) else "–"


def _pval(p: float) -> str:
    return "–" if not np.isfinite(p) else ("< 0.001" if p < 1e-3 else f"{p:.3f}")


def mde(sd: float, n: int) -> float:
    """Minimal detectable paired difference at 80% power, two-sided 5%: (t_.975 + t_.80) sd / sqrt(n)."""
    if n < 2 or not np.isfinite(sd):
        return math.nan
    return (t_quantile(0.975, n - 1) + t_quantile(0.8, n - 1)) * sd / math.sqrt(n)


# --- sections ---------------------------------------------------------------------------------------------------


def header(meta: dict, regen: str | None, missing: list[str], agents_present: list[str]) -> list[str]:
    wall = meta.get("wall_s")
    wall_text = f"{wall / 60:.1f} min" if wall else "unknown (the run was cut short; the page was generated from what it had written)"
    per = ", ".join(f"{k} {v / 60:.1f} min" for k, v in meta.get("wall_per_config_s", {}).items())
    full = "python experiments/offline_evaluation.py --seeds 10 --rounds 20 --scale 1"
    reduced = meta["seeds"] < 10 or meta["rounds"] < 20 or meta["scale"] < 1
    out = [
        "# Offline evaluation, held against the truth (issue 12)",
        "",
        "*Generated by `experiments/offline_evaluation.py`; do not edit by hand.* Command: `"
        + meta["command"]
        + "`"
        + (f" (this page regenerated from the stored run with `{regen}`)" if regen else ""),
        "",
        f"- Commit: `{meta.get('commit', 'unknown')}` when the run started"
        + (f", `{meta['page_commit']}` when this page was generated" if meta.get("page_commit") else "")
        + f". Machine: {meta.get('machine', 'unknown')}. Wall time: {wall_text}"
        + (f" ({per}; configurations ran {meta.get('jobs', 1)} at a time)." if per else "."),
        '- The question (issue 12): *"how far does offline evaluation mislead me, and when does it rank methods wrongly?"* '
        "The practice it tests: a team picks the model that wins offline, by hold-out recall on its own logs, by a shared "
        "production log, or by an off-policy estimate of online clicks. Each estimate here sits next to its truth from the "
        "user model, on the same requests with the same denominators.",
        "- Tuning budget: none. Every agent runs at its registered defaults; nothing was tuned on these seeds or any other.",
        f"- Ran: {meta['seeds']} seeds (0..{meta['seeds'] - 1}), {meta['rounds']} rounds after the warm start, world scale "
        f"{meta['scale']:g}, agents " + ", ".join(f"`{a}`" for a in agents_present) + ". Time averages are over the last "
        f"{meta['window']} rounds of each seed; every ± is the half-width of the 95% t-interval over seeds.",
    ]
    if reduced:
        out.append(
            f"- **This is a reduced run, not the full design.** The full design is 10 seeds x 20 rounds on the presets at scale 1 "
            f"(`{full}`, the script's defaults); on this 2-core machine shared with other jobs it would take roughly "
            f"{_full_estimate(meta):.0f} hours. Each configuration is an ordinary run directory, so `cascadesim sweep` (or one "
            "invocation per `--presets`/`--shares` subset, on several machines, then `--from-run` over the joined directory) scales it out."
        )
    if missing:
        out.append("- **Not reached** by this run (no data, no rows below): " + ", ".join(f"`{m}`" for m in missing) + ".")
    return out + [""]


# Cost of a run grows as scale ** 1.5 (requests and items both scale). Measured here, 10 seeds x 5 rounds, scale 0.3 -> 1:
# `default` 2.3 -> 7.3 min (3.2x), `default+explore0.2` 2.4 -> 7.8 min (3.2x), `stochastic-serving` 5.5 -> ~37 min (6.7x);
# 0.3 ** -1.5 = 6.1 sits near the dearest configurations, which dominate the total.
SCALE_COST_EXPONENT = 1.5


def _full_estimate(meta: dict) -> float:
    """Hours for the full design, extrapolated from this run (linear in seeds x rounds, scale ** 1.5 in world size)."""
    wall = meta.get("wall_s") or sum(meta.get("wall_per_config_s", {}).values()) or math.nan
    factor = (10 / meta["seeds"]) * (20 / meta["rounds"]) / max(meta["scale"], 1e-9) ** SCALE_COST_EXPONENT
    return wall * factor / 3600


def setup_table(meta: dict, labels: list[str]) -> list[str]:
    rows = []
    for label in labels:
        sc = meta["scenarios"][label]
        w, c, tl, ev = sc["world"], sc["cascade"], sc["timeline"], sc["evaluation"]
        serving = "stochastic (Monte-Carlo propensities)" if c["stochastic"] else "deterministic"
        ope = ev["ope_logs"] if (c["stochastic"] or c["exploration_share"] > 0) else "none (no propensities)"
        rows.append([f"`{label}`", f"{w['n_users']} x {w['n_items']}", str(c["k_retrieve"]), str(c["slate_size"]),
                     str(tl["requests_per_round"]), serving, f"{c['exploration_share']:g}", ope,
                     f"{ev['holdout_share']:g}", f"{ev['shared_log_requests']} ({ev['shared_log_exploration']:g} uniform)",
                     str(meta["headline_k"][label])])  # fmt: skip
    head = ["configuration", "users x items", "K_r", "S", "requests/round", "serving", "exploration share", "OPE rows",
            "hold-out share", "shared log requests", "headline K"]  # fmt: skip
    return ["## Configurations", "", table(head, rows),
            "The four presets run as shipped (scaled as stated); `default+explore<s>` is `default` with "
            "`cascade.exploration_share = s` (the sweep's point 0 is `default` itself). The headline K is the largest K below "
            "K_r (`scenarios.experiment.headline_k`): at K >= K_r the replay of the serving model says nothing.", ""]  # fmt: skip


@dataclass
class ConfigStats:
    """What the page needs of one configuration: the bias frame, its leaderboard rows, the headline K."""

    label: str
    k: int
    bias: pd.DataFrame
    board: pd.DataFrame
    metrics: pd.DataFrame


def stats_of(metrics: pd.DataFrame, board: pd.DataFrame, meta: dict, label: str) -> ConfigStats:
    m = metrics[metrics.scenario == label]
    k = int(meta["headline_k"][label])
    return ConfigStats(label, k, bias_frame(m, k), mask_top1(board[board.scenario == label]), m)


def mask_top1(board: pd.DataFrame) -> pd.DataFrame:
    """Top-1 agreement set to NaN where tau is undefined: when the estimate ties every agent, ``top1_agreement``'s
    argmax picks the first agent by name, so its 0/1 says nothing (reported as a finding of this page)."""
    tau = board[board.metric.str.startswith("leaderboard_tau_")]
    undefined = {(r.seed, r["round"], r.metric.removeprefix("leaderboard_tau_")) for _, r in tau[tau.value.isna()].iterrows()}
    if not undefined:
        return board
    proto = board.metric.str.removeprefix("leaderboard_top1_")
    hit = [m.startswith("leaderboard_top1_") and (s, r, p) in undefined
           for m, s, r, p in zip(board.metric, board.seed, board["round"], proto, strict=True)]  # fmt: skip
    return board.assign(value=board.value.mask(pd.Series(hit, index=board.index)))


def tau_seed(st: ConfigStats, window: int, kind: str = "tau") -> pd.DataFrame:
    """Per protocol and seed, the time-averaged ``leaderboard_<kind>_<protocol>``."""
    b = st.board[st.board.metric.str.startswith(f"leaderboard_{kind}_")]
    b = b.assign(protocol=b.metric.str.removeprefix(f"leaderboard_{kind}_"), bias=b.value)
    return per_seed(b, window, ["protocol"]) if len(b) else pd.DataFrame(columns=["protocol", "seed", "bias"])


def proto_order(names: Sequence[str]) -> list[str]:
    base = ["holdout", "shared", "onpolicy_replay", *[f"ope_{e}" for e in ESTIMATORS]]
    return [p for p in base if p in set(names)]


def headline_tables(stats: list[ConfigStats], window: int) -> list[str]:
    """Protocol x configuration: leaderboard tau, top-1 agreement and mean |bias| in units of the oracle-random gap."""
    protos = proto_order({p for st in stats for p in st.bias.protocol.unique()})
    taus, tops, biases = [], [], []
    for proto in protos:
        tr, pr, br = [f"`{proto}`"], [f"`{proto}`"], [f"`{proto}`"]
        for st in stats:
            ts, ps = tau_seed(st, window), tau_seed(st, window, "top1")
            tr.append(fmt_plain(*interval(ts[ts.protocol == proto].bias)[:2], digits=2))
            pr.append(fmt_plain(*interval(ps[ps.protocol == proto].bias)[:2], digits=2))
            br.append(_gap_units(st, proto, window))
        taus.append(tr)
        tops.append(pr)
        biases.append(br)
    head = ["protocol", *[f"`{st.label}`" for st in stats]]
    return [
        "## Headline: does each protocol rank the agents as the truth does?", "",
        f"Kendall's tau-b between the agents' order by the protocol's estimate and by its truth (1: same order; 0: unrelated; "
        f"-1: reversed), per seed averaged over the last {window} rounds, then mean ± 95% interval over seeds. Every agent "
        "(the references `oracle`, `random`, `popular`, `bc` and the others) is in every ranking.", "",
        table(head, taus), "",
        "Top-1 agreement (share of seed-rounds where the protocol's best agent is the truth's best):", "",
        table(head, tops), "",
        "Mean |bias| over agents, in units of the truth's `oracle` - `random` gap on the same metric (so protocols on "
        "different scales compare; 1.0 = an error as large as the distance between the best and a random model), and in "
        "brackets the mean across-seed sd of one round's estimate in the same units:", "",
        table(head, biases), "",
    ]  # fmt: skip


def _gap_units(st: ConfigStats, proto: str, window: int) -> str:
    b = st.bias[st.bias.protocol == proto]
    if b.empty:
        return "–"
    g = gap(st.bias, window).get(proto, math.nan)
    if not np.isfinite(g) or abs(g) < 1e-12:
        return "–"
    seeds = per_seed(b, window, ["agent"])
    mean_abs = seeds.groupby("agent")["bias"].mean().abs().mean() / abs(g)
    sd = noise(b, window, ["agent"]).mean() / abs(g)
    return f"{mean_abs:.2f} ({sd:.2f})"


OUTCOMES = ("true_recall@{k}", "unbiased_recall@{k}", "slate_utility", "logged_ctr", "logged_finish_rate", "true_clicks", "exposure_gini")


def outcomes_table(st: ConfigStats, agents_present: list[str], window: int) -> str:
    """Per agent, the truth and the user-facing outcomes, time-averaged over the last rounds."""
    names = [n.format(k=st.k) for n in OUTCOMES if n.format(k=st.k) in set(st.metrics.metric)]
    m = st.metrics[st.metrics.metric.isin(names)].rename(columns={"value": "bias"})
    seeds = per_seed(m, window, ["agent", "metric"])
    rows = []
    for agent in agents_present:
        cells = [fmt_plain(*interval(seeds[(seeds.agent == agent) & (seeds.metric == n)].bias)[:2]) for n in names]
        rows.append([f"`{agent}`", *cells])
    return table(["agent", *names], rows)


def bias_table(st: ConfigStats, agents_present: list[str], window: int) -> str:
    """Protocol x agent: time-averaged bias ± 95% interval over seeds, and (sd) the across-seed sd of one round's bias."""
    seeds = per_seed(st.bias, window, ["protocol", "agent"])
    sds, gaps = noise(st.bias, window, ["protocol", "agent"]), gap(st.bias, window)
    rows = []
    for proto in proto_order(st.bias.protocol.unique()):
        cells = []
        for agent in agents_present:
            mean, half, _ = interval(seeds[(seeds.protocol == proto) & (seeds.agent == agent)].bias)
            sd = sds.get((proto, agent), math.nan)
            cells.append(fmt(mean, half) + (f" ({sd:.3f})" if np.isfinite(sd) else ""))
        est, tru = protocols(st.metrics, st.k)[proto]
        rows.append([f"`{proto}`", f"`{est}` - `{tru}`", *cells, f"{gaps.get(proto, math.nan):.3f}"])
    return table(["protocol", "estimate - truth", *[f"`{a}`" for a in agents_present], "truth gap oracle-random"], rows)


def leaderboard_table(st: ConfigStats, window: int, adjusted: dict[str, float]) -> str:
    taus, tops = tau_seed(st, window), tau_seed(st, window, "top1")
    lb = last_rounds(st.board, window)
    flips = swaps(st.bias, window)
    rows = []
    for proto in proto_order(taus.protocol.unique()):
        t = taus[taus.protocol == proto].bias
        mean, half, sd = interval(t)
        raw = lb[lb.metric == f"leaderboard_tau_{proto}"].value
        top = lb[lb.metric == f"leaderboard_top1_{proto}"].value
        p = adjusted.get(f"{st.label}: tau {proto} - tau holdout", math.nan)
        top1 = fmt_plain(*interval(tops[tops.protocol == proto].bias)[:2], digits=2)
        rows.append([f"`{proto}`", fmt_plain(mean, half, 2), fmt_plain(*tau_without(st, proto, window), digits=2), top1,
                     _share(raw.dropna() < 1 - 1e-9), _share(raw.dropna() < 0), _share(top.dropna() < 0.5),
                     _num(mde(sd, len(t))), _pval(p), flips.get(proto, "–"),
                     f"{_undecided(st, proto, window):.0%}"])  # fmt: skip
    head = ["protocol", "tau-b", "tau-b without `random`", "top-1", "seed-rounds with tau < 1 (a pair inverted or tied)", "with tau < 0",
            "with the wrong winner",
            "MDE of tau (80% power)", "tau vs holdout: Holm p", "most often inverted pair", "seed-rounds with tau undefined"]  # fmt: skip
    return table(head, rows)


def tau_without(st: ConfigStats, proto: str, window: int, drop: str = "random") -> tuple[float, float]:
    """Mean ± interval over seeds of the time-averaged tau-b recomputed without agent ``drop`` (isolates its artefact)."""
    from simulator.metrics.leaderboard import kendall_tau_b

    b = last_rounds(st.bias, window)
    b = b[(b.protocol == proto) & (b.agent != drop)]
    per: dict[int, list[float]] = {}
    for (seed, _), grp in b.groupby(["seed", "round"]):
        if len(grp) >= 2:
            per.setdefault(int(seed), []).append(kendall_tau_b(grp.estimate.to_numpy(float), grp.truth.to_numpy(float)))
    seeds = [float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for v in per.values()]
    return interval(seeds)[:2]


def _undecided(st: ConfigStats, proto: str, window: int) -> float:
    """Share of the last rounds' (seed, round) cells where tau is undefined (the estimate, or the truth, ties every agent)."""
    b = last_rounds(st.bias, window)
    cells = b[["seed", "round"]].drop_duplicates()
    lb = last_rounds(st.board, window)
    have = lb[(lb.metric == f"leaderboard_tau_{proto}") & lb.value.notna()]
    return 1 - len(have) / len(cells) if len(cells) else math.nan


def per_round_tables(st: ConfigStats, agent: str) -> list[str]:
    """Per round: each protocol's tau (mean ± interval over seeds) and ``agent``'s bias (the curves, as numbers)."""
    rounds = sorted(st.board["round"].unique())
    protos = proto_order(st.bias.protocol.unique())
    rows = []
    for r in rounds:
        cells = [fmt_plain(*interval(st.board[(st.board["round"] == r) & (st.board.metric == f"leaderboard_tau_{p}")].value)[:2], digits=2)
                 for p in protos]  # fmt: skip
        rows.append([str(r), *cells])
    out = ["Per round, tau-b of each protocol (mean ± interval over seeds):", "", table(["round", *protos], rows)]
    b = st.bias[st.bias.agent == agent]
    rows = [[str(r), *[fmt(*interval(b[(b["round"] == r) & (b.protocol == p)].bias)[:2]) for p in protos]] for r in rounds]
    return out + ["", f"Per round, the bias of `{agent}`'s candidate under each protocol:", "", table(["round", *protos], rows)]


def sweep_points(meta: dict, labels: list[str], base: str) -> list[tuple[float, str]]:
    """``(share, label)`` of the exploration sweep, the base preset as its share (0 as shipped) included."""
    pts = [(float(s), lab) for lab, s in meta.get("shares", {}).items() if s is not None and lab in labels]
    if base in labels:
        pts.append((float(meta["scenarios"][base]["cascade"]["exploration_share"]), base))
    return sorted(pts)


def comparisons(stats: dict[str, ConfigStats], sweep: list[tuple[float, str]], window: int) -> dict[str, float]:
    """Raw p-values of the page's paired comparisons (Holm-adjusted together by the caller)."""
    out: dict[str, float] = {}
    for label, st in stats.items():
        taus = tau_seed(st, window).pivot_table(index="seed", columns="protocol", values="bias")
        for proto in proto_order(taus.columns):
            if proto != "holdout" and "holdout" in taus:
                out[f"{label}: tau {proto} - tau holdout"] = paired_p((taus[proto] - taus["holdout"]).tolist())
    if len(sweep) >= 2:
        (s0, l0), rest = sweep[0], sweep[1:]
        t0 = tau_seed(stats[l0], window).pivot_table(index="seed", columns="protocol", values="bias")
        for s, lab in rest:
            t = tau_seed(stats[lab], window).pivot_table(index="seed", columns="protocol", values="bias")
            for proto in ("holdout", "shared"):
                if proto in t and proto in t0:
                    out[f"exploration {s:g} vs {s0:g}: tau {proto}"] = paired_p((t[proto] - t0[proto]).tolist())
        ope = [(s, lab) for s, lab in sweep if stats[lab].bias.protocol.str.startswith("ope_").any()]
        if len(ope) >= 2:
            (sa, la), (sb, lb) = ope[0], ope[-1]
            a, b = _abs_bias_seed(stats[la], window), _abs_bias_seed(stats[lb], window)
            for proto in sorted(set(a.columns) & set(b.columns)):
                out[f"exploration {sb:g} vs {sa:g}: mean |bias| {proto}"] = paired_p((b[proto] - a[proto]).tolist())
    return out


def _ips_pos_worse(st: ConfigStats, window: int) -> bool:
    a = _abs_bias_seed(st, window).mean()
    return "ope_ips_pos" in a and "ope_ips" in a and bool(a["ope_ips_pos"] > a["ope_ips"])


def _abs_bias_seed(st: ConfigStats, window: int) -> pd.DataFrame:
    """Seed x protocol: the mean over agents of |time-averaged bias| (OPE protocols only)."""
    ope = st.bias[st.bias.protocol.str.startswith("ope_")]
    seeds = per_seed(ope, window, ["protocol", "agent"])
    return seeds.assign(bias=seeds.bias.abs()).pivot_table(index="seed", columns="protocol", values="bias", aggfunc="mean")


def sweep_section(stats: dict[str, ConfigStats], sweep: list[tuple[float, str]], agents_present: list[str], window: int,
                  adjusted: dict[str, float], base: str) -> list[str]:  # fmt: skip
    if len(sweep) < 2:
        return []
    protos = proto_order({p for _, lab in sweep for p in stats[lab].bias.protocol.unique()})
    rows = []
    for s, lab in sweep:
        taus = tau_seed(stats[lab], window)
        rows.append([f"{s:g}", *[fmt_plain(*interval(taus[taus.protocol == p].bias)[:2], digits=2) for p in protos]])
    out = [f"## What the exploration share buys (`{base}`, `cascade.exploration_share` swept)", "",
           "Leaderboard tau-b per protocol (mean ± interval over seeds of the time-averaged tau). At share 0 no estimator has "
           "propensities to read (a configuration error if asked for), so the OPE columns start at the first positive share.", "",
           table(["exploration share", *protos], rows), ""]  # fmt: skip
    rows = []
    for s, lab in sweep:
        st = stats[lab]
        seeds, sds = per_seed(st.bias, window, ["protocol", "agent"]), noise(st.bias, window, ["protocol", "agent"])
        for p in [q for q in protos if q.startswith("ope_") and q in set(st.bias.protocol)]:
            cells = []
            for a in agents_present:
                mean, half, _ = interval(seeds[(seeds.protocol == p) & (seeds.agent == a)].bias)
                sd = sds.get((p, a), math.nan)
                cells.append(fmt(mean, half) + (f" ({sd:.3f})" if np.isfinite(sd) else ""))
            rows.append([f"{s:g}", f"`{p}`", *cells])
    if rows:
        out += ["Bias of each estimator of the candidate's clicks per request (estimate - `true_clicks`), time-averaged, ± interval "
                "over seeds, (sd) = across-seed sd of one round's bias:", "",
                table(["share", "estimator", *[f"`{a}`" for a in agents_present]], rows), ""]  # fmt: skip
    for name in (f"true_recall@{stats[sweep[0][1]].k}", "slate_utility", "logged_ctr"):
        rows = []
        for s, lab in sweep:
            m = stats[lab].metrics
            seeds = per_seed(m[m.metric == name].rename(columns={"value": "bias"}), window, ["agent"])
            rows.append([f"{s:g}", *[fmt_plain(*interval(seeds[seeds.agent == a].bias)[:2]) for a in agents_present]])
        out += [f"What the exploration costs the users: `{name}` (time-averaged) per share:", "",
                table(["share", *[f"`{a}`" for a in agents_present]], rows), ""]  # fmt: skip
    tests = {k: v for k, v in adjusted.items() if k.startswith("exploration")}
    if tests:
        out += ["Paired tests across shares (seeds paired; Holm-adjusted over every comparison on this page):", ""]
        out += [f"- {k}: Holm-adjusted p {'' if _pval(v).startswith('<') else '= '}{_pval(v)}" for k, v in sorted(tests.items())] + [""]
    return out


def findings(stats: dict[str, ConfigStats], presets: list[str], sweep: list[tuple[float, str]], window: int) -> list[str]:
    """The findings, worded from the numbers above (generated, so they follow the data)."""
    out = ["## Findings (generated from the tables above)", ""]
    for label in presets:
        st = stats[label]
        taus = tau_seed(st, window).groupby("protocol")["bias"].mean()
        if taus.empty:
            continue
        best, worst = taus.idxmax(), taus.idxmin()
        units = {p: _gap_units(st, p, window) for p in proto_order(st.bias.protocol.unique())}
        biased = max(units, key=lambda p: float(units[p].split()[0]) if units[p] != "–" else -1.0)
        parts = ", ".join(f"`{p}` {taus[p]:.2f} ({tau_without(st, p, window)[0]:.2f} without `random`)" for p in proto_order(taus.index))
        out.append(f"- `{label}` (K = {st.k}): leaderboard tau-b {parts}. Closest to the truth's order: `{best}`; farthest: "
                   f"`{worst}`. Largest mean |bias| relative to the oracle-random gap: `{biased}` ({units[biased]}).")  # fmt: skip
    if len(sweep) >= 2:
        (s0, l0), (s1, l1) = sweep[0], sweep[-1]
        t0, t1 = (tau_seed(stats[lab], window).groupby("protocol")["bias"].mean() for lab in (l0, l1))
        moved = ", ".join(f"`{p}` {t0[p]:.2f} -> {t1[p]:.2f}" for p in ("holdout", "shared") if p in t0 and p in t1)
        out.append(f"- Exploration share {s0:g} -> {s1:g} on `{l0}`: leaderboard tau-b {moved}.")
        ope = [(s, lab) for s, lab in sweep if stats[lab].bias.protocol.str.startswith("ope_").any()]
        if ope:
            parts = []
            for s, lab in ope:
                a = _abs_bias_seed(stats[lab], window).mean()
                parts.append(f"share {s:g}: " + ", ".join(f"`{p}` {v:.3f}" for p, v in a.items()))
            out.append("- Mean |bias| of the OPE estimates of clicks per request (over agents): " + "; ".join(parts) + ".")
            worse = [s for s, lab in ope if _ips_pos_worse(stats[lab], window)]
            if worse:
                out.append(
                    "- Did not reproduce: the item-position estimator (`ips_pos`, Li et al. 2018), unbiased under a position-based "
                    "click model, was expected to beat item-level IPS when examination falls with the slot; at share(s) "
                    + ", ".join(f"{s:g}" for s in worse)
                    + " its mean |bias| is the larger. Slot-level matches are rare (a uniform slate matches the target's item at "
                    "the same slot with probability about 1/M_live per slot), so its variance dominates at these sample sizes."
                )
    return out + [""]


PROTOCOLS = """## The protocols, each against its own truth (`simulator/metrics/offline.py`)

Every round, after the retrain, each agent's freshly trained *candidate* (the model that will serve next) is evaluated:

- `holdout`: the practitioner's default. A seeded 10% of the round's users is withheld from training; the candidate ranks
  the whole live catalogue for their clicked requests (history excluded) and is scored on their clicks
  (`offline_holdout_recall@K`); truth: the candidate top-K's share of the user's total true relevance over the live
  catalogue, same requests (`true_holdout_recall@K`).
- `shared`: one common log per seed served by the legacy system with a 20% uniform slice, identical for every agent
  (`offline_shared_recall@K` against `true_shared_recall@K`).
- `onpolicy_replay`: the *serving* model replayed on the clicks its own recall produced (`onpolicy_replay_recall@K`),
  against `unbiased_recall@K` on the truth panel (the only protocol whose truth is on other requests).
- `ope_<estimator>`: off-policy estimates of the candidate policy's clicks per request (candidate top-K_r -> ranker ->
  top-S) from the agent's own logged rows with propensities: `ips` and `ips_pos` (the item-position estimator of Li et
  al. 2018), `snips`, `dm` (the ranker as reward model) and `dr`; truth `true_clicks`, the expected clicks under the user
  model on the same requests.

The leaderboard rows (`leaderboard.parquet` of each run, copied beside this page) rank the agents by a protocol's
estimate and by its truth at each (seed, round).
"""


LIMITS = """## Limits, and what did not reproduce

- **Power.** {power}
- **`random` under the hold-out protocol is the on-policy replay.** The `random` agent is a hash of (seed, request id,
  item id), so its freshly trained candidate reproduces the very lists that served the held-out requests, and their
  clicks are all inside its top-K_r: its hold-out recall is the replay's, far above its truth. A practitioner's random
  baseline would draw fresh randomness; here it does not, and part of the hold-out protocol's bias (and of its leaderboard
  inversions involving `random`) is this artefact. The same mechanism, weaker, inflates every agent whose candidate is
  close to the model that served (`popular`, `oracle`): that part is the genuine feedback-loop bias of evaluating on
  one's own log.
- **The replay's truth is on other requests.** `onpolicy_replay_recall@K` is scored on the round's clicked requests and
  `unbiased_recall@K` on the fixed panel, so its "bias" mixes the replay's optimism with the difference between the two
  populations; the other protocols' truths are on their own requests.
- **Recall is not the user-facing outcome.** The recall protocols rank the candidate's top-K over the whole catalogue;
  the OPE estimators value the served policy (candidate top-K_r -> ranker -> top-S) in clicks per request. Their
  leaderboards therefore rank different things and need not agree with each other, only each with its own truth.
- **Deterministic presets have no OPE.** `default`, `popularity-trap` and `heavy-ssb` serve deterministically without
  exploration, so no logged propensities exist and no estimator runs there (asking for one is a configuration error);
  the estimators are measured on `stochastic-serving` (Monte-Carlo propensities of stochastic serving) and on the
  exploration sweep (exact propensities of the uniform slice).
- **Monte-Carlo propensities are floored.** {mc}
- **Item-level estimators ignore the slot.** `ips`, `snips` and `dr` credit a logged click to the target policy whenever
  it shows the item anywhere in its slate; with position bias (examination falls with the slot) that is biased whenever
  the target would show the item at another slot. `ips_pos` matches slots and is unbiased under a position-based model,
  at the price of far fewer matches (higher variance).
- **Top-1 where the estimate ties every agent.** `simulator.metrics.leaderboard.top1_agreement` takes `argmax` of the
  estimates, so when they all tie (e.g. every candidate scores 0 on a shared log with few clicks) it credits the
  agent that sorts first by name. The tables here drop top-1 wherever tau is undefined and say how often that happens.
- **Short horizon, small worlds.** {horizon}
"""


def limits(meta: dict, stats: dict[str, ConfigStats], window: int) -> str:
    n = meta["seeds"]
    mdes = []
    for label, st in stats.items():
        t = tau_seed(st, window)
        sd = t[t.protocol == "holdout"].bias.std(ddof=1) if (t.protocol == "holdout").any() else math.nan
        mdes.append(f"`{label}` {_num(mde(sd, n))}")
    power = (f"{n} seeds. The minimal detectable difference in the hold-out protocol's time-averaged tau-b (80% power, "
             f"two-sided 5%, paired over seeds) is " + ", ".join(mdes) + "; smaller differences read as ties.")  # fmt: skip
    horizon = (f"{meta['rounds']} rounds at world scale {meta['scale']:g} (the design: 20 rounds at scale 1). The feedback "
               "loop has had few retrains to compound, so the biases here are those of an early loop; the full design's "
               "longer horizon is where exposure concentration (and with it the hold-out protocol's optimism) grows.")  # fmt: skip
    if meta["rounds"] >= 20 and meta["scale"] >= 1:
        horizon = f"{meta['rounds']} rounds at the presets' scale; the catalogue is under 100 x K_r on most presets."
    stoch = {lab: sc["cascade"]["propensity_samples"] for lab, sc in meta["scenarios"].items() if sc["cascade"]["stochastic"]}
    mc = "No configuration serves stochastically here."
    if stoch:
        lab, n_mc = next(iter(stoch.items()))
        mc = (f"On `{lab}` each exposure propensity is `(hits + 1) / ({n_mc} + 1)` over {n_mc} Monte-Carlo draws plus the "
              f"realised one, so no logged propensity is below 1/{n_mc + 1}: an item the logging policy rarely shows gets too "
              "small a weight, which can pull IPS-type estimates of a target policy unlike the logging one down. More draws "
              "(`cascade.propensity_samples`) trade serving time for less of this bias.")  # fmt: skip
    return LIMITS.format(power=power, horizon=horizon, mc=mc)


def page(metrics: pd.DataFrame, board: pd.DataFrame, meta: dict, regen: str | None) -> str:
    """The Markdown page."""
    labels = [lab for lab in meta["labels"] if lab in set(metrics.scenario)]
    missing = [lab for lab in meta["labels"] if lab not in labels]
    window, present = int(meta["window"]), ordered_agents(metrics, meta)
    stats = {lab: stats_of(metrics, board, meta, lab) for lab in labels}
    presets = [lab for lab in labels if meta.get("shares", {}).get(lab) is None]
    base = "default"
    sweep = sweep_points(meta, labels, base)
    adjusted = holm(comparisons(stats, sweep, window))
    out = header(meta, regen, missing, present) + setup_table(meta, labels)
    out += PROTOCOLS.splitlines() + [""]
    out += headline_tables([stats[lab] for lab in labels], window)
    out += findings(stats, presets, sweep, window)
    for lab in labels:
        st = stats[lab]
        out += [f"## `{lab}` (headline K = {st.k})", "",
                f"Truth and user-facing outcomes per agent (time-averaged over the last {window} rounds):", "",
                outcomes_table(st, present, window), "",
                "Bias (estimate - truth, same requests and denominators), time-averaged, ± 95% interval over seeds; in "
                "brackets the across-seed sd of one round's bias (the noise of a single evaluation):", "",
                bias_table(st, present, window), "",
                f"Leaderboard agreement (last {window} rounds; the Holm p compares each protocol's tau with the hold-out "
                "protocol's, paired over seeds, adjusted over every comparison on this page):", "",
                leaderboard_table(st, window, adjusted), "", *per_round_tables(st, "bc" if "bc" in present else present[0]),
                ""]  # fmt: skip
    out += sweep_section(stats, sweep, present, window, adjusted, base)
    out += [limits(meta, stats, window)]
    return "\n".join(out) + "\n"
