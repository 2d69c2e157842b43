"""Multi-CLRec's model: the item encoder (Eq. 5) and the intent-routed user encoder (Eqs. 6-9).

The method, its config and its losses are in :mod:`agents.multi_clrec`; this module holds the
``nn.Module`` only (split out to keep each file short).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from agents.backbone.index import IndexedServing, ItemIndex, block_rows, blocked_topk, check_k
from agents.backbone.sequence import backward_positions, time_buckets
from agents.backbone.two_tower import N_DOMAINS, N_ENTRIES, evaluating, init_parameters
from simulator.agent_api import AgentContext
from simulator.nn import mlp
from simulator.types import Catalogue, RequestBatch

if TYPE_CHECKING:
    from agents.multi_clrec import MultiCLRecConfig


def routing(prototypes: torch.Tensor, category_emb: torch.Tensor, rho: float) -> torch.Tensor:
    """Eq. (7): ``p_{h|t} = softmax_h(cos(μ_h, c_t) / ρ)``: ``[..., d]`` x ``[H, d]`` -> ``[..., H]``."""
    return torch.softmax(F.normalize(category_emb, dim=-1) @ F.normalize(prototypes, dim=-1).T / rho, dim=-1)


class MultiIntentModel(nn.Module):
    """Multi-CLRec's item encoder (Eq. 5) and intent-routed user encoder (Eqs. 6-9).

    Args:
        ctx: id capacities, feature sizes, device.
        cfg: the agent's :class:`~agents.multi_clrec.MultiCLRecConfig` (``embedding_dim`` resolved by the caller).
        d: embedding size.
        seed: initialisation seed.
    """

    edges: torch.Tensor  # the bucket edges (a non-persistent buffer)

    def __init__(self, ctx: AgentContext, cfg: MultiCLRecConfig, d: int, seed: int) -> None:
        super().__init__()
        self.cfg, self.d = cfg, d
        d_id, d_t, h = cfg.id_dim, cfg.time_dim, cfg.intents
        n_buckets = len(cfg.bucket_edges) + 2
        u_dim = d if cfg.context_token else 0
        with torch.device("meta"):
            self.item_id = nn.Embedding(ctx.n_items, d_id)
            self.category = nn.Embedding(ctx.n_categories, d)  # c_t: MLP1 input and the routing key
            self.creator = nn.Embedding(ctx.n_creators, d_id)
            self.item_domain = nn.Embedding(N_DOMAINS, d_id)
            self.modality = nn.Linear(3 * ctx.modality_dim, d_id, bias=False) if cfg.modality else None
            self.mlp1 = mlp([d_id * (4 if cfg.modality else 3) + d, *cfg.hidden, d])
            self.time_embedding = nn.Embedding(n_buckets, d_t)
            self.position_embedding = nn.Embedding(ctx.history_len, d_t)
            self.mlp2 = mlp([2 * d + 2 * d_t, cfg.importance_hidden, 1])
            self.prototypes = nn.Embedding(h, d)  # μ_h (an embedding table so the seeded init covers it)
            self.intent_bias = nn.Embedding(h, d)  # β_h
            self.mlp3 = mlp([2 * d + u_dim, *cfg.hidden, d])
            self.mlp4 = mlp([d + u_dim, *cfg.hidden, d])
            if cfg.context_token:
                self.profile = nn.Linear(ctx.profile_dim, d, bias=False)
                self.user_domain = nn.Embedding(N_DOMAINS, d)
                self.entry = nn.Embedding(N_ENTRIES, d)
        self.to_empty(device=ctx.device)
        init_parameters(self, torch.Generator().manual_seed(seed), cfg.embedding_std or d**-0.5)
        self.register_buffer("edges", torch.tensor(cfg.bucket_edges, dtype=torch.float64, device=ctx.device), persistent=False)

    @property
    def scale(self) -> float:
        return 1.0 / self.cfg.rho

    def item_embedding(self, catalogue: Catalogue, item_ids: torch.Tensor) -> torch.Tensor:
        """Eq. (5): normalised ``g(y)`` ``[*, d]`` of ``item_ids [*]``."""
        flat = item_ids.reshape(-1)
        parts = [
            self.item_id(flat), self.category(catalogue.category[flat]), self.creator(catalogue.creator[flat]),
            self.item_domain(catalogue.domain[flat]),
        ]  # fmt: skip
        if self.modality is not None:
            parts.append(self.modality(catalogue.modality[flat].flatten(1).float()))
        return F.normalize(self.mlp1(torch.cat(parts, dim=1)), dim=-1).reshape(*item_ids.shape, -1)

    def item_routing(self, catalogue: Catalogue, item_ids: torch.Tensor) -> torch.Tensor:
        """``[*, H]`` ``p_{h|y}`` of ``item_ids [*]`` (from the category embedding only)."""
        return routing(self.prototypes.weight, self.category(catalogue.category[item_ids]), self.cfg.rho)

    def intents(self, requests: RequestBatch, catalogue: Catalogue) -> dict[str, torch.Tensor]:
        """Eqs. (6)-(9) for a batch.

        Returns:
            ``z [B, H, d]`` (normalised intent vectors), ``w [B, H]`` (selection softmax),
            ``h_star [B]``, ``history_routing [B, L, H]`` and ``valid [B, L]``.
        """
        hist = requests.history
        valid = hist >= 0
        ids = hist.clamp_min(0)
        g = self.item_embedding(catalogue, ids)  # [B, L, d]
        c = self.category(catalogue.category[ids])
        when, where = self.time_embedding(time_buckets(requests, self.edges)), self.position_embedding(backward_positions(hist))
        feats = torch.cat([g, c, when, where], dim=-1)
        imp = self.mlp2(feats).squeeze(-1).masked_fill(~valid, float("-inf"))
        p_t = torch.softmax(imp, dim=-1).nan_to_num(0.0)  # [B, L]; an empty history gives zeros
        p_ht = routing(self.prototypes.weight, c, self.cfg.rho)  # [B, L, H]
        z_raw = torch.einsum("blh,bl,bld->bhd", p_ht, p_t, g)
        b, h = hist.shape[0], self.cfg.intents
        beta = self.intent_bias.weight.unsqueeze(0).expand(b, h, self.d)
        pooled = (p_t.unsqueeze(-1) * g).sum(1)
        if self.cfg.context_token:
            u = self.profile(requests.profile.float()) + self.user_domain(requests.domain) + self.entry(requests.entry)
            z = self.mlp3(torch.cat([z_raw, beta, u.unsqueeze(1).expand(b, h, self.d)], dim=-1))
            m = self.mlp4(torch.cat([pooled, u], dim=-1))
        else:
            z = self.mlp3(torch.cat([z_raw, beta], dim=-1))
            m = self.mlp4(pooled)
        z, m = F.normalize(z, dim=-1), F.normalize(m, dim=-1)
        w = torch.softmax(self.selector_logits(z, m), dim=-1)
        return {"z": z, "m": m, "w": w, "h_star": w.argmax(-1), "history_routing": p_ht, "valid": valid}

    def selector_logits(self, z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Eq. (9): ``w̃_h = cos(m, z_h) / ρ_sel`` ``[B, H]`` from normalised ``z [B, H, d]`` and ``m [B, d]``."""
        return (z * m.unsqueeze(1)).sum(-1) / (self.cfg.selector_rho or self.cfg.rho)

    def user_queries(self, requests: RequestBatch, catalogue: Catalogue, n_intents: int = 1) -> torch.Tensor:
        """``[B, K, d]`` normalised serving queries: the ``K = n_intents`` intent vectors with the largest
        ``w_h`` (``K = 1``: ``f(x) = z_{h*}``), eval mode, no grad."""
        with evaluating(self):
            out = self.intents(requests, catalogue)
            top = out["w"].topk(min(n_intents, self.cfg.intents), dim=1).indices  # [B, K]; column 0 is h*
            return out["z"].gather(1, top.unsqueeze(-1).expand(-1, -1, self.d))


class MultiIntentRetriever(IndexedServing):
    """The serving half of Multi-CLRec: the item index and the max-over-served-intents scoring.

    Args:
        model: the trained model (shared with the agent).
        device: the agent's device.
        serve_intents: intent vectors served per request (top-K by ``w_h``).
        block_users: users per block when scanning the catalogue.
        name: the agent's name (for errors).
    """

    def __init__(self, model: MultiIntentModel, device: torch.device, serve_intents: int, block_users: int, name: str) -> None:
        self.model, self.device, self.serve_intents, self.block_users, self.name = model, device, serve_intents, block_users, name
        super().__init__()

    def index(self, catalogue: Catalogue) -> None:
        """Embed all live items once (normalised ``g``)."""
        catalogue = catalogue.to(self.device)
        ids = catalogue.live_ids()
        with evaluating(self.model):
            parts = [self.model.item_embedding(catalogue, ids[s : s + 65536]) for s in range(0, len(ids), 65536)]
            emb = torch.cat(parts) if parts else torch.zeros(0, self.model.d, device=ids.device)
        self._catalogue = catalogue
        self._index = ItemIndex(ids, emb.contiguous(), self.model.scale, self.block_users)

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` live items by ``max_{h ∈ served} cos(z_h, g) / ρ`` (``serve_intents = 1``: ``z_{h*}``):
        ``(item_ids [B, k] int64, logits [B, k] float32)``."""
        index, catalogue = self._indexed()
        check_k(k, len(index), self.name)
        queries = self.model.user_queries(requests.to(self.device), catalogue, self.serve_intents)
        if queries.shape[1] == 1:
            return index.topk(queries[:, 0], k)
        rows = block_rows(len(index) * queries.shape[1], index.block_users)
        cols, vals = blocked_topk(
            queries.shape[0], k, rows, lambda a, b: index.scale * (queries[a:b] @ index.embeddings.T).max(1).values, queries.device
        )  # fmt: skip
        return index.item_ids[cols], vals.float()

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K] float32`` ``max_{h ∈ served} cos(z_h, g(y)) / ρ`` (indexed vectors reused, others embedded now)."""
        index, catalogue = self._indexed()
        item_ids = item_ids.to(self.device)
        queries = self.model.user_queries(requests.to(self.device), catalogue, self.serve_intents)
        emb, found = index.lookup(item_ids)
        if not bool(found.all()):
            with evaluating(self.model):
                missing = self.model.item_embedding(catalogue, item_ids[~found])
            emb = emb.index_put((~found).nonzero(as_tuple=True), missing)
        if queries.shape[1] == 1:
            return (index.scale * torch.bmm(emb, queries[:, 0].unsqueeze(-1)).squeeze(-1)).float()
        return (index.scale * torch.bmm(emb, queries.transpose(1, 2)).max(-1).values).float()
