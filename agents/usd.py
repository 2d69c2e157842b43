"""USD: user-intent-aware negative sampling + intent-driven dual debiasing (algorithms.md §14; arXiv 2507.06503).

**Our reading.** Only the abstract of the Taobao-homepage paper is known (seeds/003): non-clicks are often
*invalid exposures* (the user came to search and never looked at the block: pseudo-negatives) and some clicks
are *pseudo-positives* (clicks to enter a marketing portal). The method has (1) an intent-aware negative
sampler that filters invalid exposures and (2) an intent-driven dual debiasing of exposure bias and click
bias. The losses below are §14's proposed reading, not the paper's equations.

Per round (§14(d)):

1. fit the two intent heads on the window (:mod:`agents.usd_heads`): the attention head ``a`` on every
   exposure (weak label: clicked, or another click in the session, or viewport dwell >= ``δ``), the
   click-validity head ``c`` on every click (weak label: post-click item engagement > 0);
2. **sampler**: keep an unclicked exposure as a negative only if ``a >= θ_a``, ``θ_a`` the
   ``keep_percentile``-th percentile of ``a`` over the window's exposures (§14(c) DEFAULT 30); replace each
   dropped one by a random negative of the same request, from space B (recalled, not exposed) with
   probability ``replace_b_share``, else from space C (never recalled);
3. **dual debiasing**: train BC's two-tower with

   ``L = (1/n) [Σ_clicks w⁺·BCE(σ(s), 1) + Σ_kept w⁻·BCE(σ(s), 0) + Σ_replacements BCE(σ(s), 0)] + λR``,

   ``w⁺ = stopgrad(c)`` (click debias; ``positive_weight = "ips"``: ``c / max(a, 0.05)``) and
   ``w⁻ = stopgrad(a)`` (exposure debias), ``n`` the rows of the minibatch.

With the sampler and both debiasing terms off the agent is BC (the same loss, data and streams).
Ablations: ``usd-no-sampler`` (every non-click kept), ``usd-no-exposure-debias`` (``w⁻ = 1``),
``usd-no-click-debias`` (``w⁺ = 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F

from agents.backbone.exposure import ExposureCore, ExposureServing
from agents.backbone.spaces import build_spaces, sample_b, sample_c
from agents.backbone.training import Exposures, TrainConfig, check_ranges, exposure_data, fit_generator
from agents.backbone.two_tower import TowerConfig
from agents.backbone.weighting import weight_quantiles
from agents.bc import BC_TOWER
from agents.registry import register, register_variant
from agents.usd_heads import (
    ATTENTION_FEATURES,
    VALIDITY_FEATURES,
    HeadData,
    IntentHead,
    attention_data,
    fit_head,
    head_optimiser,
    validity_data,
)
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.rng import stream_seed

MIN_ATTENTION = 0.05  # floor of a in the IPS positive weight c / max(a, 0.05) (§14(c), §16.1)


@dataclass(frozen=True)
class USDConfig:
    """USD hyperparameters (none are published; §14(e)); ``None`` in ``train`` / ``tower``: the scenario's ``training``."""

    label: Literal["clicked", "finished"] = "clicked"
    """Positive label (USD's pseudo-positives are clicks, so ``clicked``)."""
    sampler: bool = True
    """Intent-aware negative sampler: drop unclicked exposures with ``a < θ_a`` and replace them by B/C negatives."""
    exposure_debias: bool = True
    """Weight kept negatives by ``w⁻ = stopgrad(a)`` (off: 1)."""
    click_debias: bool = True
    """Weight positives by ``w⁺ = stopgrad(c)`` (off: 1)."""
    positive_weight: Literal["c", "ips"] = "c"
    """``c``: ``w⁺ = c``; ``ips``: ``w⁺ = c / max(a, 0.05)`` (§14(c)'s alternative)."""
    keep_percentile: float = 30.0
    """``θ_a`` = this percentile of ``a`` over the window's exposures (§14(e): 10, 30, 50)."""
    replace_b_share: float = 0.5
    """P(a replacement negative comes from space B rather than C) (a DEFAULT of ours)."""
    dwell_threshold: float = 0.2
    """``δ`` (seconds): viewport dwell at or above it marks a slot as attended in the weak label."""
    head_hidden: int = 16
    """Hidden units of each intent head."""
    head_epochs: int = 3
    """Epochs per round of each head (warm-started)."""
    head_min_steps: int = 200
    """At least this many optimiser steps per head per round (more epochs when the window is small)."""
    head_batch_size: int = 512
    """Minibatch size of the heads."""
    head_lr: float = 0.01
    """Adam learning rate of the heads."""
    l2: float = 1e-5
    """L2 weight on the embedding rows used in each batch (BC's)."""
    tower: TowerConfig = BC_TOWER
    """BC's towers (override keys ``hidden``, ``gamma``, ...)."""
    train: TrainConfig = TrainConfig()
    """Optimiser and epochs of the retriever (override keys ``lr``, ``epochs``, ``batch_size``, ...)."""

    def __post_init__(self) -> None:
        check_ranges(self)
        for name, ok, what in (
            ("keep_percentile", 0.0 <= self.keep_percentile < 100.0, "must be in [0, 100)"),
            ("replace_b_share", 0.0 <= self.replace_b_share <= 1.0, "must be in [0, 1]"),
            ("dwell_threshold", self.dwell_threshold >= 0.0, "must be >= 0"),
            ("head_hidden", self.head_hidden >= 1, "must be >= 1"),
            ("head_epochs", self.head_epochs >= 0, "must be >= 0"),
            ("head_min_steps", self.head_min_steps >= 0, "must be >= 0"),
            ("head_batch_size", self.head_batch_size >= 2, "must be >= 2"),
            ("head_lr", self.head_lr > 0.0, "must be > 0"),
        ):
            if not ok:
                raise ValueError(f"{name}: {what}, got {getattr(self, name)!r}")

    @property
    def needs_attention(self) -> bool:
        """Whether any term reads the attention head."""
        return self.sampler or self.exposure_debias or (self.click_debias and self.positive_weight == "ips")


def usd_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, l2_term: torch.Tensor | None = None, l2: float = 0.0
) -> torch.Tensor:
    """USD's debiased objective on a minibatch: ``(1/n) Σ w·BCE(σ(s), t) + λR``.

    Args:
        logits: ``[n]`` scores ``s_ui``.
        targets: ``[n]`` 1 for a click, 0 for a kept or replacement negative.
        weights: ``[n]`` ``w⁺`` / ``w⁻`` / 1 (detached here: no gradient reaches the heads); None: all 1
            (torch's fused mean, so that USD with every term off is BC bit for bit).
        l2_term: the embedding L2 term ``R`` or None; ``l2`` its weight ``λ``.
    """
    if weights is None:
        loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
    else:
        per = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
        loss = (weights.detach().to(per.dtype) * per).mean()
    return loss if l2_term is None or l2 == 0.0 else loss + l2 * l2_term


def attention_threshold(a: torch.Tensor, percentile: float) -> float:
    """``θ_a``: the ``percentile``-th percentile of ``a`` (the lower order statistic, so ``a >= θ_a`` keeps ties)."""
    if a.numel() == 0:
        return 0.0
    return float(torch.quantile(a.float().cpu(), percentile / 100.0, interpolation="lower"))


def keep_negatives(a: torch.Tensor, negative: torch.Tensor, percentile: float) -> tuple[torch.Tensor, float]:
    """``([E] bool keep, θ_a)``: every positive, and the negatives with ``a >= θ_a`` (θ over all exposures)."""
    threshold = attention_threshold(a, percentile)
    return ~negative | (a >= threshold), threshold


def sample_replacements(
    view: TrainingView, rows: torch.Tensor, b_share: float, gen: torch.Generator, label: Literal["clicked", "finished"]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random negative per dropped exposure, from its own request: ``(items, valid, from_b)``, each ``[n]``.

    Space B (recalled, not exposed) with probability ``b_share`` when the request has one, else space C.
    """
    device = rows.device
    if rows.numel() == 0:
        empty = torch.zeros(0, dtype=torch.bool, device=device)
        return torch.zeros(0, dtype=torch.int64, device=device), empty, empty
    spaces = build_spaces(view, label, device)
    b, c = sample_b(spaces, rows, 1, gen), sample_c(spaces, rows, 1, gen)
    from_b = (torch.rand(rows.shape[0], generator=gen).to(device) < b_share) & b.valid[:, 0]
    items = torch.where(from_b, b.items[:, 0], c.items[:, 0])
    return items, from_b | c.valid[:, 0], from_b


def example_weights(cfg: USDConfig, negative: torch.Tensor, a: torch.Tensor | None, c: torch.Tensor | None) -> torch.Tensor:
    """``[E]`` loss weight of each exposure: ``w⁻ = a`` on negatives, ``w⁺ = c`` (or ``c / max(a, 0.05)``) on positives, else 1."""
    w = torch.ones(negative.shape, device=negative.device)
    if cfg.exposure_debias and a is not None:
        w = torch.where(negative, a, w)
    if cfg.click_debias and c is not None:
        w_pos = c if cfg.positive_weight == "c" or a is None else (c / a.clamp_min(MIN_ATTENTION)).clamp(max=1.0 / MIN_ATTENTION)
        w = torch.where(negative, w, w_pos)
    return w


@dataclass(frozen=True)
class Weighted:
    """USD's training rows: the pairs with their targets and their loss weights ``[n]``."""

    data: Exposures
    weights: torch.Tensor


def usd_examples(
    view: TrainingView, cfg: USDConfig, a: torch.Tensor | None, c: torch.Tensor | None, gen: torch.Generator, device: torch.device
) -> tuple[Weighted, dict[str, float]]:
    """Filter, replace and weight the window's exposures (steps 2-3 of the module docstring).

    Args:
        a: ``[E]`` attention of every exposure (None: unused by ``cfg``).
        c: ``[E]`` click validity (1 on non-clicks; None: unused).
        gen: the replacement-negative stream.

    Returns:
        The weighted rows and diagnostics (kept share of negatives, θ_a, replacements, weight quantiles).
    """
    data = exposure_data(view, cfg.label, device)
    negative = data.labels == 0
    keep, threshold = torch.ones_like(negative), math.nan
    if cfg.sampler and a is not None:
        keep, threshold = keep_negatives(a, negative, cfg.keep_percentile)
    w = example_weights(cfg, negative, a, c)
    dropped = negative & ~keep
    items, valid, from_b = sample_replacements(view, data.row[dropped], cfg.replace_b_share, gen, cfg.label)
    rows = Exposures(
        data.requests, torch.cat([data.row[keep], data.row[dropped]]), torch.cat([data.item_ids[keep], items]),
        torch.cat([data.labels[keep], torch.zeros_like(items, dtype=data.labels.dtype)]),
    )  # fmt: skip
    weights = torch.cat([w[keep], valid.to(w.dtype)])
    n_neg = int(negative.sum())
    diag = {
        "theta_a": threshold,
        "kept_negative_share": float((keep & negative).sum()) / max(n_neg, 1),
        "replaced": float(dropped.sum()),
        "replaced_from_b_share": float(from_b.float().mean()) if from_b.numel() else math.nan,
        **weight_quantiles(w[~negative], "w_pos"),
        **weight_quantiles(w[keep & negative], "w_neg"),
    }
    return Weighted(rows, weights), diag


@register("usd", config=USDConfig)
class USD(ExposureServing):
    """USD (our reading): intent-aware negative filter + attention / click-validity weighted BCE on BC's two-tower.

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default :class:`USDConfig`).
        name: the registered name (seeds the init, the minibatch, head and replacement streams).
    """

    def __init__(self, ctx: AgentContext, config: USDConfig | None = None, name: str = "usd") -> None:
        self.ctx, self.name = ctx, name
        self.config = cfg = config or USDConfig()
        self.core = ExposureCore(ctx, cfg.tower, cfg.train, name)
        for head, n_features in (("attention", ATTENTION_FEATURES), ("validity", VALIDITY_FEATURES)):
            module = IntentHead(n_features, cfg.head_hidden, stream_seed(ctx.seed, f"{name}/{head}/init")).to(ctx.device)
            self.core.extra[head] = module
            self.core.extra_optimisers[head] = head_optimiser(module, cfg.head_lr)

    @property
    def attention(self) -> IntentHead:
        """The attention head ``a(ctx, pos)``."""
        head = self.core.extra["attention"]
        assert isinstance(head, IntentHead)
        return head

    @property
    def validity(self) -> IntentHead:
        """The click-validity head ``c(ctx)``."""
        head = self.core.extra["validity"]
        assert isinstance(head, IntentHead)
        return head

    def fit_heads(self, view: TrainingView) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, float]]:
        """Fit the heads the config uses on ``view``; ``(a [E] or None, c [E] or None, diagnostics)``.

        ``c`` is 1 on non-clicked rows (only clicks carry a validity).
        """
        cfg, device = self.config, self.ctx.device
        gen = fit_generator(self.ctx, f"{self.name}/heads", view.round)
        a = c = None
        diag = dict.fromkeys(("attention_loss", "attention_label_rate", "validity_loss", "validity_label_rate"), math.nan)
        if cfg.needs_attention:
            att = attention_data(view, cfg.dwell_threshold, device)
            a = self._fit_head("attention", att, gen, diag)
        if cfg.click_debias:
            val = validity_data(view, device)
            c = torch.ones(len(view.impressions), device=device).index_copy_(0, val.rows, self._fit_head("validity", val, gen, diag))
        return a, c, diag

    def _fit_head(self, head: str, data: HeadData, gen: torch.Generator, diag: dict[str, float]) -> torch.Tensor:
        """Fit one head on ``data`` (diagnostics into ``diag``); its ``[n]`` predictions after the fit."""
        cfg, module = self.config, self.core.extra[head]
        assert isinstance(module, IntentHead)
        optimiser = self.core.extra_optimisers[head]
        diag[f"{head}_loss"] = fit_head(module, optimiser, data, cfg.head_epochs, cfg.head_batch_size, gen, self.name, cfg.head_min_steps)
        diag[f"{head}_label_rate"] = float(data.y.mean()) if len(data.y) else math.nan
        return module.predict(data.x)

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Fit the heads, filter / replace / weight the exposures, then warm-started weighted BCE; invalidates the index."""
        cfg, device = self.config, self.ctx.device
        a, c, diag = self.fit_heads(view)
        rows, sample_diag = usd_examples(view, cfg, a, c, fit_generator(self.ctx, f"{self.name}/negatives", view.round), device)
        self.core.fits += 1
        diag.update(sample_diag, examples=float(len(rows.data)))
        if len(rows.data) == 0:
            return {**diag, "loss": math.nan, "loss_first_epoch": math.nan, "positive_rate": math.nan}
        gen = fit_generator(self.ctx, self.name, view.round)
        weights = None if bool((rows.weights == 1).all()) else rows.weights

        def loss(lg: torch.Tensor, t: torch.Tensor, l2t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return usd_loss(lg, t, None if weights is None else weights[idx], l2t, cfg.l2)

        losses = self.core.train_pairs(rows.data, gen, loss, view.catalogue.to(device))
        first, last = (losses[0], losses[-1]) if losses else (math.nan, math.nan)
        return {**diag, "loss": last, "loss_first_epoch": first, "positive_rate": float(rows.data.labels.mean())}


register_variant(
    "usd-no-sampler", USD, replace(USDConfig(), sampler=False),
    "USD without the intent-aware negative sampler: every unclicked exposure stays a negative (weighted by a).",
)  # fmt: skip
register_variant(
    "usd-no-exposure-debias", USD, replace(USDConfig(), exposure_debias=False),
    "USD without the exposure debias: kept negatives weigh 1 instead of the attention a.",
)  # fmt: skip
register_variant(
    "usd-no-click-debias", USD, replace(USDConfig(), click_debias=False),
    "USD without the click debias: clicks weigh 1 instead of the click validity c (portal clicks stay positives).",
)  # fmt: skip
