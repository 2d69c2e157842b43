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
from agents.backbone.sequence import (
    SequenceAgent, SequenceAgentConfig, click_examples, click_impression_gap,
)  # fmt: skip
from agents.backbone.softmax import duplicate_mask, sampled_softmax_loss
from agents.backbone.training import fit_generator, run_epochs
from agents.registry import register
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView


@dataclass(frozen=True)
class Config(SequenceAgentConfig):
    """Sampled-softmax hyperparameters (``None``: take it from the scenario's ``training`` section)."""

    logq: bool = False
    """Subtract ``log Q`` from every logit (Eq. 2). ``sampled-softmax-logq`` defaults to True."""
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
        super().__post_init__()
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


@dataclass(frozen=True)
class LogQConfig(Config):
    """As :class:`Config`, with the logQ correction on."""

    logq: bool = True
    """Subtract ``log Q`` from every logit (Eq. 2)."""


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


@register("sampled-softmax")
class SampledSoftmax(SequenceAgent):
    """Sampled softmax without logQ (CLRec Eq. 3, explicit negatives ~ Q) on the CLRec sequence encoder.

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default :class:`Config`).
    """

    name = "sampled-softmax"
    Config = Config

    def __init__(self, ctx: AgentContext, config: Config | None = None) -> None:
        super().__init__(ctx, config or self.Config())
        cfg = self.config
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
        cfg, tr, device = self.config, self.ctx.training, self.ctx.device
        data = click_examples(view, cfg.label, device)
        catalogue = view.catalogue.to(device)
        model = self.model
        self.fits += 1
        nan = math.nan
        if len(data) == 0:
            return {"loss": nan, "loss_first_epoch": nan, "examples": 0.0, "masked_share": nan, "log_q_mean": nan,
                    "click_impression_tv": click_impression_gap(view)}  # fmt: skip
        gen = fit_generator(self.ctx, self.name, view.round)
        log_q = self._log_q_table(view, data.item_ids)
        sampler = log_q.exp()
        stats = {k: torch.zeros((), device=device) for k in ("masked", "slots", "pos_log_q")}

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            requests, items, _ = data.batch(idx)
            f = model.user_embedding(requests, catalogue)
            g_pos = model.item_embedding(catalogue, items)
            pos = model.logits(f, g_pos, pairwise=False)
            if cfg.negatives == "shared":
                negs = torch.multinomial(sampler.cpu(), cfg.num_negatives, replacement=True, generator=gen).to(device)
                neg = model.logits(f, model.item_embedding(catalogue, negs))
                mask = duplicate_mask(items, negs) if cfg.mask_accidental_hits else None
                pos_lq, neg_lq = log_q[items], log_q[negs]
            else:
                neg = model.logits(f, g_pos)  # [B, B]; the diagonal is each row's positive
                dup = duplicate_mask(items, items)
                eye = torch.eye(len(items), dtype=torch.bool, device=device)
                mask = dup if cfg.mask_accidental_hits else eye
                if self.frequency is not None:
                    self.frequency.update(items)  # Yi et al.: update the estimate before the loss
                    pos_lq = self.frequency.probability(items).log()
                else:
                    pos_lq = log_q[items]
                neg_lq = pos_lq.unsqueeze(0).expand(len(items), -1)
            if mask is not None:
                stats["masked"] += mask.sum() - (0 if cfg.negatives == "shared" else len(items))
                stats["slots"] += mask.numel() - (0 if cfg.negatives == "shared" else len(items))
            stats["pos_log_q"] += pos_lq.detach().sum()
            if not cfg.logq:
                pos_lq = neg_lq = None
            return sampled_softmax_logq_loss(pos, neg, pos_lq, neg_lq, mask)

        model.train()
        epochs = cfg.epochs if cfg.epochs is not None else tr.epochs
        losses = run_epochs(len(data), epochs, cfg.batch_size or tr.batch_size, gen, device, self.optimiser, loss_fn, self.name)
        self.retriever.invalidate()
        seen = max(len(data) * epochs, 1)
        return {
            "loss": losses[-1] if losses else nan,
            "loss_first_epoch": losses[0] if losses else nan,
            "examples": float(len(data)),
            "masked_share": float(stats["masked"] / stats["slots"]) if float(stats["slots"]) > 0 else 0.0,
            "log_q_mean": float(stats["pos_log_q"]) / seen,
            "click_impression_tv": click_impression_gap(view),
        }

    def extra_state(self) -> dict[str, Any]:
        return {"frequency": None if self.frequency is None else self.frequency.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.frequency is not None and state.get("frequency") is not None:
            self.frequency.load_state_dict(state["frequency"])


@register("sampled-softmax-logq")
class SampledSoftmaxLogQ(SampledSoftmax):
    """Sampled softmax with the logQ correction (CLRec Eq. 2; the paper's main baseline): fits p_data, bias included.

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default :class:`LogQConfig`).
    """

    name = "sampled-softmax-logq"
    Config = LogQConfig
