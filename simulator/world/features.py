"""Optional world features of issue 13, each off by default and drawing only from its own named stream.

* sessions: consecutive requests of a slice continue one user's session; a later request keeps the
  session's intent with ``session.intent_persistence``;
* attention by entry point: a request attends the homepage block with a probability set by its entry
  (browse / search / portal); an unattended block is examined nowhere (its exposures are pseudo-negatives);
  the log gets noisy proxies: viewport dwell per slot, scroll depth per request, other clicks in the session;
* click motive: the platform sees a noisy post-click engagement time, not the motive; ``portal_only`` becomes
  its guess (no item engagement seen), the exact motive stays in the truth store;
* mini-app: requests of domain 1 see a per-category shift of preferences and a bonus for their own domain's
  items, and finished items may convert;
* weekend: the weekend-heavy segment is drawn from users' intents on the weekend categories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from simulator.config import Scenario
from simulator.rng import torch_stream
from simulator.types import ENTRY_BROWSE, ENTRY_PORTAL, ENTRY_SEARCH, MOTIVE_PORTAL

if TYPE_CHECKING:
    from simulator.world.user_model import Feedback

Streams = Callable[[str], torch.Generator]  # name -> the batch's generator of that named stream

_SHIFT_SALT = 0x5EED  # keys the mini-app's category shift (a fixed draw per seed, not per round)


def group_sessions(sc: Scenario, users: torch.Tensor, intent_probs: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Group a slice's requests into sessions: runs of consecutive requests by their first request's user.

    Args:
        users: ``[B]`` the users drawn for the slice (each a session head if it starts one).
        intent_probs: ``[N, C]`` every user's intent mixture.
        gen: the slice's ``"session"`` stream.

    Returns:
        ``(users [B], intents [B], head [B])``: the session's user, each request's intent and the index of
        its session's first request.
    """
    n, dev = len(users), users.device
    cont = torch.rand(n, generator=gen, device=dev) < 1.0 - 1.0 / sc.session.mean_length
    cont[:1] = False
    head = torch.where(cont, 0, torch.arange(n, device=dev)).cummax(0).values
    users = users[head]
    fresh = torch.multinomial(intent_probs[users], 1, generator=gen).squeeze(1) if n else users.clone()
    keep = cont & (torch.rand(n, generator=gen, device=dev) < sc.session.intent_persistence)
    return users, torch.where(keep, fresh[head], fresh), head


def entry_search_share(sc: Scenario) -> float:
    """Share of non-portal requests entering by search/direct (0.2 unless the attention feature says otherwise)."""
    return sc.attention.search_share if sc.attention.enabled else 0.2


def attend_prob(sc: Scenario, entry: torch.Tensor) -> torch.Tensor:
    """``[B] float32`` P(the request attends the homepage block) by entry; all ones when the feature is off."""
    a = sc.attention
    if not a.enabled:
        return torch.ones(entry.shape, device=entry.device)
    probs = torch.tensor([a.browse_attend_prob, a.search_attend_prob, a.portal_attend_prob], device=entry.device)
    assert (ENTRY_BROWSE, ENTRY_SEARCH, ENTRY_PORTAL) == (0, 1, 2)
    return probs[entry]


def noisy_dwell(sc: Scenario, dwell: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``[B, S]`` the logged viewport dwell: the true dwell times a mean-1 lognormal noise (unchanged when off)."""
    sigma = sc.attention.dwell_noise
    if not sc.attention.enabled or sigma == 0:
        return dwell
    z = torch.randn(dwell.shape, generator=gen, device=dwell.device)
    return dwell * torch.exp(sigma * z - 0.5 * sigma**2)


def scroll_depth(sc: Scenario, examined: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``[B] float32`` the logged scroll depth in slots: deepest examined slot + 1, plus noise, in [0, S]; NaN when off."""
    b, s = examined.shape
    if not sc.attention.enabled:
        return torch.full((b,), float("nan"), device=examined.device)
    slots = torch.arange(1, s + 1, device=examined.device, dtype=torch.float32)
    deepest = (examined.float() * slots).amax(1) if s else torch.zeros(b, device=examined.device)
    noise = sc.attention.scroll_noise * torch.randn(b, generator=gen, device=examined.device)
    return (deepest + noise).clamp(0.0, float(s))


def session_other_clicks(
    session_id: torch.Tensor, request_id: torch.Tensor, slot_request: torch.Tensor, clicked: torch.Tensor
) -> torch.Tensor:
    """``[E] int32`` clicks in the same session on other slots (this impression's own click excluded).

    Args:
        session_id, request_id: ``[R]`` per request of the batch (sessions never span batches).
        slot_request, clicked: ``[E]`` per impression: its request id and click.
    """
    order = request_id.argsort()
    rows = order[torch.searchsorted(request_id[order], slot_request)]
    sess = torch.unique(session_id, return_inverse=True)[1]
    per_session = torch.zeros(int(sess.max()) + 1 if len(sess) else 0, dtype=torch.int64, device=clicked.device)
    per_session.index_add_(0, sess[rows], clicked.long())
    return (per_session[sess[rows]] - clicked.long()).int()


def draw_attention(sc: Scenario, entry: torch.Tensor, gen: torch.Generator) -> torch.Tensor | None:
    """``[B] bool`` whether each request attends its homepage block (None when the feature is off: all attend)."""
    if not sc.attention.enabled:
        return None
    return torch.rand(entry.shape, generator=gen, device=entry.device) < attend_prob(sc, entry)


def category_shift(sc: Scenario, seed: int, device: torch.device) -> torch.Tensor:
    """``[C]`` the mini-app's logit shift per category: a fixed N(0, preference_shift^2) draw per seed."""
    gen = torch_stream(seed, "mini-app-shift")  # drawn on the CPU: the same shift on every device
    return (sc.mini_app.preference_shift * torch.randn(sc.world.n_categories, generator=gen)).to(device)


def domain_relevance(
    sc: Scenario, seed: int, item_category: torch.Tensor, item_domain: torch.Tensor, domain: torch.Tensor, relevance: torch.Tensor
) -> torch.Tensor:
    """``[B, S]`` relevance as the request's domain sees it (``relevance`` itself when the mini-app features are off).

    Args:
        item_category, item_domain: ``[B, S]`` of the slate's items.
        domain: ``[B]`` the request's domain (1: mini-app).
        relevance: ``[B, S]`` the main-feed true relevance.
    """
    m = sc.mini_app
    if m.preference_shift == 0 and m.domain_affinity == 0:
        return relevance
    logit = torch.logit(relevance.clamp(1e-6, 1 - 1e-6))
    mini = (domain == 1).unsqueeze(1)
    logit = logit + mini * category_shift(sc, seed, relevance.device)[item_category]
    logit = logit + m.domain_affinity * (item_domain == domain.unsqueeze(1))
    return torch.sigmoid(logit)


def conversions(sc: Scenario, domain: torch.Tensor, finished: torch.Tensor, relevance: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``[B, S] bool`` conversions: a finished mini-app item converts with ``conversion_prob x relevance``."""
    p = sc.mini_app.conversion_prob
    if p == 0:
        return torch.zeros_like(finished)
    u = torch.rand(finished.shape, generator=gen, device=finished.device)
    return finished & (domain == 1).unsqueeze(1) & (u < p * relevance)


def weekend_categories(sc: Scenario, seed: int, device: torch.device) -> torch.Tensor:
    """``[C] bool`` the weekend categories (a fixed random subset per seed)."""
    c = sc.world.n_categories
    gen = torch_stream(seed, "world-weekend-categories")  # drawn on the CPU: the same subset on every device
    n_weekend = max(1, round(sc.weekend.weekend_category_share * c))
    chosen = torch.randperm(c, generator=gen)[:n_weekend].to(device)
    return torch.zeros(c, dtype=torch.bool, device=device).index_fill_(0, chosen, True)


def weekend_segment(sc: Scenario, seed: int, intents: torch.Tensor) -> torch.Tensor:
    """``[N] int64`` the weekend-heavy segment, the top ``weekend_segment_share`` of users by a score that mixes
    their intent mass on weekend categories (weight ``intent_correlation``) with independent noise."""
    n, dev = intents.shape[0], intents.device
    mass = intents @ weekend_categories(sc, seed, dev).float()
    mass = (mass - mass.mean()) / mass.std().clamp_min(1e-9)
    corr = sc.weekend.intent_correlation
    noise = torch.randn(n, generator=torch_stream(seed, "world-weekend", device=dev), device=dev)
    score = corr * mass + (1.0 - corr**2) ** 0.5 * noise
    n_heavy = round(sc.world.weekend_segment_share * n)
    segment = torch.zeros(n, dtype=torch.int64, device=dev)
    segment[score.argsort(descending=True)[:n_heavy]] = 1
    return segment


def motive_signal(sc: Scenario, fb: Feedback, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(watch_time, engagement, portal_only)`` as the platform logs them, each ``[B, S]``.

    Off: the exact ones (engagement = watch_time). On: a portal click may glance at the item page
    (``portal_glance_prob``, exponential seconds), an unfinished interest click may bounce at once
    (``bounce_prob``), the logged engagement carries lognormal noise, and ``portal_only`` is the platform's
    guess "clicked but no item engagement seen".
    """
    cm = sc.click_motive
    if not cm.enabled:
        return fb.watch_time, fb.watch_time, fb.portal_only
    u = torch.rand(*fb.clicked.shape, 3, generator=gen, device=fb.clicked.device)
    portal = fb.clicked & (fb.motive == MOTIVE_PORTAL)
    glance = portal & (u[..., 0] < cm.portal_glance_prob)
    bounce = fb.clicked & ~portal & ~fb.finished & (u[..., 1] < cm.bounce_prob)
    exp_draw = -torch.log1p(-u[..., 2].clamp(max=1 - 1e-7))
    watch = torch.where(glance, cm.glance_seconds * exp_draw, torch.where(bounce, 0.0, fb.watch_time))
    z = torch.randn(fb.clicked.shape, generator=gen, device=fb.clicked.device)
    engagement = watch * torch.exp(cm.engagement_noise * z - 0.5 * cm.engagement_noise**2)
    return watch, engagement, fb.clicked & (engagement <= 0)


def observe(sc: Scenario, domain: torch.Tensor, fb: Feedback, gens: Streams) -> Feedback:
    """The feedback as the platform logs it under the enabled features (the same values when all are off)."""
    watch, engagement, portal_only = motive_signal(sc, fb, gens("motive"))
    return replace(
        fb,
        watch_time=watch,
        portal_only=portal_only,
        engagement=engagement,
        dwell=noisy_dwell(sc, fb.dwell, gens("dwell")),
        converted=conversions(sc, domain, fb.finished, fb.relevance, gens("convert")),
        scroll_depth=scroll_depth(sc, fb.examined, gens("scroll")),
    )
