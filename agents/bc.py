"""BC: the biased binary-classification baseline (algorithms.md §2; DAMCAR baseline (i), UMA² "SS-A").

A two-tower model (DSSM / YouTube-DNN, §0.3) trained with BCE on exposed data
only: a clicked (or finished) exposure is a positive, an exposed-unclicked one
a negative. It never sees recalled-unexposed (space B) or never-recalled
(space C) items, so under the feedback loop it learns the exposure policy's
bias: its scores on unexposed relevant items fall behind those on exposed
items of equal true relevance (the SSB signature, DAMCAR Fig. 5).

Loop per round: collect the window's exposures -> train E epochs, warm-started
from the previous round -> ``index`` the live catalogue -> serve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from agents.backbone.exposure import ExposureCore, ExposureServing
from agents.backbone.training import TrainConfig, check_ranges, exposure_data, fit_generator
from agents.backbone.two_tower import TowerConfig
from agents.registry import register
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView

BC_TOWER = TowerConfig(batch_norm=True)
"""BC's towers: BatchNorm on (DAMCAR's DSSM uses it). Without it the towers' constant parts (MLP
biases, shared domain/entry embeddings) dominate the small per-user variation of the inputs: after
pretraining every user query points the same way (mean pairwise cosine ~0.98) and BC recalls the
same ~100 items for everyone, below the ``popular`` agent. DAMCAR: 300-300 hidden, d = 128, gamma 1."""


@dataclass(frozen=True)
class BCConfig:
    """BC hyperparameters; ``None`` in ``train`` / ``tower`` means "take it from the scenario's ``training`` section"."""

    label: Literal["clicked", "finished"] = "clicked"
    """Positive label: ``clicked`` or ``finished`` (clicked-unfinished then counts as negative)."""
    l2: float = 1e-5
    """L2 weight on the embedding rows used in each batch (DAMCAR code: 1e-5)."""
    tower: TowerConfig = BC_TOWER
    """Tower shape and logit (override keys ``hidden``, ``gamma``, ``embedding_dim``, ...)."""
    train: TrainConfig = TrainConfig()
    """Optimiser and epochs (override keys ``lr``, ``epochs``, ``batch_size``, ``optimizer``, ...; DAMCAR: Adagrad 1e-2, 3 epochs, 512)."""

    def __post_init__(self) -> None:
        check_ranges(self)


def bc_loss(logits: torch.Tensor, labels: torch.Tensor, l2_term: torch.Tensor | None = None, l2: float = 0.0) -> torch.Tensor:
    """The BC objective on a batch of exposures.

    ``L_BC = (1/|S_exp|) Σ_{(u,i,y) ∈ S_exp} BCE(σ(s_ui), y) + λ·R``, with
    ``BCE(p, y) = −[y·log p + (1−y)·log(1−p)]`` and ``R`` the embedding L2 term.

    Args:
        logits: ``[n]`` scores ``s_ui`` (pre-sigmoid).
        labels: ``[n]`` targets in {0, 1} (soft targets in [0, 1] allowed).
        l2_term: scalar ``R`` (e.g. :meth:`TwoTower.id_l2`), or None.
        l2: its weight ``λ``.

    Returns:
        Scalar loss.
    """
    loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    return loss if l2_term is None or l2 == 0.0 else loss + l2 * l2_term


def fit_bc(core: ExposureCore, view: TrainingView, label: Literal["clicked", "finished"], l2: float) -> dict[str, float]:
    """One warm-started ``L_BC`` fit of ``core`` on the window's exposures (BC's ``fit``; TL's stage 1).

    Returns:
        ``loss`` (last epoch), ``loss_first_epoch``, ``examples``, ``positive_rate``.
    """
    device = core.ctx.device
    data = exposure_data(view, label, device)
    core.fits += 1
    if len(data) == 0:
        return {"loss": math.nan, "loss_first_epoch": math.nan, "examples": 0.0, "positive_rate": math.nan}
    gen = fit_generator(core.ctx, core.name, view.round)
    losses = core.train_pairs(data, gen, lambda lg, t, l2t, idx: bc_loss(lg, t, l2t, l2), view.catalogue.to(device))
    return {
        "loss": losses[-1] if losses else math.nan,
        "loss_first_epoch": losses[0] if losses else math.nan,
        "examples": float(len(data)),
        "positive_rate": float(data.labels.mean()),
    }


@register("bc", config=BCConfig)
class BC(ExposureServing):
    """Biased baseline: two-tower trained with BCE on exposed data only (clicked vs exposed-unclicked).

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default :class:`BCConfig`).
        name: the registered name (seeds the init and shuffling streams).
    """

    def __init__(self, ctx: AgentContext, config: BCConfig | None = None, name: str = "bc") -> None:
        self.ctx, self.name = ctx, name
        self.config = config or BCConfig()
        self.core = ExposureCore(ctx, self.config.tower, self.config.train, name, save_extra=False)

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Warm-started BCE training on the window's exposures; invalidates the index (see :func:`fit_bc`)."""
        return fit_bc(self.core, view, self.config.label, self.config.l2)
