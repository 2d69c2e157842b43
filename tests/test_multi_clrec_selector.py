"""Multi-CLRec's intent selector does not collapse (algorithms.md §11(f)); the balance and selection losses.

The intent world: 8 true intents, each owning 2 of 16 categories; a user holds one intent and every click of a
request (history and target) comes from it. Early windows have mostly empty histories, as a closed loop's first
windows do: that is what locked the paper's straight-through-only selector onto one intent for every request.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from agents import make_agent
from agents.multi_clrec import auxiliary_losses, selection_loss
from simulator.config import TrainingConfig
from simulator.log.view import Candidates, Impressions, TrainingView
from simulator.types import RequestBatch
from tests.agent_fixtures import FakeScorer, tiny_catalogue, tiny_context, tiny_users

pytestmark = pytest.mark.usefixtures("one_thread")

N_INTENTS, N_CATEGORIES, HISTORY = 8, 16, 6


def nmi(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalised mutual information (arithmetic-mean normalisation) of two label vectors."""
    joint = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    joint.index_put_((a, b), torch.ones(len(a), dtype=torch.float64), accumulate=True)
    p = joint / joint.sum()
    pa, pb = p.sum(1), p.sum(0)

    def entropy(q: torch.Tensor) -> float:
        q = q[q > 0]
        return float(-(q * q.log()).sum())

    nz = p > 0
    mi = float((p[nz] * (p[nz] / (pa.unsqueeze(1) * pb.unsqueeze(0))[nz]).log()).sum())
    return mi / (0.5 * (entropy(pa) + entropy(pb)))


def intent_view(ctx, seed: int, empty_share: float, n: int = 1500) -> tuple[TrainingView, torch.Tensor]:
    """A one-round view of ``n`` clicked requests and the true intent of each (see the module doc)."""
    gen = torch.Generator().manual_seed(seed)
    catalogue = tiny_catalogue(ctx, torch.Generator().manual_seed(0), dead_share=0.0)
    catalogue = dataclasses.replace(catalogue, category=torch.arange(ctx.n_items) % N_CATEGORIES)
    users = tiny_users(ctx, catalogue, torch.Generator().manual_seed(0))
    uid = torch.randint(0, ctx.n_users, (n,), generator=gen)
    intent = uid % N_INTENTS

    def draw(k: int) -> torch.Tensor:  # items of category 2·intent or 2·intent + 1
        base = torch.randint(0, ctx.n_items // N_CATEGORIES, (n, k), generator=gen) * N_CATEGORIES
        return base + 2 * intent.unsqueeze(1) + torch.randint(0, 2, (n, k), generator=gen)

    history, target = draw(HISTORY), draw(1).squeeze(1)
    history[torch.rand(n, generator=gen) < empty_share] = -1
    zeros, ones, none = torch.zeros(n), torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.int64)
    requests = RequestBatch(
        request_id=torch.arange(n), user_id=uid, domain=none, entry=none, hour=zeros, profile=users.profile[uid], history=history, round=2
    )  # fmt: skip
    imp = Impressions(
        row=torch.arange(n), item_id=target, position=none, retrieval_rank=none, retrieval_score=zeros, ranking_score=zeros,
        exposure_propensity=torch.ones(n), clicked=ones, finished=ones, watch_time=zeros, dwell=zeros, portal_only=~ones,
    )  # fmt: skip
    cands = Candidates(
        row=torch.arange(n), item_id=target, retrieval_rank=none, retrieval_score=zeros, ranking_score=zeros, exposed=ones,
        recall_prob=torch.ones(n), expose_prob=torch.ones(n),
    )  # fmt: skip
    scorer = FakeScorer()
    view = TrainingView(
        round=2, first_round=2, requests=requests, request_round=torch.full((n,), 2), explore=~ones, ranker_version=none,
        impressions=imp, candidate_source=cands, catalogue=catalogue, users=users, ranker=scorer, rankers={0: scorer},
        retrievers={}, n_users=ctx.n_users, n_items=ctx.n_items,
    )  # fmt: skip
    return view, intent


def trained_selection(seed: int, **overrides) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit on 3 windows with 60% empty histories then 5 with full ones; ``(h*, h+ of the targets, true intent)``
    on a fresh test view with full histories."""
    training = TrainingConfig(epochs=1, batch_size=256, lr=0.01, embedding_dim=16)
    ctx = tiny_context(seed=seed, training=training, n_users=240, n_items=320, n_categories=N_CATEGORIES, history_len=HISTORY)
    agent = make_agent("multi-clrec", ctx, intents=N_INTENTS, **overrides)
    for fit in range(8):
        agent.fit(intent_view(ctx, 100 * seed + fit, empty_share=0.6 if fit < 3 else 0.0)[0])
    test, intent = intent_view(ctx, 100 * seed + 99, empty_share=0.0)
    with torch.no_grad():
        h_star = agent.model.intents(test.requests, test.catalogue)["h_star"]
        h_plus = agent.model.item_routing(test.catalogue, test.impressions.item_id).argmax(-1)
    return h_star, h_plus, intent


@pytest.mark.parametrize("seed", [0, 1, 2, 3])  # with the straight-through selector alone (lambda_select=0), seeds 1 and 3 fail
def test_the_selector_follows_the_routing_instead_of_collapsing(seed):
    """The most-selected intent takes no more of the requests than the routing's largest intent takes of the targets,
    up to 4 binomial standard errors; the selected intent carries the true one (NMI > 0.5; 0 when collapsed); the
    routing recovers the true intents (§11(f): NMI(h+, true intent) > 0.6)."""
    h_star, h_plus, intent = trained_selection(seed)
    n = len(h_star)
    routed = float(torch.bincount(h_plus, minlength=N_INTENTS).max()) / n
    selected = float(torch.bincount(h_star, minlength=N_INTENTS).max()) / n
    assert selected <= routed + 4 * math.sqrt(routed * (1 - routed) / n), (selected, routed)
    assert nmi(h_plus, intent) > 0.6
    assert nmi(h_star, intent) > 0.5


def test_selection_loss_is_the_cross_entropy_of_the_selector_at_the_routed_intent():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0]])
    h_plus = torch.tensor([1, 1])
    expected = (-math.log(3 / 4) - math.log(1 / 3)) / 2
    assert float(selection_loss(logits, h_plus)) == pytest.approx(expected, abs=1e-6)


def test_balance_loss_gradient_pushes_the_batch_routing_toward_uniform():
    """A descent step on ``L_aux3`` raises the under-used intents' batch share ``π_h`` and lowers the largest one."""
    logits = torch.tensor([[3.0, 0.0, 0.0], [2.0, 1.0, 0.0], [2.5, 0.0, 0.5]], requires_grad=True)
    dummy = torch.zeros(1, 3)
    before = torch.softmax(logits, -1).mean(0).detach()
    aux3 = auxiliary_losses(dummy.softmax(-1), dummy, torch.softmax(logits, -1))[2]
    aux3.backward()
    assert logits.grad is not None
    after = torch.softmax(logits.detach() - 0.5 * logits.grad, -1).mean(0)
    assert float(after.max()) < float(before.max())
    assert bool((after[1:] > before[1:]).all())
    kl = lambda pi: float(sum((1 / 3) * (math.log(1 / 3) - math.log(float(p))) for p in pi))  # noqa: E731
    assert float(aux3.detach()) == pytest.approx(kl(before), abs=1e-6)
    assert kl(after) < kl(before)
