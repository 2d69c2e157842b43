"""Who arrives when: one batch of requests per traffic slice.

Arrivals follow a daily profile (per slice) and a weekly one (days 5 and 6 are
the weekend); weekend-heavy users are more active on weekends and less on
weekdays (``dynamics.weekend_shift``; 1 switches the shift off). Each request
draws the user's current intent from their intent mixture (truth); with ``[session]`` on, runs of
consecutive requests form one user's session and share its intent with a stated persistence.
"""

from __future__ import annotations

import torch

from simulator.config import Scenario
from simulator.rng import torch_stream
from simulator.types import ENTRY_BROWSE, ENTRY_PORTAL, ENTRY_SEARCH, RequestBatch
from simulator.world.features import entry_search_share, group_sessions
from simulator.world.state import WorldState


def is_weekend(hour: float) -> bool:
    """Days 5 and 6 of every 7-day week are the weekend."""
    return int(hour // 24) % 7 >= 5


def slice_volume(sc: Scenario, round_idx: int, slice_idx: int, hour: float) -> int:
    """Requests in one slice: the round's mean volume shaped by the daily and weekly profiles."""
    tl = sc.timeline
    n_slices = int(tl.round_hours / tl.slice_hours)
    profile = tl.daily_profile
    weight = profile[slice_idx % len(profile)] / (sum(profile) / len(profile))
    weekly = tl.weekend_traffic if is_weekend(hour) else 1.0
    return int(round(tl.requests_per_round / n_slices * weight * weekly))


def arrival_weights(world: WorldState, sc: Scenario, weekend: bool) -> torch.Tensor:
    """``[N]`` relative arrival rate of each user at this time of the week."""
    shift = sc.dynamics.weekend_shift
    heavy = world.user_segment == 1
    seg = torch.where(heavy, shift if weekend else 1.0 / shift, 1.0)
    return world.user_activity * seg * world.user_alive


def sample_requests(
    world: WorldState, sc: Scenario, seed: int, round_idx: int, slice_idx: int, hour: float, first_id: int, n: int
) -> tuple[RequestBatch, torch.Tensor]:
    """Draw ``n`` requests for one slice.

    Returns:
        ``(batch, intents [B] int64)``; the intents are truth and go to the truth store only.
    """
    dev = world.device
    gen = torch_stream(seed, "traffic", round_idx, slice_idx, device=dev)
    users = torch.multinomial(arrival_weights(world, sc, is_weekend(hour)), n, replacement=True, generator=gen)
    intents = torch.multinomial(world.user_intents[users], 1, generator=gen).squeeze(1)
    u = torch.rand(n, 2, generator=gen, device=dev)
    domain = (u[:, 0] < sc.world.mini_app_share).long()
    portal = u[:, 1] < sc.user_model.portal_entry_share
    search = u[:, 1] > 1.0 - entry_search_share(sc) * (1.0 - sc.user_model.portal_entry_share)
    entry = torch.where(portal, ENTRY_PORTAL, torch.where(search, ENTRY_SEARCH, ENTRY_BROWSE))
    hours = hour + sc.timeline.slice_hours * torch.rand(n, generator=gen, device=dev, dtype=torch.float64)
    request_id = torch.arange(first_id, first_id + n, device=dev)
    session_id = None
    if sc.session.enabled:  # its own stream: the draws above stay what they were without sessions
        session_gen = torch_stream(seed, "session", round_idx, slice_idx, device=dev)
        users, intents, head = group_sessions(sc, users, world.user_intents, session_gen)
        session_id, hours = request_id[head], hours.sort().values  # a session's requests follow one another in time
    batch = RequestBatch(
        request_id=request_id,
        user_id=users,
        domain=domain,
        entry=entry,
        hour=(hours % 168.0).float(),
        profile=world.user_profile[users],
        history=world.user_history[users].clone(),
        round=round_idx,
        time=hours.double(),
        history_time=None if world.user_history_time is None else world.user_history_time[users].clone(),
        session_id=session_id,
    )
    return batch, intents
