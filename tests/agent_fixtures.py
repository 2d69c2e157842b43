"""Hand-built observable records for the agent tests (no world, no log store).

Everything comes from a seeded ``torch.Generator``. The toy rule behind the
clicks: a user whose first profile feature is positive likes even categories,
the others like odd categories (click probability 0.9 on a match, 0.05 else).
"""

from __future__ import annotations

import torch

from simulator.agent_api import AgentContext
from simulator.config import TrainingConfig
from simulator.log.view import Candidates, Impressions, TrainingView
from simulator.types import Catalogue, RequestBatch, UserTable

P_MATCH, P_MISS = 0.9, 0.05


class FakeScorer:
    """A frozen 'ranker' that scores every pair 0.5."""

    version = 0

    def score(self, requests: RequestBatch, item_ids: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` constant 0.5."""
        return torch.full(item_ids.shape, 0.5)


def tiny_context(seed: int = 0, training: TrainingConfig | None = None, **sizes: int) -> AgentContext:
    """A small :class:`AgentContext` (sizes overridable by keyword)."""
    dims = dict(n_users=40, n_items=60, n_categories=4, n_creators=6, modality_dim=3, profile_dim=4, history_len=5)
    dims.update(sizes)
    training = training or TrainingConfig(epochs=2, batch_size=64, lr=0.01, embedding_dim=8)
    return AgentContext(**dims, training=training, seed=seed)


def tiny_catalogue(ctx: AgentContext, gen: torch.Generator, dead_share: float = 0.2) -> Catalogue:
    """Random item features; about ``dead_share`` of the items are not live."""
    m = ctx.n_items
    exposures = torch.randint(0, 200, (m,), generator=gen).float()
    return Catalogue(
        live=torch.rand(m, generator=gen) >= dead_share,
        category=torch.randint(0, ctx.n_categories, (m,), generator=gen),
        creator=torch.randint(0, ctx.n_creators, (m,), generator=gen),
        domain=torch.randint(0, 2, (m,), generator=gen),
        promoted=torch.rand(m, generator=gen) < 0.1,
        modality=torch.randn(m, 3, ctx.modality_dim, generator=gen),
        clicks=torch.floor(exposures * torch.rand(m, generator=gen) * 0.3),
        exposures=exposures,
        born_round=torch.full((m,), -1, dtype=torch.int64),
    )


def tiny_users(ctx: AgentContext, catalogue: Catalogue, gen: torch.Generator) -> UserTable:
    """Random profiles and -1-padded histories of live items."""
    n, length = ctx.n_users, ctx.history_len
    live = catalogue.live_ids()
    history = live[torch.randint(0, len(live), (n, length), generator=gen)]
    pad = torch.arange(length).expand(n, length) < torch.randint(0, length + 1, (n, 1), generator=gen)
    return UserTable(
        alive=torch.ones(n, dtype=torch.bool),
        profile=torch.randn(n, ctx.profile_dim, generator=gen),
        history=torch.where(pad, torch.full_like(history, -1), history),
    )


def make_requests(users: UserTable, gen: torch.Generator, n: int, first_id: int = 0, round_idx: int = 0) -> RequestBatch:
    """``n`` requests of uniformly drawn users with ids ``first_id, first_id + 1, ...``."""
    uid = torch.randint(0, users.alive.shape[0], (n,), generator=gen)
    return RequestBatch(
        request_id=torch.arange(first_id, first_id + n),
        user_id=uid,
        domain=torch.randint(0, 2, (n,), generator=gen),
        entry=torch.randint(0, 3, (n,), generator=gen),
        hour=torch.rand(n, generator=gen) * 168.0,
        profile=users.profile[uid],
        history=users.history[uid],
        round=round_idx,
    )


def click_prob(requests: RequestBatch, item_ids: torch.Tensor, catalogue: Catalogue) -> torch.Tensor:
    """Toy truth: ``[B, K]`` click probability, high when the category parity matches the profile sign."""
    likes_even = (requests.profile[:, 0] > 0).unsqueeze(1)
    even = catalogue.category[item_ids] % 2 == 0
    return torch.where(likes_even == even, P_MATCH, P_MISS)


def random_slates(catalogue: Catalogue, n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, k]`` distinct live items per row, uniformly at random."""
    live = catalogue.live_ids()
    return live[torch.rand(n, len(live), generator=gen).topk(k, dim=1).indices]


def tiny_view(ctx: AgentContext, seed: int = 0, n_requests: int = 200, slate: int = 5) -> TrainingView:
    """A training view of uniformly logged slates with toy-rule clicks; recall = 2 x slate items."""
    gen = torch.Generator().manual_seed(seed)
    catalogue = tiny_catalogue(ctx, gen)
    users = tiny_users(ctx, catalogue, gen)
    requests = make_requests(users, gen, n_requests, first_id=1000, round_idx=2)
    recalled = random_slates(catalogue, n_requests, 2 * slate, gen)
    shown = recalled[:, :slate]
    clicked = torch.rand(shown.shape, generator=gen) < click_prob(requests, shown, catalogue)
    finished = clicked & (torch.rand(shown.shape, generator=gen) < 0.6)
    rank = torch.arange(slate).expand(n_requests, slate)
    row = torch.arange(n_requests).unsqueeze(1).expand(n_requests, slate)
    impressions = Impressions(
        row=row.flatten(), item_id=shown.flatten(), position=rank.flatten(), retrieval_rank=rank.flatten(),
        retrieval_score=-rank.flatten().float(), ranking_score=torch.rand(shown.numel(), generator=gen),
        exposure_propensity=torch.ones(shown.numel()), clicked=clicked.flatten(), finished=finished.flatten(),
        watch_time=finished.flatten().float() * 60.0, dwell=torch.rand(shown.numel(), generator=gen),
        portal_only=torch.zeros(shown.numel(), dtype=torch.bool),
    )  # fmt: skip
    c_rank = torch.arange(2 * slate).expand(n_requests, 2 * slate).flatten()
    candidates = Candidates(
        row=torch.arange(n_requests).repeat_interleave(2 * slate), item_id=recalled.flatten(),
        retrieval_rank=c_rank, retrieval_score=-c_rank.float(), ranking_score=torch.rand(c_rank.numel(), generator=gen),
        exposed=c_rank < slate, recall_prob=torch.ones(c_rank.numel()), expose_prob=torch.ones(c_rank.numel()),
    )  # fmt: skip
    scorer = FakeScorer()
    return TrainingView(
        round=2, first_round=0, requests=requests, request_round=torch.full((n_requests,), 2),
        explore=torch.zeros(n_requests, dtype=torch.bool), ranker_version=torch.zeros(n_requests, dtype=torch.int64),
        impressions=impressions, candidate_source=candidates, catalogue=catalogue, users=users, ranker=scorer, retrievers={},
        rankers={0: scorer}, n_users=ctx.n_users, n_items=ctx.n_items,
    )  # fmt: skip


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mann-Whitney AUC of ``scores [n]`` against binary ``labels [n]`` (ties broken arbitrarily)."""
    ranks = torch.empty(len(scores), dtype=torch.float64)
    ranks[scores.argsort()] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    pos = labels.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
