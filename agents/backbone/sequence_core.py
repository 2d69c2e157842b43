"""What the sequence methods (sampled softmax, CLRec, IPW) compose: the retriever, the optimiser, the state.

- :class:`SequenceRetriever`: a :class:`~agents.backbone.sequence.SequenceTwoTower` plus the item index
  (index / retrieve / score / weights), like :class:`~agents.backbone.retriever.TwoTowerRetriever`.
- :class:`SequenceCore`: the retriever with its optimiser and fit counter; the methods keep their
  losses and ``fit`` and delegate serving and state here.
- :func:`click_examples` (the window's positives with their request context) and
  :func:`click_impression_gap` (a diagnostic of CLRec's ``q ≈ p_data`` assumption).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from agents.backbone.index import IndexedServing, check_k
from agents.backbone.sequence import SequenceTowerConfig, SequenceTwoTower
from agents.backbone.serving import CoreServing
from agents.backbone.training import Exposures, TrainConfig, exposure_data
from agents.backbone.two_tower import evaluating
from simulator.agent_api import AgentContext
from simulator.rng import stream_seed
from simulator.types import Catalogue, RequestBatch


class SequenceRetriever(IndexedServing):
    """A :class:`SequenceTwoTower` plus the item index built from it (agents compose it).

    Args:
        ctx: the run's context.
        cfg: encoder configuration (``embedding_dim`` set).
        name: the owning agent's name; seeds the initialisation stream ``"<name>/init"``.
    """

    def __init__(self, ctx: AgentContext, cfg: SequenceTowerConfig, name: str) -> None:
        self.name = name
        self.model = SequenceTwoTower(ctx, cfg, seed=stream_seed(ctx.seed, f"{name}/init"))
        super().__init__()

    def index(self, catalogue: Catalogue) -> None:
        """Embed every live item once; the catalogue is kept to encode request histories."""
        self._catalogue = catalogue
        self._index = self.model.embed_catalogue(catalogue)

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` live items by ``cos / ρ``: ``(item_ids [B, k], logits [B, k] float32)``."""
        index, catalogue = self._indexed()
        check_k(k, len(index), self.name)
        return index.topk(self.model.user_queries(requests, catalogue), k)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K] float32`` ``cos / ρ`` of ``item_ids [B, K]`` (indexed vectors reused, others embedded now)."""
        index, catalogue = self._indexed()
        queries = self.model.user_queries(requests, catalogue)
        emb, found = index.lookup(item_ids)
        if not bool(found.all()):
            with evaluating(self.model):
                missing = self.model.item_embedding(catalogue, item_ids[~found])
            emb = emb.index_put((~found).nonzero(as_tuple=True), missing)
        return (index.scale * torch.bmm(emb, queries.unsqueeze(-1)).squeeze(-1)).float()

    def state_dict(self) -> dict[str, Any]:
        """The model weights (the index is rebuilt by :meth:`index`)."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load weights and drop the index."""
        self.model.load_state_dict(state)
        self.invalidate()


class SequenceCore:
    """A :class:`SequenceRetriever` with its optimiser and fit counter.

    Args:
        ctx: sizes, device and seed.
        encoder: the encoder's shape (``embedding_dim`` None: the scenario's).
        train: optimiser and epoch settings (Adam with ``adam_beta2``, AdamW with weight decay, or Adagrad).
        name: the owning agent's name (seeds ``"<name>/init"``, names errors).
    """

    def __init__(self, ctx: AgentContext, encoder: SequenceTowerConfig, train: TrainConfig, name: str) -> None:
        self.ctx, self.train_cfg = ctx, train
        self.retriever = SequenceRetriever(ctx, encoder.resolved(ctx), name)
        self.optimiser = train.optimiser(self.retriever.model.parameters(), ctx)
        self.fits = 0

    @property
    def model(self) -> SequenceTwoTower:
        """The trainable encoder."""
        return self.retriever.model

    def index(self, catalogue: Catalogue) -> None:
        """Embed all live items once (normalised ``g``)."""
        self.retriever.index(catalogue.to(self.ctx.device))

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` by ``cos / ρ``: ``(item_ids [B, k] int64, logits [B, k] float32)``."""
        return self.retriever.retrieve(requests.to(self.ctx.device), k)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` logits ``cos(f, g) / ρ`` (a softmax over items gives ``p_θ(y | x)``)."""
        return self.retriever.score(requests.to(self.ctx.device), item_ids.to(self.ctx.device))

    def state_dict(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Weights, optimiser state, fit counter and the method's ``extra`` state (deep copies)."""
        return copy.deepcopy(
            {"model": self.retriever.state_dict(), "optimiser": self.optimiser.state_dict(), "fits": self.fits, "extra": extra}
        )

    def load_state_dict(self, state: dict[str, Any]) -> dict[str, Any]:
        """Restore :meth:`state_dict`; returns (a copy of) the method's extra state. Call ``index`` before serving."""
        self.retriever.load_state_dict(state["model"])
        self.optimiser.load_state_dict(copy.deepcopy(state["optimiser"]))
        self.fits = int(state["fits"])
        return copy.deepcopy(state.get("extra", {}))


def click_examples(view: Any, label: str, device: torch.device) -> Exposures:
    """The window's positives (``label`` = ``clicked`` or ``finished``) as :class:`Exposures` rows.

    Each row's request carries the history *before* that click (``x_{u,t}``, CLRec §2.1).
    """
    data = exposure_data(view, label, device)  # type: ignore[arg-type]
    keep = data.labels > 0
    return Exposures(data.requests, data.row[keep], data.item_ids[keep], data.labels[keep])


def click_impression_gap(view: Any) -> float:
    """Total variation between the window's click and impression item distributions (0 = CLRec's
    ``q(y) ≈ p_data(y)`` holds exactly; §10(f) asks to log it)."""
    imp = view.impressions
    if len(imp) == 0 or not bool(imp.clicked.any()):
        return math.nan
    m = view.n_items
    shown = torch.bincount(imp.item_id, minlength=m).double()
    clicked = torch.bincount(imp.item_id[imp.clicked.bool()], minlength=m).double()
    return float(0.5 * (shown / shown.sum() - clicked / clicked.sum()).abs().sum())


SEQ_TRAIN = TrainConfig(batch_size=256, adam_beta2=0.98)
"""The sequence methods' trainer: 256 positives per step (CLRec), Adam with beta2 0.98 (the SASRec-based
public CLRec); epochs and lr from the scenario (the paper: one epoch)."""


class SequenceServing(CoreServing):
    """The serving half of an agent that composes a :class:`SequenceCore` as ``self.core`` (written once).

    The agent adds its own :meth:`extra_state` / :meth:`load_extra_state` (queues, frequency estimates, ...).
    """

    core: SequenceCore

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser state, fit counter and :meth:`extra_state` (deep copies)."""
        return self.core.state_dict(self.extra_state())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call :meth:`index` before serving."""
        self.load_extra_state(self.core.load_state_dict(state))
