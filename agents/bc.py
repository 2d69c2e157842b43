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

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from agents.backbone.retriever import TwoTowerRetriever
from agents.backbone.training import check_ranges, exposure_data, fit_generator, make_optimiser, run_epochs
from agents.backbone.two_tower import TowerConfig
from agents.registry import register
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.types import Catalogue, RequestBatch


@dataclass(frozen=True)
class Config:
    """BC hyperparameters; ``None`` means "take it from the scenario's ``training`` section"."""

    label: Literal["clicked", "finished"] = "clicked"
    """Positive label: ``clicked`` or ``finished`` (clicked-unfinished then counts as negative)."""
    l2: float = 1e-5
    """L2 weight on the embedding rows used in each batch (DAMCAR code: 1e-5)."""
    epochs: int | None = None
    """Epochs per fit (None: ``training.epochs``; DAMCAR code: 3)."""
    batch_size: int | None = None
    """Minibatch size (None: ``training.batch_size``; DAMCAR: 512)."""
    lr: float | None = None
    """Learning rate (None: ``training.lr``; DAMCAR uses Adagrad at 1e-2)."""
    weight_decay: float = 0.0
    """Weight decay on every parameter (decoupled, AdamW, with ``adam``)."""
    optimizer: Literal["adam", "adagrad"] = "adam"
    """``adam`` or ``adagrad`` (DAMCAR's choice)."""
    embedding_dim: int | None = None
    """Tower output size (None: ``training.embedding_dim``; DAMCAR: 128)."""
    id_dim: int = 32
    """Id / categorical embedding size."""
    context_dim: int = 4
    """Domain and entry embedding size."""
    hidden: tuple[int, ...] = (128, 64)
    """Hidden sizes of each tower (DAMCAR: 300, 300)."""
    similarity: Literal["cosine", "dot"] = "cosine"
    """Logit: ``gamma * cos(f, g)`` or ``<f, g> / tau``."""
    gamma: float = 10.0
    """Cosine scale (FLAG §0.3: 1 cannot fit BCE; DAMCAR code uses 1)."""
    tau: float = 1.0
    """Dot-product temperature."""
    batch_norm: bool = True
    """BatchNorm in the towers (DAMCAR's DSSM uses it). Without it the towers' constant parts
    (MLP biases, shared domain/entry embeddings) dominate the small per-user variation of the
    inputs: after pretraining every user query points the same way (mean pairwise cosine ~0.98)
    and BC recalls the same ~100 items for everyone, below the ``popular`` agent."""
    input_norm: bool = True
    """Standardise the dense tower inputs (profile, modality, popularity counts)."""
    init_std: float = 0.1
    """Initial embedding standard deviation."""
    block_users: int = 1024
    """Users per block when scanning the catalogue."""

    def __post_init__(self) -> None:
        check_ranges(self)


def bc_loss(
    logits: torch.Tensor, labels: torch.Tensor, l2_term: torch.Tensor | None = None, l2: float = 0.0
) -> torch.Tensor:
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


@register("bc")
class BC:
    """Biased baseline: two-tower trained with BCE on exposed data only (clicked vs exposed-unclicked).

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default :class:`Config`).
    """

    name = "bc"
    Config = Config

    def __init__(self, ctx: AgentContext, config: Config | None = None) -> None:
        self.ctx = ctx
        self.config = config or Config()
        self.retriever = TwoTowerRetriever(ctx, TowerConfig.from_config(self.config, ctx), self.name)
        lr = self.config.lr if self.config.lr is not None else ctx.training.lr
        self.optimiser = make_optimiser(self.retriever.model.parameters(), self.config.optimizer, lr, self.config.weight_decay)
        self.fits = 0

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Warm-started BCE training on the window's exposures; invalidates the index.

        Returns:
            ``loss`` (last epoch), ``loss_first_epoch``, ``examples``, ``positive_rate``.
        """
        cfg, tr, device = self.config, self.ctx.training, self.ctx.device
        data = exposure_data(view, cfg.label, device)
        catalogue = view.catalogue.to(device)
        model = self.retriever.model
        self.fits += 1
        if len(data) == 0:
            return {"loss": math.nan, "loss_first_epoch": math.nan, "examples": 0.0, "positive_rate": math.nan}

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            requests, items, labels = data.batch(idx)
            logits = model.score_pairs(model.user_embedding(requests), model.item_embedding(catalogue, items))
            logits = logits + model.bias_terms(requests.user_id, items)
            return bc_loss(logits, labels, model.id_l2(requests.user_id, items, catalogue), cfg.l2)

        model.train()
        losses = run_epochs(
            len(data), cfg.epochs if cfg.epochs is not None else tr.epochs,
            cfg.batch_size or tr.batch_size, fit_generator(self.ctx, self.name, view.round),
            device, self.optimiser, loss_fn, self.name,
        )  # fmt: skip
        self.retriever.invalidate()
        return {
            "loss": losses[-1] if losses else math.nan,
            "loss_first_epoch": losses[0] if losses else math.nan,
            "examples": float(len(data)),
            "positive_rate": float(data.labels.mean()),
        }

    def index(self, catalogue: Catalogue) -> None:
        """Embed all live items once (normalised for cosine)."""
        self.retriever.index(catalogue.to(self.ctx.device))

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` by logit: ``(item_ids [B, k] int64, logits [B, k] float32)``."""
        return self.retriever.retrieve(requests, k)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` logits ``s_ui``; ``sigmoid`` of them is BC's click probability."""
        return self.retriever.score(requests, item_ids)

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser state and the fit counter (deep copies)."""
        return copy.deepcopy(
            {"model": self.retriever.state_dict(), "optimiser": self.optimiser.state_dict(), "fits": self.fits}
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call :meth:`index` before serving."""
        self.retriever.load_state_dict(state["model"])
        self.optimiser.load_state_dict(copy.deepcopy(state["optimiser"]))
        self.fits = int(state["fits"])
