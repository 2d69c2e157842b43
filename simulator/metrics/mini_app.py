"""Truth metrics of the mini-app domain: the evaluation panel served as mini-app requests (domain 1).

The main truth metrics (:func:`simulator.metrics.measure.truth_metrics`) ask the agent for main-feed
requests and grade against the main-feed relevance. A mini-app request sees another relevance (the
per-category shift and the own-domain bonus of ``[mini_app]``, :func:`simulator.world.features.domain_relevance`),
so a method that serves the mini-app (ECAT) is graded here: the same panel users and the same intents
(the ``eval-intent`` stream redrawn), requests with ``domain = 1``, the true top-K by the shifted relevance.
Written as ``mini_app_<metric>`` only when ``world.mini_app_share > 0`` (no extra draws from any other stream).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from simulator.metrics.measure import MetricInput, _retrieval_sums, panel_requests
from simulator.rng import torch_stream
from simulator.world.features import domain_relevance
from simulator.world.relevance import true_relevance_all

MINI_APP = 1


def mini_app_relevance_all(inp: MetricInput, users: torch.Tensor, intents: torch.Tensor) -> torch.Tensor:
    """``[B, M]`` the relevance mini-app requests of ``users`` respond to, against every item id; dead items -1."""
    w = inp.world
    rel = true_relevance_all(w, inp.sc, users, intents)
    domain = torch.full_like(users, MINI_APP)
    shifted = domain_relevance(inp.sc, inp.seed, w.item_category.unsqueeze(0), w.item_domain.unsqueeze(0), domain, rel)
    return shifted.masked_fill(~w.item_live, -1.0)


def mini_app_truth_metrics(inp: MetricInput) -> dict[str, float]:
    """``mini_app_true_recall@K``, ``..._true_ndcg@K``, ``..._unbiased_*@K``, ``..._retrieval_slate_utility / regret``; {} when off."""
    sc, w = inp.sc, inp.world
    if sc.world.mini_app_share == 0:
        return {}
    panel = inp.state.panel[w.user_alive[inp.state.panel]]
    gen = torch_stream(inp.seed, "eval-intent", inp.round, device=w.device)  # the main truth metrics' intents
    intents = torch.multinomial(w.user_intents[panel], 1, generator=gen).squeeze(1)
    kmax = max(*sc.eval_ks, sc.cascade.k_retrieve)
    hour = (inp.round + 1) * sc.timeline.round_hours
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, len(panel), sc.metrics.block_size):
        users, block_intents = panel[start : start + sc.metrics.block_size], intents[start : start + sc.metrics.block_size]
        batch = panel_requests(w, users, inp.round, hour)
        batch = replace(batch, domain=torch.full_like(batch.domain, MINI_APP))
        inp.set_intents(batch.request_id, block_intents)
        ret_ids, _ = inp.retriever.retrieve(batch, kmax)
        rel_all = mini_app_relevance_all(inp, users, block_intents)
        top = rel_all.topk(kmax, dim=1)
        total = rel_all.clamp_min(0.0).sum(1, dtype=torch.float64)
        block = _retrieval_sums(ret_ids, rel_all.gather(1, ret_ids), top.indices, top.values, total, sc.eval_ks, sc.cascade.slate_size)
        for k, v in block.items():
            sums[k] = sums.get(k, 0) + v
    n = max(len(panel), 1)
    return {f"mini_app_{k}": float(v / n) for k, v in sums.items()}
