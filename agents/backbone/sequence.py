"""The sequence user encoder of single-queue CLRec (CLRec paper, appendix B.1-B.2; algorithms.md §10(b)).

Shared by ``sampled-softmax``, ``sampled-softmax-logq``, ``clrec``, ``clrec-queue``,
``clrec-cached`` (and, for its encoder parts, ``multi-clrec`` / ``ipw``).

Item encoder (B.1.1): ``g(y) = e_id[y] + e_cat[c_y] + e_creator[k_y] + e_dom[d_y] + W_m·modality_y``,
a *sum* of the base id embedding and the feature embeddings (the modality projection is the
simulator's stand-in for "item features"; no popularity counters, no MLP).

History click ``t`` of a request (B.1.1): ``x_t = g(y_t) + e_time[bucket(t_req − t_click)] + e_pos[p_t]``,
with the *backward* position ``p_t`` (the earliest click of the sequence is position 0) and the
time bucket of the gap in hours between the request and the click (``RequestBatch.history_time``;
bucket 0 = "time unknown": a batch without click times, or a NaN entry).

User encoder (B.1.2): ``f(x) = WHA(MultiAtt(X))`` with
``MultiAtt(X) = softmax(MLP(X)^T, −1)·X`` (a two-layer MLP gives ``H`` attention scores per
click; padded clicks are masked), ``z_h`` L2-normalised (B.2), then weighted head aggregation
``m = mean_h z_h``, ``α_h = softmax_h(z_h^T A m)``, ``f = Σ_h α_h z_h``, L2-normalised.

**Deviation (simulator)**: a request may have an empty history (cold users, the first
warm-start round), for which the paper's encoder is undefined. A *context token*
``W_p·profile + e_domain + e_entry`` (+ ``e_user[u]`` with ``user_id_token``) is appended to
``X`` as one extra, always-present element (switch ``context_token``).

Similarity (B.2): ``φ(x, y) = cos(f(x), g(y)) / ρ``, ``ρ = 0.07``. Embeddings are initialised
normal with std ``d^{-1/2}`` (B.2: spread over the sphere).

API (for the agents):

- :class:`SequenceTowerConfig`: shape, buckets, ρ (a method config embeds one as its ``encoder``;
  :meth:`SequenceTowerConfig.resolved` fills ``embedding_dim`` from the scenario).
- :class:`SequenceTwoTower` (``nn.Module``):
  ``item_embedding(catalogue, ids [*]) -> [*, d]`` (normalised ``g``),
  ``history_inputs(requests, catalogue) -> (X [B, L(+1), d], valid [B, L(+1)] bool)``,
  ``heads(requests, catalogue) -> z [B, H, d]`` (normalised head embeddings),
  ``user_embedding(requests, catalogue) -> [B, d]`` (normalised ``f``),
  ``logits(f [B, d], g [B, d] | [N, d] | [B, N, d])`` (cosine / ρ; 2-D ``g`` with ``pairwise=False``
  is one item per row), ``embed_catalogue(catalogue) -> ItemIndex``; the sub-modules
  ``item_encoder`` (:class:`ItemEncoder`, with ``category`` for Multi-CLRec's routing),
  ``time_embedding``, ``position_embedding``, ``attention``, ``wha``.
- :func:`time_buckets` and :func:`backward_positions`: the bucket / position of every history click.
- :mod:`agents.backbone.sequence_core`: :class:`~agents.backbone.sequence_core.SequenceRetriever`
  and :class:`~agents.backbone.sequence_core.SequenceCore` (retriever, optimiser, state) that the
  sequence methods compose, with ``click_examples`` and ``click_impression_gap``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from agents.backbone.index import ItemIndex
from agents.backbone.training import check_ranges
from agents.backbone.two_tower import N_DOMAINS, N_ENTRIES, evaluating, init_parameters
from simulator.agent_api import AgentContext
from simulator.types import Catalogue, RequestBatch

DEFAULT_BUCKET_EDGES: tuple[float, ...] = (1.0, 4.0, 12.0, 24.0, 48.0, 96.0, 168.0, 336.0, 720.0)


@dataclass(frozen=True)
class SequenceTowerConfig:
    """Shape and scoring of the sequence encoder (a method config embeds one as its ``encoder`` field)."""

    embedding_dim: int | None = None
    """``d`` of every embedding and of ``f``, ``g`` (None: ``training.embedding_dim``)."""
    heads: int = 4
    """``H`` attention heads of MultiAtt."""
    attention_hidden: int = 32
    """Hidden size of MultiAtt's two-layer MLP."""
    bucket_edges: tuple[float, ...] = DEFAULT_BUCKET_EDGES
    """Right edges (hours) of the time-gap buckets; gaps beyond the last edge share one bucket."""
    modality: bool = True
    """Add a linear projection of the item's three modality vectors to ``g``."""
    context_token: bool = True
    """Append the profile / domain / entry token to the history (cold users; see module doc)."""
    user_id_token: bool = False
    """Add the user-id embedding to the context token."""
    rho: float = 0.07
    """Temperature ρ of ``cos / ρ`` (paper: 0.07)."""
    embedding_std: float | None = None
    """Embedding init std (None: ``d^{-1/2}``, paper B.2)."""
    block_users: int = 1024
    """Users per block when scanning the catalogue."""

    def __post_init__(self) -> None:
        check_ranges(self)
        check_sequence_ranges(self)

    def resolved(self, ctx: AgentContext) -> SequenceTowerConfig:
        """This config with ``embedding_dim = None`` replaced by ``ctx.training.embedding_dim``."""
        return self if self.embedding_dim is not None else replace(self, embedding_dim=ctx.training.embedding_dim)

    @property
    def n_buckets(self) -> int:
        """Bucket 0 (unknown time) plus one per edge plus the overflow bucket."""
        return len(self.bucket_edges) + 2


def time_buckets(requests: RequestBatch, edges: torch.Tensor) -> torch.Tensor:
    """``[B, L] int64`` bucket of each history click's gap ``t_request − t_click`` (hours).

    Bucket 0 means unknown (no ``history_time`` on the batch, or NaN: padding); a gap ``g`` goes
    to ``1 + #{edges < g}`` (``g <= edges[0]`` -> 1, beyond the last edge -> ``len(edges) + 1``).
    """
    shape = requests.history.shape
    if requests.history_time is None:
        return torch.zeros(shape, dtype=torch.int64, device=requests.history.device)
    gap = requests.absolute_time().double().unsqueeze(1) - requests.history_time.double()
    known = ~torch.isnan(gap)
    idx = 1 + torch.searchsorted(edges.double(), gap.clamp_min(0.0).nan_to_num(0.0).contiguous(), right=False)
    return torch.where(known, idx, torch.zeros_like(idx))


def backward_positions(history: torch.Tensor) -> torch.Tensor:
    """``[B, L] int64`` backward position of each valid click: the earliest is 0 (padding -> 0)."""
    valid = history >= 0
    return (valid.long().cumsum(1) - 1).clamp_min(0)


class ItemEncoder(nn.Module):
    """``g(y)``: the sum of the id embedding and the feature embeddings (paper B.1.1)."""

    def __init__(self, ctx: AgentContext, d: int, modality: bool) -> None:
        super().__init__()
        self.item_id = nn.Embedding(ctx.n_items, d)
        self.category = nn.Embedding(ctx.n_categories, d)
        self.creator = nn.Embedding(ctx.n_creators, d)
        self.domain = nn.Embedding(N_DOMAINS, d)
        self.modality = nn.Linear(3 * ctx.modality_dim, d, bias=False) if modality else None

    def forward(self, catalogue: Catalogue, item_ids: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) ``[*, d]`` for ``item_ids [*]`` (valid ids only)."""
        flat = item_ids.reshape(-1)
        out = self.item_id(flat) + self.category(catalogue.category[flat]) + self.creator(catalogue.creator[flat])
        out = out + self.domain(catalogue.domain[flat])
        if self.modality is not None:
            out = out + self.modality(catalogue.modality[flat].flatten(1).float())
        return out.reshape(*item_ids.shape, out.shape[-1])


class MultiAtt(nn.Module):
    """``softmax(MLP(X)^T, −1)·X`` over the valid clicks: ``[B, L, d] -> [B, H, d]`` (paper B.1.2)."""

    def __init__(self, d: int, hidden: int, heads: int) -> None:
        super().__init__()
        # no bias on the last layer: a per-head constant cancels in the softmax over clicks (its gradient
        # is pure rounding noise, which Adam would turn into steps)
        self.score = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, heads, bias=False))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        scores = self.score(x).transpose(1, 2)  # [B, H, L]
        scores = scores.masked_fill(~valid.unsqueeze(1), float("-inf"))
        attn = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows without a valid click -> 0
        return attn @ x


class WeightedHeads(nn.Module):
    """WHA: ``m = mean_h z_h``, ``α_h = softmax_h(z_h^T A m)``, ``f = Σ_h α_h z_h`` (paper B.1.2)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.A = nn.Linear(d, d, bias=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z [B, H, d]`` -> ``(f [B, d], α [B, H])``."""
        m = z.mean(1)
        alpha = torch.softmax((z * self.A(m).unsqueeze(1)).sum(-1), dim=1)
        return (alpha.unsqueeze(-1) * z).sum(1), alpha


class SequenceTwoTower(nn.Module):
    """Sequence user encoder + summed item encoder with cosine / ρ logits (see the module doc).

    Args:
        ctx: id capacities, feature sizes, device.
        cfg: shape and scoring (``embedding_dim`` None: ``ctx.training.embedding_dim``).
        seed: seed of the initialisation generator (e.g. ``stream_seed(ctx.seed, "clrec/init")``).
    """

    edges: torch.Tensor  # the bucket edges (a non-persistent buffer)

    def __init__(self, ctx: AgentContext, cfg: SequenceTowerConfig, seed: int) -> None:
        super().__init__()
        self.cfg = cfg = cfg.resolved(ctx)
        d = cfg.embedding_dim
        assert d is not None
        self.user_id: nn.Embedding | None = None
        with torch.device("meta"):
            self.item_encoder = ItemEncoder(ctx, d, cfg.modality)
            self.time_embedding = nn.Embedding(cfg.n_buckets, d)
            self.position_embedding = nn.Embedding(ctx.history_len, d)
            self.attention = MultiAtt(d, cfg.attention_hidden, cfg.heads)
            self.wha = WeightedHeads(d)
            if cfg.context_token:
                self.profile = nn.Linear(ctx.profile_dim, d, bias=False)
                self.user_domain = nn.Embedding(N_DOMAINS, d)
                self.entry = nn.Embedding(N_ENTRIES, d)
                self.user_id = nn.Embedding(ctx.n_users, d) if cfg.user_id_token else None
        self.to_empty(device=ctx.device)
        init_parameters(self, torch.Generator().manual_seed(seed), cfg.embedding_std or d**-0.5)
        self.register_buffer("edges", torch.tensor(cfg.bucket_edges, dtype=torch.float64, device=ctx.device), persistent=False)

    @property
    def scale(self) -> float:
        """``1 / ρ``."""
        return 1.0 / self.cfg.rho

    # --- item side --------------------------------------------------------------------------

    def item_embedding(self, catalogue: Catalogue, item_ids: torch.Tensor) -> torch.Tensor:
        """``g(y)``: ``[*, d]`` L2-normalised item embeddings of ``item_ids [*]``."""
        return F.normalize(self.item_encoder(catalogue, item_ids), dim=-1)

    # --- user side --------------------------------------------------------------------------

    def history_inputs(self, requests: RequestBatch, catalogue: Catalogue) -> tuple[torch.Tensor, torch.Tensor]:
        """``X [B, L', d]`` (history clicks, then the context token if on) and ``valid [B, L'] bool``.

        ``x_t = g_raw(y_t) + e_time[bucket_t] + e_pos[p_t]`` (raw: the unnormalised item sum).
        """
        hist = requests.history
        valid = hist >= 0
        x = self.item_encoder(catalogue, hist.clamp_min(0))
        x = x + self.time_embedding(time_buckets(requests, self.edges)) + self.position_embedding(backward_positions(hist))
        x = x * valid.unsqueeze(-1)
        if self.cfg.context_token:
            tok = self.profile(requests.profile.float()) + self.user_domain(requests.domain) + self.entry(requests.entry)
            if self.user_id is not None:
                tok = tok + self.user_id(requests.user_id)
            x = torch.cat([x, tok.unsqueeze(1)], dim=1)
            valid = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=1)
        return x, valid

    def heads(self, requests: RequestBatch, catalogue: Catalogue) -> torch.Tensor:
        """``z [B, H, d]``: L2-normalised MultiAtt head embeddings (zero rows for an empty sequence)."""
        x, valid = self.history_inputs(requests, catalogue)
        return F.normalize(self.attention(x, valid), dim=-1)

    def user_embedding(self, requests: RequestBatch, catalogue: Catalogue) -> torch.Tensor:
        """``f(x)``: ``[B, d]`` L2-normalised WHA output."""
        f, _ = self.wha(self.heads(requests, catalogue))
        return F.normalize(f, dim=-1)

    # --- scoring ----------------------------------------------------------------------------

    def logits(self, f: torch.Tensor, g: torch.Tensor, pairwise: bool = True) -> torch.Tensor:
        """``cos / ρ`` of normalised embeddings.

        ``f [B, d]`` with ``g [N, d]`` -> ``[B, N]`` (``pairwise=True``) or ``[B]`` (one item per row,
        ``pairwise=False``, ``N = B``); ``g [B, N, d]`` -> ``[B, N]``.
        """
        if g.dim() == 3:
            return self.scale * torch.bmm(g, f.unsqueeze(-1)).squeeze(-1)
        if pairwise:
            return self.scale * f @ g.T
        return self.scale * (f * g).sum(-1)

    def embed_catalogue(self, catalogue: Catalogue, block: int = 65536) -> ItemIndex:
        """Normalised ``g`` of every live item (eval mode, no grad)."""
        ids = catalogue.live_ids()
        d = self.item_encoder.item_id.embedding_dim
        with evaluating(self):
            parts = [self.item_embedding(catalogue, ids[s : s + block]) for s in range(0, len(ids), block)]
        emb = torch.cat(parts) if parts else torch.zeros((0, d), device=ids.device)
        return ItemIndex(ids, emb.contiguous(), self.scale, self.cfg.block_users)

    def user_queries(self, requests: RequestBatch, catalogue: Catalogue) -> torch.Tensor:
        """``[B, d]`` normalised ``f`` for serving (eval mode, no grad)."""
        with evaluating(self):
            return self.user_embedding(requests, catalogue)


def check_sequence_ranges(config: Any) -> None:
    """Range checks of the encoder fields (``embedding_dim`` and ``block_users`` are in ``training.check_ranges``).

    Raises:
        ValueError: ``"<field>: must be ..., got <value>"`` (the registry prefixes ``agents.<name>.``).
    """
    for name in ("heads", "attention_hidden"):
        if hasattr(config, name) and getattr(config, name) < 1:
            raise ValueError(f"{name}: must be >= 1, got {getattr(config, name)!r}")
    if hasattr(config, "rho") and not config.rho > 0:
        raise ValueError(f"rho: must be > 0, got {config.rho!r}")
    if getattr(config, "embedding_std", None) is not None and not config.embedding_std > 0:
        raise ValueError(f"embedding_std: must be > 0, got {config.embedding_std!r}")
    if hasattr(config, "bucket_edges"):
        edges = tuple(config.bucket_edges)
        if list(edges) != sorted(edges) or any(e <= 0 or not math.isfinite(e) for e in edges):
            raise ValueError(f"bucket_edges: must be positive, finite and ascending, got {edges!r}")
