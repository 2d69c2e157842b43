"""Serving: recall by the agent, exposure by the ranker, deterministic or stochastic.

Deterministic serving keeps the agent's top-K_r and the ranker's top-S.
Stochastic serving (``cascade.stochastic``) samples both stages by
Gumbel-top-k (Plackett-Luce without replacement) on ``score / temperature``:
recall from the agent's top ``candidate_pool * K_r`` items, exposure from the
recalled set. Inclusion probabilities have no closed form under Gumbel-top-k,
so they are Monte-Carlo estimates from ``propensity_samples`` independent
draws (a stream separate from the realised draw) plus the realised draw
itself, ``(hits + realised) / (n + 1)``, so an item that was served never
gets an estimate of 0 (an infinite inverse-propensity weight): ``recall_prob``,
``expose_prob`` (given the realised recalled set) and the marginal
``exposure_propensity`` (recall and exposure together). A share of requests
(``exploration_share``) is served uniformly at random instead, with exact
propensities ``K_r / M_live`` and ``S / M_live``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simulator.config import CascadeConfig

# Monte-Carlo draws are processed in row blocks of at most this many keys.
_MC_BLOCK_ELEMS = 4_000_000


@dataclass(frozen=True)
class Recall:
    """The recalled set of a batch (all ``[B, K_r]``, retrieval score descending)."""

    item_ids: torch.Tensor
    scores: torch.Tensor
    recall_prob: torch.Tensor
    pool_ids: torch.Tensor  # [B, P] the pool sampled from (== item_ids when deterministic)
    pool_scores: torch.Tensor  # [B, P]


@dataclass(frozen=True)
class Exposure:
    """The exposed slate: ``slot_index [B, S]`` points into the recalled set, in slot order."""

    slot_index: torch.Tensor
    expose_prob: torch.Tensor  # [B, K_r] P(exposed | realised recalled set)
    propensity: torch.Tensor  # [B, K_r] marginal P(exposed) under the whole serving policy


def gumbel_topk(scores: torch.Tensor, k: int, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """``[..., k]`` indices of a Plackett-Luce sample without replacement, in sampled order."""
    u = torch.rand(scores.shape, generator=gen, device=scores.device).clamp_(1e-20, 1.0)
    keys = scores / temperature - torch.log(-torch.log(u))
    return keys.topk(k, dim=-1).indices


def sample_fixed_weights(log_weights: torch.Tensor, n_rows: int, k: int, gen: torch.Generator, block_rows: int = 4096) -> torch.Tensor:
    """``[n_rows, k]`` Plackett-Luce samples without replacement from ONE weight vector shared by every row.

    The same law as :func:`gumbel_topk` on ``log_weights`` (tiled over the rows), at
    ``O(k log M)`` per row instead of ``O(M)``: the distinct items of a stream of
    i.i.d. draws ``∝ exp(log_weights)``, in order of first appearance, are a
    sequential sample without replacement (each new item is drawn ``∝`` its weight
    among those not yet seen). Each row draws ``2k`` items by inverse CDF; a row
    with fewer than ``k`` distinct items *extends* its stream (restarting it would
    condition the sample on a diverse first attempt and bias it toward light items).

    Args:
        log_weights: ``[M]`` log weights; ``-inf`` items (dead) are never drawn.
        n_rows: number of independent samples.
        k: items per sample (at most the number of items with finite weight).
        gen: the random stream.
        block_rows: rows drawn at once (bounds memory at ``block_rows x 2k`` per try).
    """
    finite = torch.isfinite(log_weights)
    if k > int(finite.sum()):
        raise ValueError(f"sample_fixed_weights: k = {k} exceeds the {int(finite.sum())} items with positive weight")
    w = torch.exp((log_weights - log_weights[finite].max()).double()).masked_fill(~finite, 0.0)
    cdf = torch.cumsum(w, 0)
    out = torch.empty((n_rows, k), dtype=torch.int64, device=log_weights.device)
    for start in range(0, n_rows, block_rows):
        todo = torch.arange(start, min(start + block_rows, n_rows), device=log_weights.device)
        items = torch.empty((len(todo), 0), dtype=torch.int64, device=log_weights.device)
        while len(todo):
            u = 1.0 - torch.rand((len(todo), max(2 * k, items.shape[1])), generator=gen, dtype=torch.float64, device=cdf.device)
            items = torch.cat([items, torch.searchsorted(cdf, u * cdf[-1]).clamp_(max=len(cdf) - 1)], dim=1)  # u in (0, 1]
            first = _first_occurrences(items)
            done = first.sum(1) >= k
            chosen = first & (first.cumsum(1) <= k)
            out[todo[done]] = items[done][chosen[done]].view(-1, k)
            todo, items = todo[~done], items[~done]
    return out


def _first_occurrences(items: torch.Tensor) -> torch.Tensor:
    """``[B, D] bool``: True where an entry is the first occurrence of its value in its row."""
    values, order = torch.sort(items, dim=1, stable=True)  # equal values keep draw order: the first comes first
    first_sorted = torch.ones_like(values, dtype=torch.bool)
    first_sorted[:, 1:] = values[:, 1:] != values[:, :-1]
    return torch.zeros_like(first_sorted).scatter_(1, order, first_sorted)


def _mc_inclusion(
    scores: torch.Tensor, k: int, temperature: float, draws: int, gen: torch.Generator, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, P]`` Monte-Carlo inclusion probability of each column in a Gumbel-top-k sample.

    ``mask [B, D, P]`` (optional) restricts each draw to some columns (-inf elsewhere).
    """
    b, p = scores.shape
    rows = max(1, _MC_BLOCK_ELEMS // max(1, draws * p))
    out = []
    for start in range(0, b, rows):
        s = scores[start : start + rows].unsqueeze(1).expand(-1, draws, -1)
        if mask is not None:
            s = s.masked_fill(~mask[start : start + rows], float("-inf"))
        idx = gumbel_topk(s, k, temperature, gen)
        hits = torch.zeros_like(s).scatter_(2, idx, 1.0)
        out.append(hits.mean(1))
    return torch.cat(out)


def _with_realised(mc: torch.Tensor, realised: torch.Tensor | float, draws: int) -> torch.Tensor:
    """Pool the realised draw with the Monte-Carlo draws: ``(mc * n + realised) / (n + 1)``."""
    return (mc * draws + realised) / (draws + 1)


def stochastic_recall(
    pool_ids: torch.Tensor, pool_scores: torch.Tensor, k: int, cfg: CascadeConfig, gen: torch.Generator, mc_gen: torch.Generator
) -> Recall:
    """Sample K_r of the pool by Gumbel-top-k; estimate each recalled item's inclusion probability."""
    pick = gumbel_topk(pool_scores, k, cfg.retrieve_temperature, gen)
    pick = pick.gather(1, pool_scores.gather(1, pick).argsort(dim=1, descending=True))  # retrieval-score order
    prob = _with_realised(
        _mc_inclusion(pool_scores, k, cfg.retrieve_temperature, cfg.propensity_samples, mc_gen), 1.0, cfg.propensity_samples
    )
    return Recall(pool_ids.gather(1, pick), pool_scores.gather(1, pick), prob.gather(1, pick), pool_ids, pool_scores)


def deterministic_recall(item_ids: torch.Tensor, scores: torch.Tensor) -> Recall:
    """Keep the agent's top-K_r: every recalled item has inclusion probability 1."""
    return Recall(item_ids, scores, torch.ones_like(scores), item_ids, scores)


def uniform_recall(live_ids: torch.Tensor, b: int, k: int, gen: torch.Generator) -> Recall:
    """Exploration: K_r live items uniformly without replacement per request."""
    rows = max(1, (1 << 22) // live_ids.shape[0])  # bounded [rows, M_live] blocks of random keys
    picks = [
        torch.rand(min(rows, b - a), live_ids.shape[0], generator=gen, device=live_ids.device).topk(k, dim=1).indices
        for a in range(0, b, rows)
    ]
    ids = live_ids[torch.cat(picks)] if picks else torch.empty(0, k, dtype=torch.int64, device=live_ids.device)
    zeros = torch.zeros(b, k, device=live_ids.device)
    return Recall(ids, zeros, torch.full_like(zeros, k / live_ids.shape[0]), ids, zeros)


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


def deterministic_exposure(rank_scores: torch.Tensor, s: int) -> Exposure:
    """The ranker's top-S, best first."""
    idx = rank_scores.topk(s, dim=1).indices
    prob = torch.zeros_like(rank_scores).scatter_(1, idx, 1.0)
    return Exposure(idx, prob, prob)


def stochastic_exposure(rank_scores: torch.Tensor, s: int, cfg: CascadeConfig, gen: torch.Generator, mc_gen: torch.Generator) -> Exposure:
    """Gumbel-top-S over ranker logits; slots in sampled order; conditional probability by Monte Carlo."""
    logits = _logit(rank_scores)
    idx = gumbel_topk(logits, s, cfg.expose_temperature, gen)
    shown = torch.zeros_like(logits).scatter_(1, idx, 1.0)
    prob = _with_realised(_mc_inclusion(logits, s, cfg.expose_temperature, cfg.propensity_samples, mc_gen), shown, cfg.propensity_samples)
    return Exposure(idx, prob, prob)


def marginal_propensity(
    recall: Recall,
    pool_rank_scores: torch.Tensor,
    s: int,
    cfg: CascadeConfig,
    mc_gen: torch.Generator,
    realised: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, K_r]`` P(exposed) of each recalled item when recall and exposure are both resampled.

    ``realised [B, K_r]`` (the realised exposure indicator) is pooled with the draws when given.
    """
    b, p = recall.pool_scores.shape
    k = recall.item_ids.shape[1]
    draws = cfg.propensity_samples
    rows = max(1, _MC_BLOCK_ELEMS // max(1, draws * p))
    logits = _logit(pool_rank_scores)
    out = []
    for start in range(0, b, rows):
        sl = slice(start, start + rows)
        pool = recall.pool_scores[sl].unsqueeze(1).expand(-1, draws, -1)
        recalled = torch.zeros_like(pool, dtype=torch.bool).scatter_(2, gumbel_topk(pool, k, cfg.retrieve_temperature, mc_gen), True)
        exp_logits = logits[sl].unsqueeze(1).expand(-1, draws, -1).masked_fill(~recalled, float("-inf"))
        shown = torch.zeros_like(pool).scatter_(2, gumbel_topk(exp_logits, s, cfg.expose_temperature, mc_gen), 1.0)
        out.append(shown.mean(1))
    marginal = torch.cat(out)
    pos = (recall.pool_ids.unsqueeze(1) == recall.item_ids.unsqueeze(2)).float().argmax(2)  # [B, K_r] column in pool
    marginal = marginal.gather(1, pos)
    return marginal if realised is None else _with_realised(marginal, realised, draws)


def uniform_exposure(b: int, k: int, s: int, n_live: int, gen: torch.Generator, device: torch.device) -> Exposure:
    """Exploration: S of the K_r recalled items uniformly, in random order."""
    idx = torch.rand(b, k, generator=gen, device=device).topk(s, dim=1).indices
    cond = torch.full((b, k), s / k, device=device)
    return Exposure(idx, cond, torch.full((b, k), s / n_live, device=device))
