"""Multi-seed studies and their generated results pages (``docs/results/*.md``).

A study is an experiment (one scenario, several agents, several seeds) whose
run directory is kept next to the page it feeds, so a page can always be
regenerated from its own numbers. The scripts in ``experiments/`` use
:func:`run_study` to run (or resume) the loops and :func:`interval_table` to
write every figure as ``mean ± half-width of the 95% t-interval over seeds``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from scenarios.experiment import make_experiment, run_experiment
from simulator.checkpoint import read_metrics
from simulator.config import Scenario

# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30 (beyond: the normal 1.96).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """The two-sided 95% Student-t quantile for ``df`` degrees of freedom (``df >= 1``)."""
    if df < 1:
        raise ValueError(f"df: must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def interval(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, half-width)`` of the 95% t-interval of ``values`` (half-width NaN for one value)."""
    xs = [float(v) for v in values if not math.isnan(float(v))]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return mean, t_quantile(len(xs) - 1) * sd / math.sqrt(len(xs))


@dataclass(frozen=True)
class StudyResult:
    """The long-form metrics (``scenario, agent, seed, round, metric, value``) and fit timings of a study."""

    metrics: pd.DataFrame
    timings: pd.DataFrame
    run_dir: Path


def run_study(
    scenario: str | Scenario,
    agents: Sequence[str],
    seeds: int,
    out: str | Path,
    rounds: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> StudyResult:
    """Run every (agent, seed) loop into ``out``, resuming a matching earlier run there.

    A run directory made with other settings is refused (one-line ``RunDirError``), never overwritten.
    """
    exp = make_experiment(scenario, agents, seeds=seeds, rounds=rounds, device=device)
    out_path = Path(out)
    resume = (out_path / "manifest.json").exists()

    def bar(n: int):
        done = [0]

        def tick() -> None:
            done[0] += 1
            if progress and (done[0] % max(1, n // 50) == 0 or done[0] == n):
                print(f"\r{exp.scenario.name}: {done[0]}/{n} loop-rounds", end="\n" if done[0] == n else "", file=sys.stderr, flush=True)

        return tick

    metrics = run_experiment(exp, out_path, resume=resume, progress=bar if progress else None)
    timings_file = out_path / "timings.parquet"
    timings = (
        pd.read_parquet(timings_file) if timings_file.exists() else pd.DataFrame(columns=["agent", "seed", "round", "phase", "seconds"])
    )
    return StudyResult(metrics, timings, out_path)


def load_study(run_dir: str | Path) -> StudyResult:
    """The :class:`StudyResult` of a finished run directory (to regenerate a page without rerunning)."""
    run = Path(run_dir)
    timings_file = run / "timings.parquet"
    timings = (
        pd.read_parquet(timings_file) if timings_file.exists() else pd.DataFrame(columns=["agent", "seed", "round", "phase", "seconds"])
    )
    return StudyResult(read_metrics(run / "metrics.parquet"), timings, run)


def format_interval(mean: float, half: float, digits: int = 3) -> str:
    """``"0.412 ± 0.021"`` (``"0.412"`` when the half-width is undefined, ``"–"`` when there is no value)."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def interval_frame(metrics: pd.DataFrame, names: Sequence[str], round_idx: int, agents: Sequence[str]) -> pd.DataFrame:
    """``agent x metric`` frame of ``(mean, half-width)`` tuples over seeds at round ``round_idx``."""
    at = metrics[(metrics["round"] == round_idx) & metrics["metric"].isin(names)]
    cells = {(agent, name): interval(grp["value"].tolist()) for (agent, name), grp in at.groupby(["agent", "metric"], sort=False)}
    return pd.DataFrame([[cells.get((a, n), (math.nan, math.nan)) for n in names] for a in agents], index=list(agents), columns=list(names))


def interval_table(metrics: pd.DataFrame, names: Sequence[str], round_idx: int, agents: Sequence[str], digits: int = 3) -> str:
    """A Markdown table: one row per agent, one column per metric, ``mean ± 95% half-width`` over seeds."""
    frame = interval_frame(metrics, names, round_idx, agents)
    head = "| agent | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    rows = [
        "| " + agent + " | " + " | ".join(format_interval(cell[0], cell[1], digits=digits) for cell in frame.loc[agent]) + " |"
        for agent in frame.index
    ]
    return head + "\n".join(rows) + "\n"


def compare(metrics: pd.DataFrame, name: str, round_idx: int, agent: str, baseline: str) -> tuple[str, float, float]:
    """``("wins" | "ties" | "loses", mean difference, half-width)`` of ``agent − baseline`` on ``name``.

    Paired over seeds (common random numbers make the seeds' worlds and warm starts shared),
    a difference whose 95% t-interval excludes 0 is a win or a loss; otherwise a tie.
    """
    at = metrics[(metrics["round"] == round_idx) & (metrics["metric"] == name)]
    a = at[at.agent == agent].set_index("seed")["value"]
    b = at[at.agent == baseline].set_index("seed")["value"]
    diff = (a - b).dropna()
    mean, half = interval(diff.tolist())
    if math.isnan(mean) or math.isnan(half) or abs(mean) <= half:
        return "ties", mean, half
    return ("wins" if mean > 0 else "loses"), mean, half


def mean_fit_seconds(timings: pd.DataFrame, agents: Sequence[str], phase: str = "agent_fit") -> dict[str, float]:
    """Mean wall seconds per fit of each agent (rounds and seeds pooled; measured in one run, so comparable)."""
    t = timings[timings.phase == phase]
    return {a: float(t[t.agent == a]["seconds"].mean()) if (t.agent == a).any() else math.nan for a in agents}
