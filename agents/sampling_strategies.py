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

All sampling-strategy agents and UMA² (``agents/uma2.py``) draw their
initialisation and minibatch/negative streams from the same key
(:data:`STREAM`), so on one seed they start from identical weights and see
identical minibatch orders: the strategies differ only in their negatives
(common random numbers), and UMA² with unit propensities is bit-for-bit
SS-ABC(fixed) (the spec's sanity check 3).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

from agents.backbone.retriever import TwoTowerRetriever
from agents.backbone.softmax import sampled_softmax_loss
from agents.backbone.spaces import Draw, Spaces, build_spaces, sample_a, sample_b, sample_c, sample_random
from agents.backbone.training import TrainConfig, check_ranges, fit_generator, run_epochs
from agents.backbone.two_tower import TowerConfig
from agents.bc import BC_TOWER
from agents.registry import register, register_variant
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.types import Catalogue, RequestBatch

STREAM = "gmm"
"""Shared stream key of the GMM family: init ``"gmm/init"``, minibatches and negatives ``("gmm", round)``."""

Space = Literal["A", "B", "C", "random"]
SPACES: tuple[str, ...] = ("A", "B", "C", "random")

GMM_TRAIN = TrainConfig(batch_size=64)
"""64 positives per minibatch (UMA²: 512). Each brings 25 negatives, so 64 positives score ~1.7k pairs per
step, the order of ``bc``'s 1024 exposures per step; with 256 the GMM family took a quarter of bc's
optimiser steps per fit and lagged it already at round 0 (pilot, uma2-testbed)."""


@dataclass(frozen=True)
class NegativesConfig:
    """Which negatives each positive gets, and the loss over them."""

    spaces: tuple[Space, ...] = ("A", "B", "C")
    """Negative spaces: ``A`` exposed-unclicked, ``B`` recalled-unexposed, ``C`` never recalled
    (all of the positive's own request), ``random`` uniform over the live catalogue."""
    ratio: tuple[int, ...] = (1, 4, 20)
    """Negatives per positive from each space (UMA²: 1:4:20; 25 in all for every strategy)."""
    space_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    """``λ`` of each space in Eq. 2 (the paper does not report them; spec DEFAULT 1)."""
    loss: Literal["bce", "softmax"] = "bce"
    """``bce``: Eq. 2 (binary cross-entropy, one mean per space); ``softmax``: sampled softmax of
    each positive against its negatives (§9; uniform sampler, so the logQ term is constant and dropped)."""
    c_tries: int = 4
    """Rejection rounds of the space-C sampler before the exact (masked) fallback."""

    def __post_init__(self) -> None:
        if not self.spaces or len(set(self.spaces)) != len(self.spaces):
            raise ValueError(f"spaces: must be distinct, non-empty, got {self.spaces!r}")
        if len(self.ratio) != len(self.spaces) or any(n < 1 for n in self.ratio):
            raise ValueError(f"ratio: must give a count >= 1 for each of {len(self.spaces)} spaces, got {self.ratio!r}")
        if len(self.space_weights) != len(self.spaces) or any(w < 0 for w in self.space_weights):
            raise ValueError(f"space_weights: must give a weight >= 0 for each of {len(self.spaces)} spaces, got {self.space_weights!r}")
        if self.c_tries < 0:
            raise ValueError(f"c_tries: must be >= 0, got {self.c_tries!r}")


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


class GMMSettings(Protocol):
    """What the GMM trainer reads from a config (:class:`SSConfig` and UMA²'s config)."""

    @property
    def label(self) -> Literal["clicked", "finished"]: ...
    @property
    def l2(self) -> float: ...
    @property
    def tower(self) -> TowerConfig: ...
    @property
    def train(self) -> TrainConfig: ...
    @property
    def negatives(self) -> NegativesConfig: ...


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


def batch_size_without_singletons(n: int, batch_size: int) -> int:
    """The smallest size ``>= batch_size`` whose last minibatch of ``n`` examples is not a single one.

    BatchNorm (in the towers and on the dense inputs) cannot train on one example.
    """
    size = batch_size
    while n % size == 1 and size < n:
        size += 1
    return size


@dataclass(frozen=True)
class Batch:
    """One minibatch of positives with their sampled negatives."""

    requests: RequestBatch
    rows: torch.Tensor  # [P] request rows
    pos_items: torch.Tensor  # [P]
    pos_slot: torch.Tensor  # [P]
    neg_items: torch.Tensor  # [P, N]
    neg_valid: torch.Tensor  # [P, N]
    neg_slot: torch.Tensor  # [P, N] slot in the request's recalled row (-1: not recalled / random)
    neg_space: torch.Tensor  # [N] index into config.negatives.spaces


@register("ss-abc-fixed", config=SSConfig, doc="SS-ABC(fixed): GMM with A:B:C = 1:4:20 negatives per click from the click's own request.")
class SamplingStrategy:
    """GMM two-tower trained with BCE on clicks vs negatives sampled from UMA²'s spaces.

    The strategies (``ss-*``, ``youtube-dnn*``) are this class with preset negatives (:class:`NegativesConfig`).

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default: SS-ABC(fixed)).
        name: the registered name (the init and minibatch streams use :data:`STREAM`).
    """

    config: GMMSettings
    _space_loss: torch.Tensor  # [S] per-space mean BCE summed over the fit's steps (set by fit)

    def __init__(self, ctx: AgentContext, config: GMMSettings | None = None, name: str = "ss-abc-fixed") -> None:
        self.ctx, self.name = ctx, name
        self.config = config or SSConfig()
        self.retriever = TwoTowerRetriever(ctx, self.config.tower.resolved(ctx), STREAM)
        self.retriever.name = name
        self.fits = 0
        self._build_extra()
        self.optimiser = self.config.train.optimiser(self.parameters(), ctx)

    # --- hooks for subclasses (UMA²) ---------------------------------------------------------

    def _build_extra(self) -> None:
        """Build modules beyond the GMM (none here)."""

    def parameters(self) -> list[torch.nn.Parameter]:
        """Every trained parameter, GMM first."""
        return list(self.retriever.model.parameters())

    def _begin_fit(self, view: TrainingView, spaces: Spaces) -> None:
        """Per-fit setup (none here)."""

    def _batch_loss(self, batch: Batch, catalogue: Catalogue) -> torch.Tensor:
        """The loss of one minibatch (Eq. 2 with unit weights, or the sampled softmax)."""
        cfg, model = self.config, self.retriever.model
        f = model.user_embedding(batch.requests)
        items = torch.cat([batch.pos_items.unsqueeze(1), batch.neg_items], dim=1)  # [P, 1+N]
        logits = model.score_pairs(f, model.item_embedding(catalogue, items)) + model.bias_terms(batch.requests.user_id, items)
        l2 = model.id_l2(batch.requests.user_id, batch.pos_items, catalogue) if cfg.l2 > 0 else 0.0
        if cfg.negatives.loss == "softmax":
            mask = ~batch.neg_valid | (batch.neg_items == batch.pos_items.unsqueeze(1))
            return sampled_softmax_loss(logits[:, 0], logits[:, 1:], neg_mask=mask) + cfg.l2 * l2
        weights = torch.tensor(cfg.negatives.space_weights, device=logits.device)
        loss, means = gmm_loss(logits[:, 0], logits[:, 1:], batch.neg_space, batch.neg_valid, weights)
        self._space_loss = self._space_loss + means
        return loss + cfg.l2 * l2

    def _extra_diagnostics(self) -> dict[str, float]:
        return {}

    # --- sampling ----------------------------------------------------------------------------

    def sample(self, spaces: Spaces, requests: RequestBatch, idx: torch.Tensor, gen: torch.Generator) -> Batch:
        """The positives ``idx`` with ``ratio`` negatives each from every configured space."""
        cfg = self.config.negatives
        rows, items = spaces.pos_row[idx], spaces.pos_item[idx]
        draws: list[Draw] = []
        space_ids: list[int] = []
        for s, (space, n) in enumerate(zip(cfg.spaces, cfg.ratio, strict=True)):
            if space == "A":
                d = sample_a(spaces, rows, n, gen)
            elif space == "B":
                d = sample_b(spaces, rows, n, gen)
            elif space == "C":
                d = sample_c(spaces, rows, n, gen, cfg.c_tries)
            else:
                d = sample_random(spaces, items, n, gen)
            draws.append(d)
            space_ids += [s] * n
        return Batch(
            requests=requests.select(rows), rows=rows, pos_items=items, pos_slot=spaces.pos_slot[idx],
            neg_items=torch.cat([d.items for d in draws], 1), neg_valid=torch.cat([d.valid for d in draws], 1),
            neg_slot=torch.cat([d.slot for d in draws], 1), neg_space=torch.tensor(space_ids, device=rows.device),
        )  # fmt: skip

    # --- the agent API -----------------------------------------------------------------------

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Warm-started training over the window's positives, negatives resampled every epoch.

        Returns:
            ``loss`` (last epoch), ``loss_first_epoch``, ``examples`` (positives),
            ``loss_<space>`` (mean BCE of each space's negatives over the fit's minibatches; ``bce`` only),
            ``valid_<space>`` (share of negative draws whose space was non-empty), and
            the subclass's diagnostics.
        """
        device, neg = self.ctx.device, self.config.negatives
        spaces = build_spaces(view, self.config.label, device)
        self.fits += 1
        n = int(spaces.pos_row.shape[0])
        self._space_loss = torch.zeros(len(neg.spaces), device=device)
        self._begin_fit(view, spaces)
        if n < 2:  # BatchNorm cannot train on a single example
            return {"loss": math.nan, "loss_first_epoch": math.nan, "examples": float(n), **self._extra_diagnostics()}
        valid_sum = torch.zeros(len(neg.spaces), device=device)
        steps = {"n": 0}
        epochs = self.config.train.epochs_for(self.ctx)
        size = batch_size_without_singletons(n, self.config.train.batch_size_for(self.ctx))
        losses = self._train(view, spaces, n, epochs, size, valid_sum, steps)
        out = {"loss": losses[-1] if losses else math.nan, "loss_first_epoch": losses[0] if losses else math.nan, "examples": float(n)}
        for s, space in enumerate(neg.spaces):
            if neg.loss == "bce" and epochs:
                out[f"loss_{space.lower()}"] = float(self._space_loss[s]) / (-(-n // size) * epochs)
            out[f"valid_{space.lower()}"] = float(valid_sum[s]) / max(steps["n"], 1)
        return {**out, **self._extra_diagnostics()}

    def _train(self, view: TrainingView, spaces: Spaces, n: int, epochs: int, size: int, valid_sum: torch.Tensor, steps: dict[str, int]) -> list[float]:
        """The epochs over the ``n`` positives; ``valid_sum`` / ``steps`` collect the valid-draw shares."""
        device, n_spaces = self.ctx.device, len(self.config.negatives.spaces)
        requests, catalogue = view.requests.to(device), view.catalogue.to(device)
        gen = fit_generator(self.ctx, STREAM, view.round)

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            batch = self.sample(spaces, requests, idx, gen)
            onehot = F.one_hot(batch.neg_space, n_spaces).float()
            valid_sum.add_((batch.neg_valid.float().sum(0) @ onehot) / (onehot.sum(0) * len(idx)))
            steps["n"] += 1
            return self._batch_loss(batch, catalogue)

        self.retriever.model.train()
        losses = run_epochs(n, epochs, size, gen, device, self.optimiser, loss_fn, self.name)
        self.retriever.invalidate()
        return losses

    def index(self, catalogue: Catalogue) -> None:
        """Embed all live items once (normalised for cosine)."""
        self.retriever.index(catalogue.to(self.ctx.device))

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` by logit: ``(item_ids [B, k] int64, logits [B, k] float32)``."""
        return self.retriever.retrieve(requests, k)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` logits ``s_ui``."""
        return self.retriever.score(requests, item_ids)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_extra_state`."""

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser state and the fit counter (deep copies)."""
        return copy.deepcopy(
            {"model": self.retriever.state_dict(), "optimiser": self.optimiser.state_dict(), "fits": self.fits, **self._extra_state()}
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call :meth:`index` before serving."""
        self.retriever.load_state_dict(state["model"])
        self._load_extra_state(state)
        self.optimiser.load_state_dict(copy.deepcopy(state["optimiser"]))
        self.fits = int(state["fits"])


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
