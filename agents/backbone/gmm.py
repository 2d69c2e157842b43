"""The GMM trainer UMA²'s sampling strategies, YouTube-DNN and UMA² compose (algorithms.md §6-§7).

A General Matching Model (a YouTube-DNN-style two tower,
:class:`~agents.backbone.two_tower.TwoTower`) trained on the clicked exposures (positives) with,
per positive, a fixed number of negatives drawn from the spaces of that positive's own logged
request (:mod:`agents.backbone.spaces`). :class:`GMMCore` owns the retriever, the optimiser, the
sampler and the seeded epoch loop; the method gives the loss of one minibatch.

Every GMM agent draws its initialisation and minibatch/negative streams from the same key
(:data:`STREAM`), so on one seed they start from identical weights and see identical minibatch
orders: the strategies differ only in their negatives (common random numbers), and UMA² with
unit propensities is bit-for-bit SS-ABC(fixed) (the spec's sanity check 3).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

from agents.backbone.retriever import TwoTowerRetriever
from agents.backbone.serving import CoreServing
from agents.backbone.spaces import Draw, Spaces, build_spaces, sample_a, sample_b, sample_c, sample_random
from agents.backbone.training import TrainConfig, fit_generator, run_epochs
from agents.backbone.two_tower import TowerConfig, TwoTower
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


BatchLoss = Callable[[Batch, Catalogue], torch.Tensor]
"""``(minibatch, catalogue) -> scalar loss`` of a GMM method."""


class GMMCore:
    """The GMM two tower with its optimiser, fit counter, negative sampler and epoch loop.

    Args:
        ctx: sizes, device and seed.
        config: the method's config (towers, trainer, negatives, label).
        name: the owning agent's name (errors); the random streams use :data:`STREAM`.

    Attributes:
        space_loss: ``[S]`` per-space mean BCE summed over the fit's steps (the method's loss adds to it).
    """

    def __init__(self, ctx: AgentContext, config: GMMSettings, name: str) -> None:
        self.ctx, self.config, self.name = ctx, config, name
        self.retriever = TwoTowerRetriever(ctx, config.tower.resolved(ctx), STREAM)
        self.retriever.name = name
        self.fits = 0
        self.space_loss = torch.zeros(len(config.negatives.spaces))
        self.optimiser = config.train.optimiser(self.retriever.model.parameters(), ctx)

    @property
    def model(self) -> TwoTower:
        """The GMM two tower (a method may replace ``retriever.model``, e.g. UMA²'s DAT tower)."""
        return self.retriever.model

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

    def fit(self, view: TrainingView, batch_loss: BatchLoss, begin: Callable[[Spaces], None] | None = None) -> dict[str, float]:
        """Warm-started training over the window's positives, negatives resampled every epoch.

        Args:
            view: the training window.
            batch_loss: the method's loss of one minibatch; it adds its per-space means to :attr:`space_loss`.
            begin: called with the window's spaces before the first step (per-fit setup).

        Returns:
            ``loss`` (last epoch), ``loss_first_epoch``, ``examples`` (positives),
            ``loss_<space>`` (mean BCE of each space's negatives over the fit's minibatches; ``bce`` only),
            ``valid_<space>`` (share of negative draws whose space was non-empty).
        """
        device, neg = self.ctx.device, self.config.negatives
        spaces = build_spaces(view, self.config.label, device)
        self.fits += 1
        n = int(spaces.pos_row.shape[0])
        self.space_loss = torch.zeros(len(neg.spaces), device=device)
        if begin is not None:
            begin(spaces)
        if n < 2:  # BatchNorm cannot train on a single example
            return {"loss": math.nan, "loss_first_epoch": math.nan, "examples": float(n)}
        valid_sum = torch.zeros(len(neg.spaces), device=device)
        steps = {"n": 0}
        epochs = self.config.train.epochs_for(self.ctx)
        size = batch_size_without_singletons(n, self.config.train.batch_size_for(self.ctx))
        losses = self._train(view, spaces, batch_loss, (n, epochs, size), valid_sum, steps)
        out = {"loss": losses[-1] if losses else math.nan, "loss_first_epoch": losses[0] if losses else math.nan, "examples": float(n)}
        for s, space in enumerate(neg.spaces):
            if neg.loss == "bce" and epochs:
                out[f"loss_{space.lower()}"] = float(self.space_loss[s]) / (-(-n // size) * epochs)
            out[f"valid_{space.lower()}"] = float(valid_sum[s]) / max(steps["n"], 1)
        return out

    def _train(
        self,
        view: TrainingView,
        spaces: Spaces,
        batch_loss: BatchLoss,
        sizes: tuple[int, int, int],
        valid_sum: torch.Tensor,
        steps: dict[str, int],
    ) -> list[float]:
        """The epochs over the positives (``sizes``: count, epochs, minibatch size).

        ``valid_sum`` / ``steps`` collect the valid-draw shares.
        """
        n, epochs, size = sizes
        device, n_spaces = self.ctx.device, len(self.config.negatives.spaces)
        requests, catalogue = view.requests.to(device), view.catalogue.to(device)
        gen = fit_generator(self.ctx, STREAM, view.round)

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            batch = self.sample(spaces, requests, idx, gen)
            onehot = F.one_hot(batch.neg_space, n_spaces).float()
            valid_sum.add_((batch.neg_valid.float().sum(0) @ onehot) / (onehot.sum(0) * len(idx)))
            steps["n"] += 1
            return batch_loss(batch, catalogue)

        self.retriever.model.train()
        losses = run_epochs(n, epochs, size, gen, device, self.optimiser, loss_fn, self.name)
        self.retriever.invalidate()
        return losses

    # --- serving and state (the agent protocol delegates here) ---------------------------------

    def index(self, catalogue: Catalogue) -> None:
        """Embed all live items once (normalised for cosine)."""
        self.retriever.index(catalogue.to(self.ctx.device))

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` by logit: ``(item_ids [B, k] int64, logits [B, k] float32)``."""
        return self.retriever.retrieve(requests, k)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` logits ``s_ui``."""
        return self.retriever.score(requests, item_ids)

    def state_dict(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Weights, optimiser state, the fit counter and the method's ``extra`` entries (deep copies)."""
        return copy.deepcopy({"model": self.retriever.state_dict(), "optimiser": self.optimiser.state_dict(), "fits": self.fits, **extra})

    def load_state_dict(self, state: dict[str, Any], load_extra: Callable[[dict[str, Any]], None]) -> None:
        """Restore :meth:`state_dict` (``load_extra`` reads the method's entries); call :meth:`index` before serving."""
        self.retriever.load_state_dict(state["model"])
        load_extra(state)
        self.optimiser.load_state_dict(copy.deepcopy(state["optimiser"]))
        self.fits = int(state["fits"])


class GMMServing(CoreServing):
    """The serving half of an agent that composes a :class:`GMMCore` as ``self.core`` (written once).

    The agent adds its own :meth:`extra_state` / :meth:`load_extra_state` (UMA²'s NSDN heads).
    """

    core: GMMCore

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser state, the fit counter and :meth:`extra_state` (deep copies)."""
        return self.core.state_dict(self.extra_state())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call :meth:`index` before serving."""
        self.core.load_state_dict(state, self.load_extra_state)
