"""Run directories as tables for the figures: reading, long -> wide, means and 95% intervals across seeds.

A run directory holds ``manifest.json`` and ``metrics.parquet`` in long form
(``scenario, agent, seed, round, metric, value``). This module reads them
with pandas and :mod:`simulator.checkpoint` only (dashboards never import
the simulator's internals, the agents or the experiment runner), so a report
draws the numbers the run wrote: no metric is recomputed here (the one
derived quantity, a scale-free score AUC from the stored histograms, is
added by :mod:`dashboards.derived` under its own name).

Rounds are numbered as users count them: ``metrics.parquet`` stores the first
round as 0, every table, figure and CSV of the dashboards calls it round 1
(``ROUND_BASE`` is added on reading). Means and intervals across seeds are in
:mod:`dashboards.stats`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dashboards.derived import add_derived
from dashboards.stats import STAT_COLUMNS, seed_stats, t_quantile  # noqa: F401  (re-exported for dashboard users)
from simulator.checkpoint import RunDirError, read_json, read_metrics
from simulator.log.schema import METRIC_COLUMNS  # noqa: F401  (re-exported for dashboard users)

ROUND_BASE = 1  # stored round 0 is shown as round 1


@dataclass(frozen=True)
class Run:
    """One run directory: its label (unique within a report), manifest and long metrics (with a ``run`` column)."""

    label: str
    path: Path
    manifest: dict[str, Any]
    metrics: pd.DataFrame = field(repr=False)
    leaderboard: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)  # leaderboard.parquet (empty if absent)

    @property
    def scenario(self) -> dict[str, Any]:
        sc = self.manifest.get("scenario", {})
        return sc if isinstance(sc, dict) else {}

    @property
    def description(self) -> str:
        return str(self.scenario.get("description", "") or "")

    @property
    def agents(self) -> list[str]:
        """Agents with metrics, in manifest order, then any others present in the metrics."""
        present = set(pd.unique(self.metrics["agent"]))
        return [a for a in _unique(self.listed_agents + list(pd.unique(self.metrics["agent"]))) if a in present]

    @property
    def listed_agents(self) -> list[str]:
        """Agents the manifest says the run is for (some may have no metrics yet)."""
        return [str(a) for a in self.manifest.get("agents", [])]

    @property
    def k_retrieve(self) -> int | None:
        """The cascade's retrieval size K_r (logged recall@K is degenerate, ~1, for K >= K_r), if the manifest records it."""
        cascade = self.scenario.get("cascade", {})
        value = cascade.get("k_retrieve") if isinstance(cascade, dict) else None
        return int(value) if isinstance(value, (int, float)) and value > 0 else None


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
    metrics = metrics.assign(
        agent=metrics["agent"].astype(str),
        metric=metrics["metric"].astype(str),
        round=metrics["round"].astype("int64") + ROUND_BASE,
        value=metrics["value"].astype("float64"),
    )
    metrics = add_derived(metrics).assign(run=name)
    return Run(name, path, manifest, metrics, _read_leaderboard(path / "leaderboard.parquet"))


def _read_leaderboard(path: Path) -> pd.DataFrame:
    """The run's leaderboard agreement rows (rounds from 1), or an empty frame when the run has none."""
    if not path.is_file():
        return pd.DataFrame(columns=["seed", "round", "metric", "value"])
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise RunDirError(f"leaderboard: {path} is not a readable Parquet file ({type(err).__name__})") from None
    return frame.assign(round=frame["round"].astype("int64") + ROUND_BASE)


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
        out.append(Run(label, run.path, run.manifest, run.metrics.assign(run=label), run.leaderboard) if label != run.label else run)
    return out


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
    """Cut-offs K with both ``true_recall@K`` and ``offline_holdout_recall@K`` present."""
    names = set(names)
    true, logged = family(names, "true_recall"), family(names, "offline_holdout_recall")
    return sorted(int(k) for k in true if k in logged and float(k).is_integer())


def default_k(names: Iterable[str], k_retrieve: int | None = None) -> int | None:
    """The headline K: the largest K with both recalls below ``k_retrieve`` (where logged recall is not ~1 by construction).

    Without ``k_retrieve``, or when no K is below it, the largest K.
    """
    return pick_k(recall_ks(names), k_retrieve)


def pick_k(ks: Sequence[int], k_retrieve: int | None = None) -> int | None:
    """The largest of ``ks`` below ``k_retrieve`` (or the largest of all when none is below, or without ``k_retrieve``)."""
    below = [k for k in ks if k_retrieve is None or k < k_retrieve]
    return max(below or ks) if ks else None


def last_round_summary(metrics: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per (run, agent, metric): the statistics of that agent's last round in the run (``seed_stats`` rows)."""
    frame = select(metrics, names)
    if frame.empty:
        return pd.DataFrame(columns=STAT_COLUMNS)
    last = frame.groupby(["run", "agent"])["round"].transform("max")
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
    k_retrieve: int | None = None
    leaderboard: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)  # every run's leaderboard rows, with ``run``

    @classmethod
    def from_runs(cls, runs: Sequence[Run]) -> Dataset:
        agents = tuple(_unique(a for r in runs for a in r.agents))
        palette = tuple(sorted(_unique(a for r in runs for a in [*r.listed_agents, *r.agents])))
        kr = [r.k_retrieve for r in runs if r.k_retrieve is not None]
        boards = [r.leaderboard.assign(run=r.label) for r in runs if not r.leaderboard.empty]
        board = pd.concat(boards, ignore_index=True) if boards else pd.DataFrame(columns=["run", "seed", "round", "metric", "value"])
        return cls(combine(runs), tuple(r.label for r in runs), agents, palette, min(kr) if kr else None, board)

    @property
    def names(self) -> set[str]:
        return set(pd.unique(self.metrics["metric"]))

    @property
    def rounds(self) -> list[int]:
        return sorted(int(r) for r in pd.unique(self.metrics["round"]))

    @property
    def seeds(self) -> list[int]:
        return sorted(int(s) for s in pd.unique(self.metrics["seed"]))

    def subset(
        self, runs: Iterable[str] | None = None, agents: Iterable[str] | None = None, rounds: tuple[int, int] | None = None
    ) -> Dataset:
        """Some runs, agents and an inclusive round window; colours (``palette``) are kept."""
        keep_runs = self.runs if runs is None else tuple(r for r in self.runs if r in set(runs))
        keep_agents = self.agents if agents is None else tuple(a for a in self.agents if a in set(agents))
        m = self.metrics
        mask = m["run"].isin(keep_runs) & m["agent"].isin(keep_agents)
        if rounds is not None:
            mask &= m["round"].between(int(rounds[0]), int(rounds[1]))
        return Dataset(m[mask], keep_runs, keep_agents, self.palette, self.k_retrieve)

    def agents_of(self, run: str) -> list[str]:
        """The agents with metrics in one run, in dataset order."""
        present = set(pd.unique(self.metrics.loc[self.metrics["run"] == run, "agent"]))
        return [a for a in self.agents if a in present]
