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


def append_history(
    history: torch.Tensor,
    users: torch.Tensor,
    order: torch.Tensor,
    items: torch.Tensor,
    history_time: torch.Tensor | None = None,
    times: torch.Tensor | None = None,
) -> None:
    """Append click events to ``history [N, L]`` in place, newest last, keeping the last L.

    Args:
        users: ``[E]`` user of each click event.
        order: ``[E]`` time order key of each event (larger is later).
        items: ``[E]`` clicked item of each event.
        history_time: optional ``[N, L] float64`` click times kept aligned with ``history``
            (NaN where ``history`` is -1), updated in place with the same shifts.
        times: ``[E]`` absolute time (hours) of each event; required with ``history_time``.
    """
    if users.numel() == 0:
        return
    if (history_time is None) != (times is None):
        raise ValueError("append_history: give both history_time and times, or neither")
    length = history.shape[1]
    perm = (users * (order.max() + 1) + order).argsort()
    users, items = users[perm], items[perm]
    uniq, counts = torch.unique_consecutive(users, return_counts=True)
    # rank of each event counted from the user's newest event (0 = newest)
    from_end = counts.cumsum(0).repeat_interleave(counts) - 1 - torch.arange(len(users), device=users.device)
    keep = from_end < length
    slots = _Slots(counts.clamp(max=length), length, torch.searchsorted(uniq, users[keep]), length - 1 - from_end[keep])
    history[uniq] = slots.append(history[uniq], -1, items[keep])
    if history_time is not None and times is not None:
        history_time[uniq] = slots.append(history_time[uniq], torch.nan, times[perm][keep])


class _Slots:
    """Where new events land in the touched rows of a ``[., L]`` history: old entries shift left by ``shift``."""

    def __init__(self, shift: torch.Tensor, length: int, rows: torch.Tensor, cols: torch.Tensor) -> None:
        pos = torch.arange(length, device=shift.device).unsqueeze(0)
        self.src = (pos + shift.unsqueeze(1)).clamp(max=length - 1)
        self.kept = pos < length - shift.unsqueeze(1)
        self.rows, self.cols = rows, cols

    def append(self, old: torch.Tensor, fill: float, values: torch.Tensor) -> torch.Tensor:
        """``old`` rows shifted, the freed tail ``fill``, then ``values`` written at their slots."""
        new = torch.where(self.kept, old.gather(1, self.src), fill)
        new[self.rows, self.cols] = values.to(new.dtype)
        return new


def record_feedback(
    world: WorldState,
    users: torch.Tensor,
    request_order: torch.Tensor,
    slate: torch.Tensor,
    fb: Feedback,
    request_time: torch.Tensor | None = None,
) -> None:
    """Fold one served batch into counters, histories and accumulators (in place).

    ``request_time [B]`` (hours) stamps each click in ``world.user_history_time``; without it (or
    on a world that predates click times) only the item ids are appended.
    """
    m = world.item_clicks.shape[0]
    world.item_exposures += torch.bincount(slate.reshape(-1), minlength=m).float()
    world.item_clicks += torch.bincount(slate[fb.clicked], minlength=m).float()
    n_slots = slate.shape[1]
    order = request_order.unsqueeze(1) * n_slots + torch.arange(n_slots, device=slate.device)
    req_users = users.unsqueeze(1).expand_as(slate)
    times = getattr(world, "user_history_time", None)
    if times is not None and request_time is not None:
        click_time = request_time.double().unsqueeze(1).expand_as(slate)[fb.clicked]
        append_history(world.user_history, req_users[fb.clicked], order[fb.clicked], slate[fb.clicked], times, click_time)
    else:
        if times is not None:  # keep the times aligned with the ids: unknown time is NaN
            click_time = torch.full((int(fb.clicked.sum()),), float("nan"), dtype=torch.float64, device=slate.device)
            append_history(world.user_history, req_users[fb.clicked], order[fb.clicked], slate[fb.clicked], times, click_time)
        else:
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
