"""UMA²'s negative-sampling strategies on a two-tower GMM (algorithms.md §7 "Sampling strategies"; UMA² §4.1.4).

Every strategy trains the same General Matching Model (a YouTube-DNN-style two
tower, :class:`~agents.backbone.two_tower.TwoTower`) as a binary classifier on
the clicked exposures (positives) and, per positive, a fixed number of
negatives drawn from the spaces of that positive's own logged request
(:mod:`agents.backbone.spaces`):

- ``ss-a``: 25 negatives from space A (exposed, unclicked). Every space is sampled uniformly
  *with* replacement (A holds at most ``S - 1`` items, B ``K_r - S``).
  The same method as ``bc`` (§2), up to hyperparameters: BC uses every exposure
  once, SS-A resamples the unclicked exposures per positive;
- ``ss-ab``: 5 from A and 20 from B (recalled, unexposed). The paper gives no
  ratio; 5:20 is the spec's DEFAULT;
- ``ss-abc-random``: 25 uniformly from the whole live catalogue, spaces ignored
  (= YouTube-DNN with random negatives, §6);
- ``ss-abc-fixed``: A:B:C = 1:4:20 (C = live items never recalled for that request).

The loss is the GMM part of UMA²'s Eq. 2 with unit weights
(:func:`gmm_loss`): ``loss_+ + Σ_s λ_s · mean_{s} BCE(σ(s_ui), 0)``, one mean
per space. Budgets match across strategies: 25 negatives per positive.

The trainer (sampler, epochs, streams) is :class:`~agents.backbone.gmm.GMMCore`: all
sampling-strategy agents and UMA² (``agents/uma2.py``) draw their initialisation and
minibatch/negative streams from the same key, so on one seed they differ only in their negatives
(common random numbers), and UMA² with unit propensities is bit-for-bit SS-ABC(fixed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from agents.backbone.gmm import GMM_TRAIN, Batch, GMMCore, GMMServing, NegativesConfig
from agents.backbone.softmax import sampled_softmax_loss
from agents.backbone.training import TrainConfig, check_ranges
from agents.backbone.two_tower import TowerConfig
from agents.bc import BC_TOWER
from agents.registry import register, register_variant
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.types import Catalogue


@dataclass(frozen=True)
class SSConfig:
    """Sampling-strategy GMM hyperparameters: label, L2, towers, optimiser and the negative spaces
    (``None`` in ``train`` / ``tower``: take it from the scenario's ``training`` section)."""

    label: Literal["clicked", "finished"] = "clicked"
    """Positive label: ``clicked`` or ``finished``."""
    l2: float = 1e-5
    """L2 weight on the embedding rows of each batch's users and positives."""
    tower: TowerConfig = BC_TOWER
    """BC's towers (override keys ``hidden``, ``gamma``, ...)."""
    train: TrainConfig = GMM_TRAIN
    """Optimiser and epochs (override keys ``lr``, ``epochs``, ``batch_size`` (64), ...)."""
    negatives: NegativesConfig = NegativesConfig()
    """The negatives (override keys ``spaces``, ``ratio``, ``space_weights``, ``loss``, ``c_tries``)."""

    def __post_init__(self) -> None:
        check_ranges(self)


def gmm_loss(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    neg_space: torch.Tensor,
    neg_valid: torch.Tensor,
    space_weights: torch.Tensor,
    neg_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The GMM part of UMA²'s Eq. 2.

    ``L = mean_{+} BCE(σ(s_ui), 1) + Σ_s λ_s · (1/|N_s|) Σ_{(u,j) ∈ N_s} w_uj · BCE(σ(s_uj), 0)``,
    ``BCE(p, t) = −[t·log p + (1−t)·log(1−p)]``, ``N_s`` the valid sampled negatives
    of space ``s`` in the batch and ``w`` their (detached, clipped, self-normalised)
    inverse-propensity weights; ``w = 1`` for the plain sampling strategies.

    Args:
        pos_logits: ``[P]`` logits of the positives.
        neg_logits: ``[P, N]`` logits of the sampled negatives.
        neg_space: ``[N] int64`` space index of each negative column.
        neg_valid: ``[P, N] bool`` False where nothing could be sampled (excluded).
        space_weights: ``[S]`` ``λ_s``.
        neg_weights: ``[P, N]`` ``w`` (None: 1).

    Returns:
        ``(loss, per_space)``: the scalar loss and the ``[S]`` per-space mean BCE (detached).
    """
    loss_pos = F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits))
    per = F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits), reduction="none")
    if neg_weights is not None:
        per = per * neg_weights
    per = per * neg_valid
    n_spaces = space_weights.shape[0]
    onehot = F.one_hot(neg_space, n_spaces).to(per.dtype)  # [N, S]
    sums = per.sum(0) @ onehot  # [S]
    counts = (neg_valid.to(per.dtype).sum(0) @ onehot).clamp_min(1.0)
    means = sums / counts
    return loss_pos + (space_weights.to(per.dtype) * means).sum(), means.detach()


@register("ss-abc-fixed", config=SSConfig, doc="SS-ABC(fixed): GMM with A:B:C = 1:4:20 negatives per click from the click's own request.")
class SamplingStrategy(GMMServing):
    """GMM two-tower trained with BCE on clicks vs negatives sampled from UMA²'s spaces.

    The strategies (``ss-*``, ``youtube-dnn*``) are this class with preset negatives (:class:`NegativesConfig`).

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default: SS-ABC(fixed)).
        name: the registered name (the init and minibatch streams are the GMM family's shared ones).
    """

    def __init__(self, ctx: AgentContext, config: SSConfig | None = None, name: str = "ss-abc-fixed") -> None:
        self.ctx, self.name = ctx, name
        self.config = config or SSConfig()
        self.core = GMMCore(ctx, self.config, name)

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Warm-started training over the window's positives, negatives resampled every epoch (see :meth:`GMMCore.fit`)."""
        return self.core.fit(view, self._batch_loss)

    def _batch_loss(self, batch: Batch, catalogue: Catalogue) -> torch.Tensor:
        """The loss of one minibatch (Eq. 2 with unit weights, or the sampled softmax)."""
        cfg, model = self.config, self.core.model
        f = model.user_embedding(batch.requests)
        items = torch.cat([batch.pos_items.unsqueeze(1), batch.neg_items], dim=1)  # [P, 1+N]
        logits = model.score_pairs(f, model.item_embedding(catalogue, items)) + model.bias_terms(batch.requests.user_id, items)
        l2 = model.id_l2(batch.requests.user_id, batch.pos_items, catalogue) if cfg.l2 > 0 else 0.0
        if cfg.negatives.loss == "softmax":
            mask = ~batch.neg_valid | (batch.neg_items == batch.pos_items.unsqueeze(1))
            return sampled_softmax_loss(logits[:, 0], logits[:, 1:], neg_mask=mask) + cfg.l2 * l2
        weights = torch.tensor(cfg.negatives.space_weights, device=logits.device)
        loss, means = gmm_loss(logits[:, 0], logits[:, 1:], batch.neg_space, batch.neg_valid, weights)
        self.core.space_loss = self.core.space_loss + means
        return loss + cfg.l2 * l2


register_variant(
    "ss-a", SamplingStrategy, SSConfig(negatives=NegativesConfig(spaces=("A",), ratio=(25,), space_weights=(1.0,))),
    "SS-A: GMM with 25 negatives per click from space A (exposed, unclicked); the same method as bc.",
)  # fmt: skip
register_variant(
    "ss-ab", SamplingStrategy, SSConfig(negatives=NegativesConfig(spaces=("A", "B"), ratio=(5, 20), space_weights=(1.0, 1.0))),
    "SS-AB: GMM with 5 space-A and 20 space-B (recalled, unexposed) negatives per click.",
)  # fmt: skip
register_variant(
    "ss-abc-random", SamplingStrategy, SSConfig(negatives=NegativesConfig(spaces=("random",), ratio=(25,), space_weights=(1.0,))),
    "SS-ABC(random): GMM with 25 negatives per click uniformly from the whole live catalogue.",
)  # fmt: skip
