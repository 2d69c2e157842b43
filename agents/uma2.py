"""UMA²: Unbiased Model-Agnostic Matching, GMM + NSDN (algorithms.md §7; the UMA² paper, Eq. 1-2).

The General Matching Model (GMM) is the two tower of
:mod:`agents.sampling_strategies`, trained with SS-ABC(fixed) sampling: per
click, 1 negative from space A (exposed, unclicked), 4 from space B (recalled,
unexposed) and 20 from space C (never recalled), all of the click's own logged
request. The Negative Samples Debias Network (NSDN) re-weighs them by inverse
propensity (IPW, Eq. 1):

- ``p1(u, i) = P(recalled | entire space)``: the "Entire->Recall" head (ER);
- ``p2(u, i) = P(exposed | recalled)``: the "Recall->Exposure" head (RE);
- A negatives get ``w = 1 / (p1·p2)``, B negatives ``w = 1 / p1``, C negatives ``w = 1``.

Eq. 2, one end-to-end multi-task step per minibatch:

``L = loss_+ + λ1·loss_A + λ2·loss_B + λ3·loss_C + λ4·loss_ER + λ5·loss_RE``

(:func:`~agents.sampling_strategies.gmm_loss` for the first four, :func:`nsdn_loss`
for the heads). Weights follow §16.1 (:func:`~agents.backbone.weighting.inverse_propensity_weights`):
computed from ``stopgrad(p)`` (the heads never get gradient from the weighted
GMM loss), clipped at ``p >= min_propensity`` and self-normalised per space
over the batch; their quantiles are returned by ``fit`` each round
(``weight_p50`` ... ``weight_max``, recorded as ``fit_weight_*``).

NSDN heads (architecture unspecified in the paper; spec DEFAULT): each an MLP
(128-64-1) on ``[user-tower input ; item-tower input]``, sharing the GMM's
embedding tables. They train on the batch's own samples, as the paper builds
them ("B ... with respect to each exposure sample, C ... with respect to each
recalled item"): ER positives are the recalled pairs of the batch (the click,
its A and B samples), ER negatives its C samples; RE positives are the exposed
pairs (the click and its A samples), RE negatives the B samples (the paper does
not name RE's negatives; B is the only consistent choice, §7).

Registered variants:

- ``uma2``: YouTube-DNN GMM + learned NSDN (UMA²_YTB);
- ``uma2-dat``: the DAT backbone (per-user and per-item augmented vectors fed to the other
  side's tower input, pulled by the Adaptive-Mimic Mechanism toward ``stopgrad`` of the
  other tower's output on clicks, MSE weight 0.5 each) + learned NSDN (UMA²_DAT);
- ``uma2-oracle-p``: the logged propensities instead of the heads (``p1`` = the candidate's
  logged ``recall_prob``, ``p2`` = its logged ``expose_prob``, i.e. P(exposed | realised
  recalled set)): an evaluation device, not a deployable method.

``propensity = "one"`` sets every propensity to 1: the weights are then exactly 1 and
UMA² is SS-ABC(fixed) bit for bit (same streams, same loss; the spec's sanity check 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from agents.backbone.gmm import GMM_TRAIN, STREAM, Batch, GMMCore, GMMServing, NegativesConfig
from agents.backbone.spaces import Spaces
from agents.backbone.training import TrainConfig, check_ranges
from agents.backbone.two_tower import TowerConfig, TwoTower, evaluating, init_parameters
from agents.backbone.weighting import inverse_propensity_weights, weight_quantiles
from agents.bc import BC_TOWER
from agents.registry import register, register_variant
from agents.sampling_strategies import gmm_loss
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.nn import mlp
from simulator.rng import stream_seed
from simulator.types import Catalogue, RequestBatch


@dataclass(frozen=True)
class UMA2Config:
    """UMA² hyperparameters: the GMM's (as :class:`~agents.sampling_strategies.SSConfig`; spaces A, B, C
    at 1:4:20 with ``λ1, λ2, λ3`` = 1, the spec DEFAULT) plus the propensity heads and DAT."""

    label: Literal["clicked", "finished"] = "clicked"
    """Positive label: ``clicked`` or ``finished``."""
    l2: float = 1e-5
    """L2 weight on the embedding rows of each batch's users and positives."""
    tower: TowerConfig = BC_TOWER
    """BC's towers (override keys ``hidden``, ``gamma``, ...)."""
    train: TrainConfig = GMM_TRAIN
    """Optimiser and epochs (override keys ``lr``, ``epochs``, ``batch_size`` (64), ...)."""
    negatives: NegativesConfig = NegativesConfig()
    """Must sample A, B, C in this order (SS-ABC(fixed)); override keys ``ratio``, ``space_weights``, ..."""
    propensity: Literal["nsdn", "logged", "one"] = "nsdn"
    """``nsdn``: the learned ER/RE heads; ``logged``: the log's recall_prob / expose_prob (oracle);
    ``one``: every propensity 1 (= SS-ABC(fixed))."""
    lambda_er: float = 1.0
    """``λ4``: weight of the Entire->Recall head loss."""
    lambda_re: float = 1.0
    """``λ5``: weight of the Recall->Exposure head loss."""
    min_propensity: float = 0.05
    """Clip ``p >= min_propensity`` before inverting (weights <= 20; spec DEFAULT)."""
    self_normalise: bool = True
    """Divide each space's weights by their batch mean (§16.1)."""
    head_hidden: tuple[int, ...] = (128, 64)
    """Hidden sizes of each NSDN head (spec DEFAULT 128-64-1)."""
    dat: bool = False
    """Use the DAT backbone (augmented vectors + Adaptive-Mimic Mechanism)."""
    amm_weight: float = 0.5
    """DAT: weight of each mimic MSE (TorchEasyRec default 0.5)."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if tuple(self.negatives.spaces) != ("A", "B", "C"):
            raise ValueError(f"spaces: UMA² samples A, B, C (in this order), got {self.negatives.spaces!r}")
        for name in ("lambda_er", "lambda_re", "amm_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 < self.min_propensity <= 1.0:
            raise ValueError(f"min_propensity: must be in (0, 1], got {self.min_propensity!r}")
        if any(h < 1 for h in self.head_hidden):
            raise ValueError(f"head_hidden: every size must be >= 1, got {self.head_hidden!r}")


def nsdn_loss(
    er_logits: torch.Tensor,
    er_labels: torch.Tensor,
    er_valid: torch.Tensor,
    re_logits: torch.Tensor,
    re_labels: torch.Tensor,
    re_valid: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two auxiliary losses of Eq. 2.

    ``loss_ER = mean BCE(p1, o)`` (o = 1 recalled, 0 sampled from space C) and
    ``loss_RE = mean BCE(p2, e)`` (e = 1 exposed, 0 recalled-unexposed), each over its valid entries.

    Returns:
        ``(loss_ER, loss_RE)`` scalars.
    """

    def masked(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        per = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
        return (per * valid).sum() / valid.sum().clamp_min(1)

    return masked(er_logits, er_labels, er_valid), masked(re_logits, re_labels, re_valid)


class DATTower(TwoTower):
    """TwoTower with DAT's augmented vectors: ``a_u`` joins the user-tower input, ``a_i`` the item-tower input.

    Args:
        ctx: sizes and device.
        cfg: tower shape.
        seed: the base tower's initialisation seed; the DAT parts use ``seed + 1``.
    """

    def __init__(self, ctx: AgentContext, cfg: TowerConfig, seed: int) -> None:
        super().__init__(ctx, cfg, seed)
        cfg = cfg.resolved(ctx)
        d, d_id, d_ctx, m = cfg.dim, cfg.id_dim, cfg.context_dim, ctx.modality_dim
        user_in = 2 * d_id + ctx.profile_dim + 2 * d_ctx + d
        item_in = 3 * d_id + d_ctx + 1 + 3 * m + 3 + d
        with torch.device("meta"):
            extra = nn.ModuleDict({
                "user_aug": nn.Embedding(ctx.n_users, d), "item_aug": nn.Embedding(ctx.n_items, d),
                "user_mlp": mlp([user_in, *cfg.hidden, d], batch_norm=cfg.batch_norm),
                "item_mlp": mlp([item_in, *cfg.hidden, d], batch_norm=cfg.batch_norm),
            })  # fmt: skip
        extra.to_empty(device=ctx.device)
        init_parameters(extra, torch.Generator().manual_seed(seed + 1), cfg.init_std)
        self.user_aug, self.item_aug = extra["user_aug"], extra["item_aug"]
        self.user_mlp, self.item_mlp = extra["user_mlp"], extra["item_mlp"]
        self.user_in, self.item_in = user_in, item_in

    def user_features(self, requests: RequestBatch) -> torch.Tensor:
        """Base user-tower input with ``a_u`` appended."""
        return torch.cat([super().user_features(requests), self.user_aug(requests.user_id)], dim=1)

    def item_features(self, catalogue: Catalogue, item_ids: torch.Tensor) -> torch.Tensor:
        """Base item-tower input with ``a_i`` appended."""
        return torch.cat([super().item_features(catalogue, item_ids), self.item_aug(item_ids)], dim=1)


@register("uma2", config=UMA2Config)
class UMA2(GMMServing):
    """UMA² (YTB): SS-ABC(fixed) GMM with NSDN inverse-propensity weights, one multi-task step (Eq. 2).

    Composes the GMM trainer (:class:`~agents.backbone.gmm.GMMCore`) with its own minibatch loss
    (IPW-weighted GMM + the NSDN heads' losses); ``uma2-dat`` and ``uma2-oracle-p`` are presets of this class.

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default :class:`UMA2Config`).
        name: the registered name (seeds the NSDN heads' initialisation).
    """

    def __init__(self, ctx: AgentContext, config: UMA2Config | None = None, name: str = "uma2") -> None:
        self.ctx, self.name = ctx, name
        self.config = cfg = config or UMA2Config()
        self.core = GMMCore(ctx, cfg, name)
        if cfg.dat:
            self.core.retriever.model = DATTower(ctx, cfg.tower, seed=stream_seed(ctx.seed, f"{STREAM}/init"))
        self.heads: nn.ModuleDict | None = None
        if cfg.propensity == "nsdn":
            model = self.core.model
            with torch.device("meta"):
                heads = nn.ModuleDict({k: mlp([model.user_in + model.item_in, *cfg.head_hidden, 1]) for k in ("er", "re")})
            heads.to_empty(device=ctx.device)
            init_parameters(heads, torch.Generator().manual_seed(stream_seed(ctx.seed, f"{name}/nsdn/init")), cfg.tower.init_std)
            self.heads = heads
        # one optimiser over the GMM and the heads: Eq. 2 is one multi-task step
        self.core.optimiser = cfg.train.optimiser(self.parameters(), ctx)

    def parameters(self) -> list[torch.nn.Parameter]:
        """GMM parameters, then the NSDN heads'."""
        return list(self.core.model.parameters()) + (list(self.heads.parameters()) if self.heads is not None else [])

    def fit(self, view: TrainingView) -> dict[str, float]:
        """The GMM fit with UMA²'s loss; returns its diagnostics plus the weights', heads' and DAT's."""
        return {**self.core.fit(view, self._batch_loss, self._begin_fit), **self._extra_diagnostics()}

    def _begin_fit(self, spaces: Spaces) -> None:
        self._spaces = spaces
        self._weights: dict[str, list[torch.Tensor]] = {"a": [], "b": []}
        self._clipped = torch.zeros(2)
        self._aux = torch.zeros(5)  # loss_er, loss_re, p1 mean, p2 mean, loss_amm (sums over steps)
        self._steps = 0

    # --- NSDN -----------------------------------------------------------------------------

    def _head_logits(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[P, L]`` ER and RE logits from user inputs ``[P, du]`` and item inputs ``[P, L, di]``."""
        assert self.heads is not None
        x = torch.cat([users.unsqueeze(1).expand(-1, items.shape[1], -1), items], dim=-1)
        flat = x.reshape(-1, x.shape[-1])
        return self.heads["er"](flat).view(items.shape[:2]), self.heads["re"](flat).view(items.shape[:2])

    def propensities(self, requests: RequestBatch, catalogue: Catalogue, item_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p1, p2)``, each ``[B, K]``: the NSDN heads' P(recalled) and P(exposed | recalled) (eval mode, no grad)."""
        if self.heads is None:
            raise RuntimeError(f"{self.name}: no NSDN heads (propensity={self.config.propensity!r})")
        model = self.core.model
        with evaluating(model), evaluating(self.heads):
            users = model.user_features(requests)
            items = model.item_features(catalogue, item_ids.reshape(-1)).view(*item_ids.shape, -1)
            er, re = self._head_logits(users, items)
        return torch.sigmoid(er), torch.sigmoid(re)

    def _weights_for(self, batch: Batch, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
        """``[P, N]`` IPW weights: ``1/(p1·p2)`` on A, ``1/p1`` on B, 1 on C; detached, clipped, self-normalised per space."""
        cfg = self.config
        weights = torch.ones_like(p1)
        for s, key, prop in ((0, "a", p1 * p2), (1, "b", p1)):
            col = (batch.neg_space == s).unsqueeze(0) & batch.neg_valid
            p = prop[col]
            w = inverse_propensity_weights(p, cfg.min_propensity, None, cfg.self_normalise)
            weights = weights.masked_scatter(col, w)
            self._weights[key].append(w.detach())
            self._clipped[s] += float((p.detach() < cfg.min_propensity).float().sum())
        return weights

    def _batch_loss(self, batch: Batch, catalogue: Catalogue) -> torch.Tensor:
        """``L_GMM`` (Eq. 2 with IPW weights) + ``λ_ER·loss_ER + λ_RE·loss_RE`` (+ DAT's mimic MSE) of one minibatch."""
        cfg, model = self.config, self.core.model
        users = model.user_features(batch.requests)  # [P, du]
        all_items = torch.cat([batch.pos_items.unsqueeze(1), batch.neg_items], dim=1)  # [P, 1+N]
        items = model.item_features(catalogue, all_items.reshape(-1)).view(*all_items.shape, -1)
        f = model.user_mlp(users)
        g = model.item_mlp(items.reshape(-1, items.shape[-1])).view(*all_items.shape, -1)
        logits = model.score_pairs(f, g) + model.bias_terms(batch.requests.user_id, all_items)
        p1, p2, aux = self._propensities(batch, users, items, logits)
        weights = self._weights_for(batch, p1, p2)
        lam = torch.tensor(cfg.negatives.space_weights, device=logits.device)
        loss, means = gmm_loss(logits[:, 0], logits[:, 1:], batch.neg_space, batch.neg_valid, lam, weights)
        self.core.space_loss = self.core.space_loss + means
        if cfg.l2 > 0:
            loss = loss + cfg.l2 * model.id_l2(batch.requests.user_id, batch.pos_items, catalogue)
        if cfg.dat:
            assert isinstance(model, DATTower)
            a_u, a_i = model.user_aug(batch.requests.user_id), model.item_aug(batch.pos_items)
            target_i, target_u = model.normalise(g[:, 0]).detach(), model.normalise(f).detach()
            amm = (a_u - target_i).pow(2).sum(-1).mean() + (a_i - target_u).pow(2).sum(-1).mean()
            aux = aux + cfg.amm_weight * amm
            self._aux[4] += float(amm.detach())
        self._steps += 1
        return loss + aux

    def _propensities(
        self, batch: Batch, users: torch.Tensor, items: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(p1 [P, N], p2 [P, N], aux)``: the negatives' propensities and (``nsdn``) the heads' weighted losses."""
        cfg = self.config
        aux = torch.zeros((), device=logits.device)
        if cfg.propensity == "one":
            p1 = p2 = torch.ones_like(logits[:, 1:])
        elif cfg.propensity == "logged":
            rows = batch.rows.unsqueeze(1).expand_as(batch.neg_slot)
            slot = batch.neg_slot.clamp_min(0)
            p1 = self._spaces.recall_prob[rows, slot]
            p2 = self._spaces.expose_prob[rows, slot]
        else:
            space = torch.cat([torch.full((1,), -1, device=logits.device), batch.neg_space])  # -1: the click
            er, re = self._head_logits(users, items)
            valid = torch.cat([torch.ones_like(batch.neg_valid[:, :1]), batch.neg_valid], dim=1)
            recalled = (space != 2).unsqueeze(0).expand_as(valid)  # click, A and B were recalled; C was not
            exposed = (space <= 0).unsqueeze(0).expand_as(valid)  # click and A were exposed
            loss_er, loss_re = nsdn_loss(er, recalled, valid, re, exposed, valid & recalled)
            aux = cfg.lambda_er * loss_er + cfg.lambda_re * loss_re
            p1, p2 = torch.sigmoid(er[:, 1:]).detach(), torch.sigmoid(re[:, 1:]).detach()
            self._aux[:4] += torch.stack([loss_er.detach(), loss_re.detach(), p1.mean(), p2.mean()]).cpu()
        return p1, p2, aux

    def _extra_diagnostics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        a = torch.cat(self._weights["a"]) if self._weights["a"] else torch.zeros(0)
        b = torch.cat(self._weights["b"]) if self._weights["b"] else torch.zeros(0)
        out.update(weight_quantiles(torch.cat([a, b])))
        out.update(weight_quantiles(a, "weight_a"))
        out.update(weight_quantiles(b, "weight_b"))
        out["clip_share_a"] = float(self._clipped[0]) / max(a.numel(), 1)
        out["clip_share_b"] = float(self._clipped[1]) / max(b.numel(), 1)
        steps = max(self._steps, 1)
        if self.config.propensity == "nsdn":
            for i, key in enumerate(("loss_er", "loss_re", "p1_mean", "p2_mean")):
                out[key] = float(self._aux[i]) / steps if self._steps else math.nan
        if self.config.dat:
            out["loss_amm"] = float(self._aux[4]) / steps if self._steps else math.nan
        return out

    def extra_state(self) -> dict[str, Any]:
        """The NSDN heads, saved beside the GMM's weights."""
        return {"heads": self.heads.state_dict()} if self.heads is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the NSDN heads."""
        if self.heads is not None:
            self.heads.load_state_dict(state["heads"])


register_variant(
    "uma2-dat", UMA2, UMA2Config(dat=True), "UMA² (DAT): the dual augmented two tower as GMM, with NSDN inverse-propensity weights."
)
register_variant(
    "uma2-oracle-p", UMA2, UMA2Config(propensity="logged"),
    "UMA²-oracle-p: UMA² weighted by the logged true propensities instead of the NSDN heads (evaluation device).",
)  # fmt: skip
