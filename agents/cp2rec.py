"""CP2Rec (our reading): confounding-proxy priors, orthogonal bias disentangling, accuracy-bias tradeoff (algorithms.md §13).

Only the abstract (Liu et al., MM 2023, a CTR model) is public: everything past its three named
modules is §13's proposed reading, adapted to retrieval, and results are "CP2Rec (our reading)".

- **Purified towers** ``f(u)``, ``g(i)``: the backbone two-tower (no per-id scalar biases) fed with
  the proxy inputs blanked: the item tower sees no popularity counters and no promoted flag, the
  user tower no entry action (constant inputs carry no information after the input BatchNorm).
- **Bias encoders** on the confounding proxies ``Z``, logged *as served* (:mod:`agents.cp2rec_model`):
  ``b_i = B_item(Z_item)`` (popularity when served, age, promoted), ``b_u = B_user(Z_user)`` (activity),
  ``b_ctx = B_ctx(Z_ctx)`` (slot, entry, exploration, retrieval rank, scroll depth, other clicks).
- **Two heads**: ``ŷ_unb = σ(s)``, ``ŷ_bias = σ(s + <b_u, b_i> + w^T b_ctx)``, ``s = γ_cos · cos(f, g)``.
- **Loss** ``L = L_bias + a·L_unb + b·L_orth``. ``L_unb``: plain BCE on the uniform-exploration slice
  when the window has one, else (§13 DEFAULT) IPS-weighted BCE with ``w = 1/P̂(click | Z)`` from a tiny
  propensity MLP fitted first (under the examination hypothesis with relevance independent of ``Z``,
  ``P(click | Z)`` is proportional to ``P(examined | Z)``; the constant cancels in the self-normalised
  weights), clipped at ``clip_ratio`` × the median weight. ``L_orth``: the batch cross-correlation
  form (default) or ``mean cos²(g, P·b_i) + cos²(f, P'·b_u)``; the bias embeddings are detached in it,
  so the penalty purifies the towers and never teaches the bias encoders to carry less bias.
- **Serving**: ``s + γ·<b_u, b_i>`` (``serve_gamma``; 0 fully debiased, 1 biased), an inner product over
  ``[ĝ, γ·b_i/γ_cos]`` and ``[f̂, b_u]``, so the index stays exact top-k. Context terms are dropped.
- **Leakage probe** (§13(f)): the cross-fitted R² of a linear probe from ``ĝ(i)`` (and from ``b_i``) to
  the popularity bucket of the live items, returned by every ``fit`` as ``probe_r2`` / ``probe_r2_bias``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from agents.backbone.exposure import ExposureCore
from agents.backbone.index import IndexedServing, ItemIndex, check_k
from agents.backbone.training import Exposures, TrainConfig, check_ranges, exposure_data, fit_generator, make_optimiser, run_epochs
from agents.backbone.two_tower import TowerConfig, evaluating
from agents.backbone.unexposed import last_epoch_mean
from agents.backbone.weighting import weight_quantiles
from agents.cp2rec_model import (
    BiasEncoders,
    PropensityMLP,
    Proxies,
    bias_loss,
    item_proxies,
    leakage_probe,
    orth_loss_cosine,
    orth_loss_xcov,
    popularity_bucket,
    proxies_of_view,
    unbiased_loss,
    user_proxies,
)
from agents.ipw import ipw_weights, propensity_floor
from agents.registry import register, register_variant
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.rng import stream_seed
from simulator.types import Catalogue, RequestBatch

CP2REC_TOWER = TowerConfig(batch_norm=True, bias=False)
"""BC's towers without the per-id scalar biases: an item bias would be a popularity channel outside ``g(i)``."""


@dataclass(frozen=True)
class CP2RecConfig:
    """CP2Rec hyperparameters (none published; §13(e) grids in the field notes)."""

    label: Literal["clicked", "finished"] = "clicked"
    """Positive label (CP2Rec is a CTR model)."""
    l2: float = 1e-5
    """L2 weight on the embedding rows used in each batch."""
    tower: TowerConfig = CP2REC_TOWER
    """The purified towers (override keys ``hidden``, ``gamma``, ``embedding_dim``, ...)."""
    train: TrainConfig = TrainConfig()
    """Optimiser and epochs (override keys ``lr``, ``epochs``, ``batch_size``, ...)."""
    bias_dim: int = 8
    """Size of the bias embeddings ``b_u``, ``b_i``, ``b_ctx``."""
    bias_hidden: tuple[int, ...] = (16,)
    """Hidden sizes of each bias encoder and of the propensity MLP."""
    unb_weight: float = 0.5
    """``a`` on ``L_unb`` (§13(e): 0.1, 0.5, 1)."""
    orth_weight: float = 0.1
    """``b`` on ``L_orth`` (§13(e): 1e-3, 1e-2, 1e-1)."""
    orth: Literal["xcov", "cosine"] = "xcov"
    """``xcov``: squared batch cross-correlations of ``ĝ`` with ``b_i`` (and ``f̂`` with ``b_u``); ``cosine``: ``cos²(g, P·b_i)``."""
    unbiased: Literal["auto", "ips", "explore"] = "auto"
    """``L_unb`` source: ``explore`` (plain BCE on the uniform-exploration slice), ``ips``, or ``auto`` (the slice when it has
    at least ``min_explore`` impressions and a positive, else IPS)."""
    min_explore: int = 200
    """Smallest exploration slice ``auto`` uses."""
    clip_ratio: float = 10.0
    """IPS weights capped at ``clip_ratio`` × their median (§12(e), §16.1)."""
    serve_gamma: float = 0.5
    """γ: serving score ``s + γ·<b_u, b_i>`` (0 fully debiased, 1 biased; §13(e) sweep 0, 0.25, 0.5, 1)."""
    probe_buckets: int = 10
    """Popularity buckets (quantiles of log exposures over the live items) the leakage probe predicts."""

    def __post_init__(self) -> None:
        check_ranges(self)
        for key in ("unb_weight", "orth_weight", "serve_gamma"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{key}: must be >= 0, got {getattr(self, key)!r}")
        if self.bias_dim < 1 or not all(h >= 1 for h in self.bias_hidden):
            raise ValueError(f"bias_dim: bias_dim and every bias_hidden size must be >= 1, got {self.bias_dim!r}, {self.bias_hidden!r}")
        if not self.clip_ratio >= 1.0:
            raise ValueError(f"clip_ratio: must be >= 1, got {self.clip_ratio!r}")
        if self.min_explore < 1 or self.probe_buckets < 2:
            raise ValueError(f"min_explore: must be >= 1 (probe_buckets >= 2), got {self.min_explore!r}, {self.probe_buckets!r}")


def purify_catalogue(catalogue: Catalogue) -> Catalogue:
    """The catalogue as the purified item tower sees it: popularity counters and promoted flag blanked."""
    zero = torch.zeros_like(catalogue.clicks)
    return replace(catalogue, clicks=zero, exposures=zero, promoted=torch.zeros_like(catalogue.promoted))


def purify_requests(requests: RequestBatch) -> RequestBatch:
    """The requests as the purified user tower sees them: the entry action (an attention proxy) blanked."""
    return replace(requests, entry=torch.zeros_like(requests.entry))


@dataclass(frozen=True)
class FitData:
    """One fit's training set: exposures (purified requests), their proxies and the ``L_unb`` weights."""

    data: Exposures
    z: Proxies
    unb_w: torch.Tensor
    per_batch_norm: bool


@register("cp2rec", config=CP2RecConfig)
class CP2Rec(IndexedServing):
    """CP2Rec (our reading): purified two-tower + proxy bias encoders, L_bias + a·L_unb + b·L_orth, served at s + γ·<b_u, b_i>."""

    def __init__(self, ctx: AgentContext, config: CP2RecConfig | None = None, name: str = "cp2rec") -> None:
        super().__init__()
        self.ctx, self.name = ctx, name
        self.config = cfg = config or CP2RecConfig()
        self.core = ExposureCore(ctx, cfg.tower, cfg.train, name)
        d = self.core.model.cfg.dim
        gen = torch.Generator().manual_seed(stream_seed(ctx.seed, f"{name}/bias"))
        self.enc = self.core.extra["bias"] = BiasEncoders(cfg.bias_dim, cfg.bias_hidden, d, gen, ctx.device)
        self.core.optimiser = cfg.train.optimiser([*self.core.model.parameters(), *self.enc.parameters()], ctx)
        pgen = torch.Generator().manual_seed(stream_seed(ctx.seed, f"{name}/propensity/init"))
        self.prop = self.core.extra["propensity"] = PropensityMLP(cfg.bias_hidden, pgen, ctx.device)
        self.core.extra_optimisers["propensity"] = make_optimiser(self.prop.parameters(), cfg.train.optimizer, cfg.train.lr_for(ctx))
        self.round_now = 0  # the round the next index serves (item age)

    # --- fit ------------------------------------------------------------------------------

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Propensity MLP (IPS), then warm-started joint epochs of ``L``; returns loss parts, weights and the probe."""
        cfg, device = self.config, self.ctx.device
        self.core.fits += 1
        self.round_now = view.round + 1
        catalogue = view.catalogue.to(device)
        raw = exposure_data(view, cfg.label, device)
        diag: dict[str, float] = {"prop_loss": math.nan, "unb_source_explore": math.nan, "clipped_share": math.nan}
        if len(raw) == 0:
            self._invalidate()
            empty = {k: math.nan for k in ("loss", "loss_first_epoch", "loss_bias", "loss_unb", "loss_orth")}
            return {**diag, **empty, "examples": 0.0, **weight_quantiles(torch.zeros(0)), **self.probe(catalogue, view.round)}
        data = Exposures(purify_requests(raw.requests), raw.row, raw.item_ids, raw.labels)
        z = proxies_of_view(view, device)
        fd, info = self._unbiased_weights(view, data, z)
        diag.update(info)
        parts = self._train(fd, purify_catalogue(catalogue), fit_generator(self.ctx, self.name, view.round))
        exposed = torch.bincount(data.item_ids, minlength=view.n_items)
        return {**diag, **parts, "examples": float(len(data)), **self.probe(catalogue, view.round, exposed)}

    def _unbiased_weights(self, view: TrainingView, data: Exposures, z: Proxies) -> tuple[FitData, dict[str, float]]:
        """``L_unb``'s per-exposure weights: the exploration slice's indicator / share, or clipped IPS ``1/P̂(click | Z)``."""
        cfg = self.config
        explore = view.explore.to(self.ctx.device)[data.row]
        has_slice = int(explore.sum()) >= cfg.min_explore and bool(data.labels[explore].sum() > 0)
        use_slice = cfg.unbiased == "explore" or (cfg.unbiased == "auto" and has_slice)
        if use_slice:
            share = float(explore.float().mean())
            w = explore.float() / share if share > 0 else torch.zeros_like(data.labels)
            return FitData(data, z, w, False), {"unb_source_explore": 1.0, **weight_quantiles(w)}
        if cfg.unb_weight == 0:
            ones = torch.ones_like(data.labels)
            return FitData(data, z, ones, False), {"unb_source_explore": 0.0, **weight_quantiles(ones)}
        prop_loss = self._fit_propensity(view, data.labels, z)
        with evaluating(self.prop):
            p = torch.sigmoid(self.prop(z.all()))
        floor = propensity_floor(p, cfg.clip_ratio)
        w = ipw_weights(p, floor, self_normalise=True)
        clipped = float((p < floor).float().mean())
        info = {"unb_source_explore": 0.0, "prop_loss": prop_loss, "clipped_share": clipped, **weight_quantiles(w)}
        return FitData(data, z, w, True), info

    def _fit_propensity(self, view: TrainingView, labels: torch.Tensor, z: Proxies) -> float:
        """BCE of the propensity MLP on ``(Z, y)`` (its own optimiser; the main loss never reaches it)."""
        z_all = z.all()

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            return bias_loss(self.prop(z_all[idx]), labels[idx])

        self.prop.train()
        losses = run_epochs(
            len(labels), self.core.epochs(), self.core.batch_size(), fit_generator(self.ctx, f"{self.name}/propensity", view.round),
            self.ctx.device, self.core.extra_optimisers["propensity"], loss_fn, f"{self.name}/propensity",
        )  # fmt: skip
        return losses[-1] if losses else math.nan

    def batch_terms(self, fd: FitData, catalogue: Catalogue, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """``L_bias``, ``L_unb``, ``L_orth`` and the L2 term of minibatch ``idx`` (``catalogue`` purified)."""
        model, enc, cfg = self.core.model, self.enc, self.config
        requests, items, labels = fd.data.batch(idx)
        f, g = model.user_embedding(requests), model.item_embedding(catalogue, items)
        s = model.score_pairs(f, g)
        b_i, b_u = enc.item(fd.z.item[idx]), enc.user(fd.z.user[idx])
        w = fd.unb_w[idx]
        if fd.per_batch_norm:
            w = w / w.mean().clamp_min(1e-12)
        if cfg.orth == "xcov":
            orth = orth_loss_xcov(model.normalise(g), b_i.detach(), model.normalise(f), b_u.detach())
        else:
            orth = orth_loss_cosine(g, enc.p_item(b_i.detach()), f, enc.p_user(b_u.detach()))
        return {
            "bias": bias_loss(s + enc.bias_logit(b_u, b_i, fd.z.ctx[idx]), labels),
            "unb": unbiased_loss(s, labels, w),
            "orth": orth,
            "l2": model.id_l2(requests.user_id, items, catalogue),
        }

    def _train(self, fd: FitData, catalogue: Catalogue, gen: torch.Generator) -> dict[str, float]:
        """The epochs of ``L = L_bias + a·L_unb + b·L_orth (+ l2)``; returns the total's and each term's last-epoch mean."""
        cfg = self.config
        parts: dict[str, list[torch.Tensor]] = {"bias": [], "unb": [], "orth": []}

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            t = self.batch_terms(fd, catalogue, idx)
            for k, v in parts.items():
                v.append(t[k].detach())
            return t["bias"] + cfg.unb_weight * t["unb"] + cfg.orth_weight * t["orth"] + cfg.l2 * t["l2"]

        self.core.model.train()
        self.enc.train()
        losses = run_epochs(
            len(fd.data), self.core.epochs(), self.core.batch_size(), gen, self.ctx.device, self.core.optimiser, loss_fn, self.name
        )
        self._invalidate()
        out = {"loss": losses[-1] if losses else math.nan, "loss_first_epoch": losses[0] if losses else math.nan}
        return {**out, **{f"loss_{k}": last_epoch_mean(v, len(fd.data), self.core.batch_size()) for k, v in parts.items()}}

    # --- leakage probe --------------------------------------------------------------------

    @torch.no_grad()
    def probe(self, catalogue: Catalogue, round_idx: int, exposed: torch.Tensor | None = None) -> dict[str, float]:
        """The leakage probe (§13(f)): cross-fitted R² of a linear probe to the live items' popularity bucket.

        ``probe_r2``: from ``ĝ(i)``, items weighted by their exposures in the window (``exposed [M]``; the items
        as training presents them); ``probe_r2_uniform``: from ``ĝ(i)``, every live item alike; ``probe_r2_bias``:
        from ``b_i``, weighted like ``probe_r2`` (the bias side should carry the popularity).
        """
        catalogue = catalogue.to(self.ctx.device)
        ids = catalogue.live_ids()
        bucket = popularity_bucket(catalogue.exposures[ids], self.config.probe_buckets)
        g, b = self.item_vectors(catalogue, ids)
        w = None if exposed is None else exposed.to(ids.device)[ids].double()

        def r2(emb: torch.Tensor, weights: torch.Tensor | None) -> float:
            return leakage_probe(emb, bucket, fit_generator(self.ctx, f"{self.name}/probe", round_idx), weights)

        return {"probe_r2": r2(g, w), "probe_r2_uniform": r2(g, None), "probe_r2_bias": r2(b, w)}

    # --- serving --------------------------------------------------------------------------

    def _invalidate(self) -> None:
        self.invalidate()
        self.core.retriever.invalidate()

    def item_vectors(self, catalogue: Catalogue, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ĝ(i) [n, d], b_i [n, d_b])`` of ``ids [n]`` (eval mode, no grad; ``Z_item`` as of now)."""
        model = self.core.model
        with evaluating(model), evaluating(self.enc):
            g = model.normalise(model.item_embedding(purify_catalogue(catalogue), ids))
            b = self.enc.item(item_proxies(catalogue, ids, self.round_now))
        return g, b

    def _item_rows(self, catalogue: Catalogue, ids: torch.Tensor) -> torch.Tensor:
        """``[n, d + d_b]`` index rows ``[ĝ, γ·b_i / γ_cos]``."""
        g, b = self.item_vectors(catalogue, ids)
        return torch.cat([g, self.config.serve_gamma * b / self.core.model.scale], dim=1)

    def _queries(self, requests: RequestBatch) -> torch.Tensor:
        """``[B, d + d_b]`` queries ``[f̂, b_u]``."""
        model = self.core.model
        with evaluating(model), evaluating(self.enc):
            f = model.normalise(model.user_embedding(purify_requests(requests)))
            return torch.cat([f, self.enc.user(user_proxies(requests))], dim=1)

    def index(self, catalogue: Catalogue) -> None:
        """Embed every live item once: ``[ĝ, γ·b_i/γ_cos]``."""
        self._catalogue = catalogue = catalogue.to(self.ctx.device)
        ids = catalogue.live_ids()
        model = self.core.model
        self._index = ItemIndex(ids, self._item_rows(catalogue, ids).contiguous(), model.scale, model.cfg.block_users)

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` by ``s + γ·<b_u, b_i>``: ``(item_ids [B, k] int64, scores [B, k] float32)``."""
        index, _ = self._indexed()
        check_k(k, len(index), self.name)
        return index.topk(self._queries(requests), k)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` serving scores ``s + γ·<b_u, b_i>`` of ``item_ids [B, K]`` (items not indexed are embedded now)."""
        index, catalogue = self._indexed()
        emb, found = index.lookup(item_ids)
        if not bool(found.all()):
            emb = emb.index_put((~found).nonzero(as_tuple=True), self._item_rows(catalogue, item_ids[~found]))
        return (index.scale * torch.bmm(emb, self._queries(requests).unsqueeze(-1)).squeeze(-1)).float()

    # --- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimisers, fit counter, bias encoders, propensity MLP and the serving round."""
        return {**self.core.state_dict(), "round_now": self.round_now}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call :meth:`index` before serving."""
        self.core.load_state_dict(state)
        self.round_now = int(state["round_now"])
        self._invalidate()


register_variant("cp2rec-no-orth", CP2Rec, CP2RecConfig(orth_weight=0.0), "CP2Rec (our reading) without L_orth (b = 0).")
register_variant("cp2rec-no-unb", CP2Rec, CP2RecConfig(unb_weight=0.0), "CP2Rec (our reading) without L_unb (a = 0).")
register_variant("cp2rec-cos", CP2Rec, CP2RecConfig(orth="cosine"), "CP2Rec (our reading) with the cos²(g, P·b) orthogonality.")
register_variant("cp2rec-g0", CP2Rec, CP2RecConfig(serve_gamma=0.0), "CP2Rec (our reading) served fully debiased (γ = 0).")
register_variant("cp2rec-g1", CP2Rec, CP2RecConfig(serve_gamma=1.0), "CP2Rec (our reading) served with the bias term (γ = 1).")
