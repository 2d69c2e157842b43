"""The two-tower (DSSM / YouTube-DNN style) backbone every learned retrieval agent reuses.

``f(u)`` (user tower) and ``g(i)`` (item tower) are MLPs over id embeddings and
observable features; the logit is ``s(u, i) = gamma * cos(f, g)`` (default) or
``<f, g> / tau`` (algorithms.md §0.3). **FLAG** (§0.3): with cosine and
``gamma = 1`` the logit is stuck in [-1, 1] and BCE cannot fit, hence the
default ``gamma = 10``; cosine-trained models index *normalised* item vectors.

User tower input: user id embedding, profile, mean of the history item-id
embeddings (the item id table is shared; -1 pads), domain (2) and entry (3)
embeddings. Item tower input: item id, category, creator and domain
embeddings, the promoted flag, the three modality vectors and
``catalogue.popularity_features()`` (3 dims).

Parameters are built on the meta device and initialised from a torch
generator seeded by the caller, so construction never touches the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from agents.backbone.index import ItemIndex
from agents.backbone.training import check_ranges
from simulator.agent_api import AgentContext
from simulator.nn import mean_history_embedding, mlp
from simulator.types import Catalogue, RequestBatch

N_DOMAINS, N_ENTRIES = 2, 3


@dataclass(frozen=True)
class TowerConfig:
    """Shape and scoring of the two towers (an agent config embeds one as its ``tower`` field)."""

    embedding_dim: int | None = None
    """Output size ``d`` of each tower (None: ``training.embedding_dim``)."""
    id_dim: int = 32
    """Size of the id and categorical embeddings (user, item, category, creator)."""
    context_dim: int = 4
    """Size of the domain and entry embeddings."""
    hidden: tuple[int, ...] = (128, 64)
    """Hidden layer sizes of each tower's MLP (then a linear layer to ``embedding_dim``)."""
    similarity: Literal["cosine", "dot"] = "cosine"
    """``cosine``: ``gamma * cos(f, g)``; ``dot``: ``<f, g> / tau``."""
    gamma: float = 10.0
    """Cosine logit scale (FLAG §0.3: 1 cannot fit BCE; use 5-20)."""
    tau: float = 1.0
    """Temperature of the dot-product logit."""
    batch_norm: bool = False
    """BatchNorm after each hidden layer (DAMCAR's DSSM uses it)."""
    init_std: float = 0.1
    """Standard deviation of the initial embedding tables."""
    block_users: int = 1024
    """Users per block when scoring the whole catalogue."""
    input_norm: bool = True
    """Standardise the dense inputs (user profile; item promoted flag, modality vectors and the
    popularity features, which are raw log counts with mean ~2 and max ~8) with a non-affine
    BatchNorm. Unscaled, their constant offsets swamp the small per-id variation and every user
    vector starts (and stays) on one shared direction."""
    bias: bool = True
    """Add per-user and per-item scalar biases to the logit. Without them a cosine DSSM must
    express users' click rates and items' popularity through the angle itself, and its user
    vectors collapse onto one "popular" direction (same top-K for everyone)."""

    def __post_init__(self) -> None:
        check_ranges(self)

    def resolved(self, ctx: AgentContext) -> TowerConfig:
        """This config with ``embedding_dim = None`` replaced by ``ctx.training.embedding_dim``."""
        return self if self.embedding_dim is not None else replace(self, embedding_dim=ctx.training.embedding_dim)

    @property
    def dim(self) -> int:
        """``embedding_dim`` of a resolved config."""
        if self.embedding_dim is None:
            raise ValueError("TowerConfig: embedding_dim is unresolved (call resolved(ctx))")
        return self.embedding_dim


def init_parameters(module: nn.Module, gen: torch.Generator, embedding_std: float) -> None:
    """Initialise every parameter of ``module`` from ``gen`` (a CPU generator), in module order.

    Linear layers get PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    for weight and bias, embeddings ``N(0, embedding_std^2)``, norm layers ones
    and zeros. Values are drawn on the CPU and copied, so CPU and GPU runs start
    identically.

    Raises:
        TypeError: a leaf module with parameters of another type (handle it in the caller).
    """

    def draw(shape: torch.Size, kind: str, a: float) -> torch.Tensor:
        t = torch.empty(shape)
        return t.uniform_(-a, a, generator=gen) if kind == "uniform" else t.normal_(0.0, a, generator=gen)

    with torch.no_grad():
        for name, m in module.named_modules():
            if isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.copy_(draw(m.weight.shape, "uniform", bound))
                if m.bias is not None:
                    m.bias.copy_(draw(m.bias.shape, "uniform", bound))
            elif isinstance(m, nn.Embedding):
                m.weight.copy_(draw(m.weight.shape, "normal", embedding_std))
            elif isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                if isinstance(m, nn.BatchNorm1d):
                    m.reset_running_stats()
            elif any(True for _ in m.parameters(recurse=False)):
                raise TypeError(f"init_parameters: no rule for {name!r} ({type(m).__name__})")


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no grad inside the block; the previous mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


class TwoTower(nn.Module):
    """User and item towers with a cosine or dot-product logit.

    Args:
        ctx: id capacities, feature sizes and device.
        cfg: tower shape and scoring.
        seed: seed of the initialisation generator (e.g. ``stream_seed(ctx.seed, "bc/init")``).
    """

    def __init__(self, ctx: AgentContext, cfg: TowerConfig, seed: int) -> None:
        super().__init__()
        self.cfg = cfg = cfg.resolved(ctx)
        d_id, d_ctx, m = cfg.id_dim, cfg.context_dim, ctx.modality_dim
        with torch.device("meta"):  # no global RNG draws; initialised below from `seed`
            self.user_id = nn.Embedding(ctx.n_users, d_id)
            self.item_id = nn.Embedding(ctx.n_items, d_id)  # shared by the item tower and the history
            self.category = nn.Embedding(ctx.n_categories, d_id)
            self.creator = nn.Embedding(ctx.n_creators, d_id)
            self.user_domain = nn.Embedding(N_DOMAINS, d_ctx)
            self.entry = nn.Embedding(N_ENTRIES, d_ctx)
            self.item_domain = nn.Embedding(N_DOMAINS, d_ctx)
            user_in = 2 * d_id + ctx.profile_dim + 2 * d_ctx
            item_in = 3 * d_id + d_ctx + 1 + 3 * m + 3
            self.user_in, self.item_in = user_in, item_in  # the MLPs' input widths
            self.user_dense_norm = nn.BatchNorm1d(ctx.profile_dim, affine=False) if cfg.input_norm else None
            self.item_dense_norm = nn.BatchNorm1d(1 + 3 * m + 3, affine=False) if cfg.input_norm else None
            self.user_mlp: nn.Module = mlp([user_in, *cfg.hidden, cfg.dim], batch_norm=cfg.batch_norm)
            self.item_mlp: nn.Module = mlp([item_in, *cfg.hidden, cfg.dim], batch_norm=cfg.batch_norm)
            self.user_bias = nn.Embedding(ctx.n_users, 1) if cfg.bias else None
            self.item_bias = nn.Embedding(ctx.n_items, 1) if cfg.bias else None
        self.to_empty(device=ctx.device)
        gen = torch.Generator().manual_seed(seed)
        init_parameters(self, gen, cfg.init_std)
        for table in (self.user_bias, self.item_bias):
            if table is not None:
                nn.init.zeros_(table.weight)

    @property
    def scale(self) -> float:
        """The logit scale: ``gamma`` (cosine) or ``1 / tau`` (dot)."""
        return self.cfg.gamma if self.cfg.similarity == "cosine" else 1.0 / self.cfg.tau

    # --- towers -----------------------------------------------------------------------------

    def user_features(self, requests: RequestBatch) -> torch.Tensor:
        """``[B, user_in]`` concatenated user-tower input."""
        profile = requests.profile.float()
        if self.user_dense_norm is not None:
            profile = self.user_dense_norm(profile)
        return torch.cat(
            [
                self.user_id(requests.user_id),
                mean_history_embedding(self.item_id, requests.history),
                profile,
                self.user_domain(requests.domain),
                self.entry(requests.entry),
            ],
            dim=1,
        )

    def item_features(self, catalogue: Catalogue, item_ids: torch.Tensor) -> torch.Tensor:
        """``[n, item_in]`` concatenated item-tower input for ``item_ids [n]``."""
        dense = torch.cat(
            [
                catalogue.promoted[item_ids].float().unsqueeze(1),
                catalogue.modality[item_ids].flatten(1).float(),
                catalogue.popularity_features(item_ids),
            ],
            dim=1,
        )
        if self.item_dense_norm is not None:
            dense = self.item_dense_norm(dense)
        return torch.cat(
            [
                self.item_id(item_ids),
                self.category(catalogue.category[item_ids]),
                self.creator(catalogue.creator[item_ids]),
                self.item_domain(catalogue.domain[item_ids]),
                dense,
            ],
            dim=1,
        )

    def user_embedding(self, requests: RequestBatch) -> torch.Tensor:
        """``f(u)``: ``[B, d]`` raw (unnormalised) user-tower output."""
        return self.user_mlp(self.user_features(requests))

    def item_embedding(self, catalogue: Catalogue, item_ids: torch.Tensor) -> torch.Tensor:
        """``g(i)``: ``[*, d]`` raw item-tower output for ``item_ids [*]`` (any shape)."""
        flat = item_ids.reshape(-1)
        return self.item_mlp(self.item_features(catalogue, flat)).reshape(*item_ids.shape, -1)

    # --- scoring ----------------------------------------------------------------------------

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalise the last dim for cosine scoring; identity for dot."""
        return F.normalize(x, dim=-1) if self.cfg.similarity == "cosine" else x

    def score_pairs(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Logits of raw tower outputs.

        Args:
            f: ``[B, d]`` user embeddings.
            g: ``[B, d]`` (one item per user) or ``[B, K, d]``.

        Returns:
            ``[B]`` or ``[B, K]``: ``gamma * cos(f, g)`` or ``<f, g> / tau``.
        """
        f, g = self.normalise(f), self.normalise(g)
        if g.dim() == 2:
            return self.scale * (f * g).sum(-1)
        return self.scale * torch.bmm(g, f.unsqueeze(-1)).squeeze(-1)

    def bias_terms(self, user_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """``b_u + b_i`` broadcast to ``item_ids``' shape (``user_ids [B]``, ``item_ids [B]`` or ``[B, K]``); 0 without biases."""
        if self.user_bias is None or self.item_bias is None:
            return torch.zeros(item_ids.shape, device=item_ids.device)
        b_u = self.user_bias(user_ids).squeeze(-1)
        b_i = self.item_bias(item_ids).squeeze(-1)
        return b_i + (b_u if item_ids.dim() == 1 else b_u.unsqueeze(-1))

    def id_l2(self, user_ids: torch.Tensor, item_ids: torch.Tensor, catalogue: Catalogue) -> torch.Tensor:
        """Scalar: mean over the batch of the squared norms of the embedding rows it used.

        Args:
            user_ids: ``[n]``; item_ids: ``[n]`` (user, item, category and creator rows are counted).
        """
        rows = [
            self.user_id(user_ids), self.item_id(item_ids),
            self.category(catalogue.category[item_ids]), self.creator(catalogue.creator[item_ids]),
        ]  # fmt: skip
        return sum(r.pow(2).sum(-1).mean() for r in rows)

    # --- index ------------------------------------------------------------------------------

    def embed_catalogue(self, catalogue: Catalogue, block: int = 65536) -> ItemIndex:
        """Normalised item embeddings of every live item (eval mode, no grad, in blocks of ``block`` items)."""
        ids = catalogue.live_ids()
        with evaluating(self):
            parts = [self.normalise(self.item_embedding(catalogue, ids[s : s + block])) for s in range(0, len(ids), block)]
        emb = torch.cat(parts) if parts else torch.zeros((0, self.cfg.dim), device=ids.device)
        if self.item_bias is not None:  # one extra coordinate carries b_i / scale, met by a constant 1 in the query
            with torch.no_grad():
                emb = torch.cat([emb, self.item_bias(ids) / self.scale], dim=1)
        return ItemIndex(ids, emb.contiguous(), self.scale, self.cfg.block_users)

    def user_queries(self, requests: RequestBatch) -> torch.Tensor:
        """``[B, d]`` normalised user embeddings for serving (eval mode, no grad), ``[B, d+1]`` with biases."""
        with evaluating(self):
            q = self.normalise(self.user_embedding(requests))
            if self.item_bias is not None:
                q = torch.cat([q, torch.ones_like(q[:, :1])], dim=1)
            return q

    def user_offset(self, requests: RequestBatch) -> torch.Tensor:
        """``[B]`` the user bias ``b_u`` (0 without biases): it shifts every score of a user alike."""
        if self.user_bias is None:
            return torch.zeros(len(requests), device=requests.user_id.device)
        with torch.no_grad():
            return self.user_bias(requests.user_id).squeeze(-1)
