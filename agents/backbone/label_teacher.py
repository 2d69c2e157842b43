"""The ranking teacher of the distilling methods (KD, TL, MUDA, DAMCAR), trained on the label the agent uses.

The platform ranker (``view.ranker``) is trained on clicks, while the agents of the DAMCAR study train on
``finished`` (the paper's label: "finish playing (y = 1) or not", seeds/000 §3). Distilling a click model
into a finish model mixes two labels, so by default each distilling agent keeps its *own* ranking model:
the platform's architecture (DeepFM or DCN from :mod:`simulator.cascade.ranker_models`, the same
observable features, Adam for the dense weights and SparseAdam for the id tables, warm-started fit by fit,
batch size and learning rate of the scenario's ``training``) trained on the agent's ``label`` over the same
window. ``teacher_source = "platform"`` restores the platform snapshot as the teacher.

Either way one frozen snapshot labels every target of a fit (§16.7): the own teacher is fitted first,
then only queried until the next fit.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from agents.backbone.exposure import ExposureCore
from agents.backbone.unexposed import TargetDomainConfig
from simulator.agent_api import AgentContext
from simulator.cascade.ranker_models import MODELS, ClickModel, FieldSizes, RankerFeatures
from simulator.log.view import FrozenScorer, TrainingView
from simulator.nn import check_finite, minibatches
from simulator.rng import stream_seed
from simulator.types import Catalogue, RequestBatch


class OwnTeacher:
    """A click model of the platform's kind fitted on the agent's label (its state saved with the agent's core).

    Args:
        ctx: sizes, device, seed and the scenario's ``training`` (learning rate, batch size).
        cfg: the agent's unexposed-set config (``teacher_kind``, ``teacher_dim``, ``teacher_epochs``).
        name: the owning agent's name (seeds the initialisation and the shuffling).
        core: the agent's core; the model and its two optimisers join its saved extras.
    """

    version = 0

    def __init__(self, ctx: AgentContext, cfg: TargetDomainConfig, name: str, core: ExposureCore) -> None:
        self.ctx, self.name, self.epochs = ctx, name, cfg.teacher_epochs
        sizes = FieldSizes(ctx.n_users, ctx.n_items, ctx.n_categories, ctx.n_creators, ctx.profile_dim, ctx.modality_dim, cfg.teacher_dim)
        with torch.random.fork_rng(devices=[]):  # seeded init that leaves the global RNG untouched
            torch.manual_seed(stream_seed(ctx.seed, f"{name}/teacher"))
            self.module: ClickModel = MODELS[cfg.teacher_kind](sizes).to(ctx.device)
        sparse_ids = {id(m.weight) for m in self.module.modules() if isinstance(m, nn.Embedding) and m.sparse}
        sparse = [p for p in self.module.parameters() if id(p) in sparse_ids]
        dense = [p for p in self.module.parameters() if id(p) not in sparse_ids]
        self.optimisers = [torch.optim.Adam(dense, lr=ctx.training.lr, foreach=True), torch.optim.SparseAdam(sparse, lr=ctx.training.lr)]
        core.extra["teacher"] = self.module
        core.extra_optimisers["teacher_dense"], core.extra_optimisers["teacher_sparse"] = self.optimisers
        self.catalogue: Catalogue | None = None

    def fit(self, view: TrainingView, label: Literal["clicked", "finished"]) -> float:
        """Warm-started BCE on the window's impressions with ``label`` as the positive; the last epoch's mean loss."""
        imp, dev = view.impressions, self.ctx.device
        requests, self.catalogue = view.requests.to(dev), view.catalogue.to(dev)
        rows, items, labels = imp.row.to(dev), imp.item_id.to(dev), getattr(imp, label).to(dev).float()
        req_round, popularity = view.request_round.to(dev), self.catalogue.popularity_features()
        gen = torch.Generator().manual_seed(stream_seed(self.ctx.seed, f"{self.name}/teacher", view.round))
        self.module.train()
        total = torch.zeros((), device=dev)
        for _ in range(self.epochs):
            total = torch.zeros((), device=dev)
            for idx in minibatches(len(imp), self.ctx.training.batch_size, gen, dev):
                r = rows[idx]
                feats = RankerFeatures.build(requests.select(r), items[idx].unsqueeze(1), self.catalogue, req_round[r], popularity)
                loss = F.binary_cross_entropy_with_logits(self.module(feats).squeeze(1), labels[idx])
                check_finite(loss, f"{self.name}/teacher")
                for opt in self.optimisers:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                for opt in self.optimisers:
                    opt.step()
                total += loss.detach() * idx.numel()
        self.module.eval()
        return float(total / max(len(imp), 1))

    @torch.no_grad()
    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` probabilities of the teacher's label for ``item_ids [B, K]`` (eval mode, no grad)."""
        assert self.catalogue is not None, "score after fit"
        dev = self.ctx.device
        feats = RankerFeatures.build(requests.to(dev), item_ids.to(dev), self.catalogue)
        return torch.sigmoid(self.module(feats)).float().to(item_ids.device)


def make_teacher(ctx: AgentContext, cfg: TargetDomainConfig, name: str, core: ExposureCore) -> OwnTeacher | None:
    """The agent's own teacher for ``cfg.teacher_source = "own"``, None for ``"platform"``."""
    return OwnTeacher(ctx, cfg, name, core) if cfg.teacher_source == "own" else None


def fitted_teacher(teacher: OwnTeacher | None, view: TrainingView, label: Literal["clicked", "finished"]) -> tuple[FrozenScorer, float]:
    """``(the snapshot that labels this fit's targets, the own teacher's BCE or NaN for the platform's)``."""
    if teacher is None:
        return view.ranker, float("nan")
    return teacher, teacher.fit(view, label)
