"""USD's two intent heads and the observable features they read (algorithms.md §14(b), our reading).

Only the abstract of USD (arXiv 2507.06503) is known; everything here is our reading of §14.

- Attention head ``a(ctx, pos) = P(attended)`` per exposure. Inputs: the entry action (browse / search /
  portal), the domain, the slot, the logged scroll depth of the request (and how far it reaches past the
  slot), and the mean log viewport dwell of the request's *other* slots. Weak label (§14(c)): the row was
  clicked, or the session holds a click on another slot, or this slot's dwell >= ``δ``. The label's
  fields (own click, own dwell, other clicks) are never inputs, so the head cannot copy its label (§14(f)).
- Click-validity head ``c(ctx) = P(genuine interest | click)`` per click. Inputs: entry, domain, slot,
  the item's promoted (marketing-portal) flag and the item's leave-one-out share of engaged clicks in the
  window. Weak label: "post-click item engagement > 0". The click's own engagement is not an input (it is
  the label), so ``c`` is a context-level, denoised estimate of click validity.

Every field read here is in :class:`~simulator.log.view.TrainingView`; the oracle ``attended`` flag and
click motive live in the truth store, which agents cannot reach.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from agents.backbone.training import make_optimiser, run_epochs
from agents.backbone.two_tower import init_parameters
from simulator.log.view import TrainingView

N_ENTRY = 3  # ENTRY_BROWSE, ENTRY_SEARCH, ENTRY_PORTAL
ATTENTION_FEATURES = N_ENTRY + 6  # + domain, slot, scroll, scroll past the slot, scroll logged, other slots' dwell
VALIDITY_FEATURES = N_ENTRY + 6  # + domain, slot, promoted, item engaged share, item clicks, promoted x share
_LOG_EPS = 0.01  # seconds: keeps log(dwell) finite for a zero dwell


@dataclass(frozen=True)
class HeadData:
    """Inputs and weak labels of one head (``[n, F]`` and ``[n]``) and the exposure rows they describe."""

    x: torch.Tensor
    y: torch.Tensor
    rows: torch.Tensor  # [n] int64 index into view.impressions


def _per_request_sum(row: torch.Tensor, values: torch.Tensor, n_req: int) -> torch.Tensor:
    """``[E]`` the sum of ``values [E]`` over each exposure's request."""
    out = torch.zeros(n_req, dtype=values.dtype, device=values.device).index_add_(0, row, values)
    return out[row]


def other_clicks(view: TrainingView, device: torch.device) -> torch.Tensor:
    """``[E] float`` clicks on other slots of the session (the logged proxy; the request's own other slots if absent)."""
    imp = view.impressions
    if imp.other_clicks is not None:
        return imp.other_clicks.to(device).float()
    clicked, row = imp.clicked.to(device).float(), imp.row.to(device)
    return _per_request_sum(row, clicked, len(view.requests)) - clicked


def engaged(view: TrainingView, device: torch.device) -> torch.Tensor:
    """``[E] bool`` logged post-click item engagement > 0 (``watch_time`` where the log predates ``engagement``)."""
    imp = view.impressions
    signal = imp.engagement if imp.engagement is not None else imp.watch_time
    return signal.to(device) > 0


def _entry_domain(view: TrainingView, row: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    entry = view.requests.entry.to(device)[row].clamp(0, N_ENTRY - 1)
    onehot = torch.nn.functional.one_hot(entry, N_ENTRY).float()
    return [onehot, view.requests.domain.to(device)[row].float().unsqueeze(1)]


def attention_data(view: TrainingView, dwell_threshold: float, device: torch.device) -> HeadData:
    """Every exposure's attention-head inputs and its weak "attended" label (see the module docstring)."""
    imp = view.impressions
    row, pos = imp.row.to(device), imp.position.to(device).float()
    slots = float(pos.max()) + 1.0 if len(pos) else 1.0
    dwell = imp.dwell.to(device).float()
    log_dwell = torch.log(dwell.clamp_min(0.0) + _LOG_EPS)
    n_slots = _per_request_sum(row, torch.ones_like(log_dwell), len(view.requests))
    loo_dwell = (_per_request_sum(row, log_dwell, len(view.requests)) - log_dwell) / (n_slots - 1).clamp_min(1.0)
    scroll = imp.scroll_depth.to(device).float() if imp.scroll_depth is not None else torch.full_like(pos, float("nan"))
    logged = ~torch.isnan(scroll)
    scroll = torch.where(logged, scroll, torch.full_like(scroll, slots))  # not logged: assume the whole block was seen
    x = torch.cat(
        _entry_domain(view, row, device)
        + [
            (pos / slots).unsqueeze(1),
            (scroll / slots).unsqueeze(1),
            ((scroll - pos - 1.0) / slots).clamp(-1.0, 1.0).unsqueeze(1),
            logged.float().unsqueeze(1),
            (loo_dwell / 5.0).unsqueeze(1),  # log-seconds, roughly unit scale
        ],
        dim=1,
    )
    label = imp.clicked.to(device).bool() | (other_clicks(view, device) > 0) | (dwell >= dwell_threshold)
    return HeadData(x, label.float(), torch.arange(len(imp), device=device))


def validity_data(view: TrainingView, device: torch.device, prior_strength: float = 2.0) -> HeadData:
    """Every click's validity-head inputs and its weak "post-click engagement > 0" label."""
    imp = view.impressions
    clicked = imp.clicked.to(device).bool()
    rows = clicked.nonzero().squeeze(1)
    item, eng = imp.item_id.to(device).long()[rows], engaged(view, device)[rows].float()
    n = view.n_items
    clicks_i = torch.zeros(n, device=device).index_add_(0, item, torch.ones_like(eng))[item] - 1.0  # leave this click out
    eng_i = torch.zeros(n, device=device).index_add_(0, item, eng)[item] - eng
    prior = float(eng.mean()) if len(eng) else 1.0
    share = (eng_i + prior_strength * prior) / (clicks_i + prior_strength)
    pos = imp.position.to(device).float()
    slots = float(pos.max()) + 1.0 if len(pos) else 1.0
    promoted = view.catalogue.promoted.to(device)[item].float()
    x = torch.cat(
        _entry_domain(view, imp.row.to(device)[rows], device)
        + [
            (pos[rows] / slots).unsqueeze(1),
            promoted.unsqueeze(1),
            share.unsqueeze(1),
            (torch.log1p(clicks_i) / 5.0).unsqueeze(1),
            (promoted * share).unsqueeze(1),
        ],
        dim=1,
    )
    return HeadData(x, eng, rows)


class IntentHead(nn.Module):
    """A small MLP ``features -> logit`` (one hidden ReLU layer), initialised from a seed (no global RNG)."""

    def __init__(self, n_features: int, hidden: int, seed: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        init_parameters(self, torch.Generator().manual_seed(seed), 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[n]`` logits."""
        return self.net(x).squeeze(-1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``[n]`` detached probabilities (eval mode, no grad)."""
        with torch.no_grad():
            return torch.sigmoid(self(x))


def head_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A head's objective ``L_a`` / ``L_c``: mean ``BCE(σ(logit), weak label)``."""
    return nn.functional.binary_cross_entropy_with_logits(logits, labels)


def fit_head(
    head: IntentHead, optimiser: torch.optim.Optimizer, data: HeadData, epochs: int, batch_size: int, gen: torch.Generator, who: str,
    min_steps: int = 0,
) -> float:  # fmt: skip
    """Warm-started minibatch BCE of ``head`` on ``data``; the last epoch's mean loss (NaN if nothing to fit).

    At least ``epochs`` epochs, more when needed to make ``min_steps`` optimiser steps (a window holds few clicks).

    §14(c) writes the total as ``L + μ·(L_a + L_c)``. The heads share no parameter with the retriever and their
    outputs enter ``L`` detached, so the joint objective separates; with Adam, ``μ`` only rescales the heads'
    gradients, which Adam undoes. The heads are therefore fitted first (§14(d)) and ``μ`` is no knob here.
    """
    if len(data.y) == 0 or epochs == 0:
        return float("nan")
    epochs = max(epochs, math.ceil(min_steps / math.ceil(len(data.y) / batch_size)))
    head.train()
    loss_fn: Callable[[torch.Tensor], torch.Tensor] = lambda idx: head_loss(head(data.x[idx]), data.y[idx])  # noqa: E731
    return run_epochs(len(data.y), epochs, batch_size, gen, data.x.device, optimiser, loss_fn, who)[-1]


def head_optimiser(head: IntentHead, lr: float) -> torch.optim.Optimizer:
    """Adam over a head's parameters."""
    return make_optimiser(head.parameters(), "adam", lr)
