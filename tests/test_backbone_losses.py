"""Shared loss pieces: sampled softmax with logQ, masks, and inverse-propensity weights."""

from __future__ import annotations

import math

import pytest
import torch

from agents.backbone.softmax import duplicate_mask, sampled_softmax_loss
from agents.backbone.weighting import inverse_propensity_weights, weight_quantiles


def test_sampled_softmax_matches_hand_computed_cross_entropy() -> None:
    pos, neg = torch.tensor([1.0, 2.0]), torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    expected = ((math.log(math.e + 1 + math.e) - 1) + (math.log(2 * math.e**2 + 1) - 2)) / 2
    assert float(sampled_softmax_loss(pos, neg)) == pytest.approx(expected)


def test_log_q_correction_subtracts_log_q_from_every_logit() -> None:
    pos, neg = torch.tensor([0.5]), torch.tensor([[0.2, -0.1]])
    lq_pos, lq_neg = torch.tensor([math.log(0.5)]), torch.tensor([[math.log(0.25), math.log(0.25)]])
    corrected = sampled_softmax_loss(pos, neg, lq_pos, lq_neg)
    assert float(corrected) == pytest.approx(float(sampled_softmax_loss(pos - lq_pos, neg - lq_neg)))
    uniform = torch.full((1,), math.log(0.1)), torch.full((1, 2), math.log(0.1))
    assert float(sampled_softmax_loss(pos, neg, *uniform)) == pytest.approx(float(sampled_softmax_loss(pos, neg)))


def test_masked_negatives_drop_out_and_shared_negatives_broadcast() -> None:
    pos, items = torch.tensor([1.0, 1.0]), torch.tensor([3, 4])
    shared_ids, shared = torch.tensor([3, 7]), torch.tensor([1.0, 0.0])
    mask = duplicate_mask(items, shared_ids)
    assert mask.tolist() == [[True, False], [False, False]]
    loss = sampled_softmax_loss(pos, shared, neg_mask=mask)
    expected = ((math.log(math.e + 1) - 1) + (math.log(2 * math.e + 1) - 1)) / 2
    assert float(loss) == pytest.approx(expected)


def test_inverse_propensity_weights_are_clipped_detached_and_normalised() -> None:
    p = torch.tensor([0.01, 0.5, 1.0], requires_grad=True)
    raw = inverse_propensity_weights(p, min_propensity=0.05, self_normalise=False)
    assert raw.tolist() == pytest.approx([20.0, 2.0, 1.0]) and not raw.requires_grad
    assert inverse_propensity_weights(p, max_weight=10.0, self_normalise=False).max() == pytest.approx(10.0)
    assert float(inverse_propensity_weights(p).mean()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="min_propensity"):
        inverse_propensity_weights(p, min_propensity=0.0)
    q = weight_quantiles(torch.arange(101.0))
    assert (q["weight_p50"], q["weight_max"]) == (50.0, 100.0)
