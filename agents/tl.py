"""TL: transfer learning, the item tower fine-tuned on ranking pseudo-labels (algorithms.md §4.1; DAMCAR baseline (iii)).

Stage 1 is BC: ``L_BC`` on the exposures (warm-started). Stage 2 freezes the user tower and
minimises, over the item-tower parameters only,

``L_TL = (1/|S_un|) Σ_{(u,i) in S_un} BCE(σ(s_ui), Rank(u, i)) + μ·||θ_item − θ_item^(1)||²``

on the unexposed pairs ``S_un`` (uniform, per-user counts matched to DAMCAR's target domain,
§4 DEFAULT), with soft targets from a frozen ranker snapshot (by default the agent's own, trained on
its label: :mod:`agents.backbone.label_teacher`) and an L2 pull ``μ``
(1e-4) toward the stage-1 item parameters ``θ_item^(1)`` to limit forgetting. No exposures are
mixed into stage 2 (§4.1 DEFAULT).

"User tower" here means everything that shapes ``f(u)``: the user id, domain and entry tables,
the profile normaliser, the user MLP, the user bias, *and the item id table*, because the user
tower embeds the click history with it. Stage 2 therefore tunes the item MLP, the category,
creator and item-domain tables, the dense-input normaliser and the item bias; ``f(u)`` is
bit-identical before and after it (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from agents.backbone.exposure import ExposureCore, ExposureServing
from agents.backbone.label_teacher import fitted_teacher, make_teacher
from agents.backbone.training import TrainConfig, check_ranges, fit_generator, make_optimiser
from agents.backbone.two_tower import TowerConfig
from agents.backbone.unexposed import TargetDomainConfig, target_domain, teacher_scores, with_labels
from agents.bc import BC_TOWER, bc_loss, fit_bc
from agents.registry import register
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView

ITEM_SIDE = ("item_mlp", "category", "creator", "item_domain", "item_dense_norm", "item_bias")
"""The TwoTower submodules stage 2 may change (the rest shapes ``f(u)``)."""


@dataclass(frozen=True)
class TLConfig:
    """TL hyperparameters: BC's, the unexposed set's, and stage 2's."""

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
    finetune_epochs: int = 1
    """Stage-2 epochs on the unexposed pairs (§4.1: 1-3)."""
    finetune_lr: float = 1e-2
    """Stage-2 learning rate (Adagrad, §4.1)."""
    pull: float = 1e-4
    """Weight ``μ`` of the L2 pull toward the stage-1 item parameters."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.finetune_epochs < 0 or self.finetune_lr <= 0 or self.pull < 0:
            got = f"{self.finetune_epochs}, {self.finetune_lr}, {self.pull}"
            raise ValueError(f"finetune_epochs >= 0, finetune_lr > 0, pull >= 0 required, got {got}")


def tl_loss(
    logits: torch.Tensor, rank: torch.Tensor, params: Sequence[torch.Tensor], anchor: Sequence[torch.Tensor], pull: float
) -> torch.Tensor:
    """``(1/n) Σ BCE(σ(s), Rank) + μ·Σ_p ||p − p^(1)||²`` over the item-side parameters ``params``."""
    drift = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
    return bc_loss(logits, rank) + pull * drift


@register("tl", config=TLConfig)
class TL(ExposureServing):
    """TL: BC, then the item tower alone fine-tuned on unexposed pairs with the ranker's soft labels."""

    def __init__(self, ctx: AgentContext, config: TLConfig | None = None, name: str = "tl") -> None:
        self.ctx, self.name = ctx, name
        self.config = config or TLConfig()
        self.core = ExposureCore(ctx, self.config.tower, self.config.train, name)
        self.label_teacher = make_teacher(ctx, self.config.target, name, self.core)

    def item_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters stage 2 trains."""
        model = self.retriever.model
        return [p for n in ITEM_SIDE if getattr(model, n) is not None for p in getattr(model, n).parameters()]

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Stage 1 (BC on the exposures) then stage 2 (item tower on ``S_un``).

        Returns:
            BC's diagnostics plus ``finetune_loss``, ``target_pairs``, ``target_users``, ``teacher_mean``, ``teacher_loss``.
        """
        cfg, device, model = self.config, self.ctx.device, self.retriever.model
        info = fit_bc(self.core, view, cfg.label, cfg.l2)
        ranker, info["teacher_loss"] = fitted_teacher(self.label_teacher, view, cfg.label)
        gen = fit_generator(self.ctx, f"{self.name}/finetune", view.round)
        pairs, target_info = target_domain(view, cfg.target, gen, device)
        info.update(target_info)
        if len(pairs) == 0 or cfg.finetune_epochs == 0:
            return {**info, "finetune_loss": math.nan, "teacher_mean": math.nan}
        rank = teacher_scores(ranker, pairs, cfg.target.teacher_block)
        params = self.item_parameters()
        anchor = [p.detach().clone() for p in params]
        optimiser = make_optimiser(params, "adagrad", cfg.finetune_lr)
        user_side = [m for n, m in model.named_children() if n not in ITEM_SIDE]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        try:  # the user side stays in eval mode: no BatchNorm statistics update on the frozen side
            losses = self.core.train_pairs(
                with_labels(pairs, rank), gen, lambda lg, t, l2t, idx: tl_loss(lg, t, params, anchor, cfg.pull),
                view.catalogue.to(device), optimiser, cfg.finetune_epochs, frozen=user_side,
            )  # fmt: skip
        finally:
            for p in model.parameters():
                p.requires_grad_(True)
        return {**info, "finetune_loss": losses[-1] if losses else math.nan, "teacher_mean": float(rank.mean())}
