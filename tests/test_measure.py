"""Per-round measurement helpers on cases worked out by hand."""

from __future__ import annotations

import pytest
import torch

from simulator.metrics.measure import N_SCORE_BINS, _distribution_metrics, _score_gap


def test_decile_shares_follow_popularity_order() -> None:
    # 20 items, popularity = item index (item 19 most popular); exposures only on items 18 and 19 (decile 10)
    # and item 0 (decile 1): shares 0.25 / 0.75
    counts = torch.zeros(20)
    counts[0], counts[18], counts[19] = 1.0, 1.0, 2.0
    out = _distribution_metrics(counts, torch.arange(20.0))
    assert out["exposure_share_decile@1"] == pytest.approx(0.25)
    assert out["exposure_share_decile@10"] == pytest.approx(0.75)
    assert sum(out[f"exposure_share_decile@{d}"] for d in range(1, 11)) == pytest.approx(1.0)


def test_lorenz_points_of_a_hand_case() -> None:
    # 10 items, one holds all exposures: the least-exposed 90% hold nothing
    counts = torch.zeros(10)
    counts[3] = 5.0
    out = _distribution_metrics(counts, torch.zeros(10))
    assert all(out[f"exposure_lorenz@{p / 10:.1f}"] == pytest.approx(0.0) for p in range(1, 10))
    flat = _distribution_metrics(torch.ones(10), torch.zeros(10))
    assert flat["exposure_lorenz@0.3"] == pytest.approx(0.3)


def test_score_gap_and_histograms() -> None:
    pos = torch.tensor([1.0, 3.0])  # mean 2
    neg = torch.tensor([0.0, 0.0, 1.0, 3.0])  # mean 1
    out = _score_gap(pos, neg)
    assert out["score_gap_unexposed"] == pytest.approx(1.0)
    assert (out["score_hist_lo"], out["score_hist_hi"]) == (0.0, 3.0)
    assert sum(out[f"score_hist_pos@{b}"] for b in range(N_SCORE_BINS)) == pytest.approx(1.0)
    assert out["score_hist_neg@0"] == pytest.approx(0.5)  # two of four negatives score 0
    assert out[f"score_hist_pos@{N_SCORE_BINS - 1}"] == pytest.approx(0.5)  # the top bin holds 3.0
