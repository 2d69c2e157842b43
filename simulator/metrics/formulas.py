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

_EPS = 1e-9  # guard for ceil(share * M) against float noise


def _f64(x: Tensor) -> Tensor:
    """Flattened float64 copy, detached from autograd."""
    return x.detach().to(torch.float64).reshape(-1)


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


def mean_pairwise_jaccard(
    user_index: Tensor, item_ids: Tensor, n_users: int, n_items: int
) -> float:
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
    # Re-index active users to 0..n_act-1 so the product is [n_act, n_act].
    remap = torch.full((n_users,), -1, dtype=torch.long, device=u.device)
    remap[active] = torch.arange(n_act, device=u.device)
    vals = torch.ones(keys.numel(), dtype=torch.float64, device=u.device)
    # keys are unique and sorted by (user, item) and remap is monotone: already coalesced.
    idx = torch.stack([remap[u], it])
    shape = (n_act, n_items)
    s = torch.sparse_coo_tensor(idx, vals, shape, check_invariants=False, is_coalesced=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
        inter = torch.sparse.mm(s, s.t().coalesce()).to_dense()  # [n_act, n_act]
    sz = sizes[active]
    ia, ib = torch.triu_indices(n_act, n_act, offset=1, device=u.device)
    i_ab = inter[ia, ib]
    return float((i_ab / (sz[ia] + sz[ib] - i_ab)).mean().item())


def _hits_and_n_relevant(
    retrieved: Tensor, relevant: Tensor, relevant_mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Per-row |set(retrieved) & set(relevant)| and |set(relevant)| (float64, [B])."""
    (b, t), k, dev = relevant.shape, retrieved.shape[1], relevant.device
    if relevant_mask is None:
        relevant_mask = torch.ones((b, t), dtype=torch.bool, device=dev)
    hits = torch.zeros(b, dtype=torch.float64, device=dev)
    n_rel = torch.zeros_like(hits)
    step = max(1, min(256, (1 << 24) // max(1, max(k, t) * t)))  # [b,K,T] and [b,T,T] <= 16M
    earlier = torch.ones(t, t, dtype=torch.bool, device=dev).tril(-1)  # [t, j<t]
    for s in range(0, b, step):  # loop over row blocks, not over users
        ret, rel, msk = retrieved[s : s + step], relevant[s : s + step], relevant_mask[s : s + step]
        # A valid relevant entry counts once: drop it if an earlier valid entry equals it.
        dup = ((rel[:, :, None] == rel[:, None, :]) & msk[:, None, :] & earlier).any(dim=2)
        keep = msk & ~dup  # [b, T]
        found = (ret[:, :, None] == rel[:, None, :]).any(dim=1)  # [b, T]
        hits[s : s + step] = (found & keep).sum(dim=1).to(torch.float64)
        n_rel[s : s + step] = keep.sum(dim=1).to(torch.float64)
    return hits, n_rel


def hits_at_k(retrieved: Tensor, relevant: Tensor, relevant_mask: Tensor | None = None) -> Tensor:
    """Per-row hit count |set(retrieved) & set(relevant)|.

    Args:
        retrieved: [B, K] int64 retrieved item ids (top-K, any order).
        relevant: [B, T] int64 relevant item ids (padded).
        relevant_mask: [B, T] bool, True for real entries; None means all are real.

    Returns:
        [B] float64 counts; a duplicated relevant id counts once. Rows are processed in
        blocks (<= 256 rows) via a [b, K, T] equality test.
    """
    return _hits_and_n_relevant(retrieved, relevant, relevant_mask)[0]


def recall_at_k(retrieved: Tensor, relevant: Tensor, relevant_mask: Tensor | None = None) -> Tensor:
    """Per-row recall@K = |set(retrieved) & set(relevant)| / |set(relevant)|.

    Args:
        retrieved, relevant, relevant_mask: as in ``hits_at_k``.

    Returns:
        [B] float64 recall; NaN for rows with no relevant item.
    """
    hits, n_rel = _hits_and_n_relevant(retrieved, relevant, relevant_mask)
    return torch.where(n_rel > 0, hits / n_rel.clamp(min=1.0), torch.full_like(hits, float("nan")))


def precision_recall_f1(hits: Tensor, n_relevant: Tensor, k: int) -> tuple[float, float, float]:
    """Mean precision, mean recall and their F1, over rows with n_relevant > 0.

    P = mean_b hits_b / k,  R = mean_b hits_b / n_relevant_b,  F1 = 2 P R / (P + R).
    Both means run over rows with n_relevant > 0 (a row with nothing to find has no
    signal). As in DAMCAR's F@K, F1 is the harmonic mean of the *mean* P and the *mean*
    R, not the mean of per-row F1s.

    Args:
        hits: [B] hit counts (e.g. from ``hits_at_k``).
        n_relevant: [B] number of relevant items per row.
        k: the cut-off K.

    Returns:
        (P, R, F1) floats; all NaN if no row has a relevant item; F1 = 0 if P + R = 0.
    """
    h, n = _f64(hits), _f64(n_relevant)
    ok = n > 0
    if not bool(ok.any()):
        return float("nan"), float("nan"), float("nan")
    p, r = float((h[ok] / k).mean().item()), float((h[ok] / n[ok]).mean().item())
    f1 = 0.0 if p + r <= 0 else 2.0 * p * r / (p + r)
    return p, r, f1


def dcg(gains: Tensor) -> Tensor:
    """Discounted cumulative gain: DCG = sum_{r=1..K} g_r / log2(r + 1).

    Args:
        gains: [B, K] gains in rank order (rank 1 first).

    Returns:
        [B] float64 DCG.
    """
    g = gains.detach().to(torch.float64)
    ranks = torch.arange(1, g.shape[-1] + 1, dtype=torch.float64, device=g.device)
    return (g / torch.log2(ranks + 1.0)).sum(dim=-1)


def ndcg(gains: Tensor, ideal_gains: Tensor) -> Tensor:
    """Normalised DCG: NDCG = DCG(gains) / DCG(ideal), 0 where DCG(ideal) = 0.

    ``ideal_gains`` is sorted descending and truncated to K = gains.shape[1] here, so
    it may be passed unsorted and longer than K (e.g. all true relevances of a row).

    Args:
        gains: [B, K] gains of the ranked list, rank 1 first.
        ideal_gains: [B, T] gains of the best possible list (any order).

    Returns:
        [B] float64 NDCG in [0, 1] for non-negative gains.
    """
    ideal = torch.sort(ideal_gains.detach().to(torch.float64), dim=-1, descending=True).values
    d, di = dcg(gains), dcg(ideal[..., : gains.shape[-1]])
    return torch.where(di > 0, d / torch.where(di > 0, di, 1.0), torch.zeros_like(d))


def average_precision(hits_in_order: Tensor, n_relevant: Tensor) -> Tensor:
    """Average precision at K.

    AP@K = (1 / min(n_relevant, K)) * sum_{k=1..K} P@k * rel_k, where rel_k is 1 if
    rank k is a hit and P@k = (sum_{j<=k} rel_j) / k.

    Args:
        hits_in_order: [B, K] bool, hit flags in rank order.
        n_relevant: [B] number of relevant items per row.

    Returns:
        [B] float64 AP; NaN for rows with n_relevant == 0.
    """
    rel = hits_in_order.to(torch.float64)
    k = rel.shape[-1]
    ranks = torch.arange(1, k + 1, dtype=torch.float64, device=rel.device)
    num = (torch.cumsum(rel, dim=-1) / ranks * rel).sum(dim=-1)
    denom = torch.clamp(_f64(n_relevant).to(rel.device), max=float(k))
    return torch.where(denom > 0, num / denom.clamp(min=1.0), torch.full_like(num, float("nan")))


def hit_rate(hits: Tensor) -> float:
    """Hit rate: share of rows with at least one hit, (1/B) * sum_b [hits_b > 0].

    Args:
        hits: [B] hit counts.

    Returns:
        A float in [0, 1]; NaN when B == 0.
    """
    h = hits.reshape(-1)
    return float("nan") if h.numel() == 0 else float((h > 0).to(torch.float64).mean().item())


def expected_retrieval_metrics(relevance_topk: Tensor, total_relevance: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Expected logged recall, precision and hit rate of a top-K list under full, attentive exposure.

    If the user examined every live item and clicked item ``i`` with probability
    ``p_i`` (its true relevance), independently, the clicked set ``C`` would give
    ``E|C ∩ topK| = Σ_{i∈topK} p_i`` and ``E|C| = Σ_i p_i``. Then

    - recall = ``Σ_{i∈topK} p_i / Σ_i p_i`` (a ratio of expectations),
    - precision = ``Σ_{i∈topK} p_i / K``,
    - hit rate = ``1 − Π_{i∈topK} (1 − p_i)`` (exact).

    Args:
        relevance_topk: ``[B, K]`` true relevance of the retrieved items.
        total_relevance: ``[B]`` total true relevance over the live catalogue.

    Returns:
        ``(recall [B], precision [B], hit_rate [B])`` float64.
    """
    p = relevance_topk.detach().to(torch.float64)
    expected_hits = p.sum(-1)
    recall = expected_hits / total_relevance.detach().to(torch.float64).clamp_min(1e-12)
    hit = 1.0 - torch.exp(torch.log1p(-p.clamp(max=1.0 - 1e-12)).sum(-1))
    return recall, expected_hits / p.shape[-1], hit
