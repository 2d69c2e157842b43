"""AR: adversarial regularisation of the retriever (algorithms.md §4.2; DAMCAR baseline (iv)).

A domain classifier ``D`` reads an intermediate retrieval representation (§4.2 DEFAULT
``z = [f̂(u); ĝ(i); f̂(u) ⊙ ĝ(i)]``, the normalised tower outputs) through the gradient reversal
layer and tells exposed (source, 1) from unexposed (target, 0) pairs:

``L_AR = L_BC(S_exp) + λ·L_dom``, ``L_dom = −(1/|S_exp|) Σ log D(z^s) − (1/|S_un|) Σ log(1 − D(z^t))``,

minimised over all parameters with the GRL (``κ = 1``, or the DANN warm-up) in front of ``D``: ``D``
descends ``L_dom`` while the towers ascend it (``min_towers max_D L_BC − λ·L_dom``). Each step pairs a
source minibatch with an equal-size batch of ``S_un`` (uniform unexposed pairs, per-user counts
matched to DAMCAR's target domain, §4 DEFAULT). ``S_un`` carries no labels, so AR only aligns
representations. The round's domain accuracy is logged (near 0.5 means aligned).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from agents.backbone.adapt import DomainClassifier, dann_kappa, domain_accuracy, domain_loss
from agents.backbone.exposure import ExposureCore, ExposureServing
from agents.backbone.training import Exposures, TrainConfig, check_ranges, exposure_data, fit_generator, run_epochs
from agents.backbone.two_tower import TowerConfig
from agents.backbone.unexposed import TargetDomainConfig, last_epoch_mean, loss_summary, target_domain, tiled
from agents.bc import BC_TOWER, bc_loss
from agents.registry import register
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.rng import stream_seed
from simulator.types import Catalogue, RequestBatch


@dataclass(frozen=True)
class ARConfig:
    """AR hyperparameters: BC's, the unexposed set's and the adversary's."""

    label: Literal["clicked", "finished"] = "clicked"
    """Positive label of the exposures: ``clicked`` or ``finished``."""
    l2: float = 1e-5
    """L2 weight on the embedding rows used in each batch."""
    tower: TowerConfig = BC_TOWER
    """BC's towers (override keys ``hidden``, ``gamma``, ...)."""
    train: TrainConfig = TrainConfig()
    """Optimiser and epochs (override keys ``lr``, ``epochs``, ...)."""
    target: TargetDomainConfig = TargetDomainConfig()
    """The unexposed pair set (override keys ``sampler``, ``radius``, ``visits``, ``walk_mode``, ``teacher_block``)."""
    adv_weight: float = 0.2
    """``λ`` on ``L_dom`` (DAMCAR's λ2 grid 0.1-0.5; code default 0.2)."""
    disc_hidden: tuple[int, ...] = (32,)
    """Hidden sizes of the domain classifier ``D`` (§4.2: 1-2 layers)."""
    kappa_schedule: bool = False
    """DANN warm-up ``κ(p) = 2/(1+exp(−10p)) − 1`` over the fit's steps instead of ``κ = 1``."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.adv_weight < 0:
            raise ValueError(f"adv_weight: must be >= 0, got {self.adv_weight!r}")


def ar_loss(
    logits: torch.Tensor, labels: torch.Tensor, d_src: torch.Tensor, d_tgt: torch.Tensor, weight: float, l2_term: torch.Tensor, l2: float
) -> torch.Tensor:
    """``L_BC + λ·L_dom`` (the GRL in front of ``D`` turns the towers' part into ascent)."""
    return bc_loss(logits, labels, l2_term, l2) + weight * domain_loss(d_src, d_tgt)


@register("ar", config=ARConfig)
class AR(ExposureServing):
    """AR: BC with a GRL domain classifier aligning exposed and unexposed pair representations."""

    def __init__(self, ctx: AgentContext, config: ARConfig | None = None, name: str = "ar") -> None:
        self.ctx, self.name = ctx, name
        self.config = cfg = config or ARConfig()
        self.core = ExposureCore(ctx, cfg.tower, cfg.train, name)
        d = self.core.model.cfg.dim
        gen = torch.Generator().manual_seed(stream_seed(ctx.seed, f"{name}/disc"))
        self.disc = self.core.extra["disc"] = DomainClassifier(3 * d, cfg.disc_hidden, True, gen).to(ctx.device)
        # one optimiser over the towers and D (the GRL makes it a min-max)
        self.core.optimiser = cfg.train.optimiser([*self.core.model.parameters(), *self.disc.parameters()], ctx)

    def pair_repr(self, requests: RequestBatch, catalogue: Catalogue, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [b], z [b, 3d])`` of pairs: the score and ``[f̂; ĝ; f̂ ⊙ ĝ]``."""
        model = self.core.model
        f, g = model.user_embedding(requests), model.item_embedding(catalogue, items)
        logits = model.score_pairs(f, g) + model.bias_terms(requests.user_id, items)
        fn, gn = model.normalise(f), model.normalise(g)
        return logits, torch.cat([fn, gn, fn * gn], dim=1)

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Warm-started adversarial training on ``S_exp`` paired with ``S_un`` batches.

        Returns:
            ``loss``, ``loss_first_epoch``, ``examples``, ``domain_accuracy`` (last epoch), ``target_pairs``, ``target_users``.
        """
        cfg, device = self.config, self.ctx.device
        self.core.fits += 1
        gen = fit_generator(self.ctx, self.name, view.round)
        data = exposure_data(view, cfg.label, device)
        pairs, info = target_domain(view, cfg.target, gen, device)
        if len(data) == 0 or len(pairs) == 0:
            return {"loss": math.nan, "loss_first_epoch": math.nan, "examples": float(len(data)), "domain_accuracy": math.nan, **info}
        acc: list[torch.Tensor] = []
        losses = self._train(data, pairs, view.catalogue.to(device), gen, acc)
        return {
            **loss_summary(losses),
            "examples": float(len(data)),
            "domain_accuracy": last_epoch_mean(acc, len(data), self.core.batch_size()),
            **info,
        }

    def _train(self, data: Exposures, pairs: Exposures, catalogue: Catalogue, gen: torch.Generator, acc: list[torch.Tensor]) -> list[float]:
        """The epochs of ``L_AR``: each source minibatch with an equal-size batch of ``S_un`` (tiled); ``acc`` collects D's accuracy."""
        cfg, model, disc = self.config, self.core.model, self.disc
        tgt_of = tiled(len(data), len(pairs), gen, self.ctx.device)
        epochs, bs = self.core.epochs(), self.core.batch_size()
        total_steps = max(1, epochs * -(-len(data) // bs))
        step = [0]

        def step_loss(idx: torch.Tensor) -> torch.Tensor:
            disc.kappa = dann_kappa(step[0] / total_steps) if cfg.kappa_schedule else 1.0
            step[0] += 1
            requests, items, labels = data.batch(idx)
            t_req, t_items, _ = pairs.batch(tgt_of[idx])
            logits, z_s = self.pair_repr(requests, catalogue, items)
            _, z_t = self.pair_repr(t_req, catalogue, t_items)
            d_s, d_t = disc(z_s), disc(z_t)
            acc.append(domain_accuracy(d_s.detach(), d_t.detach()))
            l2_term = model.id_l2(requests.user_id, items, catalogue)
            return ar_loss(logits, labels, d_s, d_t, cfg.adv_weight, l2_term, cfg.l2)

        model.train()
        disc.train()
        losses = run_epochs(len(data), epochs, bs, gen, self.ctx.device, self.core.optimiser, step_loss, self.name)
        self.core.retriever.invalidate()
        return losses
