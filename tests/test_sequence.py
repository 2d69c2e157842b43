"""The CLRec sequence encoder (agents/backbone/sequence.py) and the click times it reads from the log
(``RequestBatch.history_time``, kept by ``simulator/world/dynamics.append_history``)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from agents.backbone.sequence import SequenceTowerConfig, SequenceTwoTower, backward_positions, time_buckets
from agents.backbone.sequence_core import SequenceRetriever
from simulator.round import training_view
from scenarios.experiment import warm_started_loop
from simulator.rng import torch_stream
from simulator.world import dynamics
from tests.agent_fixtures import make_requests, tiny_context, tiny_view
from tests.conftest import tiny_scenario

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctx():
    return tiny_context(seed=1)


@pytest.fixture(scope="module")
def view(ctx):
    return tiny_view(ctx, seed=1)


def _timed(requests, gen: torch.Generator):
    """``requests`` with click times: request time in [100, 300) h, clicks 0-200 h before it, NaN on padding."""
    b, length = requests.history.shape
    now = 100.0 + 200.0 * torch.rand(b, generator=gen, dtype=torch.float64)
    ago = torch.sort(200.0 * torch.rand(b, length, generator=gen, dtype=torch.float64), dim=1, descending=True).values
    times = torch.where(requests.history >= 0, now.unsqueeze(1) - ago, torch.nan)
    return replace(requests, time=now, history_time=times)


def _model(ctx, **kw) -> SequenceTwoTower:
    return SequenceTwoTower(ctx, SequenceTowerConfig(embedding_dim=8, **kw), seed=5)


# --- time buckets and backward positions ----------------------------------------------------------


def test_time_buckets_follow_the_gap_and_mark_unknown_times(ctx, view) -> None:
    req = view.requests.select(torch.arange(2))
    hist = torch.tensor([[3, 4, 5, 6], [-1, -1, 7, 8]])
    now = torch.tensor([100.0, 50.0], dtype=torch.float64)
    times = torch.tensor([[99.5, 99.0, 90.0, -900.0], [math.nan, math.nan, 50.0, 49.0]], dtype=torch.float64)
    req = replace(req, history=hist, time=now, history_time=times, profile=req.profile, user_id=req.user_id)
    edges = torch.tensor([1.0, 4.0, 12.0])
    # gaps: 0.5 -> 1, 1.0 -> 1 (edge inclusive), 10 -> 3, 1000 -> 4 (overflow); NaN -> 0; 0 -> 1; 1 -> 1
    assert time_buckets(req, edges).tolist() == [[1, 1, 3, 4], [0, 0, 1, 1]]
    assert time_buckets(replace(req, history_time=None), edges).eq(0).all()


def test_backward_positions_put_the_earliest_click_at_zero() -> None:
    hist = torch.tensor([[-1, -1, 7, 8, 9], [1, 2, 3, 4, 5], [-1, -1, -1, -1, -1]])
    pos = backward_positions(hist)
    assert pos[0, 2:].tolist() == [0, 1, 2]
    assert pos[1].tolist() == [0, 1, 2, 3, 4]
    assert pos[2].eq(0).all()


# --- the encoder --------------------------------------------------------------------------------


def test_outputs_are_unit_vectors_and_logits_are_cosine_over_rho(ctx, view) -> None:
    model = _model(ctx, rho=0.1)
    req = _timed(view.requests.select(torch.arange(12)), torch.Generator().manual_seed(0))
    f = model.user_embedding(req, view.catalogue)
    g = model.item_embedding(view.catalogue, torch.arange(20))
    assert torch.allclose(f.norm(dim=1), torch.ones(12), atol=1e-5)
    assert torch.allclose(g.norm(dim=1), torch.ones(20), atol=1e-5)
    logits = model.logits(f, g)
    assert torch.allclose(logits, 10.0 * torch.nn.functional.cosine_similarity(f.unsqueeze(1), g.unsqueeze(0), dim=-1), atol=1e-4)
    assert logits.abs().max() <= 10.0 + 1e-4
    z = model.heads(req, view.catalogue)
    assert z.shape == (12, 4, 8) and torch.allclose(z.norm(dim=-1), torch.ones(12, 4), atol=1e-5)
    f_raw, alpha = model.wha(z)
    assert torch.allclose(alpha.sum(1), torch.ones(12), atol=1e-6)
    assert torch.allclose(torch.nn.functional.normalize(f_raw, dim=-1), f, atol=1e-6)


def test_padding_is_ignored_but_click_times_and_order_matter(ctx, view) -> None:
    model = _model(ctx)
    gen = torch.Generator().manual_seed(1)
    req = _timed(view.requests.select(torch.arange(40)), gen)
    full = (req.history >= 0).all(1)
    padded = (req.history < 0).any(1) & (req.history >= 0).sum(1).ge(2)
    assert bool(full.any()) and bool(padded.any())
    f = model.user_embedding(req, view.catalogue)
    # padding: any time written on a padded slot changes nothing
    junk = torch.where(req.history >= 0, req.history_time, torch.full_like(req.history_time, 5.0))
    assert torch.allclose(model.user_embedding(replace(req, history_time=junk), view.catalogue), f, atol=1e-6)
    # click times: moving every click 1000 h into the past changes the users who have clicks
    old = replace(req, history_time=req.history_time - 1000.0)
    moved = (model.user_embedding(old, view.catalogue) - f).norm(dim=1)
    has_clicks = (req.history >= 0).any(1)
    assert bool((moved[has_clicks] > 1e-4).all())
    # backward positions: reversing a full history changes the encoding (set sum alone would not)
    rev = replace(req, history=req.history.flip(1), history_time=req.history_time)
    assert bool(((model.user_embedding(rev, view.catalogue) - f).norm(dim=1)[full] > 1e-4).all())


def test_time_and_position_embeddings_get_gradient_and_cold_users_are_finite(ctx, view) -> None:
    model = _model(ctx)
    req = _timed(view.requests.select(torch.arange(30)), torch.Generator().manual_seed(2))
    cold = replace(req, history=torch.full_like(req.history, -1), history_time=torch.full_like(req.history_time, torch.nan))
    f_cold = model.user_embedding(cold, view.catalogue)
    assert torch.isfinite(f_cold).all() and torch.allclose(f_cold.norm(dim=1), torch.ones(30), atol=1e-5)
    f, g = model.user_embedding(req, view.catalogue), model.item_embedding(view.catalogue, torch.arange(10))
    loss = model.logits(f, g).logsumexp(1).mean()
    loss.backward()
    assert model.time_embedding.weight.grad is not None and model.time_embedding.weight.grad[1:].abs().sum() > 0
    assert model.time_embedding.weight.grad[0].abs().sum() == 0  # no unknown times in this batch
    assert model.position_embedding.weight.grad.abs().sum() > 0
    assert model.wha.A.weight.grad.abs().sum() > 0


def test_initialisation_is_seeded_and_normal_with_std_d_to_the_minus_half(ctx) -> None:
    a, b = _model(ctx), _model(ctx)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    w = SequenceTwoTower(tiny_context(n_items=4000), SequenceTowerConfig(embedding_dim=16), seed=0).item_encoder.item_id.weight
    w = w.detach()
    assert abs(float(w.std()) - 0.25) < 0.01 and abs(float(w.mean())) < 0.01


def test_retriever_scores_match_retrieval(ctx, view) -> None:
    ret = SequenceRetriever(ctx, SequenceTowerConfig(embedding_dim=8), "seq-test")
    with pytest.raises(RuntimeError):
        ret.retrieve(view.requests.select(torch.arange(3)), 5)
    ret.index(view.catalogue)
    req = make_requests(view.users, torch.Generator().manual_seed(3), 10)
    ids, scores = ret.retrieve(req, 7)
    assert torch.allclose(ret.score(req, ids), scores, atol=1e-5)
    assert bool(view.catalogue.live[ids].all())


# --- click times in the simulator -----------------------------------------------------------------


def test_append_history_keeps_times_aligned_with_ids() -> None:
    gen = torch_stream(0, "history-times")
    hist = torch.randint(0, 50, (6, 4), generator=gen)
    hist[0] = -1
    times = torch.where(hist >= 0, torch.rand(6, 4, generator=gen, dtype=torch.float64), torch.nan)
    users = torch.randint(0, 6, (25,), generator=gen)
    order = torch.randperm(25, generator=gen)
    items = torch.randint(100, 200, (25,), generator=gen)
    at = 10.0 + order.double()
    expected = [list(zip(h, t)) for h, t in zip(hist.tolist(), times.tolist())]
    for i in order.argsort().tolist():
        row = expected[int(users[i])]
        row.append((int(items[i]), float(at[i])))
        del row[0]
    dynamics.append_history(hist, users, order, items, times, at)
    assert hist.tolist() == [[e[0] for e in row] for row in expected]
    want = torch.tensor([[e[1] for e in row] for row in expected], dtype=torch.float64)
    assert torch.allclose(times, want, equal_nan=True)
    with pytest.raises(ValueError):
        dynamics.append_history(hist, users, order, items, times, None)


def test_logged_requests_carry_click_times() -> None:
    sc = tiny_scenario(timeline={"rounds": 2, "requests_per_round": 240})
    loop = warm_started_loop(sc, 0, torch.device("cpu"))
    view = training_view(loop, -1)
    req = view.requests
    assert req.history_time is not None and req.history_time.shape == req.history.shape
    assert torch.equal(torch.isnan(req.history_time), req.history < 0)
    valid = req.history >= 0
    assert bool(valid.any())
    gap = req.absolute_time().unsqueeze(1) - req.history_time
    assert bool((gap[valid] > 0).all())  # every click happened before the request that carries it
    # newest last; clicks of one traffic slice are appended in request-id order while their request
    # times are spread over the slice, so the order holds up to one slice
    both = valid[:, 1:] & valid[:, :-1]
    step = req.history_time[:, 1:] - req.history_time[:, :-1]
    assert bool((step[both] >= -sc.timeline.slice_hours).all()) and bool((step[both] > 0).any())
    users = view.users
    assert users.history_time is not None and torch.equal(torch.isnan(users.history_time), users.history < 0)
    assert torch.equal(torch.isnan(loop.world.user_history_time), loop.world.user_history < 0)
