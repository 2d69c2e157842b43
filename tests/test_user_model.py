"""The user model's statistics and the world's dynamics."""

from __future__ import annotations

import math

import torch

from simulator.rng import torch_stream
from simulator.types import ENTRY_BROWSE
from simulator.world import dynamics
from simulator.world.state import generate_world
from simulator.world.traffic import arrival_weights
from simulator.world.user_model import examination_curve, respond
from tests.conftest import tiny_scenario


def _respond(sc, relevance_value: float, n: int, promoted: bool = False):
    world = generate_world(sc, seed=1)
    world.item_promoted[:] = promoted
    s = sc.cascade.slate_size
    users = torch.zeros(n, dtype=torch.int64)
    slate = torch.arange(s).expand(n, s).clone()
    rel = torch.full((n, s), relevance_value)
    entry = torch.full((n,), ENTRY_BROWSE)
    return world, respond(world, sc, users, entry, slate, rel, torch_stream(0, "test", n))


def test_click_through_by_position_follows_the_configured_curve() -> None:
    # relevance 1, no conformity, no portals, equal attention: P(click at slot k) = curve[k]
    sc = tiny_scenario(world={"conformity_mean": 0.0, "attention_sigma": 0.0, "promoted_share": 0.0}, user_model={"position_bias": 0.8, "promo_click_prob": 0.0})
    n = 20_000
    _, fb = _respond(sc, 1.0, n)
    ctr = fb.clicked.float().mean(0)
    curve = examination_curve(sc, sc.cascade.slate_size, torch.device("cpu"))
    tol = 4 * torch.sqrt(curve * (1 - curve) / n) + 1e-9  # 4 standard errors
    assert torch.all((ctr - curve).abs() < tol), (ctr, curve)
    assert torch.all(ctr[1:] < ctr[:-1])  # falls with position


def test_explicit_examination_curve_overrides_position_bias() -> None:
    sc = tiny_scenario(world={"conformity_mean": 0.0, "attention_sigma": 0.0}, user_model={"examination_curve": [0.9, 0.5, 0.2]})
    curve = examination_curve(sc, 5, torch.device("cpu"))
    assert torch.allclose(curve, torch.tensor([0.9, 0.5, 0.2, 0.2, 0.2]))


def test_inattention_makes_pseudo_negatives_and_engagement_is_truthful() -> None:
    sc = tiny_scenario(world={"conformity_mean": 0.0, "attention_sigma": 0.0}, user_model={"position_bias": 1.0, "promo_click_prob": 0.0})
    _, fb = _respond(sc, 0.7, 5_000)
    assert not torch.any(fb.clicked & ~fb.examined)  # unexamined exposures never click
    assert not torch.any(fb.finished & ~fb.clicked)
    finish_given_click = fb.finished[fb.clicked].float().mean()
    n = int(fb.clicked.sum())
    assert abs(float(finish_given_click) - 0.7) < 4 * math.sqrt(0.21 / n)  # finish ~ Bernoulli(r)


def test_portal_clicks_are_pseudo_positives_without_engagement() -> None:
    sc = tiny_scenario(world={"conformity_mean": 0.0, "attention_sigma": 0.0}, user_model={"position_bias": 0.0, "promo_click_prob": 0.5})
    _, fb = _respond(sc, 0.0, 4_000, promoted=True)  # nobody is interested
    rate = fb.clicked.float().mean()
    assert abs(float(rate) - 0.5) < 4 * math.sqrt(0.25 / fb.clicked.numel())
    assert not torch.any(fb.finished) and torch.all(fb.portal_only == fb.clicked)
    assert torch.all(fb.watch_time == 0)


def test_conformity_raises_clicks_of_popular_items_only() -> None:
    sc = tiny_scenario(world={"conformity_mean": 0.5, "attention_sigma": 0.0}, user_model={"position_bias": 0.0, "promo_click_prob": 0.0})
    world, fb = _respond(sc, 0.0, 4_000)
    popular = world.item_clicks[: sc.cascade.slate_size] > 0
    assert torch.all(fb.clicked[:, ~popular] == 0)
    assert fb.clicked.float().mean() > 0


def test_append_history_matches_a_plain_reference() -> None:
    gen = torch_stream(0, "history")
    hist = torch.randint(0, 50, (6, 4), generator=gen)
    hist[0] = -1
    users = torch.randint(0, 6, (25,), generator=gen)
    order = torch.randperm(25, generator=gen)
    items = torch.randint(100, 200, (25,), generator=gen)
    expected = [list(r) for r in hist.tolist()]
    for i in order.argsort().tolist():  # events in time order
        row = expected[int(users[i])]
        row.append(int(items[i]))
        del row[0]
    dynamics.append_history(hist, users, order, items)
    assert hist.tolist() == expected


def test_drift_moves_users_toward_what_they_consumed() -> None:
    sc = tiny_scenario(dynamics={"drift_rate": 0.5, "boredom_rate": 0.0})
    world = generate_world(sc, seed=2)
    u, i = 3, 7
    world.acc_latent[u] = world.item_latent[i]
    world.acc_finished[u] = 1
    world.acc_visits[u] = 1
    before = torch.cosine_similarity(world.user_latent[u], world.item_latent[i], dim=0)
    other_before = world.user_latent[4].clone()
    dynamics.end_round(world, sc, 0, 0)
    after = torch.cosine_similarity(world.user_latent[u], world.item_latent[i], dim=0)
    assert after > before
    assert torch.equal(world.user_latent[4], other_before)  # no consumption, no drift
    assert float(world.acc_finished.sum()) == 0  # accumulators reset


def test_dynamics_switched_off_leave_truth_unchanged() -> None:
    sc = tiny_scenario(dynamics={"drift_rate": 0.0, "boredom_rate": 0.0, "churn_rate": 0.0})
    world = generate_world(sc, seed=2)
    world.acc_latent[:5] = 1.0
    world.acc_finished[:5] = 2
    world.acc_visits[:5] = 1
    world.acc_category[:5, 0] = 2
    latent, alive = world.user_latent.clone(), world.user_alive.clone()
    dynamics.end_round(world, sc, 0, 0)
    assert torch.equal(world.user_latent, latent) and torch.equal(world.user_alive, alive)
    assert float(world.user_boredom.abs().sum()) == 0


def test_boredom_and_churn() -> None:
    sc = tiny_scenario(dynamics={"boredom_rate": 0.3, "churn_rate": 1.0, "churn_threshold": 0.5})
    world = generate_world(sc, seed=2)
    world.acc_category[0, 2] = 2
    world.acc_visits[:10] = 1  # ten visitors, none finished anything: all dissatisfied
    world.user_satisfaction[:10] = 0.0
    dynamics.end_round(world, sc, 0, 0)
    assert abs(float(world.user_boredom[0, 2]) - 0.6) < 1e-6
    assert not torch.any(world.user_alive[:10]) and torch.all(world.user_alive[10 : sc.world.n_users])


def test_items_arrive_and_retire_users_join() -> None:
    sc = tiny_scenario(dynamics={"item_lifetime_rounds": 2.0, "new_items_per_round": 5, "new_users_per_round": 3})
    world = generate_world(sc, seed=3)
    n0 = int(world.item_live.sum())
    dynamics.start_round(world, 0)
    born_now = world.item_born == 0
    assert int(born_now.sum()) == 5 and torch.all(world.item_live[born_now])
    assert torch.all(~world.item_live[world.item_death <= 0])
    assert int(world.user_alive.sum()) == sc.world.n_users + 3  # only round 0's joiners (start_round(-1) never ran)
    dynamics.start_round(world, 5)
    assert int(world.item_live.sum()) != n0


def test_weekend_heavy_users_arrive_more_on_weekends() -> None:
    sc = tiny_scenario(dynamics={"weekend_shift": 3.0})
    world = generate_world(sc, seed=4)
    heavy = world.user_segment == 1
    wk, we = arrival_weights(world, sc, False), arrival_weights(world, sc, True)
    assert torch.allclose(we[heavy], 9.0 * wk[heavy])
    assert torch.equal(we[~heavy], wk[~heavy])
