"""CLRec: queue-based contrastive learning for exposure-bias reduction (CLRec §3.1, Fig. 1; algorithms.md §10).

The contrastive loss (CLRec Eq. 3), for a click ``(x, y)`` and a negative pool ``N``:

``ℓ = −log [ exp φ(x,y) / ( exp φ(x,y) + Σ_{y'∈N} exp φ(x,y') ) ]``, ``φ = cos(f(x), g(y)) / ρ``,

has no logQ term: with negatives drawn from the exposure propensity ``q`` its optimum is the IPW
solution ``r(y|x) ∝ p_data(y|x) / q(y|x)`` (Theorem 1). CLRec takes ``q(y|x) ≈ q(y) ≈ p_data(y)``
and realises the sampler with a FIFO of past positives, so no sampling and no propensity model
are needed. Three variants (Fig. 1), one class:

- ``clrec`` (a, in-batch): ``N`` = the other positives of the batch (the queue with ``|Q| = B``).
- ``clrec-queue`` (b): a FIFO of *item ids* of past positives, **re-encoded with the current g
  every step** (gradient flows into the negatives). Never deduplicated; initialised with
  uniformly random live ids (official code).
- ``clrec-cached`` (c): the FIFO stores ``stopgrad(g(y))`` computed at enqueue time (no gradient
  into cached negatives; the current batch's positives stay live, with gradient).

Order of enqueue (``enqueue_first``): **the paper** (§3.1: "we first enqueue the positive examples
... then use the examples stored in the queue to serve as {y} ∪ {y_i}") enqueues the batch, then
scores each row against the whole queue, its own positive being its target column; with
``|Q| = B`` this is exactly in-batch (a). algorithms.md §10(c) instead defaults to the official
code's order (score ``[pos | old queue]``, then enqueue); that is ``enqueue_first = False``. The
paper wins here (the spec-vs-paper rule), so the default is True.

Accidental hits (other copies of the row's positive among the negatives): masked by default
(``mask_accidental_hits``, §10(c) **DEFAULT**; the official code does not mask).

Loop per round: the window's clicks in seeded minibatches, ``epochs`` passes (paper: one),
warm-started; the queue persists across rounds and is part of ``state_dict``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from agents.backbone.queue import EmbeddingQueue, IdQueue
from agents.backbone.sequence import SequenceTowerConfig
from agents.backbone.sequence_core import SEQ_TRAIN, SequenceCore, SequenceServing, click_examples, click_impression_gap
from agents.backbone.softmax import sampled_softmax_loss
from agents.backbone.training import Exposures, TrainConfig, fit_generator, run_epochs
from agents.registry import register, register_variant
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.rng import stream_seed


@dataclass(frozen=True)
class CLRecConfig:
    """CLRec hyperparameters (``None``: take it from the scenario's ``training`` section)."""

    label: Literal["clicked", "finished"] = "clicked"
    """Which impressions are the positives."""
    encoder: SequenceTowerConfig = SequenceTowerConfig()
    """The sequence encoder (override keys ``heads``, ``rho``, ``embedding_dim``, ``bucket_edges``, ...)."""
    train: TrainConfig = SEQ_TRAIN
    """Optimiser and epochs (override keys ``lr``, ``epochs``, ``batch_size`` (256), ``adam_beta2`` (0.98), ...)."""
    negatives: Literal["in-batch", "queue", "cached"] = "in-batch"
    """Fig. 1 variant: (a) in-batch, (b) FIFO of ids re-encoded each step, (c) FIFO of cached embeddings."""
    queue_size: int = 2560
    """``|Q|`` (paper: 2560 = 10 x batch); ignored by in-batch."""
    enqueue_first: bool = True
    """Paper order (enqueue the batch, then score against the queue); False: official-code order."""
    mask_accidental_hits: bool = True
    """Drop other copies of the row's positive from its negatives (switch of §10(c))."""

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ValueError(f"queue_size: must be >= 1, got {self.queue_size}")


def contrastive_loss(logits: torch.Tensor, target: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
    """CLRec Eq. 3 over a candidate pool: mean over rows of

    ``−log [ exp φ(x_r, y_r) / ( exp φ(x_r, y_r) + Σ_{c ∉ drop_r, c ≠ t_r} exp φ(x_r, c) ) ]``.

    Args:
        logits: ``[B, N]`` ``φ(x_r, c)`` of every candidate column ``c`` (positive included).
        target: ``[B] int64`` column of each row's positive.
        drop: ``[B, N]`` bool, True for columns removed from the denominator (accidental hits);
            the target column is always kept.
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    pos = logits[rows, target]
    not_target = torch.ones_like(logits, dtype=torch.bool)
    not_target[rows, target] = False
    mask = ~not_target if drop is None else (drop | ~not_target)  # the positive enters once, as `pos`
    return sampled_softmax_loss(pos, logits, neg_mask=mask)


@register("clrec", config=CLRecConfig)
class CLRec(SequenceServing):
    """CLRec, in-batch variant (a): contrastive loss with the batch's other clicks as negatives (no logQ).

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default :class:`CLRecConfig`; ``clrec-queue`` / ``clrec-cached`` preset ``negatives``).
        name: the registered name (seeds the init, queue and shuffling streams).
    """

    def __init__(self, ctx: AgentContext, config: CLRecConfig | None = None, name: str = "clrec") -> None:
        self.ctx, self.name = ctx, name
        self.config = cfg = config or CLRecConfig()
        self.core = SequenceCore(ctx, cfg.encoder, cfg.train, name)
        d = self.model.item_encoder.item_id.embedding_dim
        self.queue: IdQueue | EmbeddingQueue | None = None
        if cfg.negatives == "queue":
            self.queue = IdQueue(cfg.queue_size, ctx.device)
        elif cfg.negatives == "cached":
            self.queue = EmbeddingQueue(cfg.queue_size, d, ctx.device)

    def _init_queue(self, view: TrainingView) -> None:
        """Fill an empty queue with uniformly random live ids (official code); cached: their current g."""
        if self.queue is None or len(self.queue) > 0:
            return
        gen = torch.Generator().manual_seed(stream_seed(self.ctx.seed, f"{self.name}/queue-init"))
        live = view.catalogue.live_ids().to(self.ctx.device)
        if isinstance(self.queue, IdQueue):
            self.queue.fill_random(live, gen)
        else:
            ids = live[torch.randint(0, len(live), (self.config.queue_size,), generator=gen).to(live.device)]
            with torch.no_grad():
                self.queue.enqueue(ids, self.model.item_embedding(view.catalogue.to(self.ctx.device), ids))

    def _pool(self, catalogue: Any, items: torch.Tensor, g_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidate ids ``[N]``, embeddings ``[N, d]`` and each row's target column ``[B]``; updates the queue."""
        cfg, b = self.config, len(items)
        rows = torch.arange(b, device=items.device)
        q = self.queue
        if q is None:  # (a) in-batch
            return items, g_pos, rows
        if isinstance(q, IdQueue):  # (b) ids, re-encoded now (with gradient)
            if cfg.enqueue_first:
                if b > q.capacity:
                    raise ValueError(f"{self.name}: queue_size ({q.capacity}) must be >= the batch size ({b}) with enqueue_first")
                q.enqueue(items)
                ids = q.ids  # [older ids | this batch]
                emb = torch.cat([self.model.item_embedding(catalogue, ids[: len(ids) - b]), g_pos])
                return ids, emb, rows + (len(ids) - b)
            ids_old = q.ids
            ids = torch.cat([items, ids_old])
            emb = torch.cat([g_pos, self.model.item_embedding(catalogue, ids_old)])
            q.enqueue(items)
            return ids, emb, rows
        # (c) cached embeddings (no gradient into them); the batch's positives stay live
        if cfg.enqueue_first:
            if b > q.capacity:
                raise ValueError(f"{self.name}: queue_size ({q.capacity}) must be >= the batch size ({b}) with enqueue_first")
            keep = min(len(q), q.capacity - b)  # the newest cached entries that survive this enqueue
            old_ids, old_emb = q.ids[len(q) - keep :], q.embeddings[len(q) - keep :]
            ids = torch.cat([old_ids, items])
            emb = torch.cat([old_emb, g_pos])
            target = rows + len(old_ids)
        else:
            ids = torch.cat([items, q.ids])
            emb = torch.cat([g_pos, q.embeddings])
            target = rows
        q.enqueue(items, g_pos)
        return ids, emb, target

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Warm-started contrastive training on the window's clicks; invalidates the index.

        Returns:
            ``loss`` (last epoch), ``loss_first_epoch``, ``examples``, ``negatives`` (mean pool size
            minus one), ``masked_share`` (accidental hits dropped / negative slots),
            ``queue_distinct_share`` (distinct ids / queue length after the fit: < 1 because the
            queue keeps duplicates), ``click_impression_tv``.
        """
        device = self.ctx.device
        data = click_examples(view, self.config.label, device)
        self.core.fits += 1
        nan = math.nan
        self._init_queue(view)
        stats: dict[str, Any] = {"masked": torch.zeros((), device=device), "slots": torch.zeros((), device=device), "steps": 0}
        losses = self._train(data, view, stats) if len(data) else []
        self.core.retriever.invalidate()
        q_ids = None if self.queue is None else self.queue.ids
        return {
            "loss": losses[-1] if losses else nan,
            "loss_first_epoch": losses[0] if losses else nan,
            "examples": float(len(data)),
            "negatives": float(stats["slots"]) / max(len(data) * max(len(losses), 1), 1),
            "masked_share": float(stats["masked"] / stats["slots"]) if float(stats["slots"]) > 0 else 0.0,
            "queue_distinct_share": nan if q_ids is None or len(q_ids) == 0 else float(torch.unique(q_ids).numel() / len(q_ids)),
            "click_impression_tv": click_impression_gap(view),
        }

    def _train(self, data: Exposures, view: TrainingView, stats: dict[str, Any]) -> list[float]:
        """The epochs of CLRec's loss over the clicks ``data``; ``stats`` collects the accidental-hit counts."""
        cfg, device, model = self.config, self.ctx.device, self.model
        catalogue = view.catalogue.to(device)

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            requests, items, _ = data.batch(idx)
            f = model.user_embedding(requests, catalogue)
            g_pos = model.item_embedding(catalogue, items)
            ids, emb, target = self._pool(catalogue, items, g_pos)
            logits = model.logits(f, emb)
            hits = ids.unsqueeze(0) == items.unsqueeze(1)
            hits[torch.arange(len(items), device=device), target] = False
            stats["masked"] += hits.sum()
            stats["slots"] += hits.numel() - len(items)
            stats["steps"] += 1
            return contrastive_loss(logits, target, hits if cfg.mask_accidental_hits else None)

        model.train()
        gen = fit_generator(self.ctx, self.name, view.round)
        train = cfg.train
        return run_epochs(
            len(data), train.epochs_for(self.ctx), train.batch_size_for(self.ctx), gen, device, self.core.optimiser, loss_fn, self.name
        )

    def extra_state(self) -> dict[str, Any]:
        return {"queue": None if self.queue is None else self.queue.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.queue is not None and state.get("queue") is not None:
            self.queue.load_state_dict(state["queue"])


register_variant(
    "clrec-queue", CLRec, CLRecConfig(negatives="queue"),
    "CLRec, queue variant (b): a FIFO of past clicked item ids, re-encoded every step, as negatives.",
)  # fmt: skip
register_variant(
    "clrec-cached", CLRec, CLRecConfig(negatives="cached"),
    "CLRec, cached variant (c): a FIFO of detached item embeddings of past clicks as negatives.",
)  # fmt: skip
