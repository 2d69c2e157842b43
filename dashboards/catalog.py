"""The metric catalogue the dashboards show: groups, definitions, value ranges, numeric order, internals.

Definitions come from :data:`simulator.metrics.definitions.METRICS` (what
``cascadesim list metrics`` prints), looked up by the metric's family
(``true_recall@50`` -> ``true_recall@K``), plus the few quantities the
dashboards derive themselves (:data:`DERIVED`). Internals (Lorenz points,
decile shares, histogram bins) are drawn by their own figures and hidden from
the metric picker. Ranges are the mathematically possible values of a metric;
confidence bands are clipped to them (a t-interval knows no bounds).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from simulator.metrics.definitions import METRICS

DERIVED: dict[str, str] = {
    "exposure_top_share": "computed by the dashboards: share of the round's exposures going to the most-exposed share q of live items, "
    "1 - exposure_lorenz@(1 - q), and exposure_top1_share at q = 0.01",
    "score_auc_unexposed": "computed by the dashboards from score_hist_pos@b / score_hist_neg@b: the chance that a never-exposed true "
    "positive outscores a never-exposed negative (0.5 = no separation), ties within one of the 20 bins counted as half; "
    "scale-free, so agents whose scores live on different scales can be compared",
}

# (key, heading) in picker order; a metric's group is found from its family name in GROUP_OF.
GROUPS: tuple[tuple[str, str], ...] = (
    ("truth", "Truth (against the ground truth, never visible to agents)"),
    ("offline", "Offline (logged) evaluation"),
    ("ranker", "After the platform ranker"),
    ("exposure", "Exposure & popularity"),
    ("drift", "Drift & homogenisation"),
    ("scores", "Scores on unexposed items"),
    ("population", "Population"),
    ("fit", "Fit diagnostics (training)"),
    ("other", "Other"),
)
_FAMILIES: dict[str, tuple[str, ...]] = {
    "truth": (
        "true_recall",
        "unbiased_recall",
        "unbiased_precision",
        "unbiased_hitrate",
        "true_ndcg",
        "retrieval_slate_utility",
        "retrieval_slate_regret",
        "true_top_ever_exposed",
        "true_exposed_relevance",
        "true_attention_rate",
        *(f"mini_app_{m}" for m in ("true_recall", "true_ndcg", "unbiased_recall", "unbiased_precision", "unbiased_hitrate")),
        "mini_app_retrieval_slate_utility",
        "mini_app_retrieval_slate_regret",
    ),
    "offline": (
        "offline_holdout_recall",
        "true_holdout_recall",
        "bias_holdout_recall",
        "offline_shared_recall",
        "true_shared_recall",
        "bias_shared_recall",
        "true_clicks",
        "true_finished",
        "onpolicy_replay_recall",
        "onpolicy_replay_precision",
        "onpolicy_replay_f1",
        "onpolicy_replay_hitrate",
        "logged_ctr",
        "logged_finish_rate",
    ),
    "ranker": ("slate_utility", "slate_regret", "ranked_true_recall", "ranked_true_ndcg", "ranked_true_map", "ranked_true_hr"),
    "exposure": (
        "exposure_gini",
        "exposure_top1_share",
        "aggregate_diversity",
        "coverage",
        "long_tail_coverage",
        "novelty",
        "mean_exposed_popularity",
        "popularity_index",
        "ssb_divergence",
        "exposure_lorenz",
        "exposure_share_decile",
        "exposure_top_share",
    ),
    "drift": ("preference_drift", "homogenisation"),
    "scores": (
        "score_auc_unexposed",
        "score_gap_unexposed",
        "score_unexposed_true_pos",
        "score_unexposed_true_neg",
        "score_hist_pos",
        "score_hist_neg",
        "score_hist_lo",
        "score_hist_hi",
    ),
    "population": ("live_items", "active_users"),
}
GROUP_OF: dict[str, str] = {fam: key for key, fams in _FAMILIES.items() for fam in fams}
INTERNAL_FAMILIES = frozenset(
    {"exposure_lorenz", "exposure_share_decile", "exposure_top_share", "score_hist_pos", "score_hist_neg", "score_hist_lo", "score_hist_hi"}
)

UNIT = (0.0, 1.0)
_UNIT_OFFLINE = tuple(f for f in _FAMILIES["offline"] if f not in ("true_clicks", "true_finished") and not f.startswith("bias_"))
SIGNED_UNIT = (-1.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)
_RANGES: dict[str, tuple[float, float]] = {
    **{
        fam: UNIT
        for fam in (
            *_UNIT_OFFLINE,
            *_FAMILIES["ranker"],
            "true_recall",
            "unbiased_recall",
            "unbiased_precision",
            "unbiased_hitrate",
            "true_ndcg",
            "retrieval_slate_utility",
            "true_top_ever_exposed",
            "true_exposed_relevance",
            "true_attention_rate",
            "exposure_gini",
            "exposure_top1_share",
            "coverage",
            "long_tail_coverage",
            "popularity_index",
            "ssb_divergence",
            "exposure_lorenz",
            "exposure_share_decile",
            "exposure_top_share",
            "homogenisation",
            "score_hist_pos",
            "score_hist_neg",
            "score_auc_unexposed",
        )
    },
    "retrieval_slate_regret": SIGNED_UNIT,
    "slate_regret": SIGNED_UNIT,
    "preference_drift": (0.0, 2.0),  # 1 - cos
    **{fam: NON_NEGATIVE for fam in ("aggregate_diversity", "novelty", "mean_exposed_popularity", "live_items", "active_users")},
}


def family_of(name: str) -> str:
    """``true_recall@50`` -> ``true_recall``; a name without ``@`` is its own family."""
    return name.partition("@")[0]


def param_of(name: str) -> float | None:
    """The number after ``@`` (``@50`` -> 50.0), or None."""
    head, sep, tail = name.partition("@")
    if not sep:
        return None
    try:
        return float(tail)
    except ValueError:
        return None


# offline evaluation (simulator/metrics/offline.py): protocol x metric x K, estimator x target, so matched by prefix
OFFLINE_PREFIXES = ("offline_", "true_holdout_", "true_shared_", "bias_", "ope_", "onpolicy_replay_", "leaderboard_")
_OFFLINE_RANGES: tuple[tuple[tuple[str, ...], tuple[float, float] | None], ...] = (
    (("bias_ope_",), None),
    (("leaderboard_tau_",), SIGNED_UNIT),
    (("leaderboard_top1_",), UNIT),
    (("bias_",), SIGNED_UNIT),
    (("ope_", "true_clicks", "true_finished", "offline_holdout_requests", "offline_shared_requests"), NON_NEGATIVE),
    (("offline_", "true_holdout_", "true_shared_", "onpolicy_replay_"), UNIT),
)


def group_of(name: str) -> str:
    """The picker group key of a metric (``fit_*`` -> fit, the offline protocols by prefix, unknown -> other)."""
    fam = family_of(name)
    if fam.startswith("fit_"):
        return "fit"
    if fam.startswith(OFFLINE_PREFIXES):
        return "offline"
    return GROUP_OF.get(fam, "other")


def is_internal(name: str) -> bool:
    """Lorenz points, decile shares and histogram bins: drawn by their own figures, hidden from the picker."""
    return family_of(name) in INTERNAL_FAMILIES


def definition(name: str) -> str:
    """The definition ``cascadesim list metrics`` prints for this metric's family ('' when none is recorded)."""
    fam = family_of(name)
    if name in METRICS:
        return METRICS[name]
    if fam in DERIVED:
        return DERIVED[fam]
    for key, text in METRICS.items():
        if "@" in key and family_of(key) == fam:
            return text
    for key, text in METRICS.items():  # pattern names: offline_shared_<metric>@K, ope_<estimator>_clicks, ...
        if "<" in key and not key.startswith("fit_") and _pattern(key).fullmatch(name):
            return text
    return METRICS.get("fit_<name>", "") if fam.startswith("fit_") else ""


def _pattern(key: str) -> re.Pattern[str]:
    """A documented name with ``<placeholders>`` and an ``@K``-style suffix as a regular expression."""
    head, sep, _ = key.partition("@")
    body = re.sub(r"<[a-z]+>", "[a-z0-9_]+", re.escape(head).replace(r"\<", "<").replace(r"\>", ">"))
    return re.compile(body + (r"@[0-9.]+" if sep else ""))


def metric_range(name: str) -> tuple[float, float] | None:
    """The possible values of a metric (bands are clipped to it), or None when unbounded or unknown."""
    fam = family_of(name)
    if fam in _RANGES or not fam.startswith((*OFFLINE_PREFIXES, "true_clicks", "true_finished")):
        return _RANGES.get(fam)
    return next((rng for prefixes, rng in _OFFLINE_RANGES if fam.startswith(prefixes)), None)


def sort_key(name: str) -> tuple[str, float, str]:
    """Family name, then the ``@`` number numerically (``@10 < @20 < @50 < @100``)."""
    p = param_of(name)
    return (family_of(name), -math.inf if p is None else p, name)


def sorted_metrics(names: Iterable[str]) -> list[str]:
    """Names in catalogue order: by group, then family order within the group, then numerically by ``@``."""
    order = {fam: i for i, fam in enumerate(fam for fams in _FAMILIES.values() for fam in fams)}
    groups = {key: i for i, (key, _) in enumerate(GROUPS)}
    return sorted(set(names), key=lambda n: (groups[group_of(n)], order.get(family_of(n), len(order)), *sort_key(n)))


def grouped(names: Iterable[str], internals: bool = False) -> list[tuple[str, str, list[str]]]:
    """``(group key, heading, metrics)`` for every non-empty group, internals left out unless asked for."""
    keep = [n for n in sorted_metrics(names) if internals or not is_internal(n)]
    return [(key, heading, [n for n in keep if group_of(n) == key]) for key, heading in GROUPS if any(group_of(n) == key for n in keep)]
