"""IPW and IPW-oracle: inverse propensity weighting with a multinomial propensity (algorithms.md §12; CLRec Eq. 4).

The main model ``p_θ(y|x) = softmax_y φ(x, y)``, ``φ = cos(f(x), g(y)) / ρ`` with
``clrec``'s sequence encoder (CLRec Tables 8-9 compare IPW and CLRec on one encoder)
and a full softmax over the live catalogue (small in the simulator; §12(b)), is
trained on the window's clicks with the IPW loss of CLRec Eq. (4):

    L_IPW = (1/|D|) Σ_{(x,y) ∈ D} −w(x, y) · log p_θ(y|x),   w = 1 / stopgrad(q(y|x)).

By CLRec Theorem 1 its optimum is ``p_θ ∝ p_data(y|x) / q(y|x)``: with ``q`` the
exposure (impression) distribution of the logging policy, that is the user's
preference with the exposure bias divided out. Two sources of ``q``:

- ``ipw``: a *separate* two-tower propensity model ``q_ψ(y|x)`` (which item, out
  of all items, was shown to ``x``) fitted first on the window's impressions by
  multinomial MLE, with in-batch sampled softmax *with* logQ correction
  (§9: ``s^c = s − log Q``, ``Q`` the window's impression frequency) so that it
  fits the impression distribution itself; then frozen. ``q_ψ(y|x)`` is its full
  softmax over the live catalogue.
- ``ipw-oracle``: the logged marginal exposure probability of the clicked
  impression (``view.impressions.exposure_propensity``, Monte-Carlo under
  stochastic serving). An evaluation device. A Bernoulli inclusion probability
  ``π(y|x)`` is ``S · q(y|x)`` for a slate of ``S``; the constant cancels in the
  self-normalised weights. **Under deterministic serving every exposed item has
  propensity 1**, so all weights are 1 and ``ipw-oracle`` degenerates to plain
  full-softmax MLE on clicks; IPW only means something with ``cascade.stochastic``.

Stabilisation (§12 DEFAULT, §16.1): log space, detached, clipped at
``clip_ratio`` × the median weight of the fit's clicks (§12(e): c ∈ {10, 100,
1000}), self-normalised per minibatch; the weight quantiles are returned as fit
diagnostics. The propensity model never receives gradient from the main loss
(separate parameters and optimiser, weights detached).

Loop per round: fit ``q_ψ`` on the window's impressions -> freeze -> compute
``q`` of every click -> E epochs of ``L_IPW`` (both warm-started) -> ``index``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from agents.backbone.sequence import SequenceTowerConfig
from agents.backbone.sequence_core import SEQ_TRAIN, SequenceCore, SequenceServing, click_examples
from agents.backbone.softmax import duplicate_mask, sampled_softmax_loss
from agents.backbone.training import Exposures, TrainConfig, fit_generator, make_optimiser, run_epochs
from agents.backbone.two_tower import TowerConfig, TwoTower, evaluating
from agents.backbone.weighting import inverse_propensity_weights, weight_quantiles
from agents.registry import register, register_variant
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.rng import stream_seed
from simulator.types import Catalogue, RequestBatch


@dataclass(frozen=True)
class IPWConfig:
    """IPW hyperparameters; ``None`` means "take it from the scenario's ``training`` section"."""

    label: Literal["clicked", "finished"] = "clicked"
    """Which impressions are the positives."""
    encoder: SequenceTowerConfig = SequenceTowerConfig()
    """The sequence encoder (override keys ``heads``, ``rho``, ``embedding_dim``, ``bucket_edges``, ...)."""
    train: TrainConfig = SEQ_TRAIN
    """Optimiser and epochs (override keys ``lr``, ``epochs``, ``batch_size`` (256), ``adam_beta2`` (0.98), ...)."""
    propensity: Literal["learned", "logged"] = "learned"
    """``learned``: fit the propensity model ``q_ψ`` each round (``ipw``); ``logged``: the logged true
    exposure propensities (``ipw-oracle``, an evaluation device; the ``prop_*`` fields are unused)."""
    clip_ratio: float = 100.0
    """Clip ``w`` at ``clip_ratio`` × the median weight of the fit's positives (§12(e): 10, 100 or 1000)."""
    self_normalise: bool = True
    """Divide the weights by their minibatch mean (§12 DEFAULT)."""
    prop_epochs: int | None = None
    """Epochs of the propensity model per fit (None: ``training.epochs``); ``ipw`` only."""
    prop_batch_size: int = 512
    """In-batch sampled-softmax batch of the propensity model (its negatives are the batch's other impressions)."""
    prop_lr: float | None = None
    """Learning rate of the propensity model (None: ``training.lr``)."""
    prop_hidden: tuple[int, ...] = (64,)
    """Hidden sizes of the propensity model's towers (a backbone two-tower: its item tower sees the
    popularity counters, which drive exposure)."""
    prop_id_dim: int = 16
    """Id embedding size of the propensity model."""
    prop_gamma: float = 10.0
    """Cosine logit scale of the propensity model (it also has per-item biases)."""

    def __post_init__(self) -> None:
        if self.prop_id_dim < 1:
            raise ValueError(f"prop_id_dim: must be >= 1, got {self.prop_id_dim!r}")
        if not self.clip_ratio >= 1.0:
            raise ValueError(f"clip_ratio: must be >= 1, got {self.clip_ratio!r}")
        if self.prop_epochs is not None and self.prop_epochs < 0:
            raise ValueError(f"prop_epochs: must be >= 0, got {self.prop_epochs!r}")
        if self.prop_batch_size < 2:
            raise ValueError(f"prop_batch_size: must be >= 2 (in-batch negatives), got {self.prop_batch_size!r}")
        if self.prop_lr is not None and not self.prop_lr > 0:
            raise ValueError(f"prop_lr: must be > 0, got {self.prop_lr!r}")
        if not all(h >= 1 for h in self.prop_hidden):
            raise ValueError(f"prop_hidden: every size must be >= 1, got {self.prop_hidden!r}")
        if not self.prop_gamma > 0:
            raise ValueError(f"prop_gamma: must be > 0, got {self.prop_gamma!r}")


# --- losses ----------------------------------------------------------------------------------


def propensity_loss(
    pos_logits: torch.Tensor, neg_logits: torch.Tensor, pos_log_q: torch.Tensor, neg_log_q: torch.Tensor, neg_mask: torch.Tensor | None
) -> torch.Tensor:
    """Stage 1: multinomial MLE of ``q_ψ(y|x)`` on impressions by sampled softmax with logQ (§9, §12(c)).

    ``L_prop = mean_r −log [ exp(s_r+ − log Q(y_r)) / (exp(s_r+ − log Q(y_r)) + Σ_l exp(s_rl − log Q(y_l))) ]``,
    which approximates ``−mean log q_ψ(y|x)`` (full-softmax MLE) when the negatives are drawn from ``Q``
    (in-batch negatives: ``Q`` = the impression frequency). Without the logQ term it would fit
    ``q/Q`` instead of ``q``.

    Args:
        pos_logits: ``[B]`` ``s_ψ(x_r, y_r)`` of each impression.
        neg_logits: ``[B, L]`` logits of the negatives.
        pos_log_q: ``[B]`` ``log Q(y_r)``; neg_log_q: ``[B, L]`` or ``[L]`` ``log Q`` of the negatives.
        neg_mask: ``[B, L]`` True where a negative is the row's own item (accidental hit).

    Returns:
        Scalar loss.
    """
    return sampled_softmax_loss(pos_logits, neg_logits, pos_log_q, neg_log_q, neg_mask)


def ipw_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Stage 2, CLRec Eq. (4) with a full softmax: ``mean_r w_r · −log softmax(logits_r)[target_r]``.

    ``−log p_θ(y|x) = logsumexp_j s(x, j) − s(x, y)``; ``w_r = 1 / stopgrad(q(y_r|x_r))`` clipped and
    self-normalised by the caller (:func:`ipw_weights`). ``weights=None`` is plain full-softmax MLE.

    Args:
        logits: ``[B, C]`` ``s(x_r, j)`` over the candidate items ``j``.
        target: ``[B] int64`` column of each row's positive.
        weights: ``[B]`` detached weights, or None.

    Returns:
        Scalar loss.
    """
    pos = logits.gather(1, target.unsqueeze(1)).squeeze(1)
    own = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, target.unsqueeze(1), True)
    return sampled_softmax_loss(pos, logits, neg_mask=own, weights=weights)


def propensity_floor(propensity: torch.Tensor, clip_ratio: float) -> float:
    """The smallest propensity kept, ``median(q) / clip_ratio``: weights ``1/q`` are capped at ``clip_ratio`` × the median weight."""
    if propensity.numel() == 0:
        return 1.0
    return float(min(1.0, max(float(propensity.detach().float().median()) / clip_ratio, 1e-30)))


def ipw_weights(propensity: torch.Tensor, floor: float, self_normalise: bool = True) -> torch.Tensor:
    """``[n]`` detached weights ``1 / max(q, floor)``, self-normalised to mean 1 (§16.1), in log space."""
    return inverse_propensity_weights(propensity, min_propensity=floor, self_normalise=self_normalise)


# --- the agents ------------------------------------------------------------------------------


EMPTY_FIT = {"loss": math.nan, "loss_first_epoch": math.nan, "examples": 0.0, "clipped_share": math.nan}
"""The main-loss diagnostics of a window without clicks."""


def _candidates(catalogue: Catalogue, targets: torch.Tensor) -> torch.Tensor:
    """``[C]`` sorted unique ids: every live item plus every target (a clicked item may have retired since)."""
    return torch.unique(torch.cat([catalogue.live_ids(), targets]))


def _propensity_logits(model: TwoTower, requests: RequestBatch, item_emb: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
    """``[B, C]`` ``s_ψ(x, j) = scale · cos(f(x), g(j)) + b_j`` against raw item embeddings ``[C, d]``."""
    f = model.normalise(model.user_embedding(requests))
    logits = model.scale * f @ model.normalise(item_emb).T
    if model.item_bias is not None:
        logits = logits + model.item_bias(item_ids).squeeze(-1).unsqueeze(0)
    return logits


@register("ipw", config=IPWConfig)
class IPW(SequenceServing):
    """IPW (CLRec Eq. 4): full-softmax loss on clicks weighted by 1/q from a separately trained propensity model.

    The main model is ``clrec``'s sequence encoder (:class:`~agents.backbone.sequence_core.SequenceCore`);
    the propensity model of ``ipw`` is a separate backbone :class:`TwoTower` with its own optimiser.
    ``ipw-oracle`` is this class with ``propensity = "logged"``.
    """

    def __init__(self, ctx: AgentContext, config: IPWConfig | None = None, name: str = "ipw") -> None:
        self.ctx, self.name = ctx, name
        self.config = cfg = config or IPWConfig()
        self.core = SequenceCore(ctx, cfg.encoder, cfg.train, name)
        self.propensity: TwoTower | None = None
        self.prop_optimiser: torch.optim.Optimizer | None = None
        if cfg.propensity == "learned":
            tower = TowerConfig(
                embedding_dim=cfg.encoder.embedding_dim or ctx.training.embedding_dim, id_dim=cfg.prop_id_dim, context_dim=4,
                hidden=cfg.prop_hidden, gamma=cfg.prop_gamma, batch_norm=True, input_norm=True,
            )  # fmt: skip
            self.propensity = TwoTower(ctx, tower, seed=stream_seed(ctx.seed, f"{name}/propensity/init"))
            plr = cfg.prop_lr if cfg.prop_lr is not None else ctx.training.lr
            self.prop_optimiser = make_optimiser(self.propensity.parameters(), cfg.train.optimizer, plr)

    # --- stage 1 --------------------------------------------------------------------------

    def _fit_propensity(self, view: TrainingView, requests: RequestBatch, catalogue: Catalogue) -> float:
        """Multinomial MLE of ``q_ψ`` on every impression of the window; returns the last epoch's loss."""
        assert self.propensity is not None and self.prop_optimiser is not None
        cfg, device, model = self.config, self.ctx.device, self.propensity
        imp = view.impressions
        row, items = imp.row.to(device), imp.item_id.to(device)
        counts = torch.bincount(items, minlength=view.n_items).float()
        log_q = (counts / counts.sum()).clamp_min(1e-30).log()

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            y = items[idx]
            f = model.normalise(model.user_embedding(requests.select(row[idx])))
            g = model.normalise(model.item_embedding(catalogue, y))
            logits = model.scale * f @ g.T  # [B, B]: row r's positive is column r, the other columns are its negatives
            if model.item_bias is not None:
                logits = logits + model.item_bias(y).squeeze(-1).unsqueeze(0)
            lq = log_q[y]
            return propensity_loss(logits.diagonal(), logits, lq, lq, duplicate_mask(y, y))

        model.train()
        epochs = cfg.prop_epochs if cfg.prop_epochs is not None else self.ctx.training.epochs
        losses = run_epochs(
            len(items), epochs, cfg.prop_batch_size, fit_generator(self.ctx, f"{self.name}/propensity", view.round),
            device, self.prop_optimiser, loss_fn, f"{self.name}/propensity",
        )  # fmt: skip
        return losses[-1] if losses else math.nan

    @torch.no_grad()
    def learned_propensities(self, requests: RequestBatch, targets: torch.Tensor, catalogue: Catalogue, cand: torch.Tensor) -> torch.Tensor:
        """``[n]`` ``q_ψ(y|x)`` of ``targets [n]`` for ``requests [n]``: the frozen propensity model's full softmax over ``cand``."""
        assert self.propensity is not None
        model, out = self.propensity, []
        with evaluating(model):
            g = model.item_embedding(catalogue, cand)
            col = torch.searchsorted(cand, targets)
            for s in range(0, len(targets), 1024):
                part = requests.select(torch.arange(s, min(s + 1024, len(targets)), device=targets.device))
                logits = _propensity_logits(model, part, g, cand)
                out.append((logits.gather(1, col[s : s + 1024].unsqueeze(1)).squeeze(1) - logits.logsumexp(1)).exp())
        return torch.cat(out) if out else torch.zeros(0, device=targets.device)

    # --- fit ------------------------------------------------------------------------------

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Stage 1 (``ipw``: fit the propensity model), then warm-started IPW epochs on the window's positives.

        Returns:
            ``loss`` / ``loss_first_epoch`` (main IPW loss), ``examples`` (positives), ``prop_loss`` (``ipw``: last
            epoch of stage 1), ``prop_logcorr`` (``ipw``: Pearson correlation of ``log q_ψ`` with the logged
            ``log exposure_propensity`` of the positives; NaN when the logged one is constant, e.g. deterministic
            serving), ``clipped_share`` and ``weight_p50/p90/p99/max`` (clipped weights over the fit, divided by their mean).
        """
        cfg, device = self.config, self.ctx.device
        requests, catalogue = view.requests.to(device), view.catalogue.to(device)
        imp = view.impressions
        self.core.fits += 1
        learned = self.propensity is not None
        diag: dict[str, float] = {"prop_loss": math.nan, "prop_logcorr": math.nan}
        if learned and len(imp) > 1:
            diag["prop_loss"] = self._fit_propensity(view, requests, catalogue)
        data = click_examples(view, cfg.label, device)
        pos = getattr(imp, cfg.label).to(device).bool()
        logged = imp.exposure_propensity.to(device)[pos].float()  # aligned with `data` (same impression order)
        if len(data) == 0:
            self.core.retriever.invalidate()
            return {**diag, **EMPTY_FIT, **weight_quantiles(torch.zeros(0))}
        cand = _candidates(catalogue, data.item_ids)
        q = logged
        if learned:
            q = self.learned_propensities(requests.select(data.row), data.item_ids, catalogue, cand)
            diag["prop_logcorr"] = _corr(q.clamp_min(1e-30).log(), logged.clamp_min(1e-30).log())
        floor = propensity_floor(q, cfg.clip_ratio)
        losses = self._train(view, data, catalogue, cand, q, floor)
        return {
            **diag,
            "loss": losses[-1] if losses else math.nan,
            "loss_first_epoch": losses[0] if losses else math.nan,
            "examples": float(len(data)),
            "clipped_share": float((q < floor).float().mean()),
            **weight_quantiles(ipw_weights(q, floor, self_normalise=True)),
        }

    def _train(
        self, view: TrainingView, data: Exposures, catalogue: Catalogue, cand: torch.Tensor, q: torch.Tensor, floor: float
    ) -> list[float]:
        """The epochs of ``L_IPW`` over the clicks ``data`` (full softmax over ``cand``, weights from ``q``)."""
        cfg, model = self.config, self.model
        col = torch.searchsorted(cand, data.item_ids)

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            batch, _, _ = data.batch(idx)
            logits = model.logits(model.user_embedding(batch, catalogue), model.item_embedding(catalogue, cand))
            return ipw_loss(logits, col[idx], ipw_weights(q[idx], floor, cfg.self_normalise))

        model.train()
        losses = run_epochs(
            len(data), cfg.train.epochs_for(self.ctx), cfg.train.batch_size_for(self.ctx),
            fit_generator(self.ctx, self.name, view.round), self.ctx.device, self.core.optimiser, loss_fn, self.name,
        )  # fmt: skip
        self.core.retriever.invalidate()
        return losses

    # --- state ----------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        """The propensity model and its optimiser (``ipw``)."""
        if self.propensity is None or self.prop_optimiser is None:
            return {}
        return {"propensity": self.propensity.state_dict(), "prop_optimiser": self.prop_optimiser.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""
        if self.propensity is not None and self.prop_optimiser is not None:
            self.propensity.load_state_dict(state["propensity"])
            self.prop_optimiser.load_state_dict(state["prop_optimiser"])


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two ``[n]`` tensors (NaN when either is constant or n < 2)."""
    if a.numel() < 2:
        return math.nan
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 0 else math.nan


register_variant(
    "ipw-oracle", IPW, IPWConfig(propensity="logged"),
    "IPW-oracle: the IPW loss with the logged true exposure propensities (an evaluation device).",
)  # fmt: skip
