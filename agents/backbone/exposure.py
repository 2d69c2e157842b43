"""The two-tower pair trainer BC, KD, TL, AR, MUDA and DAMCAR compose (algorithms.md §2-§5).

:class:`ExposureCore` owns the :class:`~agents.backbone.retriever.TwoTowerRetriever`, its optimiser,
the fit counter and any extra modules / optimisers a method adds, and offers
:meth:`~ExposureCore.train_pairs`: a seeded, warm-started epoch loop over any pair set with (soft)
targets, the loss given by the method. The methods keep their losses and their ``fit``; they
delegate serving and state to the core.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from agents.backbone.retriever import TwoTowerRetriever
from agents.backbone.serving import CoreServing
from agents.backbone.training import Exposures, TrainConfig, run_epochs
from agents.backbone.two_tower import TowerConfig, TwoTower
from simulator.agent_api import AgentContext
from simulator.types import Catalogue, RequestBatch

PairLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(logits [b], targets [b], l2 term, idx [b]) -> scalar loss`` of one minibatch."""


class ExposureCore:
    """A two-tower retriever with its optimiser, fit counter, extra modules and a pair trainer.

    Args:
        ctx: sizes, device and seed.
        tower: tower shape and scoring.
        train: optimiser and epoch settings.
        name: the owning agent's name (seeds ``"<name>/init"``, names errors).
        save_extra: include ``extra`` / ``extra_optimisers`` in :meth:`state_dict` (every method but BC).

    Attributes:
        extra: extra ``nn.Module``s of the method (saved and restored with the agent).
        extra_optimisers: their optimisers (saved and restored).
    """

    def __init__(self, ctx: AgentContext, tower: TowerConfig, train: TrainConfig, name: str, save_extra: bool = True) -> None:
        self.ctx, self.train_cfg, self.name, self.save_extra = ctx, train, name, save_extra
        self.retriever = TwoTowerRetriever(ctx, tower.resolved(ctx), name)
        self.optimiser = train.optimiser(self.retriever.model.parameters(), ctx)
        self.fits = 0
        self.extra: dict[str, nn.Module] = {}
        self.extra_optimisers: dict[str, torch.optim.Optimizer] = {}

    @property
    def model(self) -> TwoTower:
        """The trainable two-tower model."""
        return self.retriever.model

    def epochs(self) -> int:
        """Epochs per training stage (the config's, else ``training.epochs``)."""
        return self.train_cfg.epochs_for(self.ctx)

    def batch_size(self) -> int:
        """Minibatch size (the config's, else ``training.batch_size``)."""
        return self.train_cfg.batch_size_for(self.ctx)

    def logits(self, catalogue: Catalogue, data: Exposures, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits [b], targets [b], l2 term)`` of the retriever on minibatch ``idx`` of ``data``."""
        model = self.model
        requests, items, targets = data.batch(idx)
        logits = model.score_pairs(model.user_embedding(requests), model.item_embedding(catalogue, items))
        logits = logits + model.bias_terms(requests.user_id, items)
        return logits, targets, model.id_l2(requests.user_id, items, catalogue)

    def train_pairs(
        self, data: Exposures, gen: torch.Generator, loss: PairLoss, catalogue: Catalogue,
        optimiser: torch.optim.Optimizer | None = None, epochs: int | None = None, frozen: Sequence[nn.Module] = (),
    ) -> list[float]:  # fmt: skip
        """Warm-started minibatch training of the retriever on ``data``; invalidates the index.

        Args:
            data: pairs with (soft) targets in ``labels``.
            gen: the fit's generator.
            loss: the method's loss of one minibatch.
            catalogue: the view's catalogue on the agent's device.
            optimiser: default the core's.
            epochs: default :meth:`epochs`.
            frozen: submodules kept in eval mode (no BatchNorm statistics update; TL's user side).

        Returns:
            The mean loss of each epoch.
        """
        self.model.train()
        for m in frozen:
            m.eval()

        def step_loss(idx: torch.Tensor) -> torch.Tensor:
            logits, targets, l2_term = self.logits(catalogue, data, idx)
            return loss(logits, targets, l2_term, idx)

        out = run_epochs(
            len(data), self.epochs() if epochs is None else epochs, self.batch_size(), gen, self.ctx.device,
            optimiser or self.optimiser, step_loss, self.name,
        )  # fmt: skip
        self.retriever.invalidate()
        return out

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

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser state, the fit counter and (``save_extra``) the extra modules and optimisers (deep copies)."""
        state: dict[str, Any] = {"model": self.retriever.state_dict(), "optimiser": self.optimiser.state_dict(), "fits": self.fits}
        if self.save_extra:
            state["extra"] = {k: m.state_dict() for k, m in self.extra.items()}
            state["extra_optimisers"] = {k: o.state_dict() for k, o in self.extra_optimisers.items()}
        return copy.deepcopy(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call :meth:`index` before serving."""
        self.retriever.load_state_dict(state["model"])
        self.optimiser.load_state_dict(copy.deepcopy(state["optimiser"]))
        self.fits = int(state["fits"])
        for k, m in self.extra.items():
            m.load_state_dict(state["extra"][k])
        for k, o in self.extra_optimisers.items():
            o.load_state_dict(copy.deepcopy(state["extra_optimisers"][k]))


class ExposureServing(CoreServing):
    """The serving half of an agent that composes an :class:`ExposureCore` as ``self.core`` (written once)."""

    core: ExposureCore

    def state_dict(self) -> dict[str, Any]:
        """The core's state: weights, optimisers, fit counter, extra modules (deep copies)."""
        return self.core.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call :meth:`index` before serving."""
        self.core.load_state_dict(state)
