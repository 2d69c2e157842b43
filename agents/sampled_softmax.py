"""Sampled softmax with and without the logQ correction (algorithms.md §9; CLRec Eq. 2 and Eq. 3; Yi et al. 2019).

Both agents train the CLRec sequence encoder (:mod:`agents.backbone.sequence`) on the window's
clicks ``(x, y)`` (``x`` = the request's history before the click) with a softmax over the
positive and a set of negatives, scored ``φ(x, y) = cos(f(x), g(y)) / ρ``:

``ℓ = −log [ exp(φ^c(x,y)) / ( exp(φ^c(x,y)) + Σ_l exp(φ^c(x,y_l)) ) ]``, with
``φ^c(x, j) = φ(x, j) − log Q(j)`` (``sampled-softmax-logq``, Eq. 2: approximates the full-softmax
MLE, so ``p_θ(y|x) → p_data(y|x)`` and the exposure bias is reproduced) or ``φ^c = φ``
(``sampled-softmax``, Eq. 3: the contrastive loss; with ``Q`` = the exposure propensity it
converges to the IPW solution ``∝ p_data / Q``, CLRec Theorem 1).

Negatives (``negatives``):

- ``shared`` (CLRec's sampled-softmax baseline): one set of ``num_negatives`` items per batch,
  drawn with replacement from the sampler pmf ``Q`` over the live items; accidental hits
  (a negative equal to the row's positive) are removed. ``Q`` is the sampler's own pmf.
- ``in-batch`` (Yi et al.): the other positives of the batch; duplicates of the row's positive
  are dropped; ``Q(y_j)`` is the estimated per-step sampling probability.

``Q`` (``q``): ``unigram`` = exact click frequency of the window with add-one smoothing over the
live items (§9(e) **DEFAULT**); ``streaming`` = the hashed estimator of Yi et al. (§0.3; in-batch
only), updated with each batch *before* its loss; ``uniform`` = ``1 / |live|`` (then the two
agents coincide exactly: the §9(f) sanity check).

Loop per round: gather the window's clicks -> ``epochs`` passes in seeded minibatches,
warm-started -> invalidate the index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from agents.backbone.frequency import StreamingFrequency, unigram_q
from agents.backbone.sequence import SequenceTowerConfig
from agents.backbone.sequence_core import SEQ_TRAIN, SequenceCore, SequenceServing, click_examples, click_impression_gap
from agents.backbone.softmax import duplicate_mask, sampled_softmax_loss
from agents.backbone.training import Exposures, TrainConfig, fit_generator, run_epochs
from agents.registry import register, register_variant
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.types import Catalogue


@dataclass(frozen=True)
class SampledSoftmaxConfig:
    """Sampled-softmax hyperparameters (``None``: take it from the scenario's ``training`` section)."""

    label: Literal["clicked", "finished"] = "clicked"
    """Which impressions are the positives."""
    encoder: SequenceTowerConfig = SequenceTowerConfig()
    """The sequence encoder (override keys ``heads``, ``rho``, ``embedding_dim``, ``bucket_edges``, ...)."""
    train: TrainConfig = SEQ_TRAIN
    """Optimiser and epochs (override keys ``lr``, ``epochs``, ``batch_size`` (256), ``adam_beta2`` (0.98), ...)."""
    logq: bool = False
    """Subtract ``log Q`` from every logit (Eq. 2). ``sampled-softmax-logq`` presets True."""
    negatives: Literal["shared", "in-batch"] = "shared"
    """``shared``: ``num_negatives`` sampled items per batch; ``in-batch``: the batch's other positives."""
    q: Literal["unigram", "streaming", "uniform"] = "unigram"
    """The sampler / correction pmf: exact smoothed click unigram, the streaming estimator
    (in-batch only), or uniform over the live items."""
    num_negatives: int = 2560
    """Shared negatives per batch (CLRec: 2560 = its queue size)."""
    mask_accidental_hits: bool = True
    """Drop negatives equal to the row's positive (shared) / duplicates of it (in-batch)."""
    smoothing: float = 1.0
    """Additive smoothing of the unigram counts (1: add-one)."""
    streaming_rate: float = 0.01
    """EMA rate ``a`` of the streaming estimator."""
    streaming_size: int = 1 << 16
    """Buckets per hash array of the streaming estimator."""

    def __post_init__(self) -> None:
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives: must be >= 1, got {self.num_negatives}")
        if self.smoothing <= 0:
            raise ValueError(f"smoothing: must be > 0, got {self.smoothing}")
        if not 0.0 < self.streaming_rate <= 1.0:
            raise ValueError(f"streaming_rate: must be in (0, 1], got {self.streaming_rate}")
        if self.streaming_size < 1:
            raise ValueError(f"streaming_size: must be >= 1, got {self.streaming_size}")
        if self.q == "streaming" and self.negatives != "in-batch":
            raise ValueError("q: 'streaming' needs negatives='in-batch' (shared negatives use the sampler's own pmf)")


def sampled_softmax_logq_loss(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    pos_log_q: torch.Tensor | None,
    neg_log_q: torch.Tensor | None,
    neg_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLRec Eq. 2 (with ``log Q``) or Eq. 3 (``None``): the mean over rows of

    ``−log [ exp(φ(x,y) − log Q(y)) / ( exp(φ(x,y) − log Q(y)) + Σ_l exp(φ(x,y_l) − log Q(y_l)) ) ]``.

    Args:
        pos_logits: ``[B]`` ``φ(x, y)``.
        neg_logits: ``[B, L]`` or shared ``[L]`` ``φ(x, y_l)``.
        pos_log_q, neg_log_q: ``[B]`` and ``[B, L]`` / ``[L]`` ``log Q``, or both None (no correction).
        neg_mask: ``[B, L]`` True where a negative is dropped (accidental hits / duplicates).
    """
    return sampled_softmax_loss(pos_logits, neg_logits, pos_log_q, neg_log_q, neg_mask)


@register("sampled-softmax", config=SampledSoftmaxConfig)
class SampledSoftmax(SequenceServing):
    """Sampled softmax without logQ (CLRec Eq. 3, explicit negatives ~ Q) on the CLRec sequence encoder.

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default :class:`SampledSoftmaxConfig`; ``sampled-softmax-logq`` presets ``logq``).
        name: the registered name (seeds the init and shuffling streams).
    """

    def __init__(self, ctx: AgentContext, config: SampledSoftmaxConfig | None = None, name: str = "sampled-softmax") -> None:
        self.ctx, self.name = ctx, name
        self.config = cfg = config or SampledSoftmaxConfig()
        self.core = SequenceCore(ctx, cfg.encoder, cfg.train, name)
        self.frequency = StreamingFrequency(cfg.streaming_size, 2, cfg.streaming_rate, device=ctx.device) if cfg.q == "streaming" else None

    def _log_q_table(self, view: TrainingView, positives: torch.Tensor) -> torch.Tensor:
        """``[M]`` log of the sampler pmf over the live items and the window's positives (unigram or
        uniform); -inf elsewhere."""
        live = view.catalogue.live.to(self.ctx.device)
        live = live.index_fill(0, positives, True)  # a clicked item may have retired since: keep log Q finite
        if self.config.q == "uniform":
            q = live.float() / live.sum().clamp_min(1)
        else:
            q = unigram_q(positives, view.n_items, live, self.config.smoothing)
        return q.log()

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Warm-started training on the window's clicks; invalidates the index.

        Returns:
            ``loss`` (last epoch), ``loss_first_epoch``, ``examples``, ``masked_share`` (share of
            negative slots dropped as accidental hits / duplicates), ``log_q_mean`` (mean ``log Q``
            of the positives), ``click_impression_tv``.
        """
        cfg, device = self.config, self.ctx.device
        data = click_examples(view, cfg.label, device)
        self.core.fits += 1
        nan = math.nan
        if len(data) == 0:
            return {"loss": nan, "loss_first_epoch": nan, "examples": 0.0, "masked_share": nan, "log_q_mean": nan,
                    "click_impression_tv": click_impression_gap(view)}  # fmt: skip
        gen = fit_generator(self.ctx, self.name, view.round)
        log_q = self._log_q_table(view, data.item_ids)
        stats = {k: torch.zeros((), device=device) for k in ("masked", "slots", "pos_log_q")}
        epochs = cfg.train.epochs_for(self.ctx)
        losses = self._train(data, view.catalogue.to(device), log_q, gen, stats, epochs)
        seen = max(len(data) * epochs, 1)
        return {
            "loss": losses[-1] if losses else nan,
            "loss_first_epoch": losses[0] if losses else nan,
            "examples": float(len(data)),
            "masked_share": float(stats["masked"] / stats["slots"]) if float(stats["slots"]) > 0 else 0.0,
            "log_q_mean": float(stats["pos_log_q"]) / seen,
            "click_impression_tv": click_impression_gap(view),
        }

    def _train(
        self, data: Exposures, catalogue: Catalogue, log_q: torch.Tensor, gen: torch.Generator, stats: dict[str, torch.Tensor], epochs: int
    ) -> list[float]:
        """The epochs of Eq. 2 / Eq. 3 over the clicks ``data``.

        ``stats`` collects the masked slots and ``log Q`` of the positives.
        """
        cfg, model, shared = self.config, self.model, self.config.negatives == "shared"
        sampler = log_q.exp()

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            requests, items, _ = data.batch(idx)
            f = model.user_embedding(requests, catalogue)
            g_pos = model.item_embedding(catalogue, items)
            pos = model.logits(f, g_pos, pairwise=False)
            if shared:
                negs = torch.multinomial(sampler.cpu(), cfg.num_negatives, replacement=True, generator=gen).to(items.device)
                neg = model.logits(f, model.item_embedding(catalogue, negs))
                mask = duplicate_mask(items, negs) if cfg.mask_accidental_hits else None
                pos_lq, neg_lq = log_q[items], log_q[negs]
            else:
                neg, mask, pos_lq, neg_lq = self._in_batch(f, g_pos, items, log_q)
            if mask is not None:
                stats["masked"] += mask.sum() - (0 if shared else len(items))
                stats["slots"] += mask.numel() - (0 if shared else len(items))
            stats["pos_log_q"] += pos_lq.detach().sum()
            return (
                sampled_softmax_logq_loss(pos, neg, pos_lq, neg_lq, mask)
                if cfg.logq
                else sampled_softmax_logq_loss(pos, neg, None, None, mask)
            )

        model.train()
        losses = run_epochs(
            len(data), epochs, cfg.train.batch_size_for(self.ctx), gen, self.ctx.device, self.core.optimiser, loss_fn, self.name
        )
        self.core.retriever.invalidate()
        return losses

    def _in_batch(
        self, f: torch.Tensor, g_pos: torch.Tensor, items: torch.Tensor, log_q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """In-batch negatives: ``(logits [B, B], mask, log Q of the positives [B], of the negatives [B, B])``.

        The diagonal of the logits is each row's positive.
        """
        neg = self.model.logits(f, g_pos)
        dup = duplicate_mask(items, items)
        mask = dup if self.config.mask_accidental_hits else torch.eye(len(items), dtype=torch.bool, device=items.device)
        if self.frequency is not None:
            self.frequency.update(items)  # Yi et al.: update the estimate before the loss
            pos_lq = self.frequency.probability(items).log()
        else:
            pos_lq = log_q[items]
        return neg, mask, pos_lq, pos_lq.unsqueeze(0).expand(len(items), -1)

    def extra_state(self) -> dict[str, Any]:
        """The streaming estimator (``q = "streaming"``)."""
        return {"frequency": None if self.frequency is None else self.frequency.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""
        if self.frequency is not None and state.get("frequency") is not None:
            self.frequency.load_state_dict(state["frequency"])


register_variant(
    "sampled-softmax-logq", SampledSoftmax, SampledSoftmaxConfig(logq=True),
    "Sampled softmax with the logQ correction (CLRec Eq. 2; the paper's main baseline): fits p_data, bias included.",
)  # fmt: skip
