"""Ground-truth dynamics, vectorised over users and items.

* within a round, each served batch updates the observed popularity counters,
  the users' click histories and the consumption accumulators;
* at a round's end: preference drift toward consumed items (the
  homogenisation loop), category boredom, satisfaction and churn;
* at a round's start: item arrival and retirement, new users joining.

Each dynamic is off when its rate is 0.
"""

from __future__ import annotations

import torch

from simulator.config import Scenario
from simulator.rng import torch_stream
from simulator.world.state import WorldState
from simulator.world.user_model import Feedback


def append_history(history: torch.Tensor, users: torch.Tensor, order: torch.Tensor, items: torch.Tensor) -> None:
    """Append click events to ``history [N, L]`` in place, newest last, keeping the last L.

    Args:
        users: ``[E]`` user of each click event.
        order: ``[E]`` time order key of each event (larger is later).
        items: ``[E]`` clicked item of each event.
    """
    if users.numel() == 0:
        return
    length = history.shape[1]
    key = users * (order.max() + 1) + order
    perm = key.argsort()
    users, items = users[perm], items[perm]
    uniq, counts = torch.unique_consecutive(users, return_counts=True)
    ends = counts.cumsum(0)
    # rank of each event counted from the user's newest event (0 = newest)
    from_end = ends.repeat_interleave(counts) - 1 - torch.arange(len(users), device=users.device)
    shift = counts.clamp(max=length)  # how many old entries fall off the front
    old = history[uniq]
    pos = torch.arange(length, device=users.device).unsqueeze(0)
    src = (pos + shift.unsqueeze(1)).clamp(max=length - 1)
    new = torch.where(pos < length - shift.unsqueeze(1), old.gather(1, src), -1)
    keep = from_end < length
    rows = torch.searchsorted(uniq, users[keep])
    new[rows, length - 1 - from_end[keep]] = items[keep]
    history[uniq] = new


def record_feedback(world: WorldState, users: torch.Tensor, request_order: torch.Tensor, slate: torch.Tensor, fb: Feedback) -> None:
    """Fold one served batch into counters, histories and accumulators (in place)."""
    m = world.item_clicks.shape[0]
    world.item_exposures += torch.bincount(slate.reshape(-1), minlength=m).float()
    world.item_clicks += torch.bincount(slate[fb.clicked], minlength=m).float()
    n_slots = slate.shape[1]
    order = request_order.unsqueeze(1) * n_slots + torch.arange(n_slots, device=slate.device)
    req_users = users.unsqueeze(1).expand_as(slate)
    append_history(world.user_history, req_users[fb.clicked], order[fb.clicked], slate[fb.clicked])
    fu, fi = req_users[fb.finished], slate[fb.finished]
    world.acc_latent.index_add_(0, fu, world.item_latent[fi])
    world.acc_category.index_put_((fu, world.item_category[fi]), torch.ones_like(fu, dtype=torch.float32), accumulate=True)
    world.acc_visits.index_add_(0, users, torch.ones_like(users, dtype=torch.float32))
    world.acc_finished.index_add_(0, fu, torch.ones_like(fu, dtype=torch.float32))


def end_round(world: WorldState, sc: Scenario, seed: int, round_idx: int) -> None:
    """Drift, boredom, satisfaction and churn at the end of ``round_idx``; resets the accumulators."""
    dyn = sc.dynamics
    consumed = world.acc_finished > 0
    if dyn.drift_rate > 0:
        target = world.acc_latent[consumed] / world.acc_finished[consumed].unsqueeze(1)
        cur = world.user_latent[consumed]
        moved = (1 - dyn.drift_rate) * cur + dyn.drift_rate * target
        world.user_latent[consumed] = moved * (cur.norm(dim=1, keepdim=True) / moved.norm(dim=1, keepdim=True).clamp_min(1e-9))
    world.user_boredom.mul_(dyn.boredom_decay).add_(dyn.boredom_rate * world.acc_category)
    visited = world.acc_visits > 0
    per_visit = world.acc_finished[visited] / world.acc_visits[visited]
    world.user_satisfaction[visited] = 0.5 * world.user_satisfaction[visited] + 0.5 * per_visit
    if dyn.churn_rate > 0:
        gen = torch_stream(seed, "churn", round_idx, device=world.device)
        draw = torch.rand(world.user_alive.shape[0], generator=gen, device=world.device)
        leave = world.user_alive & visited & (world.user_satisfaction < dyn.churn_threshold) & (draw < dyn.churn_rate)
        world.user_alive &= ~leave
    for acc in (world.acc_latent, world.acc_category, world.acc_visits, world.acc_finished):
        acc.zero_()


def start_round(world: WorldState, round_idx: int) -> None:
    """Items due arrive, items past their lifetime retire, new users join."""
    world.item_live |= world.item_born == round_idx
    world.item_live &= world.item_death > round_idx
    world.user_alive |= world.user_joined == round_idx
