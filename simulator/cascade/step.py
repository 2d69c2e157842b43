"""One batch of requests through the cascade: the steps of serving, numbered in one place.

:func:`serve_batch` is what every traffic slice runs, in ``cascadesim run`` and in the
gymnasium environments alike. A share of the requests (``cascade.exploration_share``)
is served uniformly at random; the rest by the agent and the platform ranker,
deterministically or by Gumbel-top-k sampling (``cascade.stochastic``).
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING

import torch

from simulator.cascade import serving
from simulator.cascade.rows import Served, Tables, append_parts, part_tables
from simulator.rng import torch_stream
from simulator.types import RequestBatch
from simulator.world import dynamics, features
from simulator.world.relevance import true_relevance
from simulator.world.user_model import examination_curve, respond

if TYPE_CHECKING:
    from simulator.loop import ClosedLoop


def serve_batch(loop: ClosedLoop, batch: RequestBatch, intents: torch.Tensor) -> None:
    """Serve one batch: retrieval -> ranking -> exposure -> user -> world -> log."""
    loop.intents.set(batch.request_id, intents)
    # 0. a share of the traffic is uniform exploration; each part runs steps 1-5
    explore = exploration_flags(loop, batch)
    parts: list[Tables] = []
    for uniform, idx in ((False, ~explore), (True, explore)):
        if not bool(idx.any()):
            continue
        part, part_intents = batch.select(idx), intents[idx]
        live = loop.world.item_live.nonzero().squeeze(1)
        # 1. retrieval over the whole live catalogue
        recall = _recall(loop, part, live, uniform)
        # 2. ranking of the recalled set by the platform ranker
        rank_scores = loop.serving_ranker.score(part, recall.item_ids)
        # 3. exposure: the top-S slate
        exposure = _expose(loop, part, recall, rank_scores, len(live), uniform)
        slate = recall.item_ids.gather(1, exposure.slot_index)
        # 4. the user responds (ground truth + biases)
        relevance = _relevance(loop, part, slate, part_intents)
        attend = features.draw_attention(loop.sc, part.entry, _stream(loop, "attention", part, uniform))
        fb = respond(loop.world, loop.sc, part.user_id, part.entry, slate, relevance, _stream(loop, "choice", part, uniform), attend)
        fb = features.observe(loop.sc, part.domain, fb, partial(_stream, loop, batch=part, uniform=uniform))
        # 5. the world moves: counters, histories, consumption
        dynamics.record_feedback(loop.world, part.user_id, part.request_id, slate, fb, part.absolute_time())
        served = Served(part, part_intents, uniform, loop.retriever_version, loop.serving_ranker.version, recall, rank_scores,
                        exposure, slate, fb, _examine_prob(loop, part, slate.shape[1]), attend)  # fmt: skip
        parts.append(part_tables(served))
    # 6. log (observable) and truth, requests in id order
    append_parts(loop.log, loop.truth, batch.round, parts)


def _examine_prob(loop: ClosedLoop, part: RequestBatch, n_slots: int) -> torch.Tensor:
    """``[B, S]`` the true examination probability (truth): slot curve x attention depth, x P(attend | entry) when on."""
    examine = (examination_curve(loop.sc, n_slots, loop.device) * loop.world.user_attention[part.user_id].unsqueeze(1)).clamp(max=1.0)
    if loop.sc.attention.enabled:
        examine = examine * features.attend_prob(loop.sc, part.entry).unsqueeze(1)
    return examine


def _relevance(loop: ClosedLoop, part: RequestBatch, slate: torch.Tensor, intents: torch.Tensor) -> torch.Tensor:
    """``[B, S]`` the true relevance the user responds to (the mini-app's shift applied to its requests)."""
    relevance = true_relevance(loop.world, loop.sc, part.user_id, slate, intents)
    w = loop.world
    return features.domain_relevance(loop.sc, loop.seed, w.item_category[slate], w.item_domain[slate], part.domain, relevance)


def exploration_flags(loop: ClosedLoop, batch: RequestBatch) -> torch.Tensor:
    """``[B] bool``: the requests served by uniform exploration (a coin per request, keyed by the batch)."""
    share = loop.sc.cascade.exploration_share
    if share == 0.0:  # the coin cannot come up: skip drawing it
        return torch.zeros(len(batch), dtype=torch.bool, device=loop.device)
    return torch.rand(len(batch), generator=_stream(loop, "explore", batch), device=loop.device) < share


def _stream(loop: ClosedLoop, name: str, batch: RequestBatch, uniform: bool = False) -> torch.Generator:
    """The named random stream of this batch (keyed by round and first request id); exploration has its own."""
    return torch_stream(loop.seed, name + ("-explore" if uniform else ""), batch.round, int(batch.request_id[0]), device=loop.device)


def _recall(loop: ClosedLoop, batch: RequestBatch, live: torch.Tensor, uniform: bool) -> serving.Recall:
    cfg, k = loop.sc.cascade, loop.sc.cascade.k_retrieve
    if k > len(live):
        raise RuntimeError(
            f"cascade.k_retrieve: {k} exceeds the {len(live)} live items in round {batch.round}; lower it or the item retirement"
        )
    if uniform:
        return serving.uniform_recall(live, len(batch), k, _stream(loop, "recall", batch, uniform))
    if not cfg.stochastic:
        return serving.deterministic_recall(*loop.retriever.retrieve(batch, k))
    pool = min(len(live), math.ceil(cfg.candidate_pool * k))
    ids, scores = loop.retriever.retrieve(batch, pool)
    return serving.stochastic_recall(ids, scores, k, cfg, _stream(loop, "recall", batch), _stream(loop, "recall-mc", batch))


def _expose(
    loop: ClosedLoop, batch: RequestBatch, recall: serving.Recall, rank_scores: torch.Tensor, n_live: int, uniform: bool
) -> serving.Exposure:
    cfg, s = loop.sc.cascade, loop.sc.cascade.slate_size
    if uniform:
        return serving.uniform_exposure(
            len(batch), recall.item_ids.shape[1], s, n_live, _stream(loop, "expose", batch, uniform), loop.device
        )
    if not cfg.stochastic:
        return serving.deterministic_exposure(rank_scores, s)
    exp = serving.stochastic_exposure(rank_scores, s, cfg, _stream(loop, "expose", batch), _stream(loop, "expose-mc", batch))
    pool_rank = loop.serving_ranker.score(batch, recall.pool_ids)
    shown = torch.zeros_like(rank_scores).scatter_(1, exp.slot_index, 1.0)
    marginal = serving.marginal_propensity(recall, pool_rank, s, cfg, _stream(loop, "joint-mc", batch), shown)
    return serving.Exposure(exp.slot_index, exp.expose_prob, marginal)
