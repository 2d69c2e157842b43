"""Tests for simulator.metrics.formulas: hand-worked cases plus invariants.

Every hand case writes its arithmetic in a comment (RecBole style). Randomness is
seeded through torch.Generator only.
"""

from __future__ import annotations

import math

import pytest
import torch

from simulator.metrics import formulas as F


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- exposure


def test_gini_hand_cases() -> None:
    # [1,2,3,4]: sum i*x_(i) = 1+4+9+16 = 30; G = 2*30/(4*10) - 5/4 = 1.5 - 1.25 = 0.25
    assert F.gini(torch.tensor([4.0, 2.0, 1.0, 3.0])) == pytest.approx(0.25)
    # one-hot [0,0,0,4]: 2*(4*4)/(4*4) - 5/4 = 0.75 = (M-1)/M
    assert F.gini(torch.tensor([0, 0, 4, 0])) == pytest.approx(0.75)
    assert F.gini(torch.full((7,), 3.0)) == pytest.approx(0.0, abs=1e-12)
    assert F.gini(torch.zeros(5)) == 0.0


@pytest.mark.parametrize("m", [1, 2, 10, 1000])
def test_gini_one_hot_and_uniform(m: int) -> None:
    x = torch.zeros(m)
    x[m // 2] = 5.0
    assert F.gini(x) == pytest.approx((m - 1) / m)
    assert F.gini(torch.ones(m)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_gini_bounds_and_mean_abs_difference(seed: int) -> None:
    g = _gen(seed)
    m = 50
    x = torch.rand(m, generator=g) ** 3 * (torch.rand(m, generator=g) > 0.3)
    val = F.gini(x)
    assert 0.0 <= val <= (m - 1) / m
    # Equivalent definition: G = sum_ij |x_i - x_j| / (2 M sum x)
    ref = (x[:, None] - x[None, :]).abs().sum() / (2 * m * x.sum())
    assert val == pytest.approx(ref.item(), rel=1e-6)


def test_lorenz_curve_hand_and_gini_area() -> None:
    # [1,2,3,4], total 10: cumulative shares at k/4 are 0, .1, .3, .6, 1
    u, v = F.lorenz_curve(torch.tensor([3.0, 1.0, 4.0, 2.0]), n_points=5)
    assert torch.allclose(u, torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    assert torch.allclose(v, torch.tensor([0, 0.1, 0.3, 0.6, 1.0], dtype=torch.float64))
    # [0,2]: exact points (0,0),(.5,0),(1,1); at u=.75 interpolate 0 + .5*(1-0) = .5
    _, v = F.lorenz_curve(torch.tensor([2.0, 0.0]), n_points=5)
    assert torch.allclose(v, torch.tensor([0, 0, 0, 0.5, 1.0], dtype=torch.float64))
    # When the grid hits every k/M, G = 1 - 2 * (trapezoid area under the curve).
    x = torch.rand(10, generator=_gen(3))
    u, v = F.lorenz_curve(x, n_points=11)
    assert (v[1:] >= v[:-1]).all() and v[0] == 0 and v[-1] == 1
    assert F.gini(x) == pytest.approx(1 - 2 * torch.trapezoid(v, u).item(), abs=1e-9)
    # All-zero input: the line of equality.
    u, v = F.lorenz_curve(torch.zeros(3), n_points=4)
    assert torch.equal(u, v)


def test_top_share() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert F.top_share(x, share=0.25) == pytest.approx(0.4)  # k=ceil(1)=1: 4/10
    assert F.top_share(x, share=0.5) == pytest.approx(0.7)  # k=2: (4+3)/10
    assert F.top_share(x, share=0.3) == pytest.approx(0.7)  # k=ceil(1.2)=2
    for m in (100, 250, 1000, 12345):
        # uniform: the top ceil(0.01 M) items hold ceil(0.01 M)/M of exposures
        assert F.top_share(torch.ones(m)) == pytest.approx(math.ceil(0.01 * m) / m)
    # 0.07 * 100 = 7.000000000000001 in floats must still give k = 7
    assert F.top_share(torch.ones(100), share=0.07) == pytest.approx(0.07)
    assert F.top_share(torch.zeros(4)) == 0.0


def test_coverage_and_long_tail_coverage() -> None:
    assert F.coverage(torch.tensor([0, 1, 0, 3])) == pytest.approx(0.5)  # 2 of 4
    counts = torch.tensor([5, 0, 1, 7, 2])
    pop = torch.tensor([10.0, 0.0, 3.0, 0.0, 1.0])
    # ascending popularity, ties by index: items 1 (0), 3 (0), 4 (1), 2 (3), 0 (10)
    # tail_share .6 -> ceil(3) = 3 items {1,3,4} with counts 0,7,2 -> 2/3
    assert F.long_tail_coverage(counts, pop, tail_share=0.6) == pytest.approx(2 / 3)
    # tail_share .2 -> 1 item: the tie 1 vs 3 goes to item 1 (count 0) -> 0
    assert F.long_tail_coverage(counts, pop, tail_share=0.2) == 0.0
    assert F.long_tail_coverage(counts, pop, tail_share=1.0) == pytest.approx(4 / 5)


def test_novelty() -> None:
    # pop [1,3] -> w = [2,4], p = [1/3, 2/3]; -log2 p = [log2 3, log2 3 - 1]
    # exposed [0,1,1]: mean = (log2 3 + 2 (log2 3 - 1)) / 3 = log2 3 - 2/3
    val = F.novelty(torch.tensor([0, 1, 1]), torch.tensor([1, 3]))
    assert val == pytest.approx(math.log2(3) - 2 / 3)
    assert math.isnan(F.novelty(torch.tensor([], dtype=torch.long), torch.tensor([1, 3])))


def test_popularity_mean_and_index() -> None:
    pop = torch.tensor([10.0, 0.0, 5.0])
    # items [[0,2],[2,2]] -> (10 + 5 + 5 + 5) / 4 = 6.25
    assert F.popularity_mean(torch.tensor([[0, 2], [2, 2]]), pop) == pytest.approx(6.25)
    # CLRec: divide by the max over algorithms: 6.25/12.5, 2.5/12.5, 12.5/12.5
    idx = F.popularity_index({"a": 6.25, "b": 2.5, "c": 12.5})
    assert idx == pytest.approx({"a": 0.5, "b": 0.2, "c": 1.0})
    assert F.popularity_index({"a": 0.0, "b": 0.0}) == {"a": 0.0, "b": 0.0}


def test_js_divergence() -> None:
    # disjoint supports -> 1 bit
    assert F.js_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])) == pytest.approx(1.0)
    # p = [.5,.5], q = [1,0], m = [.75,.25]
    # KL(p||m) = .5 log2(.5/.75) + .5 log2(.5/.25) = -.29248 + .5 = .20752
    # KL(q||m) = log2(1/.75) = .41504;  JS = (.20752 + .41504)/2 = .31128
    ref = 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(2.0) + math.log2(1 / 0.75))
    assert F.js_divergence(torch.tensor([2.0, 2.0]), torch.tensor([3.0, 0.0])) == pytest.approx(ref)
    g = _gen(7)
    for _ in range(3):
        p = torch.rand(30, generator=g) * (torch.rand(30, generator=g) > 0.4)
        q = torch.rand(30, generator=g)
        assert F.js_divergence(p, q) == pytest.approx(F.js_divergence(q, p))
        assert 0.0 <= F.js_divergence(p, q) <= 1.0
        assert F.js_divergence(p, 3 * p) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(F.js_divergence(torch.zeros(3), torch.ones(3)))


# ----------------------------------------------------------------------------- jaccard


def test_jaccard_hand_case() -> None:
    # user0 {1,2} (item 1 logged twice), user1 {2,3}, user2 {9}, user3 empty
    # J01 = |{2}|/|{1,2,3}| = 1/3, J02 = 0, J12 = 0; empty user3 skipped -> mean 1/9
    users = torch.tensor([0, 0, 1, 1, 2, 0])
    items = torch.tensor([1, 2, 2, 3, 9, 1])
    assert F.mean_pairwise_jaccard(users, items, n_users=4, n_items=10) == pytest.approx(1 / 9)


def test_jaccard_identical_disjoint_and_degenerate() -> None:
    same_u = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    same_i = torch.tensor([4, 7, 7, 4, 4, 7, 7])
    assert F.mean_pairwise_jaccard(same_u, same_i, 3, 100_000) == pytest.approx(1.0)
    dis_u = torch.tensor([0, 1, 2, 2])
    dis_i = torch.tensor([0, 1, 2, 3])
    assert F.mean_pairwise_jaccard(dis_u, dis_i, 3, 4) == 0.0
    assert math.isnan(F.mean_pairwise_jaccard(torch.tensor([1]), torch.tensor([2]), 3, 4))


def test_jaccard_matches_python_sets() -> None:
    g = _gen(11)
    n_users, n_items = 12, 40
    users = torch.randint(0, n_users, (150,), generator=g)
    items = torch.randint(0, n_items, (150,), generator=g)
    sets = [set(items[users == u].tolist()) for u in range(n_users)]
    sets = [s for s in sets if s]
    pairs = [(a, b) for i, a in enumerate(sets) for b in sets[i + 1 :]]
    ref = sum(len(a & b) / len(a | b) for a, b in pairs) / len(pairs)
    assert F.mean_pairwise_jaccard(users, items, n_users, n_items) == pytest.approx(ref)


# ----------------------------------------------------------------------------- accuracy


def test_recall_and_hits_hand_case() -> None:
    retrieved = torch.tensor([[0, 2, 3], [4, 5, 6], [1, 2, 3], [4, 5, 9]])
    relevant = torch.tensor([[2, 3, 9, 0], [7, 8, 0, 0], [0, 0, 0, 0], [4, 4, 5, 7]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    # row0: rel {2,3,9} (padding 0 masked, so retrieved 0 is no hit): 2 hits -> 2/3
    # row1: rel {7,8}: 0 hits -> 0;  row2: no relevant -> NaN
    # row3: rel {4,5,7} (4 duplicated counts once): hits 4,5 -> 2/3
    hits = F.hits_at_k(retrieved, relevant, mask)
    assert hits.tolist() == [2.0, 0.0, 0.0, 2.0]
    rec = F.recall_at_k(retrieved, relevant, mask)
    assert rec[0].item() == pytest.approx(2 / 3) and rec[1].item() == 0.0
    assert math.isnan(rec[2].item()) and rec[3].item() == pytest.approx(2 / 3)
    # no mask: all entries real
    assert F.recall_at_k(retrieved[:1], relevant[:1, :3]).item() == pytest.approx(2 / 3)


def test_recall_monotone_in_k_and_matches_sets() -> None:
    g = _gen(5)
    b, m, t = 600, 500, 50  # b > 256 exercises the row blocks
    ranking = torch.argsort(torch.rand(b, m, generator=g), dim=1)
    relevant = torch.argsort(torch.rand(b, m, generator=g), dim=1)[:, :t]
    prev = torch.zeros(b, dtype=torch.float64)
    for k in (1, 10, 50, 100, 300, m):
        rec = F.recall_at_k(ranking[:, :k], relevant)
        assert (rec >= prev - 1e-12).all()
        prev = rec
    assert torch.allclose(prev, torch.ones(b, dtype=torch.float64))  # K = M finds all
    hits = F.hits_at_k(ranking[:20, :100], relevant[:20])
    ref = [len(set(ranking[i, :100].tolist()) & set(relevant[i].tolist())) for i in range(20)]
    assert hits.tolist() == [float(r) for r in ref]


def test_precision_recall_f1() -> None:
    # rows with n_relevant > 0: rows 0 and 1 (row 2 is dropped)
    # P = (2/4 + 0/4)/2 = .25; R = (2/3 + 0/2)/2 = 1/3
    # F1 = 2 * .25 * (1/3) / (.25 + 1/3) = (1/6) / (7/12) = 2/7
    p, r, f1 = F.precision_recall_f1(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([3, 2, 0]), k=4)
    assert (p, r, f1) == pytest.approx((0.25, 1 / 3, 2 / 7))
    p, r, f1 = F.precision_recall_f1(torch.zeros(2), torch.tensor([1, 3]), k=5)
    assert (p, r, f1) == (0.0, 0.0, 0.0)
    assert all(math.isnan(v) for v in F.precision_recall_f1(torch.ones(2), torch.zeros(2), k=5))


def test_dcg_and_ndcg() -> None:
    # [3,2,0,1]: 3/log2 2 + 2/log2 3 + 0/log2 4 + 1/log2 5 = 3 + 1.26186 + 0 + .43068
    gains = torch.tensor([[3.0, 2.0, 0.0, 1.0]])
    d = 3 + 2 / math.log2(3) + 1 / math.log2(5)
    assert F.dcg(gains).item() == pytest.approx(d)
    # ideal [3,2,1,0]: 3 + 1.26186 + 1/log2 4 = 4.76186
    ideal = 3 + 2 / math.log2(3) + 0.5
    assert F.ndcg(gains, torch.tensor([[0.0, 1.0, 3.0, 2.0]])).item() == pytest.approx(d / ideal)
    # ideal longer than K is sorted and cut to K=2: [1,1] -> 1 + 1/log2 3; gains [0,1] -> 1/log2 3
    val = F.ndcg(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0, 1.0]])).item()
    assert val == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    # the ideal order scores 1; an all-zero ideal scores 0
    g = torch.sort(torch.rand(8, 20, generator=_gen(2)), dim=1, descending=True).values
    assert torch.allclose(F.ndcg(g, g), torch.ones(8, dtype=torch.float64))
    assert F.ndcg(torch.zeros(1, 3), torch.zeros(1, 3)).item() == 0.0


def test_average_precision() -> None:
    hits = torch.tensor([[True, False, True, False]] * 3)
    # P@1 = 1, P@3 = 2/3, sum = 5/3. n_rel 3 -> /min(3,4) = 5/9; n_rel 10 -> /4 = 5/12
    ap = F.average_precision(hits, torch.tensor([3, 10, 0]))
    assert ap[0].item() == pytest.approx(5 / 9) and ap[1].item() == pytest.approx(5 / 12)
    assert math.isnan(ap[2].item())
    # all relevant at the top -> 1
    assert F.average_precision(torch.tensor([[True, True, False]]), torch.tensor([2])).item() == 1.0


def test_hit_rate() -> None:
    assert F.hit_rate(torch.tensor([0.0, 2.0, 1.0, 0.0])) == pytest.approx(0.5)  # 2 of 4 rows
    assert math.isnan(F.hit_rate(torch.zeros(0)))


def test_expected_retrieval_metrics_hand_case() -> None:
    from simulator.metrics.formulas import expected_retrieval_metrics

    # top-2 relevances 0.5 and 0.2; total relevance over the catalogue 1.4
    recall, precision, hit = expected_retrieval_metrics(torch.tensor([[0.5, 0.2]]), torch.tensor([1.4]))
    assert float(recall[0]) == pytest.approx(0.7 / 1.4)
    assert float(precision[0]) == pytest.approx(0.35)
    assert float(hit[0]) == pytest.approx(1 - 0.5 * 0.8)
