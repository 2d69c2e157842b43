"""The toy world of algorithms.md §0.5 in the variant of §13(f): clicks = p*·m(pos)·k(pop), as a training view.

Latent ``θ_u, φ_i ~ N(0, I_8)``, ``p* = σ(2<θ, φ>/√8 − 2)``, popularity ``pop_i ∝ rank^-1.1`` (independent of
``φ``: popularity is pure bias here), recall of ``k_rec`` items by Gumbel-top-k on ``β·log pop + η·<θ, φ>/√8``,
exposure of the top ``k_exp`` by ``p*`` plus noise, clicks Bernoulli(``p*·m(pos)·k(pop)``) with
``m(pos) = 1/(1+pos)`` and ``k(pop) = (pop/max pop)^0.25``. The profile and the modality vectors are noisy
copies of ``θ`` and ``φ``; the catalogue's counters are the popularity prior plus the window's own counts.
"""

from __future__ import annotations

import math

import torch

from simulator.agent_api import AgentContext
from simulator.config import TrainingConfig
from simulator.log.view import Candidates, Impressions, TrainingView
from simulator.types import Catalogue, RequestBatch, UserTable
from tests.agent_fixtures import FakeScorer

D, K_POP = 8, 0.25


def _catalogue(gen: torch.Generator, phi: torch.Tensor, pop: torch.Tensor, shown: torch.Tensor, clicked: torch.Tensor) -> Catalogue:
    m = phi.shape[0]
    base = (pop * 2e5).floor()
    return Catalogue(
        live=torch.ones(m, dtype=torch.bool), category=torch.randint(0, 4, (m,), generator=gen),
        creator=torch.randint(0, 10, (m,), generator=gen), domain=torch.zeros(m, dtype=torch.int64),
        promoted=torch.zeros(m, dtype=torch.bool), modality=phi.unsqueeze(1) + 0.5 * torch.randn(m, 3, D, generator=gen),
        clicks=(base * 0.05).floor() + torch.bincount(shown[clicked], minlength=m).float(),
        exposures=base + torch.bincount(shown.flatten(), minlength=m).float(), born_round=torch.full((m,), -1, dtype=torch.int64),
    )  # fmt: skip


def _view(requests: RequestBatch, users: UserTable, catalogue: Catalogue, shown: torch.Tensor, clicked: torch.Tensor) -> TrainingView:
    n_req, k_exp = shown.shape
    e = shown.numel()
    row, pos = torch.arange(n_req).repeat_interleave(k_exp), torch.arange(k_exp).repeat(n_req)
    zero = torch.zeros(e)
    imp = Impressions(
        row=row, item_id=shown.flatten(), position=pos, retrieval_rank=pos, retrieval_score=zero, ranking_score=zero,
        exposure_propensity=torch.ones(e), clicked=clicked.flatten(), finished=clicked.flatten(), watch_time=zero, dwell=zero,
        portal_only=torch.zeros(e, dtype=torch.bool),
    )  # fmt: skip
    cand = Candidates(
        row=row, item_id=shown.flatten(), retrieval_rank=pos, retrieval_score=zero, ranking_score=zero,
        exposed=torch.ones(e, dtype=torch.bool), recall_prob=torch.ones(e), expose_prob=torch.ones(e),
    )  # fmt: skip
    s = FakeScorer()
    return TrainingView(
        round=0, first_round=0, requests=requests, request_round=torch.zeros(n_req, dtype=torch.int64),
        explore=torch.zeros(n_req, dtype=torch.bool), ranker_version=torch.zeros(n_req, dtype=torch.int64), impressions=imp,
        candidate_source=cand, catalogue=catalogue, users=users, ranker=s, rankers={0: s}, retrievers={},
        n_users=users.alive.shape[0], n_items=catalogue.capacity,
    )  # fmt: skip


def tw_view(seed: int, n_users: int = 200, n_items: int = 500, n_req: int = 4000, beta: float = 2.0, eta: float = 1.0):
    """``(ctx, view, p* [N, M])`` of the §13(f) toy world (recall 50, slate 5)."""
    gen = torch.Generator().manual_seed(seed)
    theta, phi = torch.randn(n_users, D, generator=gen), torch.randn(n_items, D, generator=gen)
    pstar = torch.sigmoid(2 * theta @ phi.T / math.sqrt(D) - 2)
    pop = (torch.randperm(n_items, generator=gen).float() + 1).pow(-1.1)
    pop = pop / pop.sum()
    ctx = AgentContext(
        n_users=n_users, n_items=n_items, n_categories=4, n_creators=10, modality_dim=D, profile_dim=D, history_len=5,
        training=TrainingConfig(epochs=3, batch_size=256, lr=0.01, embedding_dim=16), seed=seed,
    )  # fmt: skip
    uid = torch.randint(0, n_users, (n_req,), generator=gen)
    gumbel = -torch.log(-torch.log(torch.rand(n_req, n_items, generator=gen).clamp_min(1e-12)))
    rec = (beta * pop.log() + eta * (theta[uid] @ phi.T) / math.sqrt(D) + gumbel).topk(50, dim=1).indices
    ps = pstar[uid.unsqueeze(1), rec]
    shown = rec.gather(1, (ps + 0.05 * torch.randn(ps.shape, generator=gen)).argsort(dim=1, descending=True)[:, :5])
    p_click = pstar[uid.unsqueeze(1), shown] / (1.0 + torch.arange(5).float()) * (pop / pop.max()).pow(K_POP)[shown]
    clicked = torch.rand(p_click.shape, generator=gen) < p_click
    catalogue = _catalogue(gen, phi, pop, shown, clicked)
    profile = theta + 0.5 * torch.randn(n_users, D, generator=gen)
    users = UserTable(alive=torch.ones(n_users, dtype=torch.bool), profile=profile, history=torch.full((n_users, 5), -1, dtype=torch.int64))
    zeros = torch.zeros(n_req, dtype=torch.int64)
    requests = RequestBatch(
        request_id=torch.arange(n_req), user_id=uid, domain=zeros, entry=zeros, hour=torch.zeros(n_req),
        profile=profile[uid], history=users.history[uid], round=0,
    )  # fmt: skip
    return ctx, _view(requests, users, catalogue, shown, clicked), pstar
