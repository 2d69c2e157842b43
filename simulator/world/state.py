"""The world's private state (ground truth) and its generation.

``WorldState`` owns every tensor of the truth: latent vectors, quality,
intents, activity, attention, conformity, boredom. It is mutated in place by
:mod:`simulator.world.dynamics` only. Agents never receive it: they see the
observable :class:`~simulator.types.Catalogue` and
:class:`~simulator.types.UserTable` built by :func:`observe`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from simulator.config import Scenario
from simulator.rng import torch_stream
from simulator.types import Catalogue, UserTable
from simulator.world.features import weekend_segment


@dataclass
class WorldState:
    """Ground truth. Item arrays have the item capacity ``M``, user arrays ``N``."""

    # categories
    prototypes: torch.Tensor  # [C, d] category prototypes
    # items
    item_latent: torch.Tensor  # [M, d]
    item_quality: torch.Tensor  # [M]
    item_category: torch.Tensor  # [M] int64
    item_creator: torch.Tensor  # [M] int64
    item_domain: torch.Tensor  # [M] int64
    item_promoted: torch.Tensor  # [M] bool
    item_duration: torch.Tensor  # [M] seconds
    item_born: torch.Tensor  # [M] int64 round of arrival (-warm-1: initial; later slots hold their future round)
    item_death: torch.Tensor  # [M] int64 round of retirement (huge: never)
    item_live: torch.Tensor  # [M] bool
    item_modality: torch.Tensor  # [M, 3, D_m] observable noisy views (fixed at birth)
    item_clicks: torch.Tensor  # [M] observed popularity counters
    item_exposures: torch.Tensor  # [M]
    # users
    user_latent: torch.Tensor  # [N, d] current (drifts)
    user_latent0: torch.Tensor  # [N, d] at start, for the drift metric
    user_intents: torch.Tensor  # [N, C] intent mixture (rows sum to 1)
    user_activity: torch.Tensor  # [N] relative visit rate
    user_attention: torch.Tensor  # [N] examination depth multiplier
    user_conformity: torch.Tensor  # [N] sway of observed popularity
    user_segment: torch.Tensor  # [N] int64 0 weekday-heavy, 1 weekend-heavy
    user_alive: torch.Tensor  # [N] bool
    user_joined: torch.Tensor  # [N] int64 round the user joins (-warm-1: initial)
    user_boredom: torch.Tensor  # [N, C] relevance penalty per category
    user_satisfaction: torch.Tensor  # [N] EMA of finished items per visit
    user_profile: torch.Tensor  # [N, D_p] observable noisy profile
    user_history: torch.Tensor  # [N, L] observable click history, -1 padded
    # per-round consumption accumulators, folded in by dynamics at the round's end
    acc_latent: torch.Tensor  # [N, d] sum of latents of finished items
    acc_category: torch.Tensor  # [N, C] finished items per category
    acc_visits: torch.Tensor  # [N] requests served
    acc_finished: torch.Tensor  # [N] finished items
    user_history_time: torch.Tensor | None = None  # [N, L] float64 hours of each history click, NaN padded

    @property
    def device(self) -> torch.device:
        return self.item_latent.device

    def copy(self) -> WorldState:
        """An independent deep copy (each closed loop evolves its own world)."""
        return copy.deepcopy(self)

    def to(self, device: torch.device) -> WorldState:
        """The same world with every tensor on ``device``."""
        moved: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            moved[field.name] = None if value is None else value.to(device)
        return WorldState(**moved)


def _zipf_choice(n_choices: int, size: int, skew: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    weights = torch.arange(1, n_choices + 1, device=device, dtype=torch.float32).pow(-skew)
    return torch.multinomial(weights, size, replacement=True, generator=gen)


def _lognormal(size: int, sigma: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Lognormal with mean 1 (sigma 0 gives all ones)."""
    z = torch.randn(size, generator=gen, device=device)
    return torch.exp(sigma * z - 0.5 * sigma**2)


def _arrivals(sc: Scenario, m: int, gen: torch.Generator, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(born, death)`` rounds of every item slot: the initial catalogue predates the warm start, then
    ``new_items_per_round`` a round from the warm start on; exponential lifetimes (never, when 0)."""
    warm, n_items = sc.timeline.warm_start_rounds, sc.world.n_items
    born = torch.full((m,), -warm - 1, dtype=torch.int64, device=dev)
    born[n_items:] = torch.arange(m - n_items, device=dev) // max(sc.dynamics.new_items_per_round, 1) - warm
    life = sc.dynamics.item_lifetime_rounds
    if life <= 0:
        return born, torch.full((m,), 2**62, dtype=torch.int64, device=dev)
    lifetime = torch.ceil(-life * torch.log1p(-torch.rand(m, generator=gen, device=dev))).long().clamp_min(1)
    return born, born.clamp_min(-warm) + lifetime


def _make_items(sc: Scenario, protos: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    w, f = sc.world, sc.features
    m, dev = sc.item_capacity, protos.device
    creator = _zipf_choice(w.n_creators, m, w.creator_skew, gen, dev)
    creator_category = _zipf_choice(w.n_categories, w.n_creators, w.category_skew, gen, dev)
    category = creator_category[creator]
    latent = protos[category] + w.item_spread / w.d_true**0.5 * torch.randn(m, w.d_true, generator=gen, device=dev)
    quality = w.quality_std * torch.randn(m, generator=gen, device=dev)
    # noisy multimodal views: three random projections of the latent plus noise
    proj = torch.randn(3, w.d_true, f.modality_dim, generator=gen, device=dev) / w.d_true**0.5
    noise = torch.tensor(f.modality_noise, device=dev).view(1, 3, 1)
    modality = torch.einsum("md,kde->mke", latent, proj) + noise * torch.randn(m, 3, f.modality_dim, generator=gen, device=dev)
    warm = sc.timeline.warm_start_rounds
    born, death = _arrivals(sc, m, gen, dev)
    prior = torch.poisson(
        w.prior_clicks * torch.exp(w.popularity_confounding * quality + 0.5 * torch.randn(m, generator=gen, device=dev)), generator=gen
    )
    return {
        "item_latent": latent,
        "item_quality": quality,
        "item_category": category,
        "item_creator": creator,
        "item_domain": (torch.rand(m, generator=gen, device=dev) < w.mini_app_share).long(),
        "item_promoted": torch.rand(m, generator=gen, device=dev) < w.promoted_share,
        "item_duration": 60.0 * _lognormal(m, sc.user_model.duration_sigma, gen, dev),
        "item_born": born,
        "item_death": death,
        "item_live": born < -warm,
        "item_modality": modality.float(),
        "item_clicks": torch.where(born < -warm, prior, torch.zeros_like(prior)),
        "item_exposures": torch.where(born < -warm, prior * 10.0, torch.zeros_like(prior)),
    }


def _unit_exponential(shape: tuple[int, ...], gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    """Exp(1) draws as ``-log U``; ``U`` is floored at 1e-12 because ``torch.rand`` returns exactly 0 about once in
    2^24 float32 draws, and one ``inf`` times a zero weight made a whole intent row NaN at 1M users."""
    return -torch.log(torch.rand(shape, generator=gen, device=dev).clamp_min(1e-12))


def _intent_mixture(sc: Scenario, n: int, gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    """``[n, C]`` sparse intent mixtures: 1 + Poisson(mean - 1) intents, Dirichlet(1) weights."""
    w, c = sc.world, sc.world.n_categories
    n_int = (1 + torch.poisson(torch.full((n,), w.intents_per_user - 1.0, device=dev), generator=gen)).clamp(max=c).long()
    cat_w = torch.arange(1, c + 1, device=dev, dtype=torch.float32).pow(-w.category_skew)
    keys = torch.rand(n, c, generator=gen, device=dev).log() / cat_w  # Gumbel-style weighted order (Efraimidis-Spirakis)
    order = keys.argsort(dim=1, descending=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(c, device=dev).expand(n, c))
    held = rank < n_int.unsqueeze(1)
    weights = _unit_exponential((n, c), gen, dev) * held
    return weights / weights.sum(1, keepdim=True)


def _make_users(sc: Scenario, protos: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    w, f = sc.world, sc.features
    n, c, dev = sc.user_capacity, w.n_categories, protos.device
    intents = _intent_mixture(sc, n, gen, dev)
    latent = intents @ protos + w.user_noise / w.d_true**0.5 * torch.randn(n, w.d_true, generator=gen, device=dev)
    proj = torch.randn(w.d_true, f.profile_dim, generator=gen, device=dev) / w.d_true**0.5
    profile = latent @ proj + f.profile_noise * torch.randn(n, f.profile_dim, generator=gen, device=dev)
    warm = sc.timeline.warm_start_rounds
    joined = torch.full((n,), -warm - 1, dtype=torch.int64, device=dev)
    joined[w.n_users :] = torch.arange(n - w.n_users, device=dev) // max(sc.dynamics.new_users_per_round, 1) - warm
    # Gamma(2, 2) (mean 1) as the mean of two unit exponentials, drawn from our own stream
    gamma2 = _unit_exponential((n, 2), gen, dev).mean(1)
    conformity = w.conformity_mean * gamma2
    return {
        "user_latent": latent,
        "user_latent0": latent.clone(),
        "user_intents": intents,
        "user_activity": _lognormal(n, w.activity_sigma, gen, dev),
        "user_attention": _lognormal(n, w.attention_sigma, gen, dev),
        "user_conformity": conformity.clamp(max=1.0),
        "user_segment": (torch.rand(n, generator=gen, device=dev) < w.weekend_segment_share).long(),
        "user_alive": joined < -warm,
        "user_joined": joined,
        "user_boredom": torch.zeros(n, c, device=dev),
        "user_satisfaction": torch.full((n,), 1.0, device=dev),
        "user_profile": profile.float(),
        "user_history": torch.full((n, f.history_len), -1, dtype=torch.int64, device=dev),
        "user_history_time": torch.full((n, f.history_len), float("nan"), dtype=torch.float64, device=dev),
        "acc_latent": torch.zeros(n, w.d_true, device=dev),
        "acc_category": torch.zeros(n, c, device=dev),
        "acc_visits": torch.zeros(n, device=dev),
        "acc_finished": torch.zeros(n, device=dev),
    }


def generate_world(sc: Scenario, seed: int, device: torch.device | str = "cpu") -> WorldState:
    """Draw the initial world for ``seed`` (identical for every agent of that seed, and on every device: the draws
    are made on the CPU and the tensors moved once, so a CUDA run starts from the CPU run's world)."""
    dev = torch.device("cpu")
    gen = torch_stream(seed, "world", device=dev)
    w = sc.world
    protos = torch.randn(w.n_categories, w.d_true, generator=gen, device=dev)
    protos = protos / protos.norm(dim=1, keepdim=True)
    items = _make_items(sc, protos, gen)  # items before users: the order of draws on the world stream
    users = _make_users(sc, protos, gen)
    if sc.weekend.intent_correlation > 0:  # own streams: the world stream's draws stay as they were
        users["user_segment"] = weekend_segment(sc, seed, users["user_intents"])
    return WorldState(prototypes=protos, **items, **users).to(torch.device(device))


def observe(world: WorldState) -> tuple[Catalogue, UserTable]:
    """The observable view of the world: what the platform logs as feature tables."""
    catalogue = Catalogue(
        live=world.item_live.clone(),
        category=world.item_category.clone(),
        creator=world.item_creator.clone(),
        domain=world.item_domain.clone(),
        promoted=world.item_promoted.clone(),
        modality=world.item_modality.clone(),
        clicks=world.item_clicks.clone(),
        exposures=world.item_exposures.clone(),
        born_round=world.item_born.clone(),
    )
    times = world.user_history_time
    users = UserTable(
        alive=world.user_alive.clone(),
        profile=world.user_profile.clone(),
        history=world.user_history.clone(),
        history_time=None if times is None else times.clone(),
    )
    return catalogue, users
