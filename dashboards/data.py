"""Run directories as tables for the figures: reading, long -> wide, means and 95% intervals across seeds.

A run directory holds ``manifest.json`` and ``metrics.parquet`` in long form
(``scenario, agent, seed, round, metric, value``). This module reads them
with pandas and :mod:`simulator.checkpoint` only (dashboards never import
the simulator's internals, the agents or the experiment runner), so a report
draws exactly the numbers the run wrote: no metric is recomputed here.

Across seeds every figure shows the mean and a two-sided 95% t-interval,
``mean +/- t(0.975, n - 1) * sd / sqrt(n)`` with the sample standard
deviation (``n - 1`` in the denominator); one seed gives no interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.checkpoint import RunDirError, read_json, read_metrics
from simulator.log.schema import METRIC_COLUMNS  # noqa: F401  (re-exported for dashboard users)

STAT_COLUMNS = ["run", "agent", "metric", "round", "n", "mean", "lo", "hi"]


@dataclass(frozen=True)
class Run:
    """One run directory: its label (unique within a report), manifest and long metrics (with a ``run`` column)."""

    label: str
    path: Path
    manifest: dict[str, Any]
    metrics: pd.DataFrame = field(repr=False)

    @property
    def scenario(self) -> dict[str, Any]:
        sc = self.manifest.get("scenario", {})
        return sc if isinstance(sc, dict) else {}

    @property
    def description(self) -> str:
        return str(self.scenario.get("description", "") or "")

    @property
    def agents(self) -> list[str]:
        """Agents in manifest order, then any others present in the metrics."""
        listed = [str(a) for a in self.manifest.get("agents", [])]
        return _unique(listed + list(pd.unique(self.metrics["agent"])))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def read_run(run_dir: str | Path, label: str | None = None) -> Run:
    """Read one run directory; a one-line :class:`RunDirError` if it is missing or corrupt."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run: {path} is not a directory")
    manifest = read_json(path / "manifest.json", "manifest")
    if not isinstance(manifest, dict):
        raise RunDirError(f"manifest: {path / 'manifest.json'} is not a JSON object")
    parquet = path / "metrics.parquet"
    metrics = read_metrics(parquet)
    if metrics.empty:
        raise RunDirError(f"metrics: {parquet} holds no rows")
    name = label or str(manifest.get("scenario", {}).get("name") or path.name)
    metrics = metrics.assign(run=name, agent=metrics["agent"].astype(str), metric=metrics["metric"].astype(str))
    metrics["round"] = metrics["round"].astype("int64")
    metrics["value"] = metrics["value"].astype("float64")
    return Run(name, path, manifest, metrics)


def read_runs(run_dirs: Sequence[str | Path]) -> list[Run]:
    """Read several run directories with unique labels: the scenario name, then the folder name if needed."""
    if not run_dirs:
        raise RunDirError("run: give at least one run directory")
    runs = [read_run(d) for d in run_dirs]
    labels = [r.label for r in runs]
    out = []
    for i, run in enumerate(runs):
        label = run.label
        if labels.count(label) > 1:
            label = f"{run.label} ({run.path.name})"
            if sum(f"{r.label} ({r.path.name})" == label for r in runs) > 1:
                label = f"{label} #{i + 1}"
        out.append(Run(label, run.path, run.manifest, run.metrics.assign(run=label)) if label != run.label else run)
    return out


@lru_cache(maxsize=None)
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


def combine(runs: Sequence[Run]) -> pd.DataFrame:
    """The long metrics of several runs in one frame (with the ``run`` column)."""
    return pd.concat([r.metrics for r in runs], ignore_index=True)


def select(metrics: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """Rows of the given metrics only."""
    return metrics[metrics["metric"].isin(list(names))]


def to_wide(metrics: pd.DataFrame, names: Iterable[str] | None = None) -> pd.DataFrame:
    """Long -> wide: one row per (run, agent, seed, round), one column per metric."""
    frame = metrics if names is None else select(metrics, names)
    keys = [c for c in ("run", "agent", "seed", "round") if c in frame.columns]
    return frame.pivot_table(index=keys, columns="metric", values="value", aggfunc="first", dropna=False).reset_index()


def seed_stats(metrics: pd.DataFrame, names: Iterable[str] | None = None) -> pd.DataFrame:
    """Per (run, agent, metric, round): seeds with a value ``n``, their ``mean`` and the 95% t-interval ``lo``, ``hi``.

    NaN values are left out (``n`` counts the others); ``n < 2`` gives NaN bounds.
    """
    frame = metrics if names is None else select(metrics, names)
    if frame.empty:
        return pd.DataFrame(columns=STAT_COLUMNS)
    grouped = frame.groupby(["run", "agent", "metric", "round"], sort=True)["value"]
    stats = grouped.agg(n="count", mean="mean", sd="std").reset_index()
    t = stats["n"].map(lambda n: t_quantile(int(n) - 1) if n >= 2 else math.nan)
    half = t * stats["sd"] / stats["n"].clip(lower=1).pow(0.5)
    stats["lo"] = stats["mean"] - half
    stats["hi"] = stats["mean"] + half
    stats["n"] = stats["n"].astype("int64")
    return stats[STAT_COLUMNS]


def family(names: Iterable[str], prefix: str) -> dict[float, str]:
    """Metrics ``prefix@<number>`` present in ``names``, keyed and sorted by the number."""
    out = {}
    for name in set(names):
        head, sep, tail = name.partition("@")
        if sep and head == prefix:
            try:
                out[float(tail)] = name
            except ValueError:
                continue
    return dict(sorted(out.items()))


def recall_ks(names: Iterable[str]) -> list[int]:
    """Cut-offs K with both ``true_recall@K`` and ``logged_recall@K`` present."""
    names = set(names)
    true, logged = family(names, "true_recall"), family(names, "logged_recall")
    return sorted(int(k) for k in true if k in logged and float(k).is_integer())


def default_k(names: Iterable[str]) -> int | None:
    """K = 100 when present, else the largest K with both recalls."""
    ks = recall_ks(names)
    if not ks:
        return None
    return 100 if 100 in ks else max(ks)


def last_round_summary(metrics: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per (run, agent, metric): the statistics of each run's last round (``seed_stats`` rows)."""
    frame = select(metrics, names)
    if frame.empty:
        return pd.DataFrame(columns=STAT_COLUMNS)
    last = frame.groupby("run")["round"].transform("max")
    return seed_stats(frame[frame["round"] == last])


@dataclass(frozen=True)
class Dataset:
    """What a figure draws: long metrics of one or more runs, with run and agent order.

    ``palette`` is every agent of the runs (sorted), so colours stay the same
    when a figure shows a subset of them.
    """

    metrics: pd.DataFrame = field(repr=False)
    runs: tuple[str, ...]
    agents: tuple[str, ...]
    palette: tuple[str, ...]

    @classmethod
    def from_runs(cls, runs: Sequence[Run]) -> Dataset:
        agents = tuple(_unique(a for r in runs for a in r.agents))
        return cls(combine(runs), tuple(r.label for r in runs), agents, tuple(sorted(agents)))

    @property
    def names(self) -> set[str]:
        return set(pd.unique(self.metrics["metric"]))

    @property
    def rounds(self) -> list[int]:
        return sorted(int(r) for r in pd.unique(self.metrics["round"]))

    @property
    def seeds(self) -> list[int]:
        return sorted(int(s) for s in pd.unique(self.metrics["seed"]))

    def subset(self, runs: Iterable[str] | None = None, agents: Iterable[str] | None = None,
               rounds: tuple[int, int] | None = None) -> Dataset:
        """Some runs, agents and an inclusive round window; colours (``palette``) are kept."""
        keep_runs = self.runs if runs is None else tuple(r for r in self.runs if r in set(runs))
        keep_agents = self.agents if agents is None else tuple(a for a in self.agents if a in set(agents))
        m = self.metrics
        mask = m["run"].isin(keep_runs) & m["agent"].isin(keep_agents)
        if rounds is not None:
            mask &= m["round"].between(int(rounds[0]), int(rounds[1]))
        return Dataset(m[mask], keep_runs, keep_agents, self.palette)
