"""KD: the retriever learns the ranking model's predictions (algorithms.md §3; DAMCAR baseline (ii)).

The DSSM of BC is trained with soft-target BCE against a frozen ranker snapshot (one for the whole fit,
§16.7): by default the agent's own ranker trained on its label (:mod:`agents.backbone.label_teacher`):

``L_KD = (1/|S|) Σ_{(u,i) in S} BCE(σ(s_ui), Rank(u, i)) + λ·R``.

- ``kd`` (DEFAULT): ``S = S_exp``, pure label replacement (the paper: "uses the ranking model's
  predictions as the ground-truth labels").
- ``kd+b``: ``S = S_exp ∪ B``, adding recalled-but-unexposed pairs (space B) of the logged recall
  of the serving policy (§16.7), at most ``b_per_request`` per request (uniformly drawn). Their
  targets are the logged ranking scores (``teacher = "logged"``, the spec's wording) or the
  snapshot re-scoring them (``teacher = "snapshot"``, DEFAULT: one snapshot for every target).

Sanity (§3(f), tested): with a constant teacher KD collapses to chance; with the true click
probability as the teacher it learns the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from agents.backbone.exposure import ExposureCore, ExposureServing
from agents.backbone.label_teacher import fitted_teacher, make_teacher
from agents.backbone.training import Exposures, TrainConfig, check_ranges, exposure_data, fit_generator
from agents.backbone.two_tower import TowerConfig
from agents.backbone.unexposed import TargetDomainConfig, concat, loss_summary, teacher_scores
from agents.bc import BC_TOWER, bc_loss
from agents.registry import register, register_variant
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView


@dataclass(frozen=True)
class KDConfig:
    """KD hyperparameters: BC's, the space-B options, the teacher block (the walk fields are unused)."""

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
    b_per_request: int = 0
    """Recalled-unexposed pairs added per request (0: ``kd``; ``kd+b`` presets 20)."""
    teacher: Literal["snapshot", "logged"] = "snapshot"
    """Targets of the space-B pairs: the serving snapshot's scores, or the logged ranking scores."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.b_per_request < 0:
            raise ValueError(f"b_per_request: must be >= 0, got {self.b_per_request!r}")


def space_b(view: TrainingView, per_request: int, gen: torch.Generator, device: torch.device) -> tuple[Exposures, torch.Tensor]:
    """Up to ``per_request`` recalled-unexposed pairs per request, with their logged ranking scores.

    Returns:
        ``(pairs (labels 0), logged ranking score [n])``.
    """
    cand = view.candidates
    idx = (~cand.exposed).nonzero().squeeze(1)
    key = torch.rand(len(idx), generator=gen).to(idx.device)  # random order within each request
    order = torch.argsort(cand.row[idx].double() + key.double() * 0.5)
    idx = idx[order]
    rows = cand.row[idx]
    first = torch.searchsorted(rows, rows, right=False)
    keep = idx[(torch.arange(len(idx), device=idx.device) - first) < per_request]
    row, items = cand.row[keep].to(device), cand.item_id[keep].to(device)
    pairs = Exposures(view.requests.to(device), row, items, torch.zeros(len(keep), device=device))
    return pairs, cand.ranking_score[keep].float().to(device)


@register("kd", config=KDConfig)
class KD(ExposureServing):
    """KD: two-tower trained with soft BCE on the frozen ranker's predictions (exposures; +B for ``kd+b``)."""

    def __init__(self, ctx: AgentContext, config: KDConfig | None = None, name: str = "kd") -> None:
        self.ctx, self.name = ctx, name
        self.config = config or KDConfig()
        self.core = ExposureCore(ctx, self.config.tower, self.config.train, name)
        self.label_teacher = make_teacher(ctx, self.config.target, name, self.core)

    def fit(self, view: TrainingView) -> dict[str, float]:
        """One warm-started fit on ``S`` with the ranker's scores as targets.

        Returns:
            ``loss``, ``loss_first_epoch``, ``examples``, ``b_pairs``, ``teacher_mean``, ``teacher_loss`` (own teacher's BCE).
        """
        cfg, device = self.config, self.ctx.device
        self.core.fits += 1
        gen = fit_generator(self.ctx, self.name, view.round)
        data = exposure_data(view, cfg.label, device)
        if len(data) == 0:
            nan = dict.fromkeys(("loss", "loss_first_epoch", "teacher_mean", "teacher_loss"), math.nan)
            return {**nan, "examples": 0.0, "b_pairs": 0.0}
        ranker, teacher_loss = fitted_teacher(self.label_teacher, view, cfg.label)
        targets = teacher_scores(ranker, data, cfg.target.teacher_block)
        n_b = 0
        if cfg.b_per_request > 0:
            b, logged = space_b(view, cfg.b_per_request, gen, device)
            n_b = len(b)
            b_targets = logged if cfg.teacher == "logged" else teacher_scores(ranker, b, cfg.target.teacher_block)
            data, targets = concat(data, b), torch.cat([targets, b_targets])
        data = Exposures(data.requests, data.row, data.item_ids, targets.clamp(0.0, 1.0))
        losses = self.core.train_pairs(data, gen, lambda lg, t, l2t, idx: bc_loss(lg, t, l2t, cfg.l2), view.catalogue.to(device))
        return {
            **loss_summary(losses),
            "examples": float(len(data)),
            "b_pairs": float(n_b),
            "teacher_mean": float(targets.mean()),
            "teacher_loss": teacher_loss,
        }


register_variant(
    "kd+b", KD, KDConfig(b_per_request=20), "KD+B: KD whose training set adds recalled-unexposed pairs (space B) with ranker targets."
)
register_variant(
    "kd-platform", KD, KDConfig(target=TargetDomainConfig(teacher_source="platform")),
    "KD distilling the platform ranker (trained on clicks) instead of its own ranker trained on its label.",
)  # fmt: skip
