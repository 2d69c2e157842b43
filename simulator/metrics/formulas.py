"""Pure, vectorised metric formulas (torch, CPU/GPU agnostic).

Every function takes torch tensors and returns a python float or a tensor, as
its docstring states. None loops over users or items in Python or materialises a
dense users x items matrix. Sums are taken in float64 (device-independent).

Conventions: ``counts`` is a length-M vector of exposure counts over items
(zeros included); ``popularity`` is a length-M vector of non-negative item
popularities (e.g. past exposure counts, CLRec's ``p_data``).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

# the retrieval formulas live in their own module; re-exported for ``formulas.recall_at_k`` callers
from simulator.metrics.ranking import (
    _f64,
    average_precision,
    dcg,
    expected_retrieval_metrics,
    hit_rate,
    hits_at_k,
    ndcg,
    precision_recall_f1,
    recall_at_k,
)

_EPS = 1e-9  # guard for ceil(share * M) against float noise


def _ceil_share(share: float, m: int) -> int:
    """``ceil(share * m)``, robust to noise such as 0.07 * 100 = 7.000000000000001."""
    return int(math.ceil(share * m - _EPS))


def gini(counts: Tensor) -> float:
    """Gini coefficient of exposure counts.

    With x_(1) <= ... <= x_(M) the counts sorted ascending,
    G = (2 * sum_i i * x_(i)) / (M * sum_i x_i) - (M + 1) / M, for i = 1..M.
    G = 0 when all counts are equal, (M - 1) / M when one item has all the mass.

    Args:
        counts: [M] non-negative counts (zeros included).

    Returns:
        G in [0, (M-1)/M]; 0.0 when the total is 0.
    """
    x = torch.sort(_f64(counts)).values
    m, total = x.numel(), x.sum()
    if m == 0 or total.item() <= 0:
        return 0.0
    i = torch.arange(1, m + 1, dtype=torch.float64, device=x.device)
    g = 2.0 * (i * x).sum() / (m * total) - (m + 1) / m
    return float(g.clamp(min=0.0).item())


def lorenz_curve(counts: Tensor, n_points: int = 101) -> tuple[Tensor, Tensor]:
    """Lorenz curve of exposures, linearly interpolated on a uniform grid.

    The exact curve joins (k / M, sum_{i<=k} x_(i) / sum_i x_i) for k = 0..M with
    x sorted ascending; it is read off at u = 0, 1/(n_points-1), ..., 1.

    Args:
        counts: [M] non-negative counts.
        n_points: number of grid points (>= 2).

    Returns:
        (share_items, share_exposures), each [n_points] float64, ascending from (0, 0)
        to (1, 1); an empty or all-zero input gives the line of equality.
    """
    x = torch.sort(_f64(counts)).values
    m, total = x.numel(), x.sum()
    u = torch.linspace(0.0, 1.0, n_points, dtype=torch.float64, device=x.device)
    if m == 0 or total.item() <= 0:
        return u, u.clone()
    y = torch.cat([x.new_zeros(1), torch.cumsum(x, 0) / total])  # [M+1] at k/M
    pos = u * m
    lo = pos.floor().long().clamp(max=m - 1)
    v = y[lo] + (pos - lo.to(torch.float64)) * (y[lo + 1] - y[lo])
    v[0], v[-1] = 0.0, 1.0
    return u, v


def top_share(counts: Tensor, share: float = 0.01) -> float:
    """Share of all exposures that go to the top ``ceil(share * M)`` items.

    top_share = sum of the k largest x_i / sum_i x_i, with k = ceil(share * M).

    Args:
        counts: [M] non-negative counts.
        share: fraction of items counted as "top" (0.01 = top 1%).

    Returns:
        A float in [k/M, 1]; 0.0 when the total is 0.
    """
    x = _f64(counts)
    m, total = x.numel(), x.sum()
    if m == 0 or total.item() <= 0:
        return 0.0
    k = min(max(_ceil_share(share, m), 1), m)
    return float((torch.topk(x, k).values.sum() / total).item())


def coverage(counts: Tensor) -> float:
    """Catalogue coverage: |{i : x_i > 0}| / M.

    Args:
        counts: [M] counts.

    Returns:
        Fraction of items exposed at least once (aggregate diversity / M); 0.0 if M == 0.
    """
    x = counts.reshape(-1)
    return 0.0 if x.numel() == 0 else float((x > 0).to(torch.float64).mean().item())


def long_tail_coverage(counts: Tensor, popularity: Tensor, tail_share: float = 0.8) -> float:
    """Coverage restricted to the long tail.

    Items are ranked by ``popularity`` ascending (ties broken by item index); the
    tail T is the first ceil(tail_share * M) of them, and the result is
    |{i in T : x_i > 0}| / |T|.

    Args:
        counts: [M] exposure counts.
        popularity: [M] item popularity used to define the tail.
        tail_share: fraction of (least popular) items in the tail.

    Returns:
        Fraction of tail items exposed at least once (0.0 if the tail is empty).
    """
    x = counts.reshape(-1)
    n_tail = min(_ceil_share(tail_share, x.numel()), x.numel())
    if n_tail <= 0:
        return 0.0
    tail = torch.sort(_f64(popularity), stable=True).indices[:n_tail]  # stable: ties by index
    return float((x[tail] > 0).to(torch.float64).mean().item())


def novelty(exposed_items: Tensor, popularity: Tensor) -> float:
    """Mean self-information of exposed items.

    novelty = (1/E) * sum_e -log2 p_{item_e}, with p_i = (pop_i + 1) / sum_j (pop_j + 1).

    Args:
        exposed_items: [E] int64 item ids (one per exposure; repeats count).
        popularity: [M] non-negative popularity.

    Returns:
        Mean bits per exposure; NaN when E == 0.
    """
    items = exposed_items.reshape(-1).long()
    if items.numel() == 0:
        return float("nan")
    w = _f64(popularity) + 1.0
    return float((-torch.log2(w[items] / w.sum())).mean().item())


def popularity_mean(items: Tensor, popularity: Tensor) -> float:
    """Mean popularity of recommended items (numerator of CLRec's popularity index).

    CLRec: E_A[p_data(y)] = sum_y p_data(y) * p(A recommends y), which is the mean of
    popularity over the items A recommended, repeats included.

    Args:
        items: [...] int64 item ids recommended by one algorithm.
        popularity: [M] p_data, e.g. past recommendation counts per item.

    Returns:
        The mean popularity; NaN when ``items`` is empty.
    """
    idx = items.reshape(-1).long()
    return float("nan") if idx.numel() == 0 else float(_f64(popularity)[idx].mean().item())


def popularity_index(means: dict[str, float]) -> dict[str, float]:
    """CLRec's popularity index: PI(A) = E_A[p_data(y)] / max_{A'} E_{A'}[p_data(y)].

    Args:
        means: algorithm name -> ``popularity_mean`` of its recommendations.

    Returns:
        Name -> index in [0, 1] (1 for the most popularity-leaning algorithm). NaN inputs
        stay NaN and are ignored in the max; all are 0.0 if the max is not positive.
    """
    finite = [v for v in means.values() if not math.isnan(v)]
    top = max(finite, default=float("nan"))
    if not top > 0:  # also catches NaN
        return {k: (v if math.isnan(v) else 0.0) for k, v in means.items()}
    return {k: v / top for k, v in means.items()}


def js_divergence(p_counts: Tensor, q_counts: Tensor) -> float:
    """Jensen-Shannon divergence (base 2) between two count vectors.

    With p = p_counts / sum(p_counts), q likewise and m = (p + q) / 2,
    JS = 0.5 * sum_i p_i log2(p_i / m_i) + 0.5 * sum_i q_i log2(q_i / m_i),
    using 0 * log 0 = 0. JS is symmetric, 0 iff p == q, at most 1.

    Args:
        p_counts, q_counts: [M] non-negative counts (e.g. exposures vs retrievals).

    Returns:
        JS in [0, 1]; NaN when either total is 0.
    """
    p, q = _f64(p_counts), _f64(q_counts)
    sp, sq = p.sum().item(), q.sum().item()
    if sp <= 0 or sq <= 0:
        return float("nan")
    p, q = p / sp, q / sq
    m = 0.5 * (p + q)  # mixture

    def _kl(a: Tensor) -> Tensor:
        pos = a > 0  # a > 0 implies m > 0
        return torch.where(pos, a * torch.log2(torch.where(pos, a / m, 1.0)), 0.0).sum()

    return float((0.5 * _kl(p) + 0.5 * _kl(q)).clamp(0.0, 1.0).item())


def mean_pairwise_jaccard(user_index: Tensor, item_ids: Tensor, n_users: int, n_items: int) -> float:
    """Mean Jaccard similarity of users' exposure sets (homogenisation).

    For users a, b with sets A, B: J(a, b) = |A & B| / |A | B| with
    |A | B| = |A| + |B| - |A & B|. The result is the mean of J over all unordered pairs
    a < b of users with non-empty sets. Intersections come from the sparse product S S^T
    of the 0/1 indicator S [n_users, n_items] (never densified); only S S^T is dense.

    Args:
        user_index: [E] int64 in [0, n_users).
        item_ids: [E] int64 in [0, n_items); duplicate (user, item) pairs are sets.
        n_users, n_items: sizes of the two index spaces.

    Returns:
        Mean pairwise Jaccard; NaN when fewer than two users have exposures.
    """
    u, it = user_index.reshape(-1).long(), item_ids.reshape(-1).long()
    keys = torch.unique(u * n_items + it)  # dedupe (user, item) pairs
    u, it = keys // n_items, keys % n_items
    sizes = torch.bincount(u, minlength=n_users).to(torch.float64)  # [n_users]
    active = torch.nonzero(sizes > 0).reshape(-1)
    n_act = int(active.numel())
    if n_act < 2:
        return float("nan")
    inter = _intersections(u, it, active, n_users, n_items)
    sz = sizes[active]
    ia, ib = torch.triu_indices(n_act, n_act, offset=1, device=u.device)
    i_ab = inter[ia, ib]
    return float((i_ab / (sz[ia] + sz[ib] - i_ab)).mean().item())


def _intersections(u: Tensor, it: Tensor, active: Tensor, n_users: int, n_items: int) -> Tensor:
    """``[A, A]`` float64 |A & B| of the active users' item sets, as the sparse product S S^T.

    ``(u, it)`` are unique pairs sorted by (user, item), so the indicator S is already coalesced.
    """
    n_act = int(active.numel())
    # Re-index active users to 0..n_act-1 so the product is [n_act, n_act].
    remap = torch.full((n_users,), -1, dtype=torch.long, device=u.device)
    remap[active] = torch.arange(n_act, device=u.device)
    vals = torch.ones(u.numel(), dtype=torch.float64, device=u.device)
    s = torch.sparse_coo_tensor(torch.stack([remap[u], it]), vals, (n_act, n_items), check_invariants=False, is_coalesced=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        return torch.sparse.mm(s, s.t().coalesce()).to_dense()


__all__ = [
    "average_precision", "coverage", "dcg", "expected_retrieval_metrics", "gini", "hit_rate", "hits_at_k", "js_divergence",
    "long_tail_coverage", "lorenz_curve", "mean_pairwise_jaccard", "ndcg", "novelty", "popularity_index", "popularity_mean",
    "precision_recall_f1", "recall_at_k", "top_share",
]  # fmt: skip
