"""ECAT's parts: the coarse-to-fine sample transfer and the teacher's side (algorithms.md §15(c); our reading of arXiv 2407.02542).

Only the abstract is public: "an initial selection through a graph-guided method, followed by a
fine-grained selection using domain adaptation". Our reading:

1. **Graph stage** (:func:`graph_select`): on the bipartite graph of the window's positive
   interactions (both domains), keep the source samples whose user or item lies within ``hops`` hops
   of a target-domain positive's user or item. ``hops < 0`` keeps every source sample.
2. **Domain-adaptation stage** (:func:`density_ratio`, :func:`selection_loss`): a classifier ``D``
   (target = 1, kept source = 0, each class averaged on its own so the priors are equal) on shared
   features of the sample, its label included (:func:`selection_features`: what matters for transfer
   is whether a source sample's *label* looks like the target's, not only whether its user and item
   do). A source sample gets ``ω = D / (1 − D) = exp(logit)``, clipped to ``[0, omega_clip]``; samples
   with ``ω < omega_min`` are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from agents.backbone.exposure import ExposureCore
from agents.backbone.training import Exposures
from agents.backbone.two_tower import evaluating
from simulator.log.view import TrainingView
from simulator.types import Catalogue

BLOCK = 65536  # pairs per teacher / feature forward pass


def _reach(mark_from: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, size: int) -> torch.Tensor:
    """``[size] bool``: nodes of the other side adjacent (by edges ``src -> dst``) to a marked node."""
    out = torch.zeros(size, dtype=torch.bool, device=src.device)
    out[dst[mark_from[src]]] = True
    return out


def graph_select(
    users: torch.Tensor, items: torch.Tensor, edge_users: torch.Tensor, edge_items: torch.Tensor,
    seed_users: torch.Tensor, seed_items: torch.Tensor, n_users: int, n_items: int, hops: int,
) -> torch.Tensor:  # fmt: skip
    """``[n] bool``: which samples ``(users[k], items[k])`` have a user or item within ``hops`` hops of a seed.

    Breadth-first on the bipartite graph, all nodes at once (no per-node loop): each hop marks the
    nodes of the other side adjacent to a marked node.

    Args:
        users, items: ``[n] int64`` the candidate (source) samples.
        edge_users, edge_items: ``[E] int64`` the graph's edges (positive interactions).
        seed_users, seed_items: ``[S] int64`` the target domain's users and items (distance 0).
        n_users, n_items: id capacities.
        hops: the radius; ``< 0`` keeps everything.
    """
    if hops < 0:
        return torch.ones_like(users, dtype=torch.bool)
    near_u = torch.zeros(n_users, dtype=torch.bool, device=users.device)
    near_i = torch.zeros(n_items, dtype=torch.bool, device=users.device)
    near_u[seed_users], near_i[seed_items] = True, True
    for _ in range(hops):
        near_u, near_i = near_u | _reach(near_i, edge_items, edge_users, n_users), near_i | _reach(near_u, edge_users, edge_items, n_items)
    return near_u[users] | near_i[items]


def selection_features(f: torch.Tensor, g: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[n, 2d + 1]`` the domain classifier's input ``[ĝ, a·ĝ, a]`` (normalised, detached).

    ``a = (2y − 1)·cos(f, g)`` is the entire-space model's agreement with the sample's label; ``a·ĝ``
    makes "does the label agree, for items like this one?" linear for ``D``, so it can tell a source
    sample whose label the target would also give from one whose preference the target does not share.
    The user's own vector is left out: with the domain drawn per request (not per user) it carries no
    domain signal, only room for ``D`` to memorise the few target users.
    """
    f, g = F.normalize(f.detach(), dim=-1), F.normalize(g.detach(), dim=-1)
    a = ((2.0 * labels.float() - 1.0) * (f * g).sum(-1)).unsqueeze(-1)
    return torch.cat([g, a * g, a], dim=-1)


def selection_loss(target_logits: torch.Tensor, source_logits: torch.Tensor) -> torch.Tensor:
    """``BCE(D(x_T), 1) + BCE(D(x_S), 0)``, each averaged over its own domain (equal class priors)."""
    return F.binary_cross_entropy_with_logits(target_logits, torch.ones_like(target_logits)) + F.binary_cross_entropy_with_logits(
        source_logits, torch.zeros_like(source_logits)
    )


def density_ratio(source_logits: torch.Tensor, clip: float, omega_min: float) -> torch.Tensor:
    """``[n]`` ``ω = clip(D / (1 − D), 0, clip)`` with ``D = σ(logit)``, set to 0 below ``omega_min`` (dropped).

    With equal class priors in :func:`selection_loss`, ``D / (1 − D)`` estimates ``p_T(x) / p_S(x)``.
    """
    omega = source_logits.detach().clamp(max=torch.log(torch.tensor(clip)).item()).exp()
    return torch.where(omega >= omega_min, omega, torch.zeros_like(omega))


# --- the teacher's side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Teacher:
    """The teacher's view of the target rows: ``f_S [n, D]``, ``g_S [n, D]``, ``ℓ_teacher [n]`` (no grad)."""

    f: torch.Tensor
    g: torch.Tensor
    loss: torch.Tensor
    from_ranker: bool


def _blocks(data: Exposures) -> list[torch.Tensor]:
    return [torch.arange(s, min(s + BLOCK, len(data)), device=data.row.device) for s in range(0, len(data), BLOCK)]


def entire_outputs(core: ExposureCore, data: Exposures, catalogue: Catalogue) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(f [n, d], g [n, d], logits [n])`` of the entire-space model on ``data`` (eval mode, no grad)."""
    model, outs = core.model, []
    with evaluating(model):
        for idx in _blocks(data):
            req, items, _ = data.batch(idx)
            f, g = model.user_embedding(req), model.item_embedding(catalogue, items)
            outs.append((f, g, model.score_pairs(f, g) + model.bias_terms(req.user_id, items)))
    if not outs:
        d = model.cfg.dim
        return torch.zeros(0, d, device=data.row.device), torch.zeros(0, d, device=data.row.device), torch.zeros(0, device=data.row.device)
    return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))  # type: ignore[return-value]


def ranker_teacher(view: TrainingView, data: Exposures) -> Teacher | None:
    """The platform ranker's representations and losses on ``data``; None if its snapshot has no ``representations``."""
    ranker = view.ranker
    if not hasattr(ranker, "representations"):
        return None
    fs, gs, ps = [], [], []
    with torch.no_grad():
        for idx in _blocks(data):
            req, items, _ = data.batch(idx)
            f, g = ranker.representations(req, items.unsqueeze(1))
            fs.append(f.float().to(items.device))
            gs.append(g[:, 0].float().to(items.device))
            ps.append(ranker.score(req, items.unsqueeze(1))[:, 0].float().to(items.device))
    p = torch.cat(ps).clamp(1e-6, 1 - 1e-6)
    return Teacher(torch.cat(fs), torch.cat(gs), F.binary_cross_entropy(p, data.labels.float(), reduction="none"), True)
