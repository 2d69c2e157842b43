"""The results page of ``experiments/usd_study.py``: its statistics on hand-built metrics (no simulator run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import usd_page as P  # noqa: E402


def hand_metrics() -> pd.DataFrame:
    """3 seeds x 4 rounds of true_recall@20: oracle 1, random 0, bc 0.2 + seed / 100, usd = bc + (0.09, 0.10, 0.11)."""
    rows = []
    for seed, extra in enumerate((0.09, 0.10, 0.11)):
        for r in range(4):
            base = 0.2 + seed / 100 + (0.5 if r == 0 else 0.0)  # round 0 lies outside the time average
            for agent, v in (("oracle", 1.0), ("random", 0.0), ("bc", base), ("usd", base + extra)):
                rows.append({"scenario": "homepage", "agent": agent, "seed": seed, "round": r, "metric": "true_recall@20", "value": v})
    return pd.DataFrame(rows)


def test_time_average_uses_the_last_rounds_only():
    avg = P.last_mean(hand_metrics(), ["true_recall@20"])
    bc = avg[(avg.agent == "bc") & (avg.seed == 0)]["value"].item()
    assert bc == pytest.approx(0.2)


def test_verdict_row_of_a_clear_paired_gain():
    rows, words = P.verdict_rows(P.last_mean(hand_metrics(), ["true_recall@20"]))
    row = next(r for r in rows if r[0].startswith("USD vs BC") and r[1] == "`true_recall@20`")
    # diffs 0.09, 0.10, 0.11: mean 0.1, sd 0.01, half-width t(0.975, 2) * 0.01 / sqrt(3) = 0.0248; the only finite p -> Holm = raw
    assert row[2] == "+0.1000 ± 0.0248" and row[4] == "+0.10" and words["usd|bc|true_recall@20"] == "win"
    assert float(row[3]) == pytest.approx(0.0033, abs=3e-4)  # t = 17.3 on 2 degrees of freedom
    assert words["usd|bc|logged_ctr"] == "no data"


def test_seeds_needed_for_eighty_percent_power():
    assert P.seeds_needed(0.01, 0.01) == 8  # ((1.96 + 0.8416) x 1)^2 = 7.85 -> 8
    assert P.seeds_needed(0.02, 0.01) == 32


def test_kendall_tau_on_hand_rows():
    s = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    t = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert P._kendall(s, t, torch.ones(2, 3, dtype=torch.bool)) == pytest.approx(0.0)  # +1 and -1
    valid = torch.tensor([[True, True, True], [True, False, False]])  # row 2 has no valid pair: left out
    assert P._kendall(s, t, valid) == pytest.approx(1.0)
    valid = torch.tensor([[True, True, True], [True, False, True]])  # row 2: the pair (0, 2) only, discordant
    assert P._kendall(s, t, valid) == pytest.approx(0.0)
