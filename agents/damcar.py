"""DAMCAR: domain adaptation against sample selection bias in cascade recommendation (algorithms.md §5; ACM MM 2024).

Per round (Algorithm 1, extended to rounds):

1. **Target-domain generation** (TDG, :mod:`agents.backbone.random_walk`): random walks with restart
   on the exposure graph weighted by watch time give ``S_sam``, the never-exposed items each user's
   walks visit at least as often as the user's exposed items (paper Eq. 1-3).
2. **Robust pseudo-labels**: the label generator ``ADA`` (encoder ``E`` over the concatenated user
   and item features, ``g`` on the source path only, label head ``Φ``, domain head ``Ψ`` behind the
   GRL) minimises, per source minibatch paired with an equal-size target batch,

   ``L_total = L_ce + λ1·L_sup + λ2·L_dom`` with
   ``L_ce = mean_{S_exp} BCE(Φ(g(z^s)), y)``,
   ``L_sup = mean_{S_sam} BCE(Φ(z^t), stopgrad(Φ_tea(z^t_tea)))`` (the EMA teacher, α = 0.99),
   ``L_dom = −mean_{S_exp} log Ψ(g(z^s)) − mean_{S_sam} log(1 − Ψ(z^t))``;
   the GRL (κ = 1) makes the encoder ascend ``L_dom`` (the paper's ``− λ2·L_dom``). The teacher is
   re-copied from the student at the start of every round and EMA-updated after every step.
3. **Modified pseudo-labels** (paper Eq. 12): ``y_mpl = 1`` for exposed positives, the ADA label
   ``ŷ`` otherwise (exposed negatives included); ``ŷ^s = Φ(g(z))`` on ``S_exp``, ``ŷ^t = Φ(z)`` on ``S_sam``.
4. **Hybrid training** of the DSSM retriever on ``S_T = S_exp ∪ S_sam`` (warm-started):
   ``L_train = mean_{S_T} BCE(σ(s), y_mpl) + λ3·mean_{S_T} (Rank(u, i) − σ(s))²``, ``Rank`` one frozen
   ranker snapshot (the same for every target of the fit, §16.7).

Switches for the public code's behaviour (defaults follow the paper): ``code_compat_domain_loss``
(the code's target-side domain term carries no gradient), ``label_path = "code"`` (the code labels
every sample through the source path ``Φ(g(z))``). The walk follows §5(c)'s DEFAULT, the code's
H walks x R hops (``walk_mode = "paper"``: H hops in all, restarting every R).

Domain head ``Ψ`` (a stated departure, issue 13): the paper's and the code's ``Ψ`` is one linear
layer without bias. In this world that adversary never acts: the first AdaGrad steps let the
three-layer encoder and ``g`` overshoot (the domain accuracy falls to ~0.1, ``L_dom`` ~10), the
linear head then recovers and keeps a growing margin (accuracy 1.0, ``L_dom`` -> 0.01 in every later
fit) while the encoder's AdaGrad step sizes have shrunk, so the alignment the pseudo-labels rely on
never happens (and ``Φ(z^t)`` drifts to ~0.85 on never-exposed pairs). With one hidden layer of 64
and a bias (AR's 1-2 layer MLP, §4.2) the classifier keeps up and the game stays near confusion.
``domain_hidden = ()``, ``domain_bias = False`` restore the paper's head. The fit reports the
adversary's accuracy during training and, after it, how far the source and target features sit
apart (:meth:`DAMCAR._alignment`).

Distillation target ``Rank``: by default the agent's own ranker of the platform's kind, trained on
the agent's ``label`` (:mod:`agents.backbone.label_teacher`); ``teacher_source = "platform"`` uses the
platform snapshot, which is trained on clicks.

Ablations (paper §5.3), registered as variants of the one class: ``damcar-no-tdg`` (uniform
never-exposed pairs, same count per user), ``damcar-no-ema`` (no teacher, ``λ1 = 0``),
``damcar-no-mpl`` (``y_mpl = ŷ`` everywhere, exposed positives included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from agents.backbone.adapt import (
    DomainClassifier,
    EMATeacher,
    domain_accuracy,
    domain_loss,
    probe_accuracy,
    projection_summary,
    standardised_gap,
)  # fmt: skip
from agents.backbone.exposure import ExposureCore, ExposureServing
from agents.backbone.label_teacher import fitted_teacher, make_teacher
from agents.backbone.training import Exposures, TrainConfig, check_ranges, exposure_data, fit_generator, run_epochs
from agents.backbone.two_tower import TowerConfig, TwoTower, evaluating, init_parameters
from agents.backbone.unexposed import (
    TargetDomainConfig,
    concat,
    last_epoch_mean,
    loss_summary,
    target_domain,
    teacher_scores,
    tiled,
    with_labels,
)  # fmt: skip
from agents.bc import BC_TOWER, bc_loss
from agents.registry import register, register_variant
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.nn import mlp
from simulator.rng import stream_seed
from simulator.types import Catalogue, RequestBatch

ALIGN_SAMPLE = 2048  # pairs per domain in the after-fit alignment diagnostics
DIAGNOSTICS = (
    "loss", "loss_first_epoch", "ada_loss", "domain_accuracy", "domain_accuracy_early", "domain_loss", "input_gap", "feature_gap",
    "probe_input", "probe_features", *(f"pc{k}_{side}_{stat}" for k in (1, 2) for side in ("source", "target") for stat in ("mean", "sd")),
    "pseudo_label_source", "pseudo_label_target", "teacher_mean", "teacher_loss", "target_share",
)  # fmt: skip


@dataclass(frozen=True)
class DAMCARConfig:
    """DAMCAR hyperparameters: BC's (the retriever), the TDG walk's and the label generator's."""

    label: Literal["clicked", "finished"] = "clicked"
    """Positive label of the exposures: ``clicked`` or ``finished``."""
    l2: float = 1e-5
    """L2 weight on the embedding rows used in each batch."""
    tower: TowerConfig = BC_TOWER
    """BC's towers (override keys ``hidden``, ``gamma``, ...)."""
    train: TrainConfig = TrainConfig()
    """Optimiser and epochs (override keys ``lr``, ``epochs``, ...)."""
    target: TargetDomainConfig = TargetDomainConfig(sampler="walk")
    """The target domain: TDG's walk (``sampler = "uniform"``: the ``w/o TDG`` ablation); override keys
    ``sampler``, ``radius``, ``visits``, ``walk_mode``, ``teacher_block``."""
    lambda_sup: float = 0.5
    """``λ1`` on the EMA self-distillation ``L_sup`` (paper grid 0.5-0.9; code 0.5). 0: no teacher (``w/o EMA``)."""
    lambda_dom: float = 0.2
    """``λ2`` on ``L_dom`` (grid 0.1-0.5; code 0.2)."""
    lambda_con: float = 0.3
    """``λ3`` on the ranker-consistency term ``L_con`` (grid 0.1-0.5; code 0.3)."""
    ema_alpha: float = 0.99
    """EMA smoothing ``α`` of the teacher (paper: 0.99 best of 0.9-0.999)."""
    mpl: bool = True
    """Modified pseudo-labels: keep exposed positives at 1 (False: the ``w/o MPL`` ablation)."""
    code_compat_domain_loss: bool = False
    """Reproduce the public code's domain loss (no gradient from the target side)."""
    label_path: Literal["paper", "code"] = "paper"
    """Pseudo-labels of ``S_sam``: ``paper`` target path ``Φ(z)``; ``code`` source path ``Φ(g(z))``."""
    encoder_hidden: tuple[int, ...] = (300, 200, 100)
    """Encoder ``E`` (paper: 300-200-100, ReLU)."""
    transform_hidden: tuple[int, ...] = (128, 100)
    """``g`` (paper: 128-100, ReLU); its last size must equal the encoder's."""
    ada_id_dim: int = 16
    """Id / categorical embedding size of the label generator's inputs."""
    ada_epochs: int | None = None
    """Label-generator epochs per round (None: as the retriever's; code: 3)."""
    domain_hidden: tuple[int, ...] = (64,)
    """Hidden sizes of the domain head ``Ψ`` (``()``: the paper's / code's single linear layer; see the module docstring)."""
    domain_bias: bool = True
    """Bias on ``Ψ``'s output layer (the code: none)."""

    def __post_init__(self) -> None:
        check_ranges(self)
        for name in ("lambda_sup", "lambda_dom", "lambda_con"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha: must be in [0, 1], got {self.ema_alpha!r}")
        if not self.encoder_hidden or not self.transform_hidden or self.encoder_hidden[-1] != self.transform_hidden[-1]:
            got = f"{self.transform_hidden} vs {self.encoder_hidden}"
            raise ValueError(f"transform_hidden: last size must equal encoder_hidden's, got {got}")
        if self.ada_id_dim < 1 or (self.ada_epochs is not None and self.ada_epochs < 0):
            raise ValueError("ada_id_dim must be >= 1 and ada_epochs >= 0")


class LabelGenerator(nn.Module):
    """DAMCAR's ADA network: ``z = E([user features; item features])``, ``g``, ``Φ``, ``Ψ(GRL(·))``.

    The input features (id, category, creator, domain and entry embeddings, standardised profile,
    modality and popularity features) are those of a :class:`TwoTower` whose own MLPs are dropped.
    """

    def __init__(self, ctx: AgentContext, cfg: DAMCARConfig, seed: int) -> None:
        super().__init__()
        tower = TowerConfig(embedding_dim=1, id_dim=cfg.ada_id_dim, context_dim=cfg.tower.context_dim, hidden=(), bias=False)
        self.features = TwoTower(ctx, tower, seed)
        in_dim = self.features.user_in + self.features.item_in
        self.features.user_mlp, self.features.item_mlp = nn.Identity(), nn.Identity()
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.device("meta"):  # no global RNG draws; initialised from `gen` below
            heads = nn.ModuleList([
                mlp([in_dim, *cfg.encoder_hidden], last_activation=True),
                mlp([cfg.encoder_hidden[-1], *cfg.transform_hidden], last_activation=True),
                nn.Linear(cfg.encoder_hidden[-1], 1, bias=False),
            ])  # fmt: skip
        heads.to_empty(device=ctx.device)
        init_parameters(heads, gen, 0.1)
        self.encoder, self.transform, self.label = heads
        self.domain = DomainClassifier(cfg.encoder_hidden[-1], cfg.domain_hidden, cfg.domain_bias, gen).to(ctx.device)

    def encode(self, requests: RequestBatch, catalogue: Catalogue, items: torch.Tensor) -> torch.Tensor:
        """``z [n, 100]`` of the pairs (``requests [n]``, ``items [n]``)."""
        x = torch.cat([self.features.user_features(requests), self.features.item_features(catalogue, items)], dim=1)
        return self.encoder(x)

    def source_label(self, z: torch.Tensor) -> torch.Tensor:
        """Source path label logit ``Φ(g(z))``."""
        return self.label(self.transform(z)).squeeze(-1)

    def target_label(self, z: torch.Tensor) -> torch.Tensor:
        """Target path label logit ``Φ(z)``."""
        return self.label(z).squeeze(-1)


def ada_loss(
    y_src: torch.Tensor,
    labels: torch.Tensor,
    y_tgt: torch.Tensor,
    y_teacher: torch.Tensor | None,
    d_src: torch.Tensor,
    d_tgt: torch.Tensor,
    lambda_sup: float,
    lambda_dom: float,
    target_grad: bool = True,
) -> torch.Tensor:
    """``L_ce + λ1·L_sup + λ2·L_dom`` (paper Eq. 6, 8, 10, 11; the GRL supplies the minus sign of Eq. 11).

    Args:
        y_src: ``[n_s]`` source label logits ``Φ(g(z^s))``; labels: ``[n_s]`` exposure labels.
        y_tgt: ``[n_t]`` target label logits ``Φ(z^t)``; y_teacher: ``[n_t]`` the teacher's probabilities (None: no ``L_sup``).
        d_src, d_tgt: domain logits of the two sides (behind the GRL).
        target_grad: False = the public code's domain loss (target side without gradient).
    """
    loss = F.binary_cross_entropy_with_logits(y_src, labels) + lambda_dom * domain_loss(d_src, d_tgt, target_grad)
    if y_teacher is not None and lambda_sup > 0:
        loss = loss + lambda_sup * F.binary_cross_entropy_with_logits(y_tgt, y_teacher.detach())
    return loss


def modified_pseudo_labels(pseudo: torch.Tensor, exposed_positive: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """Paper Eq. 12: ``y_mpl = 1`` on exposed positives, the pseudo-label ``ŷ`` elsewhere (``ŷ`` everywhere when disabled)."""
    return torch.where(exposed_positive, torch.ones_like(pseudo), pseudo) if enabled else pseudo


def hybrid_loss(
    logits: torch.Tensor, y_mpl: torch.Tensor, rank: torch.Tensor, lambda_con: float, l2_term: torch.Tensor | None = None, l2: float = 0.0
) -> torch.Tensor:
    """``L_train = mean BCE(σ(s), y_mpl) + λ3·mean (Rank − σ(s))²`` (+ embedding L2) (paper Eq. 14, 16, 17)."""
    return bc_loss(logits, y_mpl, l2_term, l2) + lambda_con * (rank - torch.sigmoid(logits)).pow(2).mean()


@register("damcar", config=DAMCARConfig)
class DAMCAR(ExposureServing):
    """DAMCAR: random-walk target domain, adversarial EMA-teacher pseudo-labels, hybrid training with ranker distillation."""

    def __init__(self, ctx: AgentContext, config: DAMCARConfig | None = None, name: str = "damcar") -> None:
        self.ctx, self.name = ctx, name
        self.config = cfg = config or DAMCARConfig()
        self.core = ExposureCore(ctx, cfg.tower, cfg.train, name)
        self.ada = LabelGenerator(ctx, cfg, stream_seed(ctx.seed, f"{name}/ada"))
        self.core.extra["ada"] = self.ada
        self.core.extra_optimisers["ada"] = cfg.train.optimiser(self.ada.parameters(), ctx)
        self.teacher = EMATeacher(self.ada, cfg.ema_alpha) if cfg.lambda_sup > 0 else None
        self.label_teacher = make_teacher(ctx, cfg.target, name, self.core)

    def fit(self, view: TrainingView) -> dict[str, float]:
        """TDG -> ADA with the EMA teacher -> modified pseudo-labels -> hybrid training.

        Returns:
            ``loss``, ``loss_first_epoch``, ``examples``, ``ada_loss``, ``domain_accuracy`` (the adversary's accuracy
            over the last epoch, during training), ``domain_accuracy_early`` (first quarter of the steps), ``domain_loss``,
            the alignment diagnostics of :meth:`_alignment`, ``pseudo_label_source`` (mean ``y_mpl`` on ``S_exp``),
            ``pseudo_label_target`` (mean ``ŷ^t``), ``teacher_mean``, ``teacher_loss``, ``target_pairs``, ``target_users``,
            ``target_share`` (``|S_sam| / |S_T|``).
        """
        cfg, device = self.config, self.ctx.device
        self.core.fits += 1
        gen = fit_generator(self.ctx, self.name, view.round)
        src = exposure_data(view, cfg.label, device)
        tgt, info = target_domain(view, cfg.target, gen, device)
        if len(src) == 0 or len(tgt) == 0:
            return {**dict.fromkeys(DIAGNOSTICS, math.nan), "examples": float(len(src)), **info}
        ranker, teacher_loss = fitted_teacher(self.label_teacher, view, cfg.label)
        catalogue = view.catalogue.to(device)
        ada_info = self._fit_ada(src, tgt, catalogue, gen)
        y_src, y_tgt = self._pseudo_labels(src, tgt, catalogue)
        y_src = modified_pseudo_labels(y_src, src.labels > 0.5, cfg.mpl)
        train = concat(with_labels(src, y_src), with_labels(tgt, y_tgt))
        rank = teacher_scores(ranker, train, cfg.target.teacher_block)
        losses = self.core.train_pairs(
            train, gen, lambda lg, t, l2t, idx: hybrid_loss(lg, t, rank[idx], cfg.lambda_con, l2t, cfg.l2), catalogue
        )
        return {
            **loss_summary(losses),
            "examples": float(len(train)),
            **ada_info,
            **self._alignment(src, tgt, catalogue, gen),
            "pseudo_label_source": float(y_src.mean()),
            "pseudo_label_target": float(y_tgt.mean()),
            "teacher_mean": float(rank.mean()),
            "teacher_loss": teacher_loss,
            "target_share": len(tgt) / len(train),
            **info,
        }

    def _fit_ada(self, src: Exposures, tgt: Exposures, catalogue: Catalogue, gen: torch.Generator) -> dict[str, float]:
        """The label generator's epochs: each source minibatch with an equal-size target batch (tiled ``S_sam``)."""
        cfg, ada = self.config, self.ada
        if self.teacher is not None:
            self.teacher.reset(ada)  # re-copied every round (§5(d))
        tgt_of = tiled(len(src), len(tgt), gen, self.ctx.device)
        acc: list[torch.Tensor] = []
        dom: list[torch.Tensor] = []

        def step_loss(idx: torch.Tensor) -> torch.Tensor:
            s_req, s_items, labels = src.batch(idx)
            t_req, t_items, _ = tgt.batch(tgt_of[idx])
            z_s, z_t = ada.encode(s_req, catalogue, s_items), ada.encode(t_req, catalogue, t_items)
            h_s = ada.transform(z_s)
            d_s, d_t = ada.domain(h_s), ada.domain(z_t)
            y_teacher = None
            if self.teacher is not None:
                with torch.no_grad():
                    tea = self.teacher.module
                    assert isinstance(tea, LabelGenerator)
                    y_teacher = torch.sigmoid(tea.target_label(tea.encode(t_req, catalogue, t_items)))
            acc.append(domain_accuracy(d_s.detach(), d_t.detach()))
            dom.append(domain_loss(d_s.detach(), d_t.detach()))
            return ada_loss(
                ada.label(h_s).squeeze(-1), labels, ada.target_label(z_t), y_teacher, d_s, d_t,
                cfg.lambda_sup, cfg.lambda_dom, not cfg.code_compat_domain_loss,
            )  # fmt: skip

        ada.train()
        epochs = cfg.ada_epochs if cfg.ada_epochs is not None else self.core.epochs()
        after = partial(self.teacher.update, ada) if self.teacher is not None else None
        optimiser = self.core.extra_optimisers["ada"]
        losses = run_epochs(len(src), epochs, self.core.batch_size(), gen, self.ctx.device, optimiser, step_loss, f"{self.name}/ada", after)
        early = max(1, len(acc) // 4)
        return {
            "ada_loss": losses[-1] if losses else math.nan,
            "domain_accuracy": last_epoch_mean(acc, len(src), self.core.batch_size()),
            "domain_accuracy_early": float(torch.stack(acc[:early]).mean()) if acc else math.nan,
            "domain_loss": last_epoch_mean(dom, len(src), self.core.batch_size()),
        }

    def _alignment(self, src: Exposures, tgt: Exposures, catalogue: Catalogue, gen: torch.Generator) -> dict[str, float]:
        """Source vs target after the fit, on up to ``ALIGN_SAMPLE`` pairs of each (eval mode).

        ``input_gap`` / ``feature_gap``: :func:`standardised_gap` of the raw inputs and of what ``Ψ`` sees
        (``g(z^s)`` vs ``z^t``); ``probe_input`` / ``probe_features``: a fresh linear probe's held-out domain
        accuracy on them; ``pc*``: both feature samples on their first two principal axes.
        """
        ada, sides = self.ada, []
        with evaluating(ada), torch.no_grad():
            for data in (src, tgt):
                idx = torch.randperm(len(data), generator=gen)[:ALIGN_SAMPLE].to(data.row.device)
                req, items, _ = data.batch(idx)
                x = torch.cat([ada.features.user_features(req), ada.features.item_features(catalogue, items)], dim=1)
                sides.append((x, ada.encoder(x)))
        (x_s, z_s), (x_t, z_t) = sides
        h_s = ada.transform(z_s).detach()
        return {
            "input_gap": standardised_gap(x_s, x_t),
            "feature_gap": standardised_gap(h_s, z_t),
            "probe_input": probe_accuracy(x_s, x_t),
            "probe_features": probe_accuracy(h_s, z_t),
            **projection_summary(h_s, z_t),
        }

    def _pseudo_labels(self, src: Exposures, tgt: Exposures, catalogue: Catalogue) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ŷ^s on S_exp via Φ(g(z)), ŷ^t on S_sam via Φ(z) (paper) or Φ(g(z)) (code))``, eval mode."""
        ada, block = self.ada, self.config.target.teacher_block
        out = []
        with evaluating(ada):
            for data, path in ((src, "source"), (tgt, "source" if self.config.label_path == "code" else "target")):
                parts = []
                for s in range(0, len(data), block):
                    idx = torch.arange(s, min(s + block, len(data)), device=data.row.device)
                    req, items, _ = data.batch(idx)
                    z = ada.encode(req, catalogue, items)
                    parts.append(torch.sigmoid(ada.source_label(z) if path == "source" else ada.target_label(z)))
                out.append(torch.cat(parts))
        return out[0], out[1]


register_variant(
    "damcar-no-tdg", DAMCAR, DAMCARConfig(target=TargetDomainConfig(sampler="uniform")),
    "DAMCAR w/o TDG: uniform never-exposed pairs (same count per user) as the target domain.",
)  # fmt: skip
register_variant("damcar-no-ema", DAMCAR, DAMCARConfig(lambda_sup=0.0), "DAMCAR w/o EMA: no teacher, no self-distillation term.")
register_variant("damcar-no-mpl", DAMCAR, DAMCARConfig(mpl=False), "DAMCAR w/o MPL: pseudo-labels everywhere, exposed positives included.")
register_variant(
    "damcar-linear-psi", DAMCAR, DAMCARConfig(domain_hidden=(), domain_bias=False),
    "DAMCAR with the paper's domain head (one linear layer, no bias): the adversary that sat at accuracy 1.0.",
)  # fmt: skip
