"""Quantities the dashboards derive from stored metrics (named in :data:`dashboards.catalog.DERIVED`).

``score_auc_unexposed``: the raw score gap (``score_gap_unexposed``) is in
each agent's own score units, so it cannot be compared across agents. The
runs store, per (agent, seed, round), the shares of never-exposed true
positives and negatives in 20 equal score bins over one range; from them

    AUC = sum_b pos_b * (neg_{<b} + neg_b / 2) / (sum pos * sum neg)

is the chance that a positive outscores a negative, with the pairs that share
a bin counted as ties (half). It is exact up to those ties: the true AUC lies
within ``± sum_b pos_b * neg_b / 2`` of it. The runs do not store the scores
themselves, so this binned AUC is the normalised comparison they allow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BINS_MAX = 1000  # bins are numbered 0..19 today; any count up to this works


def binned_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Row-wise binned AUC of positives over negatives (rows: histograms over the same bins); NaN for an empty row."""
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _bins(metrics: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """One row per (agent, seed, round), one column per bin of ``prefix@b`` (bins in numeric order, missing as 0)."""
    rows = metrics[metrics["metric"].str.startswith(prefix + "@")]
    bins = rows["metric"].str.slice(len(prefix) + 1)
    rows = rows[bins.str.fullmatch(r"\d{1,4}")].assign(bin=bins.astype("int64"))
    rows = rows[rows["bin"] < BINS_MAX]
    keys = [c for c in ("scenario", "agent", "seed", "round") if c in rows.columns]
    return rows.pivot_table(index=keys, columns="bin", values="value", aggfunc="first").fillna(0.0).sort_index(axis=1)


def score_auc_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Long rows of ``score_auc_unexposed`` for every (agent, seed, round) with both histograms (same columns as ``metrics``)."""
    pos, neg = _bins(metrics, "score_hist_pos"), _bins(metrics, "score_hist_neg")
    if pos.empty or neg.empty:
        return metrics.iloc[0:0]
    idx = pos.index.intersection(neg.index)
    cols = pos.columns.union(neg.columns)
    p = pos.reindex(index=idx, columns=cols, fill_value=0.0).to_numpy()
    n = neg.reindex(index=idx, columns=cols, fill_value=0.0).to_numpy()
    out = idx.to_frame(index=False).assign(metric="score_auc_unexposed", value=binned_auc(p, n))
    return out[[c for c in metrics.columns if c in out.columns]]


def add_derived(metrics: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` with the derived rows appended (unchanged when the runs hold no score histograms)."""
    extra = score_auc_rows(metrics)
    return metrics if extra.empty else pd.concat([metrics, extra], ignore_index=True)
