"""ECAT: entire-space continual adaptive transfer into a mini-app (algorithms.md §15; arXiv 2407.02542).

Only the abstract is public, so everything below past its two sentences is **our reading**:
"a two-stage [sample transfer] that realizes a coarse-to-fine process ... an initial selection through
a graph-guided method, followed by a fine-grained selection using domain adaptation", and "an
adaptive knowledge distillation method for continually transferring the representations from a model
that is well-trained on the entire space dataset ... while avoiding negative migration".

The agent holds two two-towers. The **entire-space model** is BC (§2) on every exposure of the window,
both domains, warm-started each round (continual); it serves the main feed (domain 0). The **target
model** serves the mini-app (``target_domain``, 1) and minimises, per round (warm-started),

``L = (1/n_T) Σ_T BCE(σ(s), y) + ν·(1/n_S) Σ_S ω·BCE(σ(s), y) + β·L_KD + λ·R``

over the target exposures ``T`` and the source exposures ``S`` kept by the coarse-to-fine selection
(:mod:`agents.ecat_parts`: the graph stage, then ``ω = D/(1−D)`` of a domain classifier on the
entire-space model's features, clipped to ``[0, 5]``, dropped below ``ω_min``), and

``L_KD = (1/n_T) Σ_T π·( ||n(W f_T(u)) − n(f_S(u))||² + ||n(W g_T(i)) − n(g_S(i))||² )``

with ``n`` the L2 normalisation (our reading: the teacher and the cosine student live on different
scales), ``W`` a learnt projection and the gate ``π = σ(−k·(ℓ_teacher − ℓ_student))`` (§15 DEFAULT:
distil only where the teacher's loss on the target label is lower). The teacher ``(f_S, g_S)`` is the
entire-space model (``teacher = "entire"``) or the platform ranker's snapshot, refitted every round
on both domains (``teacher = "ranker"``: its summed request and item field embeddings, whose inner
product is its FM cross term; a ranker without them falls back to the entire-space model, logged).

Ablations: ``ecat-no-graph`` (every source sample enters the DA stage), ``ecat-no-da`` (``ω = 1``
on the graph-kept source), ``ecat-no-kd`` (``β = 0``), ``ecat-no-gate`` (``π = 1``),
``ecat-target-only`` (``ν = β = 0``: the target model on mini-app exposures alone, §15's baseline);
``ecat-ranker`` distils from the platform ranker.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from agents.backbone.adapt import DomainClassifier
from agents.backbone.exposure import ExposureCore
from agents.backbone.training import Exposures, TrainConfig, check_ranges, exposure_data, fit_generator, make_optimiser, run_epochs
from agents.backbone.two_tower import TowerConfig, evaluating, init_parameters
from agents.backbone.unexposed import concat
from agents.bc import BC_TOWER, fit_bc
from agents.ecat_parts import Teacher, density_ratio, entire_outputs, graph_select, ranker_teacher, selection_features
from agents.registry import register, register_variant
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.rng import stream_seed
from simulator.types import Catalogue, RequestBatch


@dataclass(frozen=True)
class ECATConfig:
    """ECAT hyperparameters (none published; the ranges are §15(e)'s)."""

    label: Literal["clicked", "finished"] = "clicked"
    """Positive label: ``clicked`` or ``finished``."""
    l2: float = 1e-5
    """L2 weight on the embedding rows used in each batch."""
    tower: TowerConfig = BC_TOWER
    """Both towers' shape (override keys ``hidden``, ``gamma``, ...)."""
    train: TrainConfig = TrainConfig()
    """Optimiser and epochs of both models (override keys ``lr``, ``epochs``, ...)."""
    target_domain: int = 1
    """The request domain the target model serves (1: the mini-app)."""
    graph_hops: int = 2
    """Graph stage radius (§15: 2); -1 keeps every source sample (``ecat-no-graph``)."""
    domain_adapt: bool = True
    """The DA stage; False gives every graph-kept source sample ``ω = 1`` (``ecat-no-da``)."""
    disc_hidden: tuple[int, ...] = (32,)
    """Hidden sizes of the domain classifier ``D``."""
    disc_epochs: int = 10
    """Epochs of ``D`` per round (warm-started)."""
    disc_lr: float = 1e-2
    """Adam learning rate of ``D``."""
    omega_clip: float = 5.0
    """Upper clip of ``ω`` (§15: 5)."""
    omega_min: float = 0.2
    """Source samples with ``ω`` below it are dropped (§15: 0.2)."""
    nu: float = 0.5
    """``ν`` on the weighted source term (§15 grid 0.1, 0.5, 1)."""
    beta: float = 0.1
    """``β`` on ``L_KD`` (§15 grid 0.01, 0.1, 1)."""
    gate: Literal["loss", "open"] = "loss"
    """``loss``: ``π = σ(−k·(ℓ_teacher − ℓ_student))``; ``open``: ``π = 1`` (``ecat-no-gate``)."""
    gate_k: float = 5.0
    """Sharpness ``k`` of the gate."""
    teacher: Literal["entire", "ranker"] = "entire"
    """Where ``f_S, g_S`` come from: the agent's entire-space model or the platform ranker's snapshot."""
    teacher_dim: int = 16
    """Size of the ranker's representations (``cascade.ranker_dim``) for ``teacher = "ranker"``."""

    def __post_init__(self) -> None:
        check_ranges(self)
        bad = {
            "target_domain": self.target_domain not in (0, 1), "graph_hops": self.graph_hops < -1, "disc_epochs": self.disc_epochs < 0,
            "disc_lr": self.disc_lr <= 0, "omega_clip": self.omega_clip <= 0, "omega_min": self.omega_min < 0, "nu": self.nu < 0,
            "beta": self.beta < 0, "gate_k": self.gate_k <= 0, "teacher_dim": self.teacher_dim < 1,
        }  # fmt: skip
        for name, wrong in bad.items():
            if wrong:
                raise ValueError(f"{name}: out of range, got {getattr(self, name)!r} (see the ECATConfig docstring)")


# --- losses ---------------------------------------------------------------------------------------


def transfer_weights(n_target: int, omega: torch.Tensor, nu: float) -> torch.Tensor:
    """``[n_T + n_S]`` per-example weights ``c`` so that ``mean(c·BCE)`` over all ``N`` examples is the target loss.

    ``c = N / n_T`` on the target rows (first), ``ν·ω·N / n_S`` on the source rows (``n_S = len(omega)``).
    """
    n = n_target + len(omega)
    tgt = torch.full((n_target,), n / max(n_target, 1), device=omega.device)
    return torch.cat([tgt, nu * omega * n / max(len(omega), 1)])


def ecat_target_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean(c·BCE(σ(s), y))``: on the full set, ``mean_T BCE + ν·mean_S ω·BCE`` (weights from :func:`transfer_weights`)."""
    return (weights * F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")).mean()


def gate(loss_teacher: torch.Tensor, loss_student: torch.Tensor, k: float, kind: Literal["loss", "open"] = "loss") -> torch.Tensor:
    """``π = σ(−k·(ℓ_teacher − ℓ_student))`` (detached), or ones for ``kind = "open"``."""
    if kind == "open":
        return torch.ones_like(loss_teacher)
    return torch.sigmoid(-k * (loss_teacher - loss_student)).detach()


def kd_loss(
    f_proj: torch.Tensor, f_teacher: torch.Tensor, g_proj: torch.Tensor, g_teacher: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """``mean(w·(||n(W f_T) − n(f_S)||² + ||n(W g_T) − n(g_S)||²))``, teachers detached, ``n`` the L2 normalisation."""
    d_f = (F.normalize(f_proj, dim=-1) - F.normalize(f_teacher.detach(), dim=-1)).pow(2).sum(-1)
    d_g = (F.normalize(g_proj, dim=-1) - F.normalize(g_teacher.detach(), dim=-1)).pow(2).sum(-1)
    return (weight * (d_f + d_g)).mean()


def disc_loss(logits: torch.Tensor, is_target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean(w·BCE(D, 1[target]))``; with ``w = N / (2 n_class)`` on the full set: ``½[mean_T BCE(D,1) + mean_S BCE(D,0)]``."""
    return (weights * F.binary_cross_entropy_with_logits(logits, is_target.float(), reduction="none")).mean()


# --- the agent ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The round's transfer set: the target rows first, then the kept source rows, with the diagnostics."""

    data: Exposures
    n_target: int
    omega: torch.Tensor  # [n_S] weights of the kept source rows
    info: dict[str, float]


@register("ecat", config=ECATConfig)
class ECAT:
    """ECAT (our reading): a mini-app model fed by coarse-to-fine source selection and gated KD from an entire-space model.

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default :class:`ECATConfig`).
        name: the registered name (seeds the init and shuffling streams).

    Attributes:
        entire: the entire-space model (serves the other domain; the default teacher).
        core: the target model (serves ``target_domain``), with ``extra["proj"]`` = ``W`` and ``extra["disc"]`` = ``D``.
        last_source: ``(item_ids, omega)`` of the last fit's DA-stage source rows (diagnostics, not saved).
        last_gate: ``(item_ids, pi)`` of the last fit's target rows under the trained model (diagnostics, not saved).
    """

    def __init__(self, ctx: AgentContext, config: ECATConfig | None = None, name: str = "ecat") -> None:
        self.ctx, self.name = ctx, name
        self.config = cfg = config or ECATConfig()
        self.entire = ExposureCore(ctx, cfg.tower, cfg.train, f"{name}/entire")
        self.core = ExposureCore(ctx, cfg.tower, cfg.train, name)
        d = self.core.model.cfg.dim
        gen = torch.Generator().manual_seed(stream_seed(ctx.seed, f"{name}/heads"))
        with torch.device("meta"):  # no global RNG draws; initialised from `gen`
            proj = nn.Linear(d, cfg.teacher_dim if cfg.teacher == "ranker" else d, bias=False)
        proj.to_empty(device="cpu")
        init_parameters(proj, gen, 0.1)
        disc = DomainClassifier(2 * d + 1, cfg.disc_hidden, True, gen).to(ctx.device)
        self.core.extra = {"proj": proj.to(ctx.device), "disc": disc}
        params = itertools.chain(self.core.model.parameters(), proj.parameters())
        self.core.optimiser = cfg.train.optimiser(params, ctx)  # W trains with the target model
        self.core.extra_optimisers = {"disc": make_optimiser(disc.parameters(), "adam", cfg.disc_lr)}
        self.last_source: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_gate: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- fit ----------------------------------------------------------------------------------

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Refit the entire-space model, select the source, fit ``D``, train the target model (all warm-started).

        Returns:
            the entire-space fit's ``loss`` as ``entire_loss``; ``loss``, ``loss_first_epoch``, ``target_examples``,
            ``source_examples``, ``graph_kept_share``, ``da_kept_share``, ``omega_p50/p90/max``, ``disc_accuracy``,
            ``gate_mean``, ``kd_loss``, ``teacher_ranker``.
        """
        entire = fit_bc(self.entire, view, self.config.label, self.config.l2)
        sel = self.select(view)
        info = {"entire_loss": entire["loss"], **sel.info}
        self.core.fits += 1
        if sel.n_target == 0:
            nan = {k: math.nan for k in ("loss", "loss_first_epoch", "gate_mean", "kd_loss")}
            return {**info, **nan, "teacher_ranker": 0.0}
        return {**info, **self.train_target(view, sel)}

    def select(self, view: TrainingView) -> Selection:
        """The graph stage then the DA stage over the window's source exposures (records :attr:`last_source`)."""
        cfg, device = self.config, self.ctx.device
        data = exposure_data(view, cfg.label, device)
        domain = data.requests.domain[data.row]
        is_t, users = domain == cfg.target_domain, data.requests.user_id[data.row]
        pos = data.labels > 0
        kept = ~is_t & (cfg.nu > 0) & graph_select(
            users, data.item_ids, users[pos], data.item_ids[pos], users[pos & is_t], data.item_ids[pos & is_t],
            view.n_users, view.n_items, cfg.graph_hops,
        )  # fmt: skip
        tgt, src = _subset(data, is_t), _subset(data, kept)
        omega, disc_acc = self.adapt(view, tgt, src)
        self.last_source = (src.item_ids, omega)
        keep = omega > 0
        n_src = int((~is_t).sum())
        info = {
            "target_examples": float(len(tgt)), "source_examples": float(int(keep.sum())),
            "graph_kept_share": len(src) / n_src if n_src else math.nan,
            "da_kept_share": float(keep.float().mean()) if len(src) else math.nan,
            "disc_accuracy": disc_acc, **_quantiles(omega[keep]),
        }  # fmt: skip
        return Selection(concat(tgt, _subset(src, keep)), len(tgt), omega[keep], info)

    def adapt(self, view: TrainingView, tgt: Exposures, src: Exposures) -> tuple[torch.Tensor, float]:
        """``(ω [n_S], D's training accuracy)``: fit ``D`` (target 1, source 0) on the entire-space model's features."""
        cfg = self.config
        if not cfg.domain_adapt or len(tgt) == 0 or len(src) == 0 or cfg.disc_epochs == 0:
            return torch.ones(len(src), device=src.row.device), math.nan
        catalogue = view.catalogue.to(self.ctx.device)
        # every sample as if served in the target domain: the domain embedding alone would separate them
        as_target = replace(tgt.requests, domain=torch.full_like(tgt.requests.domain, cfg.target_domain))
        z = torch.cat(
            [selection_features(*entire_outputs(self.entire, replace(d, requests=as_target), catalogue)[:2], d.labels) for d in (tgt, src)]
        )
        z = (z - z.mean(0)) / z.std(0).clamp_min(1e-6)  # cosines of an early model are small: standardise each column
        is_t = torch.arange(len(z), device=z.device) < len(tgt)
        n = len(z)
        w = torch.where(is_t, 0.5 * n / len(tgt), 0.5 * n / len(src))
        disc = self.core.extra["disc"]
        disc.train()
        gen = fit_generator(self.ctx, f"{self.name}/disc", view.round)
        run_epochs(n, cfg.disc_epochs, self.core.batch_size(), gen, z.device, self.core.extra_optimisers["disc"],
                   lambda idx: disc_loss(disc(z[idx]), is_t[idx], w[idx]), f"{self.name}/disc")  # fmt: skip
        with evaluating(disc):
            logits = disc(z)
        acc = float(((logits > 0) == is_t).float().mean())
        return density_ratio(logits[~is_t], cfg.omega_clip, cfg.omega_min), acc

    def teacher(self, view: TrainingView, tgt: Exposures) -> Teacher:
        """``f_S, g_S, ℓ_teacher`` on the target rows: the ranker's (``teacher = "ranker"``, if it has them) or the entire model's."""
        if self.config.teacher == "ranker":
            found = ranker_teacher(view, tgt)
            if found is not None:
                if found.f.shape[1] != self.config.teacher_dim:
                    raise ValueError(
                        f"teacher_dim: must equal the ranker's representation size {found.f.shape[1]}, got {self.config.teacher_dim}"
                    )
                return found
        f, g, logits = entire_outputs(self.entire, tgt, view.catalogue.to(self.ctx.device))
        return Teacher(f, g, F.binary_cross_entropy_with_logits(logits, tgt.labels.float(), reduction="none"), False)

    def train_target(self, view: TrainingView, sel: Selection) -> dict[str, float]:
        """Warm-started epochs of ``L_T + β·L_KD`` on the selection (records :attr:`last_gate`)."""
        cfg, model, proj = self.config, self.core.model, self.core.extra["proj"]
        data, n_t, n = sel.data, sel.n_target, len(sel.data)
        catalogue = view.catalogue.to(self.ctx.device)
        teacher = self.teacher(view, _subset(data, torch.arange(n, device=data.row.device) < n_t))
        use_kd = cfg.beta > 0 and teacher.f.shape[1] == proj.out_features
        c = transfer_weights(n_t, sel.omega, cfg.nu)
        c_kd = torch.cat([torch.full((n_t,), n / n_t, device=c.device), torch.zeros(n - n_t, device=c.device)])
        pad = torch.zeros(n - n_t, teacher.f.shape[1], device=c.device)
        f_s, g_s = torch.cat([teacher.f, pad]), torch.cat([teacher.g, pad])
        l_tea = torch.cat([teacher.loss, torch.zeros(n - n_t, device=c.device)])
        kd_parts: list[torch.Tensor] = []

        def step(idx: torch.Tensor) -> torch.Tensor:
            req, items, y = data.batch(idx)
            f, g = model.user_embedding(req), model.item_embedding(catalogue, items)
            logits = model.score_pairs(f, g) + model.bias_terms(req.user_id, items)
            loss = ecat_target_loss(logits, y, c[idx]) + cfg.l2 * model.id_l2(req.user_id, items, catalogue)
            if not use_kd:
                return loss
            l_stu = F.binary_cross_entropy_with_logits(logits.detach(), y.float(), reduction="none")
            pi = gate(l_tea[idx], l_stu, cfg.gate_k, cfg.gate)
            kd = kd_loss(proj(f), f_s[idx], proj(g), g_s[idx], c_kd[idx] * pi)
            kd_parts.append(kd.detach())
            return loss + cfg.beta * kd

        model.train()
        gen = fit_generator(self.ctx, self.name, view.round)
        losses = run_epochs(n, self.core.epochs(), self.core.batch_size(), gen, self.ctx.device, self.core.optimiser, step, self.name)
        self.core.retriever.invalidate()
        pi_final = self._final_gate(data, n_t, teacher.loss, catalogue)
        self.last_gate = (data.item_ids[:n_t], pi_final)
        return {
            "loss": losses[-1] if losses else math.nan, "loss_first_epoch": losses[0] if losses else math.nan,
            "gate_mean": float(pi_final.mean()) if use_kd else math.nan,
            "kd_loss": float(torch.stack(kd_parts).mean()) if kd_parts else math.nan, "teacher_ranker": float(teacher.from_ranker),
        }  # fmt: skip

    def _final_gate(self, data: Exposures, n_t: int, loss_teacher: torch.Tensor, catalogue: Catalogue) -> torch.Tensor:
        """``[n_T]`` the gate on the target rows under the trained target model (eval mode)."""
        tgt = _subset(data, torch.arange(len(data), device=data.row.device) < n_t)
        _, _, logits = entire_outputs(self.core, tgt, catalogue)
        l_stu = F.binary_cross_entropy_with_logits(logits, tgt.labels.float(), reduction="none")
        return gate(loss_teacher, l_stu, self.config.gate_k, self.config.gate)

    # --- serving: the target model for the mini-app, the entire-space model elsewhere ---------

    def _parts(self, requests: RequestBatch) -> list[tuple[ExposureCore, torch.Tensor]]:
        mine = requests.domain == self.config.target_domain
        return [
            (core, rows)
            for core, rows in ((self.entire, (~mine).nonzero().squeeze(1)), (self.core, mine.nonzero().squeeze(1)))
            if len(rows)
        ]

    def index(self, catalogue: Catalogue) -> None:
        """Embed all live items once in each model."""
        self.entire.index(catalogue)
        self.core.index(catalogue)

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` of each request's model: ``(item_ids [B, k] int64, logits [B, k] float32)``."""
        ids = torch.zeros(len(requests), k, dtype=torch.int64, device=self.ctx.device)
        scores = torch.zeros(len(requests), k, dtype=torch.float32, device=self.ctx.device)
        for core, rows in self._parts(requests):
            ids[rows], scores[rows] = core.retrieve(requests.select(rows), k)
        return ids, scores

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` logits of each request's model."""
        out = torch.zeros(item_ids.shape, dtype=torch.float32, device=self.ctx.device)
        for core, rows in self._parts(requests):
            out[rows] = core.score(requests.select(rows), item_ids[rows]).float()
        return out

    def state_dict(self) -> dict[str, Any]:
        """Both models' weights, optimisers, fit counters, ``W`` and ``D`` (deep copies)."""
        return {"entire": self.entire.state_dict(), "target": self.core.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call :meth:`index` before serving."""
        self.entire.load_state_dict(state["entire"])
        self.core.load_state_dict(state["target"])


def _subset(data: Exposures, mask: torch.Tensor) -> Exposures:
    """The rows of ``data`` where ``mask`` holds (same requests)."""
    return Exposures(data.requests, data.row[mask], data.item_ids[mask], data.labels[mask])


def _quantiles(omega: torch.Tensor) -> dict[str, float]:
    """``omega_p50 / p90 / max`` of the kept source weights (§16.1: log the weight quantiles); NaN when none."""
    if len(omega) == 0:
        return {"omega_p50": math.nan, "omega_p90": math.nan, "omega_max": math.nan}
    q = torch.quantile(omega.double(), torch.tensor([0.5, 0.9], dtype=torch.float64, device=omega.device))
    return {"omega_p50": float(q[0]), "omega_p90": float(q[1]), "omega_max": float(omega.max())}


register_variant("ecat-no-graph", ECAT, ECATConfig(graph_hops=-1), "ECAT without the graph stage: every source sample enters the DA stage.")
register_variant("ecat-no-da", ECAT, ECATConfig(domain_adapt=False), "ECAT without the DA stage: omega = 1 on the graph-kept source.")
register_variant("ecat-no-kd", ECAT, ECATConfig(beta=0.0), "ECAT without knowledge distillation (beta = 0).")
register_variant("ecat-no-gate", ECAT, ECATConfig(gate="open"), "ECAT with the KD gate always open (pi = 1).")
register_variant("ecat-target-only", ECAT, ECATConfig(nu=0.0, beta=0.0), "ECAT's target model on mini-app exposures alone (nu = beta = 0).")
register_variant(
    "ecat-ranker",
    ECAT,
    ECATConfig(teacher="ranker"),
    "ECAT distilling from the platform ranker's snapshot (entire space, refitted each round).",
)
