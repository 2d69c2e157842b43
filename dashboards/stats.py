"""Means and 95% intervals across seeds, clipped to each metric's range, and the difference of two runs.

Across seeds every figure shows the mean and a two-sided 95% t-interval,
``mean +/- t(0.975, n - 1) * sd / sqrt(n)`` with the sample standard
deviation (``n - 1`` in the denominator); one seed gives no interval. The
t-interval knows nothing of a metric's bounds (with 2 seeds ``t = 12.7``), so
both ends are clipped to the metric's possible values
(:func:`dashboards.catalog.metric_range`): a recall band never leaves [0, 1].
The difference of two runs uses Welch's interval (seeds of different runs are
independent), with the Welch-Satterthwaite degrees of freedom rounded down.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache

import numpy as np
import pandas as pd

from dashboards.catalog import metric_range

STAT_COLUMNS = ["run", "agent", "metric", "round", "n", "mean", "lo", "hi"]


@cache
def t_quantile(dof: int, q: float = 0.975) -> float:
    """Quantile ``q`` of Student's t with ``dof`` degrees of freedom (bisection on the exact CDF)."""
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    lo, hi = 0.0, 1e4
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, dof) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _t_cdf(t: float, dof: int) -> float:
    x = dof / (dof + t * t)
    tail = 0.5 * _betainc(0.5 * dof, 0.5, x)
    return 1.0 - tail if t >= 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)), -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return front * h / a


def seed_stats(metrics: pd.DataFrame, names: Iterable[str] | None = None) -> pd.DataFrame:
    """Per (run, agent, metric, round): seeds with a value ``n``, their ``mean`` and the 95% t-interval ``lo``, ``hi``.

    NaN values are left out (``n`` counts the others); ``n < 2`` gives NaN bounds.
    The bounds are clipped to the metric's range.
    """
    frame = metrics if names is None else metrics[metrics["metric"].isin(list(names))]
    if frame.empty:
        return pd.DataFrame(columns=STAT_COLUMNS)
    grouped = frame.groupby(["run", "agent", "metric", "round"], sort=True)["value"]
    stats = grouped.agg(n="count", mean="mean", sd="std").reset_index()
    t = stats["n"].map(lambda n: t_quantile(int(n) - 1) if n >= 2 else math.nan)
    half = t * stats["sd"] / stats["n"].clip(lower=1).pow(0.5)
    stats["lo"], stats["hi"] = clip_to_range(stats["metric"], stats["mean"] - half, stats["mean"] + half)
    stats["n"] = stats["n"].astype("int64")
    return stats[STAT_COLUMNS]


def clip_to_range(metric: pd.Series, lo: pd.Series, hi: pd.Series, widen: bool = False) -> tuple[pd.Series, pd.Series]:
    """``lo`` and ``hi`` clipped to each metric's range (``widen``: the range of a difference, ``[a - b, b - a]``)."""
    ranges = {m: metric_range(m) for m in pd.unique(metric)}
    if widen:
        ranges = {m: None if r is None else (r[0] - r[1], r[1] - r[0]) for m, r in ranges.items()}
    low = metric.map({m: (-math.inf if r is None else r[0]) for m, r in ranges.items()}).astype("float64")
    high = metric.map({m: (math.inf if r is None else r[1]) for m, r in ranges.items()}).astype("float64")
    return lo.clip(lower=low, upper=high), hi.clip(lower=low, upper=high)


def diff_stats(stats: pd.DataFrame, sds: pd.DataFrame, run_a: str, run_b: str) -> pd.DataFrame:
    """Mean of ``run_a`` minus mean of ``run_b`` per (agent, metric, round) in both, with Welch's 95% interval.

    ``stats`` are :func:`seed_stats` rows, ``sds`` the matching sample sds (:func:`seed_sds`);
    the ``run`` column of the result is ``"A − B"`` and ``n`` the smaller number of seeds.
    """
    keys = ["agent", "metric", "round"]
    a = stats[stats["run"] == run_a].merge(sds[sds["run"] == run_a], on=["run", *keys])
    b = stats[stats["run"] == run_b].merge(sds[sds["run"] == run_b], on=["run", *keys])
    both = a.merge(b, on=keys, suffixes=("_a", "_b"))
    va, vb = both["sd_a"] ** 2 / both["n_a"], both["sd_b"] ** 2 / both["n_b"]
    se = np.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (both["n_a"] - 1) + vb**2 / (both["n_b"] - 1))
    t = dof.map(lambda d: t_quantile(max(1, int(math.floor(d)))) if d == d and d > 0 else math.nan)
    half = (t * se).where(se > 0, 0.0).where((both["n_a"] >= 2) & (both["n_b"] >= 2))
    out = both[keys].assign(
        run=f"{run_a} − {run_b}", n=np.minimum(both["n_a"], both["n_b"]).astype("int64"), mean=both["mean_a"] - both["mean_b"]
    )
    out["lo"], out["hi"] = clip_to_range(out["metric"], out["mean"] - half, out["mean"] + half, widen=True)
    return out[STAT_COLUMNS]


def seed_sds(metrics: pd.DataFrame, names: Iterable[str] | None = None) -> pd.DataFrame:
    """Per (run, agent, metric, round): the sample sd of the seeds' values (``sd``)."""
    frame = metrics if names is None else metrics[metrics["metric"].isin(list(names))]
    return frame.groupby(["run", "agent", "metric", "round"], sort=True)["value"].std().rename("sd").reset_index()
