"""Serving: Gumbel-top-k sampling and the inclusion probabilities it logs."""

from __future__ import annotations

import math

import torch

from simulator.cascade import serving
from simulator.config import CascadeConfig
from simulator.rng import torch_stream


def _empirical_inclusion(scores: torch.Tensor, k: int, temperature: float, n: int) -> torch.Tensor:
    gen = torch_stream(0, "empirical", n)
    s = scores.unsqueeze(0).expand(n, -1)
    idx = serving.gumbel_topk(s, k, temperature, gen)
    return torch.zeros_like(s).scatter_(1, idx, 1.0).mean(0)


def test_logged_recall_probabilities_match_empirical_frequencies() -> None:
    cfg = CascadeConfig(k_retrieve=3, slate_size=1, stochastic=True, retrieve_temperature=0.5, propensity_samples=20_000)
    scores = torch.tensor([[2.0, 1.5, 1.0, 0.5, 0.2, 0.0, -0.5, -1.0]])
    recall = serving.stochastic_recall(torch.arange(8).unsqueeze(0), scores, 3, cfg, torch_stream(1, "r"), torch_stream(1, "mc"))
    n = 40_000
    freq = _empirical_inclusion(scores[0], 3, 0.5, n)
    logged = torch.zeros(8).scatter_(0, recall.item_ids[0], recall.recall_prob[0])
    recalled = recall.item_ids[0]
    # both are Monte-Carlo means: tolerance = 4 combined standard errors
    p = freq[recalled]
    tol = 4 * torch.sqrt(p * (1 - p) * (1 / n + 1 / cfg.propensity_samples)) + 1e-3
    assert torch.all((logged[recalled] - p).abs() < tol), (logged, freq)
    assert abs(float(freq.sum()) - 3.0) < 1e-4  # k items are always included


def test_gumbel_topk_follows_plackett_luce_for_the_first_pick() -> None:
    scores = torch.tensor([1.0, 0.0, -1.0, 0.5])
    n = 50_000
    first = serving.gumbel_topk(scores.expand(n, -1), 1, 1.0, torch_stream(0, "pl")).squeeze(1)
    freq = torch.bincount(first, minlength=4).float() / n
    expected = torch.softmax(scores, 0)
    assert torch.all((freq - expected).abs() < 4 * torch.sqrt(expected * (1 - expected) / n))


def test_exposure_probability_and_marginal_propensity() -> None:
    cfg = CascadeConfig(k_retrieve=3, slate_size=2, stochastic=True, retrieve_temperature=1.0, expose_temperature=1.0, propensity_samples=20_000)
    pool_scores = torch.tensor([[1.0, 0.8, 0.3, 0.1, -0.4]])
    pool_ids = torch.arange(5).unsqueeze(0) + 100
    rank_pool = torch.tensor([[0.2, 0.9, 0.5, 0.7, 0.4]])
    recall = serving.stochastic_recall(pool_ids, pool_scores, 3, cfg, torch_stream(2, "r"), torch_stream(2, "mc"))
    marginal = serving.marginal_propensity(recall, rank_pool, 2, cfg, torch_stream(2, "joint"))
    # simulate the whole two-stage policy many times and count exposures
    n = 40_000
    gen = torch_stream(3, "sim")
    pools = pool_scores.expand(n, -1)
    rec = serving.gumbel_topk(pools, 3, 1.0, gen)
    logits = torch.log(rank_pool / (1 - rank_pool)).expand(n, -1)
    mask = torch.zeros(n, 5, dtype=torch.bool).scatter_(1, rec, True)
    shown = serving.gumbel_topk(logits.masked_fill(~mask, float("-inf")), 2, 1.0, gen)
    freq = torch.zeros(n, 5).scatter_(1, shown, 1.0).mean(0)
    cols = recall.item_ids[0] - 100
    p = freq[cols]
    tol = 4 * torch.sqrt(p * (1 - p) * (1 / n + 1 / cfg.propensity_samples)) + 1e-3
    assert torch.all((marginal[0] - p).abs() < tol), (marginal, p)
    assert torch.all(marginal <= recall.recall_prob + 1e-6)  # exposed implies recalled


def test_deterministic_serving_has_unit_propensities() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    exp = serving.deterministic_exposure(scores, 2)
    assert exp.slot_index.tolist() == [[1, 3]]
    assert exp.propensity.tolist() == [[0.0, 1.0, 0.0, 1.0]]


def test_uniform_exploration_is_uniform_with_exact_propensities() -> None:
    live = torch.arange(10) * 3
    n, k = 20_000, 4
    rec = serving.uniform_recall(live, n, k, torch_stream(0, "u"))
    counts = torch.bincount(rec.item_ids.reshape(-1), minlength=30)[live].float() / n
    assert torch.all((counts - k / 10).abs() < 4 * math.sqrt(0.4 * 0.6 / n))
    assert torch.allclose(rec.recall_prob, torch.full_like(rec.recall_prob, 0.4))
    assert all(len(set(row)) == k for row in rec.item_ids[:50].tolist())


def test_fixed_weight_sampler_is_plackett_luce_without_replacement() -> None:
    """First-distinct draws from shared weights follow the same law as Gumbel-top-k (exact inclusion
    probabilities of a 2-of-4 sample), never repeat an item, never draw a dead one, and stay exact
    when one heavy item forces rows to extend their draw streams."""
    from simulator.cascade.serving import sample_fixed_weights

    n = 40_000
    w = torch.tensor([6.0, 2.0, 1.0, 1.0, 0.0])
    p = w / w.sum()
    log_w = torch.log(w)  # the dead item has -inf
    got = sample_fixed_weights(log_w, n, 2, torch.Generator().manual_seed(0))
    assert not bool((got[:, 0] == got[:, 1]).any()) and not bool((got == 4).any())
    first = torch.bincount(got[:, 0], minlength=5).double() / n
    incl = torch.bincount(got.reshape(-1), minlength=5).double() / n
    exact_incl = torch.tensor([float(p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in range(4) if j != i)) for i in range(4)] + [0.0])
    tol = 5 * torch.sqrt(exact_incl.clamp(1e-9) * (1 - exact_incl).clamp(1e-9) / n)
    assert bool(((first - p.double()).abs() <= 5 * torch.sqrt(p.double() * (1 - p.double()) / n) + 1e-12).all())
    assert bool(((incl - exact_incl).abs() <= tol).all())
    heavy = torch.log(torch.tensor([97.0, 1.0, 1.0, 1.0]))  # ~4% of draws are light: 2k = 6 draws rarely hold 3 items
    rows = sample_fixed_weights(heavy, 2000, 3, torch.Generator().manual_seed(1))
    assert bool((rows.sort(1).values[:, 1:] != rows.sort(1).values[:, :-1]).all())


def test_legacy_ranker_scores_an_item_the_same_wherever_it_stands() -> None:
    """The warm-start ranker's score is a function of (request, item): the recalled set and the larger
    candidate pool of a request agree on shared items, so logged exposure propensities are consistent."""
    from simulator.cascade.legacy import UniformRanker
    from simulator.types import RequestBatch

    req = RequestBatch(
        request_id=torch.tensor([5, 6]), user_id=torch.tensor([0, 1]), domain=torch.zeros(2, dtype=torch.int64),
        entry=torch.zeros(2, dtype=torch.int64), hour=torch.zeros(2), profile=torch.zeros(2, 3),
        history=torch.full((2, 4), -1), round=-1,
    )  # fmt: skip
    ranker = UniformRanker(seed=3)
    recalled = torch.tensor([[10, 11, 12], [10, 11, 12]])
    pool = torch.tensor([[12, 99, 10, 11], [11, 12, 10, 98]])
    a, b = ranker.score(req, recalled), ranker.score(req, pool)
    assert torch.equal(a[0], b[0, [2, 3, 0]]) and torch.equal(a[1], b[1, [2, 0, 1]])
    assert not torch.equal(a[0], a[1])  # another request, other scores
    big = ranker.score(req.select(torch.zeros(20_000, dtype=torch.int64)), torch.arange(20_000).unsqueeze(1)).squeeze(1)
    assert abs(float(big.mean()) - 0.5) < 5 * (1 / 12) ** 0.5 / 20_000**0.5  # uniform mean within 5 SE
