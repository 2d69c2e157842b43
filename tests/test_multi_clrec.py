"""Multi-CLRec (algorithms.md §11; CLRec §3.2): the losses, the straight-through selector, the queues, routing health."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import agents.multi_clrec as mc
from agents import make_agent
from agents.multi_clrec import auxiliary_losses, multi_queue_loss, routing_entropy, straight_through
from agents.multi_clrec_model import routing
from tests.agent_fixtures import tiny_context, tiny_view

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctx():
    return tiny_context(seed=7)


@pytest.fixture(scope="module")
def view(ctx):
    return tiny_view(ctx, seed=7)


# --- losses ---------------------------------------------------------------------------------------


def test_straight_through_is_one_hot_forward_and_passes_gradient_to_the_selection_weights():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=gen, requires_grad=True)
    w = torch.softmax(logits, -1)
    w_hat = straight_through(w)
    assert torch.allclose(w_hat, F.one_hot(w.argmax(-1), 4).float(), atol=1e-6)
    pos = torch.randn(5, 4, generator=gen)
    neg = torch.randn(5, 4, 7, generator=gen)
    loss = multi_queue_loss(pos, w_hat, neg, torch.zeros(5, 7))
    loss.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 1e-4
    # the forward value is the hard-selected loss: −s_{h*,T} + log Σ_{h', y'} exp(s_{h', y'})
    h_star = w.argmax(-1)
    hard = (torch.logsumexp(neg.flatten(1), -1) - pos.gather(1, h_star.unsqueeze(1)).squeeze(1)).mean()
    assert float(loss.detach()) == pytest.approx(float(hard), abs=1e-5)


def test_multi_queue_loss_with_counts_equals_the_loop_over_every_queue_entry():
    """Distinct items weighted by their multiplicity == re-encoding every entry of Q_0 ∪ Q_{h+}."""
    gen = torch.Generator().manual_seed(1)
    b, h, n_items = 3, 2, 6
    scores = torch.randn(b, h, n_items, generator=gen)  # s_{h, y} for every item y
    q0 = torch.tensor([0, 1, 1, 4])  # duplicates kept
    secondary = [torch.tensor([2, 2, 5]), torch.tensor([3])]
    h_plus = torch.tensor([0, 1, 0])
    pos = torch.randn(b, h, generator=gen)
    w_hat = F.one_hot(torch.tensor([1, 0, 1]), h).float()
    losses = []
    for r in range(b):
        entries = torch.cat([q0, secondary[int(h_plus[r])]])
        denom = torch.logsumexp(scores[r][:, entries].flatten(), 0)
        losses.append(denom - torch.log((w_hat[r] * pos[r].exp()).sum()))
    expected = torch.stack(losses).mean()
    c0 = torch.bincount(q0, minlength=n_items).float()
    sec = torch.stack([torch.bincount(s, minlength=n_items).float() for s in secondary])
    counts = c0.unsqueeze(0) + sec[h_plus]
    assert float(multi_queue_loss(pos, w_hat, scores, counts.log())) == pytest.approx(float(expected), abs=1e-5)


def test_auxiliary_losses_follow_eqs_10_to_12():
    p_target = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    s_target = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.5, 3.0]])
    uniform = torch.full((4, 3), 1 / 3)
    aux1, aux2, aux3 = auxiliary_losses(p_target, s_target, uniform)
    assert float(aux1) == pytest.approx(-(math.log(0.7) + math.log(0.6)) / 2, abs=1e-6)
    ce = [-(2.0 - math.log(math.exp(2) + 1 + math.exp(1))), -(3.0 - math.log(2 * math.exp(0.5) + math.exp(3)))]
    assert float(aux2) == pytest.approx(sum(ce) / 2, abs=1e-5)
    assert float(aux3) == pytest.approx(0.0, abs=1e-6)  # KL(uniform ‖ uniform)
    skewed = torch.tensor([[0.8, 0.1, 0.1], [0.8, 0.1, 0.1]])
    pi = skewed.mean(0)
    expected = float(sum((1 / 3) * (math.log(1 / 3) - math.log(float(p))) for p in pi))
    assert float(auxiliary_losses(p_target, s_target, skewed)[2]) == pytest.approx(expected, abs=1e-6)
    assert expected > 0.3


def test_routing_uses_the_cosine_with_the_prototypes_over_rho():
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    c = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    p = routing(mu, c, rho=0.5)
    assert torch.allclose(p[0], torch.softmax(torch.tensor([1.0, 0.0]) / 0.5, 0))
    assert torch.allclose(p[1], torch.tensor([0.5, 0.5]))
    ent, per_item = routing_entropy(p)
    assert 0 < per_item < ent <= math.log(2) + 1e-6


# --- queues ---------------------------------------------------------------------------------------


def test_queue_updates_follow_the_paper(ctx, view):
    """Positives enter Q_0; what falls off Q_0 goes to Q_{h−} of its routed intent; secondary overflow is dropped."""
    agent = make_agent("multi-clrec", ctx, intents=2, queue_size=4, secondary_size=2, prefill_secondary=False)
    cat = view.catalogue
    with torch.no_grad():  # categories 0, 2 -> intent 0; categories 1, 3 -> intent 1
        agent.model.category.weight.zero_()
        agent.model.category.weight[0::2, 0] = 1.0
        agent.model.category.weight[1::2, 1] = 1.0
        agent.model.prototypes.weight.copy_(torch.eye(2, agent.model.d))
    even = torch.nonzero(cat.category % 2 == 0).squeeze(1)[:4]
    odd = torch.nonzero(cat.category % 2 == 1).squeeze(1)[:3]
    first = torch.cat([even[:2], odd[:2]])
    agent.update_queues(cat, first)
    assert agent.main_queue.ids.tolist() == first.tolist()
    assert all(len(q) == 0 for q in agent.secondary)
    second = torch.cat([even[2:4], odd[2:3]])
    agent.update_queues(cat, second)
    assert agent.main_queue.ids.tolist() == [int(odd[1]), *second.tolist()]  # FIFO: the oldest three left
    assert agent.secondary[0].ids.tolist() == even[:2].tolist()
    assert agent.secondary[1].ids.tolist() == odd[:1].tolist()
    agent.update_queues(cat, even[:3])  # pushes odd[1], even[2], even[3] out of Q_0
    assert agent.secondary[0].ids.tolist() == [int(even[2]), int(even[3])]  # capacity 2: even[0], even[1] dropped
    assert agent.secondary[1].ids.tolist() == [int(odd[0]), int(odd[1])]
    c0, sec = agent.queue_counts(cat.capacity)
    assert float(c0.sum()) == 4 and float(sec.sum()) == 4


# --- the agent ------------------------------------------------------------------------------------


def test_fit_reports_routing_entropy_of_the_live_catalogue(ctx, view):
    agent = make_agent("multi-clrec", ctx, intents=4)
    diag = agent.fit(view)
    for key in ("loss", "loss_cl", "aux1", "aux2", "aux3", "select", "routing_entropy", "routing_item_entropy", "intents_used"):
        assert math.isfinite(diag[key]), key
    assert diag["routing_entropy_max"] == pytest.approx(math.log(4))
    with torch.no_grad():
        p = agent.model.item_routing(view.catalogue, view.catalogue.live_ids())
    assert diag["routing_entropy"] == pytest.approx(routing_entropy(p)[0], abs=1e-5)
    assert 0.0 <= diag["routing_entropy"] <= math.log(4) + 1e-6
    assert 1 <= diag["intents_used"] <= 4


def _selector_change(ctx, view, **overrides) -> float:
    agent = make_agent("multi-clrec", ctx, intents=4, epochs=1, **overrides)
    before = [p.detach().clone() for p in agent.model.mlp4.parameters()]
    agent.fit(view)
    return sum(float((a - b.detach()).abs().sum()) for a, b in zip(before, agent.model.mlp4.parameters(), strict=True))


def test_straight_through_trains_the_selector_end_to_end(ctx, view, monkeypatch):
    """Without ``L_sel`` (the paper), MLP4 (the selector's ``m``) only reaches the loss through ``ŵ``: it learns iff
    straight-through passes gradient; ``L_sel`` trains it even through a hard argmax."""
    assert _selector_change(ctx, view, lambda_select=0.0) > 1e-3
    monkeypatch.setattr(mc, "straight_through", lambda w: F.one_hot(w.argmax(-1), w.shape[-1]).to(w.dtype))  # a hard argmax
    assert _selector_change(ctx, view, lambda_select=0.0) == 0.0
    assert _selector_change(ctx, view) > 1e-3


def test_aux_weights_zero_leave_the_prototypes_to_the_main_loss_only(ctx, view):
    """With λ = 0 the run differs from the default one (the auxiliary losses are really in the objective)."""
    a = make_agent("multi-clrec", ctx, intents=4, epochs=1)
    b = make_agent("multi-clrec", ctx, intents=4, epochs=1, lambda1=0.0, lambda2=0.0, lambda3=0.0, lambda_select=0.0)
    da, db = a.fit(view), b.fit(view)
    assert da["loss"] != pytest.approx(db["loss"])
    assert db["loss"] == pytest.approx(db["loss_cl"], rel=1e-5)


# --- learning on an intent world ------------------------------------------------------------------


def intent_world(ctx, seed: int, n_requests: int = 1500):
    """Items ``i`` have category ``i mod 8``; true intent ``k`` owns categories ``2k, 2k+1``; each user has one
    intent; a request's 5-click history and its clicked target are drawn from the user's intent."""
    import dataclasses

    from simulator.log.view import Candidates, Impressions, TrainingView
    from simulator.types import RequestBatch

    try:
        from tests.agent_fixtures import FakeScorer, tiny_catalogue, tiny_users
    except ImportError:
        from agent_fixtures import FakeScorer, tiny_catalogue, tiny_users
    gen = torch.Generator().manual_seed(seed)
    catalogue = tiny_catalogue(ctx, torch.Generator().manual_seed(0), dead_share=0.0)
    catalogue = dataclasses.replace(catalogue, category=torch.arange(ctx.n_items) % 8)
    users = tiny_users(ctx, catalogue, torch.Generator().manual_seed(0))
    uid = torch.randint(0, ctx.n_users, (n_requests,), generator=gen)
    intent = uid % 4

    def draw(n: int) -> torch.Tensor:
        base = torch.randint(0, ctx.n_items // 8, (n_requests, n), generator=gen) * 8
        return base + 2 * intent.unsqueeze(1) + torch.randint(0, 2, (n_requests, n), generator=gen)

    history, target = draw(5), draw(1).squeeze(1)
    n, zeros, ones = n_requests, torch.zeros(n_requests), torch.ones(n_requests, dtype=torch.bool)
    requests = RequestBatch(
        request_id=torch.arange(n), user_id=uid, domain=torch.zeros(n, dtype=torch.int64), entry=torch.zeros(n, dtype=torch.int64),
        hour=zeros, profile=users.profile[uid], history=history, round=2,
    )  # fmt: skip
    imp = Impressions(
        row=torch.arange(n), item_id=target, position=torch.zeros(n, dtype=torch.int64), retrieval_rank=torch.zeros(n, dtype=torch.int64),
        retrieval_score=zeros, ranking_score=zeros, exposure_propensity=torch.ones(n), clicked=ones, finished=ones,
        watch_time=zeros, dwell=zeros, portal_only=~ones,
    )  # fmt: skip
    cands = Candidates(
        row=torch.arange(n), item_id=target, retrieval_rank=torch.zeros(n, dtype=torch.int64), retrieval_score=zeros,
        ranking_score=zeros, exposed=ones, recall_prob=torch.ones(n), expose_prob=torch.ones(n),
    )  # fmt: skip
    scorer = FakeScorer()
    view = TrainingView(
        round=2, first_round=2, requests=requests, request_round=torch.full((n,), 2), explore=~ones,
        ranker_version=torch.zeros(n, dtype=torch.int64), impressions=imp, candidate_source=cands, catalogue=catalogue,
        users=users, ranker=scorer, rankers={0: scorer}, retrievers={}, n_users=ctx.n_users, n_items=ctx.n_items,
    )  # fmt: skip
    return view, intent


def test_multi_clrec_learns_the_intents_without_collapsing_the_selector():
    """Top-10 items should come from the request's true intent (chance: 1/4), with the selection spread
    over the intents (the failure mode of a collapsed model: everything at chance, one intent selected)."""
    from simulator.config import TrainingConfig

    training = TrainingConfig(epochs=1, batch_size=256, lr=0.01, embedding_dim=16)
    ctx = tiny_context(seed=0, training=training, n_users=200, n_items=200, n_categories=8)
    agent = make_agent("multi-clrec", ctx, intents=8)
    for fit in range(6):
        diag = agent.fit(intent_world(ctx, fit)[0])
    test, intent = intent_world(ctx, 99)
    agent.index(test.catalogue)
    ids, _ = agent.retrieve(test.requests, 10)
    precision = float(((ids % 8) // 2 == intent.unsqueeze(1)).float().mean())
    assert precision > 0.6, precision
    assert diag["selection_share_max"] < 0.6
    assert diag["loss_cl"] < math.log(8 * 2 * 1280) - 1.0  # well below the "all logits equal" value log(H·|Q_0 ∪ Q_h|)


def test_serving_several_intents_scores_each_item_by_its_best_intent(ctx, view):
    from agents import check_agent

    try:
        from tests.agent_fixtures import make_requests
    except ImportError:
        from agent_fixtures import make_requests
    requests = make_requests(view.users, torch.Generator().manual_seed(3), 12, first_id=9000, round_idx=3)
    agent = make_agent("multi-clrec", ctx, intents=4, serve_intents=4)
    check_agent(agent, view, requests, k=8)  # retrieve/score agree, resume is exact
    agent.index(view.catalogue)
    ids, scores = agent.retrieve(requests, 8)
    with torch.no_grad():
        z = agent.model.intents(requests, view.catalogue)["z"]  # all H intent vectors
        g = agent.model.item_embedding(view.catalogue, ids)
    best = agent.model.scale * torch.einsum("bkd,bhd->bkh", g, z).max(-1).values
    assert torch.allclose(scores, best, atol=1e-4)
    single = make_agent("multi-clrec", ctx, intents=4)
    single.load_state_dict(agent.state_dict())
    single.index(view.catalogue)
    assert bool((single.retrieve(requests, 8)[1] <= scores + 1e-4).all())  # one intent never scores higher than the best of all
