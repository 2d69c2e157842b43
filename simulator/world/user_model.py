"""The simulated user: examination, clicks, engagement, and what the platform sees of them.

For an exposed item at slot ``k`` (0-based) of a request by user ``u``:

* examined ~ Bernoulli(min(1, e_k * attention_u)) with ``e_k = (1+k)^-position_bias``
  (or the configured curve). An unexamined exposure logs as a non-click: the
  inattention pseudo-negative.
* if examined, three independent motives may fire, first one wins:
  interest ~ Bernoulli(r), conformity ~ Bernoulli(conformity_u * popularity_i)
  with popularity the observed click counter on a log scale in [0, 1], and a
  portal click ~ Bernoulli(promo_click_prob) for promoted items (doubled for
  requests that entered through a portal): a pseudo-positive.
* engagement is truthful: ``finished ~ Bernoulli(r)`` for interest and
  conformity clicks, never for portal clicks; ``watch_time`` is the item's
  duration if finished, a fraction of it if abandoned, 0 otherwise.
* observable attention proxies: dwell per slot (long when examined) and
  ``portal_only`` (the click engaged only with a portal).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simulator.config import Scenario
from simulator.types import ENTRY_PORTAL, MOTIVE_CONFORMITY, MOTIVE_INTEREST, MOTIVE_NONE, MOTIVE_PORTAL
from simulator.world.features import attend_prob
from simulator.world.state import WorldState


@dataclass(frozen=True)
class Feedback:
    """Responses to a slate, all ``[B, S]``. The first five fields are observable (and the optional ones after the truth)."""

    clicked: torch.Tensor  # bool
    finished: torch.Tensor  # bool
    watch_time: torch.Tensor  # float seconds
    dwell: torch.Tensor  # float seconds on the slot
    portal_only: torch.Tensor  # bool
    # truth
    examined: torch.Tensor  # bool
    motive: torch.Tensor  # int64 MOTIVE_*
    relevance: torch.Tensor  # float
    # observable, set by the optional world features (simulator.world.features.observe); None: not yet observed
    engagement: torch.Tensor | None = None  # float post-click item engagement seconds as logged
    converted: torch.Tensor | None = None  # bool
    scroll_depth: torch.Tensor | None = None  # [B] float slots (NaN: not logged)


def examination_curve(sc: Scenario, n_slots: int, device: torch.device) -> torch.Tensor:
    """``[S]`` examination probability by slot for an attention of 1."""
    um = sc.user_model
    if um.examination_curve:
        curve = list(um.examination_curve) + [um.examination_curve[-1]] * n_slots
        return torch.tensor(curve[:n_slots], device=device)
    return (1.0 + torch.arange(n_slots, device=device, dtype=torch.float32)).pow(-um.position_bias)


def popularity_signal(world: WorldState, item_ids: torch.Tensor) -> torch.Tensor:
    """Observed popularity on a log scale in [0, 1] (what a 'trending' badge conveys)."""
    top = torch.log1p(world.item_clicks.max()).clamp_min(1e-6)
    return torch.log1p(world.item_clicks[item_ids]) / top


def respond(
    world: WorldState,
    sc: Scenario,
    users: torch.Tensor,
    entry: torch.Tensor,
    slate: torch.Tensor,
    relevance: torch.Tensor,
    gen: torch.Generator,
    attend: torch.Tensor | None = None,
) -> Feedback:
    """Draw the user's response to ``slate [B, S]`` whose true relevance is ``relevance [B, S]``.

    ``attend [B] bool`` (the ``[attention]`` feature) marks requests whose block the user looks at; elsewhere
    nothing is examined. None: every block is attended.
    """
    b, s = slate.shape
    u = torch.rand(b, s, 7, generator=gen, device=slate.device)
    exam_p = (examination_curve(sc, s, slate.device) * world.user_attention[users].unsqueeze(1)).clamp(max=1.0)
    examined = u[..., 0] < exam_p
    if attend is not None:
        examined &= attend.unsqueeze(1)
    interest = u[..., 1] < relevance
    conform = u[..., 2] < world.user_conformity[users].unsqueeze(1) * popularity_signal(world, slate)
    portal_p = sc.user_model.promo_click_prob * torch.where(entry == ENTRY_PORTAL, 2.0, 1.0).unsqueeze(1)
    portal = world.item_promoted[slate] & (u[..., 3] < portal_p.clamp(max=1.0))
    motive = torch.where(
        interest, MOTIVE_INTEREST, torch.where(conform, MOTIVE_CONFORMITY, torch.where(portal, MOTIVE_PORTAL, MOTIVE_NONE))
    )
    motive = torch.where(examined, motive, MOTIVE_NONE)
    clicked = motive != MOTIVE_NONE
    engaged = clicked & (motive != MOTIVE_PORTAL)
    finished = engaged & (u[..., 4] < relevance)
    duration = world.item_duration[slate]
    watch = torch.where(finished, duration, torch.where(engaged, 0.5 * u[..., 5] * duration, 0.0))
    dwell = torch.where(examined, 0.5 + 2.0 * u[..., 6], 0.1 * u[..., 6])
    return Feedback(clicked, finished, watch, dwell, clicked & ~engaged, examined, motive, relevance)


def expected_response(
    world: WorldState, sc: Scenario, users: torch.Tensor, entry: torch.Tensor, slate: torch.Tensor, relevance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P(click), P(finished))``, each ``[B, S]``: :func:`respond`'s probabilities, in closed form.

    The motives are independent coins, so given examination a click happens unless interest (r), conformity
    (conformity x popularity) and the portal all fail; a finish needs an engaged click (interest or conformity)
    and a second coin of r.
    """
    s = slate.shape[1]
    exam_p = (examination_curve(sc, s, slate.device) * world.user_attention[users].unsqueeze(1)).clamp(max=1.0)
    if sc.attention.enabled:
        exam_p = exam_p * attend_prob(sc, entry).unsqueeze(1)
    conform = (world.user_conformity[users].unsqueeze(1) * popularity_signal(world, slate)).clamp(0.0, 1.0)
    portal_p = (sc.user_model.promo_click_prob * torch.where(entry == ENTRY_PORTAL, 2.0, 1.0).unsqueeze(1)).clamp(max=1.0)
    portal = world.item_promoted[slate].float() * portal_p
    engaged = 1 - (1 - relevance) * (1 - conform)
    click = exam_p * (1 - (1 - engaged) * (1 - portal))
    return click, exam_p * engaged * relevance
