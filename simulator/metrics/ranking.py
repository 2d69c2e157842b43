"""Pure, vectorised retrieval-quality formulas: hits, recall, precision, (n)DCG, AP, hit rate.

The same conventions as :mod:`simulator.metrics.formulas` (torch, CPU/GPU agnostic, float64 sums,
no Python loop over users or items). Re-exported there, so ``formulas.recall_at_k`` keeps working.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _f64(x: Tensor) -> Tensor:
    """Flattened float64 copy, detached from autograd."""
    return x.detach().to(torch.float64).reshape(-1)


def _hits_and_n_relevant(retrieved: Tensor, relevant: Tensor, relevant_mask: Tensor | None) -> tuple[Tensor, Tensor]:
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
