"""The softmax-family losses shared by YouTube-DNN, sampled softmax, CLRec and IPW (algorithms.md §9-§12).

One function, :func:`sampled_softmax_loss`, covers them all: a row's positive
logit against a set of negative logits (shared sampled negatives, the other
positives of the batch, a queue), with the optional logQ correction
``s^c(x, j) = s(x, j) - log Q(j)`` applied to the positive *and* the negatives
(Yi et al. 2019), a mask for accidental hits, and optional per-row weights
(rewards or inverse propensities).
"""

from __future__ import annotations

import torch


def sampled_softmax_loss(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    pos_log_q: torch.Tensor | None = None,
    neg_log_q: torch.Tensor | None = None,
    neg_mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mean_r w_r · −log [ exp(s^c_r+) / (exp(s^c_r+) + Σ_l exp(s^c_rl)) ]``.

    Args:
        pos_logits: ``[B]`` logits of each row's positive.
        neg_logits: ``[B, L]`` logits of the negatives (``[L]`` is broadcast: shared negatives).
        pos_log_q: ``[B]`` log sampling probability of the positives (logQ correction), or None.
        neg_log_q: ``[B, L]`` or ``[L]`` log sampling probability of the negatives, or None.
        neg_mask: ``[B, L]`` bool, True where a negative must be dropped (accidental hit, duplicate).
        weights: ``[B]`` per-row weights (detached by the caller), or None for 1.

    Returns:
        The (weighted) mean loss over rows.
    """
    if (pos_log_q is None) != (neg_log_q is None):
        raise ValueError("sampled_softmax_loss: give both pos_log_q and neg_log_q, or neither")
    pos = pos_logits if pos_log_q is None else pos_logits - pos_log_q
    neg = neg_logits.expand(pos.shape[0], -1) if neg_logits.dim() == 1 else neg_logits
    if neg_log_q is not None:
        neg = neg - neg_log_q
    if neg_mask is not None:
        neg = neg.masked_fill(neg_mask, float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
    per_row = torch.logsumexp(logits, dim=1) - pos
    return per_row.mean() if weights is None else (weights * per_row).mean()


def in_batch_logits(queries: torch.Tensor, items: torch.Tensor, scale: float) -> torch.Tensor:
    """``[B, B]`` logits ``scale · <q_r, g_c>``: row ``r``'s positive is column ``r``."""
    return scale * queries @ items.T


def duplicate_mask(item_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` True where ``candidates`` (``[L]`` or ``[B, L]``) equals the row's positive ``item_ids [B]``."""
    cand = candidates.unsqueeze(0) if candidates.dim() == 1 else candidates
    return cand == item_ids.unsqueeze(1)
