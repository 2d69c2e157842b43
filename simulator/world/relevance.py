"""True relevance r(u, i | intent) in [0, 1]: the truth every metric uses.

    logit r = a * <theta_u + w * P_c, phi_i> + q_i - boredom_u[cat_i] + b

with ``theta_u`` the user's (drifting) latent, ``P_c`` the prototype of the
request's current intent ``c``, ``phi_i`` the item latent, ``q_i`` its quality.
Computed for given pairs or, in blocks of users, against the whole live
catalogue; never for all users x items at once.
"""

from __future__ import annotations

import torch

from simulator.config import Scenario
from simulator.world.state import WorldState

_MAX_BLOCK_ELEMENTS = 1 << 23  # [users, items] relevance entries per block (32 MiB of float32)


def _query(world: WorldState, sc: Scenario, user_ids: torch.Tensor, intents: torch.Tensor | None) -> torch.Tensor:
    """``[B, d]`` the vector dotted with item latents; ``intents=None`` uses the user's intent mixture."""
    intent_vec = world.user_intents[user_ids] @ world.prototypes if intents is None else world.prototypes[intents]
    return sc.world.relevance_scale * (world.user_latent[user_ids] + sc.world.intent_weight * intent_vec)


def true_relevance(
    world: WorldState, sc: Scenario, user_ids: torch.Tensor, item_ids: torch.Tensor, intents: torch.Tensor | None = None
) -> torch.Tensor:
    """``[B, K]`` true relevance of ``item_ids [B, K]`` for ``user_ids [B]`` under ``intents [B]``."""
    q = _query(world, sc, user_ids, intents)
    logit = torch.einsum("bd,bkd->bk", q, world.item_latent[item_ids])
    logit = logit + world.item_quality[item_ids] - world.user_boredom[user_ids.unsqueeze(1), world.item_category[item_ids]]
    return torch.sigmoid(logit + sc.world.relevance_bias)


def true_relevance_all(world: WorldState, sc: Scenario, user_ids: torch.Tensor, intents: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, M]`` true relevance against every item id; dead items get -1 (below any real value)."""
    q = _query(world, sc, user_ids, intents)
    logit = q @ world.item_latent.T  # [B, M]: the one big buffer; everything below is in place
    logit.add_(world.item_quality).sub_(world.user_boredom[user_ids][:, world.item_category]).add_(sc.world.relevance_bias)
    return logit.sigmoid_().masked_fill_(~world.item_live, -1.0)


def true_topk(
    world: WorldState, sc: Scenario, user_ids: torch.Tensor, intents: torch.Tensor | None, k: int, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The true top-``k`` live items per user, scanning the catalogue in blocks of ``block`` users.

    Returns:
        ``(item_ids [B, k] int64, relevance [B, k] float32)``, best first.
    """
    ids, vals, _ = true_topk_and_total(world, sc, user_ids, intents, k, block)
    return ids, vals


def true_topk_and_total(
    world: WorldState, sc: Scenario, user_ids: torch.Tensor, intents: torch.Tensor | None, k: int, block: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`true_topk` plus ``[B] float64`` the total true relevance over the live catalogue (same scan)."""
    ids, vals, totals = [], [], []
    n_dead = float((~world.item_live).sum())
    block = max(1, min(block, _MAX_BLOCK_ELEMENTS // world.item_live.shape[0]))
    for start in range(0, len(user_ids), block):
        sl = slice(start, start + block)
        rel = true_relevance_all(world, sc, user_ids[sl], None if intents is None else intents[sl])
        top = rel.topk(k, dim=1)
        ids.append(top.indices)
        vals.append(top.values)
        totals.append(rel.sum(1, dtype=torch.float64) + n_dead)  # dead items carry -1: add them back, no [B, M] temporary
    return torch.cat(ids), torch.cat(vals), torch.cat(totals)
