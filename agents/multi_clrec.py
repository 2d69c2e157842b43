"""Multi-CLRec: multi-queue, intent-aware contrastive learning (CLRec paper §3.2, Eqs. 5-13; algorithms.md §11).

CLRec's single FIFO queue makes the negatives follow ``p_data(y)``, so the contrastive
loss is IPW with the non-personalised propensity ``q(y)`` (Theorem 1). Multi-CLRec
makes the propensity intent-aware, ``∝ q(y | h) + α·q(y)`` (Remark 2): categories are
routed to ``H`` learned intent prototypes and each intent has its own secondary queue.

Encoders (Eqs. 5-9):

- item: ``g(y) = MLP1([e_id; c_y; e_creator; e_domain; W_m·modality])``, L2-normalised,
  where ``c_y`` is the category embedding (the only input of the routing);
- click importance over the history ``y_1..y_{T-1}``:
  ``p_t = softmax_t MLP2([g(y_t); c_t; e_time[gap bucket]; e_pos[backward position]])``;
- routing: ``p_{h|t} = softmax_h(cos(μ_h, c_t) / ρ)`` over ``H`` prototypes ``μ_h``;
- intents: ``z'_h = Σ_t p_{h|t}·p_t·g(y_t)``, ``z_h = MLP3([z'_h; β_h; u])`` (L2-normalised),
  ``β_h`` a learned per-intent bias shared by all users;
- selector: ``m = MLP4([Σ_t p_t·g(y_t); u])``, ``w̃_h = cos(m, z_h)/ρ``, ``w = softmax(w̃)``,
  ``h* = argmax w``, ``f(x) = z_{h*}``; the argmax is trained by straight-through:
  ``ŵ_h = stopgrad(1[h = h*] − w_h) + w_h`` (one-hot forward, ``∂/∂w`` backward).

Losses (Eqs. 10-13), with ``h+ = argmax_h p_{h|T}`` the routing of the target's category:
``L = L_cl + λ1·L_aux1 + λ2·L_aux2 + λ3·L_aux3 + λ_sel·L_sel`` (λ = 1), see :func:`multi_queue_loss`,
:func:`auxiliary_losses` and :func:`selection_loss` (not in the paper, below). Queues, updated *before* the loss at each step: the batch's
positives enter the main queue ``Q_0`` (so the positive is in its own denominator); what
falls off ``Q_0`` goes to the secondary queue ``Q_{h−}`` of its routed intent; what falls off
a secondary queue is discarded. Queues are never deduplicated (§16.5).

Deviations (simulator), each a switch or stated here:

- ``L_sel = −log w_{h+}`` (``lambda_select``; 0 = the paper) trains the selector to pick the target's routed
  intent. With straight-through alone the selector collapses (weekend-shift, 10 seeds: the top intent took
  83-100% of a seed's requests, 95% on average): the forward pass is one-hot, so only ``z_{h*}`` is pulled toward the target and the
  other ``z_h`` are only pushed away (the denominator), the selected vector becomes the best match for every
  target, and the ST gradient (∝ ``w_h`` ≈ 0) never moves the selection off it. Early windows seed it: most
  histories are empty, so ``z_h = MLP3([0; β_h; u])`` ranks the intents the same way for every user.
- ``u`` is a context vector ``W_p·profile + e_domain + e_entry`` appended to the MLP3 and
  MLP4 inputs (``context_token``): a cold user has no history, for which the paper's
  encoder is undefined (the same choice as the shared sequence encoder).
- MLP2 has no dwell input: the request history carries click times (``history_time``, used
  through the time-gap bucket) but not the dwell of each past click.
- The denominator of ``L_cl`` is computed over the *distinct* items of ``Q_0 ∪ Q_{h+}``,
  each weighted by its multiplicity (log-count added to the logit). This equals re-encoding
  every queue entry (duplicates have identical embeddings) at a fraction of the cost.
- The secondary queues are pre-filled (first fit) by routing uniformly random live items
  (``prefill_secondary``, §11(f)); the main queue starts full of random live ids (CLRec code).
- MLP1, MLP3 and MLP4 are one linear layer each by default (``hidden``; the paper does not give
  their depth): with a ReLU hidden layer all vectors start on one direction and training stalls
  at ``L_cl = log |Q|`` (see ``MultiCLRecConfig.hidden``).
- Serving uses the selected intent ``z_{h*}``; ``serve_intents = K > 1`` serves the top-K intents by
  ``w_h``, merging by each item's best score (the paper leaves the merge open). ``H = 8`` by
  default: the simulator has ~20 categories, not tens of thousands.

``fit`` reports the routing health (§11(f)): ``routing_entropy`` = entropy of ``π_h = mean_{live items} p_{h|i}``
(should stay near ``log H``), ``routing_item_entropy`` (mean per-item entropy: low = polarised routing),
``intents_used`` (distinct ``h+`` over the live items), ``selection_share_max`` (the selector's top intent).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from agents.backbone.queue import IdQueue
from agents.backbone.sequence import DEFAULT_BUCKET_EDGES, check_sequence_ranges
from agents.backbone.sequence_core import click_examples
from agents.backbone.training import check_ranges, fit_generator, make_optimiser, run_epochs
from agents.backbone.two_tower import evaluating
from agents.multi_clrec_model import MultiIntentModel, MultiIntentRetriever
from agents.registry import register
from simulator.agent_api import AgentContext
from simulator.log.view import TrainingView
from simulator.rng import stream_seed
from simulator.types import Catalogue, RequestBatch


@dataclass(frozen=True)
class MultiCLRecConfig:
    """Multi-CLRec hyperparameters; ``None`` means "take it from the scenario's ``training`` section"."""

    label: Literal["clicked", "finished"] = "clicked"
    """Which impressions are the positives ``y_T``."""
    intents: int = 8
    """``H`` intent prototypes and secondary queues (paper: 16 public data, 64 production)."""
    queue_size: int = 1280
    """Capacity of the main queue ``Q_0`` (paper: 1280)."""
    secondary_size: int = 1280
    """Capacity of each secondary queue ``Q_h`` (paper: 1280; 2560 negatives per row in all)."""
    prefill_secondary: bool = True
    """Pre-fill the secondary queues by routing random live items at the first fit (§11(f))."""
    rho: float = 0.07
    """Temperature ρ of the routing (Eq. 7) and of every logit (Eqs. 11, 13); paper: 0.07."""
    serve_intents: int = 1
    """Intent vectors served per request: the top-K by ``w_h``, each item scored by its best vector
    (paper §3.2: K = 1 by default, K > 1 "if a diverse recommendation list is preferred")."""
    selector_rho: float | None = None
    """Temperature of the selector ``w̃_h = cos(m, z_h) / ρ_sel`` (Eq. 9; None: ``rho``, the paper)."""
    lambda1: float = 1.0
    """Weight of ``L_aux1`` (routing polarisation)."""
    lambda2: float = 1.0
    """Weight of ``L_aux2`` (the routed intent vector matches the target)."""
    lambda3: float = 1.0
    """Weight of ``L_aux3`` (intent balance, KL(uniform ‖ π))."""
    lambda_select: float = 1.0
    """Weight of ``L_sel = −log w_{h+}`` (:func:`selection_loss`; not in the paper, see the module doc). 0: the
    paper's selector, trained by straight-through alone, which collapses onto one intent in the simulator."""
    embedding_dim: int | None = None
    """``d`` of ``g``, ``z_h``, ``μ_h``, ``c`` (None: ``training.embedding_dim``)."""
    id_dim: int = 32
    """Size of the id / creator / modality inputs of MLP1."""
    hidden: tuple[int, ...] = ()
    """Hidden sizes of MLP1, MLP3 and MLP4 (default: none, one linear layer each). With a ReLU hidden layer every
    vector starts on one direction and training sits at ``L_cl = log |Q_0 ∪ Q_h|`` (chance even with ``H = 1``)."""
    importance_hidden: int = 32
    """Hidden size of MLP2 (click importance)."""
    time_dim: int = 8
    """Size of the time-gap and position embeddings fed to MLP2."""
    bucket_edges: tuple[float, ...] = DEFAULT_BUCKET_EDGES
    """Right edges (hours) of the time-gap buckets (as the shared sequence encoder)."""
    modality: bool = True
    """Feed a projection of the item's modality vectors to MLP1."""
    context_token: bool = True
    """Append the profile / domain / entry context to MLP3 and MLP4 (see the module doc)."""
    epochs: int | None = None
    """Epochs per fit (None: ``training.epochs``; paper: one)."""
    batch_size: int | None = 256
    """Minibatch size (None: ``training.batch_size``; paper: 256)."""
    lr: float | None = None
    """Learning rate (None: ``training.lr``)."""
    weight_decay: float = 0.0
    """Weight decay (AdamW when > 0)."""
    adam_beta2: float = 0.98
    """Adam β2 (the public SASRec-based CLRec: 0.98)."""
    embedding_std: float | None = None
    """Embedding init std (None: ``d^{-1/2}``, paper B.2)."""
    block_users: int = 1024
    """Users per block when scanning the catalogue."""

    def __post_init__(self) -> None:
        check_ranges(self)
        check_sequence_ranges(self)
        for name in ("intents", "queue_size", "secondary_size", "importance_hidden", "time_dim", "serve_intents"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)!r}")
        if self.selector_rho is not None and not self.selector_rho > 0:
            raise ValueError(f"selector_rho: must be > 0, got {self.selector_rho!r}")
        for name in ("lambda1", "lambda2", "lambda3", "lambda_select"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 < self.adam_beta2 < 1.0:
            raise ValueError(f"adam_beta2: must be in (0, 1), got {self.adam_beta2!r}")


# --- the losses, as plain functions ----------------------------------------------------------


def straight_through(w: torch.Tensor) -> torch.Tensor:
    """``ŵ_h = stopgrad(1[h = h*] − w_h) + w_h`` with ``h* = argmax_h w_h``: one-hot forward, identity backward."""
    hard = F.one_hot(w.argmax(-1), w.shape[-1]).to(w.dtype)
    return (hard - w).detach() + w


def multi_queue_loss(pos_logits: torch.Tensor, w_hat: torch.Tensor, neg_logits: torch.Tensor, neg_log_count: torch.Tensor) -> torch.Tensor:
    """Eq. (13): ``L_cl = mean_r −log [ Σ_h ŵ_h·exp(s_{h,T}) / Σ_{h'} Σ_{y' ∈ Q_0 ∪ Q_{h+}} exp(s_{h',y'}) ]``.

    ``s_{h,y} = cos(z_h, g(y)) / ρ``. The queue multiset of row ``r`` is given as distinct items with
    multiplicities: ``Σ_{y' ∈ multiset} exp(s) = Σ_u n_r(u)·exp(s_u)``.

    Args:
        pos_logits: ``[B, H]`` ``s_{h,T}`` of every intent vector with the row's target.
        w_hat: ``[B, H]`` straight-through selection weights (:func:`straight_through`).
        neg_logits: ``[B, H, U]`` ``s_{h',u}`` over the distinct queued items ``u``.
        neg_log_count: ``[B, U]`` ``log n_r(u)`` (−inf where ``u`` is not in row ``r``'s queues).

    Returns:
        Scalar loss.
    """
    shift = pos_logits.max(-1, keepdim=True).values.detach()
    numerator = torch.log((w_hat * torch.exp(pos_logits - shift)).sum(-1)) + shift.squeeze(-1)
    denominator = torch.logsumexp((neg_logits + neg_log_count.unsqueeze(1)).flatten(1), dim=-1)
    return (denominator - numerator).mean()


def auxiliary_losses(
    target_routing: torch.Tensor, target_logits: torch.Tensor, batch_routing: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eqs. (10)-(12), with ``h+ = argmax_h p_{h|T}``.

    - ``L_aux1 = mean_r −log p_{h+|T}`` (polarised routing);
    - ``L_aux2 = mean_r −log softmax_h(s_{h,T})[h+]`` (the routed intent vector matches the target);
    - ``L_aux3 = Σ_h (1/H)·(log(1/H) − log π_h)``, ``π_h = mean over the batch's items of p_{h|t}``
      (KL(uniform ‖ π): balanced intents).

    Args:
        target_routing: ``[B, H]`` ``p_{h|T}`` of each row's target.
        target_logits: ``[B, H]`` ``s_{h,T} = cos(z_h, g(y_T)) / ρ``.
        batch_routing: ``[n, H]`` ``p_{h|t}`` of every item of the minibatch (targets and history).

    Returns:
        ``(L_aux1, L_aux2, L_aux3)`` scalars.
    """
    h_plus = target_routing.argmax(-1)
    aux1 = -torch.log(target_routing.gather(1, h_plus.unsqueeze(1)).clamp_min(1e-30)).mean()
    aux2 = F.cross_entropy(target_logits, h_plus)
    n_intents = batch_routing.shape[-1]
    pi = batch_routing.mean(0).clamp_min(1e-30)
    aux3 = (math.log(1.0 / n_intents) - pi.log()).sum() / n_intents
    return aux1, aux2, aux3


def selection_loss(selector_logits: torch.Tensor, h_plus: torch.Tensor) -> torch.Tensor:
    """``L_sel = mean_r −log softmax_h(w̃_h)[h+]`` from ``selector_logits [B, H]`` (``w̃_h = cos(m, z_h)/ρ``, Eq. 9) and
    ``h_plus [B]`` (``argmax_h p_{h|T}``): the selector learns to pick the target's routed intent (not in the paper)."""
    return F.cross_entropy(selector_logits, h_plus)


def routing_entropy(p: torch.Tensor) -> tuple[float, float]:
    """``(H(π), mean_i H(p_{·|i}))`` in nats for item routings ``p [n, H]`` (``π = mean_i p_{·|i}``)."""
    if p.shape[0] == 0:
        return math.nan, math.nan
    pi = p.mean(0)
    ent = float(-(pi * pi.clamp_min(1e-30).log()).sum())
    per_item = float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())
    return ent, per_item


# --- the agent ------------------------------------------------------------------------------


@register("multi-clrec", config=MultiCLRecConfig)
class MultiCLRec:
    """Multi-CLRec: intent prototypes routed by category, a main and per-intent secondary queues, straight-through selection.

    Args:
        ctx: sizes, device and seed.
        config: hyperparameters (default :class:`MultiCLRecConfig`).
        name: the registered name (seeds the init, queue and shuffling streams).
    """

    def __init__(self, ctx: AgentContext, config: MultiCLRecConfig | None = None, name: str = "multi-clrec") -> None:
        self.ctx, self.name = ctx, name
        self.config = cfg = config or MultiCLRecConfig()
        d = cfg.embedding_dim or ctx.training.embedding_dim
        self.model = MultiIntentModel(ctx, cfg, d, seed=stream_seed(ctx.seed, f"{name}/init"))
        lr = cfg.lr if cfg.lr is not None else ctx.training.lr
        self.optimiser = make_optimiser(self.model.parameters(), "adam", lr, cfg.weight_decay, cfg.adam_beta2)
        self.main_queue = IdQueue(cfg.queue_size, ctx.device)
        self.secondary = [IdQueue(cfg.secondary_size, ctx.device) for _ in range(cfg.intents)]
        self.fits = 0
        self.retriever = MultiIntentRetriever(self.model, ctx.device, cfg.serve_intents, cfg.block_users, name)

    # --- queues ---------------------------------------------------------------------------

    def _route_ids(self, catalogue: Catalogue, ids: torch.Tensor) -> torch.Tensor:
        """``[n]`` ``argmax_h p_{h|y}`` of ``ids`` (no grad)."""
        with torch.no_grad():
            return self.model.item_routing(catalogue, ids).argmax(-1)

    def _push_secondary(self, catalogue: Catalogue, ids: torch.Tensor) -> None:
        """Route ``ids`` and append each to its intent's secondary queue (overflow discarded)."""
        if ids.numel() == 0:
            return
        h = self._route_ids(catalogue, ids)
        for k, queue in enumerate(self.secondary):
            queue.enqueue(ids[h == k])

    def update_queues(self, catalogue: Catalogue, positives: torch.Tensor) -> None:
        """§11(c) steps 1-3: positives into ``Q_0``; its overflow into ``Q_{h−}``; secondary overflow discarded."""
        self._push_secondary(catalogue, self.main_queue.enqueue(positives))

    def _init_queues(self, catalogue: Catalogue, gen: torch.Generator) -> None:
        live = catalogue.live_ids()
        if len(self.main_queue) == 0:
            self.main_queue.fill_random(live, gen)
        if self.config.prefill_secondary and all(len(q) == 0 for q in self.secondary) and live.numel():
            n = self.config.secondary_size * self.config.intents
            self._push_secondary(catalogue, live[torch.randint(0, live.numel(), (n,), generator=gen).to(live.device)])

    def queue_counts(self, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c0 [M], C [H, M])``: multiplicity of every item id in ``Q_0`` and in each ``Q_h``."""
        dev = self.main_queue.ids.device
        c0 = torch.bincount(self.main_queue.ids, minlength=n_items).float()
        if not self.secondary:
            return c0, torch.zeros(0, n_items, device=dev)
        sec = torch.stack([torch.bincount(q.ids, minlength=n_items).float() for q in self.secondary])
        return c0, sec

    # --- fit ------------------------------------------------------------------------------

    def _step_loss(self, requests: RequestBatch, targets: torch.Tensor, catalogue: Catalogue) -> dict[str, torch.Tensor]:
        """Update the queues with the batch, then the total loss and its parts."""
        cfg, model = self.config, self.model
        self.update_queues(catalogue, targets)
        out = model.intents(requests, catalogue)
        z, w = out["z"], out["w"]
        g_t = model.item_embedding(catalogue, targets)
        pos = model.scale * (z * g_t.unsqueeze(1)).sum(-1)  # [B, H]
        target_routing = model.item_routing(catalogue, targets)  # [B, H]
        h_plus = target_routing.argmax(-1)
        c0, sec = self.queue_counts(catalogue.capacity)
        uniq = torch.nonzero((c0 + sec.sum(0)) > 0).squeeze(1)
        counts = c0[uniq].unsqueeze(0) + sec[:, uniq][h_plus]  # [B, U]: multiplicity in Q_0 ∪ Q_{h+}
        neg = model.scale * torch.einsum("bhd,ud->bhu", z, model.item_embedding(catalogue, uniq))
        l_cl = multi_queue_loss(pos, straight_through(w), neg, counts.log())
        batch_routing = torch.cat([target_routing, out["history_routing"][out["valid"]]])
        aux1, aux2, aux3 = auxiliary_losses(target_routing, pos, batch_routing)
        sel = selection_loss(model.selector_logits(z, out["m"]), h_plus)
        total = l_cl + cfg.lambda1 * aux1 + cfg.lambda2 * aux2 + cfg.lambda3 * aux3 + cfg.lambda_select * sel
        return {"loss": total, "loss_cl": l_cl, "aux1": aux1, "aux2": aux2, "aux3": aux3, "select": sel}

    def fit(self, view: TrainingView) -> dict[str, float]:
        """Warm-started Multi-CLRec epochs on the window's clicks; queues persist across fits.

        Returns:
            ``loss`` / ``loss_first_epoch`` (total), ``loss_cl``, ``aux1``, ``aux2``, ``aux3``, ``select`` (last
            epoch means), ``examples``, ``routing_entropy`` (nats; max ``log H``), ``routing_entropy_max``,
            ``routing_item_entropy``, ``intents_used``, ``selection_share_max`` (share of the window's
            requests whose selected intent is the most common one).
        """
        cfg, tr, device = self.config, self.ctx.training, self.ctx.device
        catalogue = view.catalogue.to(device)
        data = click_examples(view, cfg.label, device)
        gen = fit_generator(self.ctx, self.name, view.round)
        self.fits += 1
        self._init_queues(catalogue, gen)
        parts: dict[str, torch.Tensor] = {}

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            requests, targets, _ = data.batch(idx)
            out = self._step_loss(requests, targets, catalogue)
            for key in ("loss_cl", "aux1", "aux2", "aux3", "select"):
                parts[key] = parts.get(key, torch.zeros((), device=device)) + out[key].detach() * idx.numel()
            return out["loss"]

        self.model.train()
        losses: list[float] = []
        epochs = cfg.epochs if cfg.epochs is not None else tr.epochs
        if len(data):
            for _ in range(epochs):  # one epoch at a time so the parts are last-epoch means
                parts.clear()
                losses += run_epochs(len(data), 1, cfg.batch_size or tr.batch_size, gen, device, self.optimiser, loss_fn, self.name)
        self.retriever.invalidate()
        diag = {
            "loss": losses[-1] if losses else math.nan,
            "loss_first_epoch": losses[0] if losses else math.nan,
            "examples": float(len(data)),
            **{k: float(parts[k]) / max(len(data), 1) if k in parts else math.nan for k in ("loss_cl", "aux1", "aux2", "aux3", "select")},
        }
        return {**diag, **self.routing_diagnostics(view, catalogue)}

    def routing_diagnostics(self, view: TrainingView, catalogue: Catalogue) -> dict[str, float]:
        """Routing health over the live catalogue and intent selection over the window's requests."""
        live = catalogue.live_ids()
        with evaluating(self.model):
            p = self.model.item_routing(catalogue, live)
            requests = view.requests.to(self.ctx.device)
            blocks = [torch.arange(s, min(s + 1024, len(requests)), device=live.device) for s in range(0, len(requests), 1024)]
            chosen = [self.model.intents(requests.select(b), catalogue)["h_star"] for b in blocks]
            sel = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.int64)
        ent, per_item = routing_entropy(p)
        share = float(torch.bincount(sel, minlength=self.config.intents).max()) / len(sel) if len(sel) else math.nan
        return {
            "routing_entropy": ent, "routing_entropy_max": math.log(self.config.intents), "routing_item_entropy": per_item,
            "intents_used": float(p.argmax(-1).unique().numel()) if len(live) else 0.0, "selection_share_max": share,
        }  # fmt: skip

    # --- serving (the index lives in the retriever) ----------------------------------------

    def index(self, catalogue: Catalogue) -> None:
        """Embed all live items once (normalised ``g``)."""
        self.retriever.index(catalogue)

    def retrieve(self, requests: RequestBatch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` live items by ``max_{h ∈ served} cos(z_h, g) / ρ``: ``(item_ids [B, k] int64, logits [B, k] float32)``."""
        return self.retriever.retrieve(requests, k)

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K] float32`` ``max_{h ∈ served} cos(z_h, g(y)) / ρ``."""
        return self.retriever.score(requests, item_ids)

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser, queues and the fit counter (deep copies)."""
        return copy.deepcopy({
            "model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(), "fits": self.fits,
            "main_queue": self.main_queue.state_dict(), "secondary": [q.state_dict() for q in self.secondary],
        })  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; call :meth:`index` before serving."""
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(copy.deepcopy(state["optimiser"]))
        self.fits = int(state["fits"])
        self.main_queue.load_state_dict(state["main_queue"])
        for queue, s in zip(self.secondary, state["secondary"], strict=True):
            queue.load_state_dict(s)
        self.retriever.invalidate()
