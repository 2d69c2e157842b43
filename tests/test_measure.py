"""Per-round measurement helpers on cases worked out by hand."""

from __future__ import annotations

import math

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


def test_ranked_metrics_hand_case() -> None:
    from simulator.metrics.measure import _ranked_metrics

    # true top-2 = {7, 3}; the ranker puts 3 first, then 5 (not relevant), then 7
    ranked = torch.tensor([[3, 5, 7]])
    ranked_rel = torch.tensor([[0.8, 0.1, 0.9]])
    top_ids, top_rel = torch.tensor([[7, 3, 5]]), torch.tensor([[0.9, 0.8, 0.1]])
    out = _ranked_metrics(ranked, ranked_rel, top_ids, top_rel, [1, 2])
    assert float(out["ranked_true_hr@1"]) == 0.0  # item 3 is not the true top-1
    assert float(out["ranked_true_hr@2"]) == 1.0
    assert float(out["ranked_true_map@2"]) == pytest.approx((1 / 1) / 2)  # one hit at rank 1 of 2 relevant
    ideal = 0.9 + 0.8 / math.log2(3)
    assert float(out["ranked_true_ndcg@2"]) == pytest.approx((0.8 + 0.1 / math.log2(3)) / ideal)
