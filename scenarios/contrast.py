"""The table a run ends with: the truth against what the logs and an offline hold-out say, then concentration.

Per agent, the last round's mean over seeds ± the half-width of the 95% t-interval (one seed: no interval).
Rounds are numbered as users count them (the last of R rounds is "round R").
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import pandas as pd

from scenarios.study import interval

_LABELS = {
    "true_recall": "true recall",
    "onpolicy_replay_recall": "logged replay",
    "offline_holdout_recall": "hold-out",
    "true_holdout_recall": "hold-out truth",
    "offline_shared_recall": "shared log",
    "true_shared_recall": "shared-log truth",
    "exposure_gini": "exposure Gini",
    "exposure_top1_share": "top-1% share",
}

_MEANING = (
    "true recall: the served top-K against the user model's true top-K; logged replay: the serving model scored on the clicks "
    "its own exposures produced (what its logs say); hold-out: the retrained model on withheld users' clicks (the practitioner's "
    "offline test), next to its truth on the same requests."
)


def legend(names: Sequence[str]) -> str:
    """What the columns mean, and their names in ``metrics.parquet`` (defined by ``cascadesim list metrics``)."""
    columns = ", ".join(f"{label(n)} = {n}" for n in names)
    text = f"{_MEANING} Columns as named in metrics.parquet and defined by `cascadesim list metrics`: {columns}."
    return textwrap.fill(text, width=120, break_on_hyphens=False)


def label(metric: str) -> str:
    """A short column name: ``offline_holdout_recall@50`` -> ``hold-out@50``."""
    base, _, k = metric.partition("@")
    return _LABELS.get(base, base) + (f"@{k}" if k else "")


def _cell(values: pd.Series) -> str:
    mean, half = interval(list(values))
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def contrast_table(metrics: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per agent (in run order), ``mean ± half-width`` over seeds of ``names`` in the last round."""
    last = metrics[metrics["round"] == metrics["round"].max()]
    present = [n for n in names if n in set(last.metric)]
    rows = {}
    for agent in pd.unique(last.agent):
        sub = last[last.agent == agent]
        rows[agent] = {label(n): _cell(sub[sub.metric == n].value) for n in present}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("agent")


def widest_gap(metrics: pd.DataFrame, truth: str, logged: str) -> str | None:
    """One sentence on the agent whose logs overstate its true recall most in the last round (None if not measured)."""
    last = metrics[metrics["round"] == metrics["round"].max()]
    means = last[last.metric.isin([truth, logged])].pivot_table(index="agent", columns="metric", values="value", aggfunc="mean")
    if truth not in means or logged not in means or means.dropna().empty:
        return None
    gap = (means[logged] - means[truth]).dropna()
    agent = str(gap.idxmax())
    said, true = means.at[agent, logged], means.at[agent, truth]
    return f"widest gap: {agent}'s logs say {label(logged)} {said:.3f}; the truth is {label(truth)} {true:.3f}"


def heading(name: str, last_round: int, rounds: int, seeds: int) -> str:
    """``default: after round 10 of 10, mean ± 95% interval over 3 seeds`` (rounds counted from 1)."""
    spread = f"mean ± 95% interval over {seeds} seeds" if seeds > 1 else "1 seed: no intervals"
    return f"{name}: after round {last_round + 1} of {rounds}, {spread}"
