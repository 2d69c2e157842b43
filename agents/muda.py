"""MUDA: binary pseudo-labels from the ranking model on unexposed pairs (algorithms.md §4.3; DAMCAR baseline (v)).

A frozen ranker snapshot (by default the agent's own, trained on its label: :mod:`agents.backbone.label_teacher`)
scores the unexposed pairs ``S_un`` (uniform, per-user
counts matched to DAMCAR's target domain, §4 DEFAULT); a threshold ``κ`` binarises them,
``ỹ(u, i) = 1[Rank(u, i) >= κ]``, and the retriever minimises

``L_MUDA = (1/|S_exp ∪ S_un|) [ Σ_{S_exp} BCE(σ(s), y) + Σ_{S_un} BCE(σ(s), ỹ) ] + λ·R``.

``κ`` (unspecified by the paper): by default the global quantile of ``Rank`` on ``S_un`` that
makes the pseudo-positive rate equal the label rate observed on ``S_exp`` (§4.3 DEFAULT); a fixed
``threshold`` (e.g. 0.5) is the sensitivity check. The pseudo-positive rate is logged each round
(binarisation throws calibration away: an overconfident ranker gives ỹ ≈ all 0).
``muda-t`` drops the ``S_exp`` term (the cited work trains on the target domain only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from agents.backbone.exposure import ExposureCore, ExposureServing
from agents.backbone.label_teacher import fitted_teacher, make_teacher
from agents.backbone.training import TrainConfig, check_ranges, exposure_data, fit_generator
from agents.backbone.two_tower import TowerConfig
from agents.backbone.unexposed import TargetDomainConfig, concat, loss_summary, target_domain, teacher_scores, with_labels
from agents.bc import BC_TOWER, bc_loss
from agents.registry import register, register_variant
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView


@dataclass(frozen=True)
class MUDAConfig:
    """MUDA hyperparameters: BC's, the unexposed set's and the pseudo-label threshold."""

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
    threshold: float | None = None
    """``κ``; None: match the pseudo-positive rate on ``S_un`` to the label rate on ``S_exp``."""
    target_only: bool = False
    """Train on ``S_un`` alone (``muda-t``)."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: must be in [0, 1] or None, got {self.threshold!r}")


def pseudo_labels(rank: torch.Tensor, threshold: float | None, source_rate: float) -> tuple[torch.Tensor, float]:
    """``(ỹ = 1[Rank >= κ] as float, κ)``; ``κ = None`` -> the ``1 − source_rate`` quantile of ``rank``."""
    if threshold is None:
        kappa = float(torch.quantile(rank.double(), min(max(1.0 - source_rate, 0.0), 1.0))) if len(rank) else 0.5
    else:
        kappa = threshold
    return (rank >= kappa).float(), kappa


@register("muda", config=MUDAConfig)
class MUDA(ExposureServing):
    """MUDA: exposures plus unexposed pairs labelled by thresholding the ranker's scores."""

    def __init__(self, ctx: AgentContext, config: MUDAConfig | None = None, name: str = "muda") -> None:
        self.ctx, self.name = ctx, name
        self.config = config or MUDAConfig()
        self.core = ExposureCore(ctx, self.config.tower, self.config.train, name)
        self.label_teacher = make_teacher(ctx, self.config.target, name, self.core)

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Score ``S_un`` with the ranker, binarise, train on ``S_exp ∪ S_un`` (``S_un`` for ``muda-t``).

        Returns:
            ``loss``, ``loss_first_epoch``, ``examples``, ``pseudo_positive_rate``, ``threshold``, ``target_pairs``, ``target_users``.
        """
        cfg, device = self.config, self.ctx.device
        self.core.fits += 1
        gen = fit_generator(self.ctx, self.name, view.round)
        data = exposure_data(view, cfg.label, device)
        pairs, info = target_domain(view, cfg.target, gen, device)
        nan = dict.fromkeys(("loss", "loss_first_epoch", "pseudo_positive_rate", "threshold", "teacher_loss"), math.nan)
        if len(data) == 0 or len(pairs) == 0:
            return {**nan, "examples": 0.0, **info}
        ranker, teacher_loss = fitted_teacher(self.label_teacher, view, cfg.label)
        rank = teacher_scores(ranker, pairs, cfg.target.teacher_block)
        y_tilde, kappa = pseudo_labels(rank, cfg.threshold, float(data.labels.mean()))
        target = with_labels(pairs, y_tilde)
        train = target if cfg.target_only else concat(data, target)
        losses = self.core.train_pairs(train, gen, lambda lg, t, l2t, idx: bc_loss(lg, t, l2t, cfg.l2), view.catalogue.to(device))
        return {
            **loss_summary(losses),
            "examples": float(len(train)),
            "pseudo_positive_rate": float(y_tilde.mean()),
            "threshold": kappa,
            "teacher_loss": teacher_loss,
            **info,
        }


register_variant("muda-t", MUDA, MUDAConfig(target_only=True), "MUDA-T: MUDA trained on the pseudo-labelled unexposed pairs only.")
